"""Dynamic Sparse Training (DST) for continual learning: one sparse subnetwork per task.

Yildirim, Gok Yildirim, Sokar, Mocanu & Vanschoren (2024), "Continual Learning
with Dynamic Sparse Training: Exploring Algorithms for Effective Model
Updates", CPAL 2024, PMLR 234:94-107, arXiv:2308.14831 (reference code:
github.com/muratonuryildirim/CL-with-DST, ``core.py`` / ``cifar100.py``).

Masks. Every ``nn.Linear`` / ``nn.Conv*`` weight ``W_l`` (body and head) is
masked; biases and other parameters are not (the reference drops every name
containing ``bias`` and the batch norms from its masks). At the start of each
experience a fresh mask ``M_t`` is drawn at random, over the whole layer, with
per-layer density ``d_l``:

- ``uniform``: ``d_l = d``;
- ``erk`` (Erdos-Renyi-Kernel, Evci et al. 2020, as in the reference):
  ``d_l = eps * sum(shape_l) / prod(shape_l)``, i.e.
  ``(n_in + n_out [+ kh + kw]) / (n_in n_out [kh kw])``, with ``eps`` chosen so
  that ``sum_l d_l |W_l| = d sum_l |W_l|``; while ``eps`` pushes the largest
  ``d_l`` above 1, the layers with that largest ratio are made dense and ``eps``
  is recomputed for the others.

Each layer receives ``floor`` or ``ceil`` of ``d_l |W_l|`` entries
(largest-remainder rounding, so the total is ``round(d sum_l |W_l|)``; the
reference draws Bernoulli(``d_l``) entries instead).

Isolation and reuse (the reference's ``isolate=True``). Entries of ``M_t`` that
earlier tasks own are *reused*: they take part in the forward pass with their
learned values but never change (``ctx.protect``). Entries of ``M_t`` that no
task owns are the task's own, trainable weights; they start from the network's
initial values (in the reference, from zero after the first task: its merge
``param[param == 0] = old[param == 0]`` leaves unowned entries at zero). Every
entry outside ``M_t`` is zero while the task trains (and protected, so
momentum or weight decay cannot revive it); owned entries outside
``M_t`` keep their values in a copy and are written back at the end of the
experience, when the task's own entries become owned: ``owned <- owned | M_t``.
Evaluating task ``t`` zeroes every weight outside ``M_t`` (its final mask).

Prune and regrow (SET/RigL style, the reference's ``Masking.truncate_weights``).
After every ``update_frequency`` optimizer steps ``s`` of an experience, each
layer drops the ``k = ceil(p_s * |M_t|)`` active entries (own or reused) of
smallest magnitude and grows ``k`` entries outside the mask, so ``|M_t|`` stays
constant. ``p_s`` is the prune rate under the reference's cosine decay
(``CosineAnnealingLR`` with ``eta_min = 0.005``) over the experience's ``T``
steps:

    p_s = p_min + (p - p_min) (1 + cos(pi min(s, T) / T)) / 2,   p_min = min(0.005, p).

Growth criteria, among the eligible entries outside the mask:

- ``random``: uniformly at random;
- ``unfired``: at random among the entries never active during this experience
  first, then at random among the rest (the reference's ``random_unfired``);
- ``gradient``: largest ``|dL/dW|`` (RigL);
- ``momentum``: largest ``|m|``, ``m <- 0.9 m + g`` a momentum of the *dense*
  gradient kept by the strategy from the start of the experience (sparse
  momentum, Dettmers & Zettlemoyer 2019; 0.9: the reference's SGD momentum).
  The reference reads the optimizer's buffer (SGD ``momentum_buffer``, Adam
  ``exp_avg / (sqrt(exp_avg_sq) + 1e-8)``); here the optimizer only ever sees
  the masked gradient (inactive entries are protected), so its buffers are zero
  off the mask and could not rank the candidates.

Growth takes free (unowned) entries first; only if a layer has too few free
entries does it fall back to re-using owned ones. Grown free entries start at
zero, with zeroed optimizer state (the reference: masked weights are zero);
grown owned entries return with their owned values, frozen.

The update runs in ``on_after_backward`` of the step that follows step ``s``
(the hook API has no after-step hook), so ``gradient`` growth ranks entries by
that next batch's gradient, which the optimizer then applies to the grown
weights; no update follows the experience's last step (the reference updates
after step ``s`` with step ``s``'s gradient, also after the last one). ``T`` is
``decay_steps``, else ``ctx.total_steps`` (set by the learner), else the
steps of one epoch (``ceil(n_train / batch size)``, read from the first batch).

The head (``head.*`` parameters with one row per class): its mask, ERK shape,
density and growth are restricted to the rows of the experience's classes.
In a multi-head model the other rows get no gradient (their logits are masked);
in a single head they would only learn to push absent classes down. The
reference masks the whole classifier like any other layer, so a task also takes,
and then owns, untrained rows of later tasks' classes.

Biases (``bias``). Shared biases would break the isolation. The reference
leaves them out of the masks; most of its models have none (``bias=False``,
batch norms without affine parameters), and the others train them in every
task. Here ``first`` (default) trains each bias entry in the first experience
that uses it and freezes it afterwards (the body's biases: experience 0; a
multi-head head's bias: each task its own classes), ``zero`` gives bias-free
layers, ``shared`` trains them always (no isolation).

Evaluation of experience ``j`` uses the union of the final masks of the
trained experiences with ``j``'s task id (in a task-incremental stream: the
mask of ``j``'s task; in class- or domain-incremental streams, where every task
id is 0: all owned weights), else (a task not trained yet) the latest mask.
The paper and this isolation guarantee are about task-incremental streams.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from ._registry import register_strategy
from ._sparsity import (
    effective_shape,
    erk_densities,
    layer_counts,
    masked_weight_names,
    take_top,
    task_entries,
)
from .base import Batch, Context, Strategy, StrategyConfig

MIN_PRUNE_RATE = 0.005
"""``eta_min`` of the reference's cosine decay of the prune rate (``DeathCosineDecay``)."""

MOMENTUM = 0.9
"""Momentum of the dense-gradient buffer that ``momentum`` growth ranks entries by."""


class DSTConfig(StrategyConfig):
    """Hyperparameters of dynamic sparse training for continual learning."""

    density: float = Field(
        0.2, gt=0, le=1, description="Overall density d of each task's mask (reference: 0.2)."
    )
    init: Literal["erk", "uniform"] = Field(
        "erk",
        description="Per-layer densities: Erdos-Renyi-Kernel or uniform (both in the paper; "
        "ERK is the better one at density 0.2).",
    )
    prune_rate: float = Field(
        0.5, ge=0, lt=1, description="Initial prune rate p, cosine-decayed (reference: 0.5)."
    )
    update_frequency: int = Field(
        100,
        ge=1,
        description="Optimizer steps between prune-and-regrow updates (the paper's CIFAR-100 "
        "5- and 20-task runs: 100; argparse default: 400).",
    )
    growth: Literal["random", "unfired", "gradient", "momentum"] = Field(
        "random", description="Growth criterion (reference default: random)."
    )
    decay_steps: int | None = Field(
        None,
        ge=1,
        description="Steps T of the prune-rate cosine decay per experience (reference: all "
        "the experience's steps). None: the learner's `ctx.total_steps` if it provides one, "
        "else one epoch (n_train / batch size).",
    )
    bias: Literal["first", "zero", "shared"] = Field(
        "first",
        description="Unmasked parameters (biases): `first`: each entry trains in the first "
        "experience that uses it, then is frozen (head entries: the task's classes); `zero`: "
        "biases set to zero and every unmasked parameter frozen (bias-free layers, as the "
        "reference's models); `shared`: always trained (breaks isolation).",
    )
    seed: int = Field(0, ge=0, description="Seeds mask draws and random growth (+ experience).")


@register_strategy("dst")
class DST(Strategy):
    """Train one dynamic sparse subnetwork per task; freeze what earlier tasks own."""

    formulas = (
        "prune_rate_at",
        "update_masks",
        "owned",
    )
    Config = DSTConfig
    vectorize = "its masks protect weights (ctx.protect), which a vectorised step does not honour"
    config: DSTConfig
    language_models = (
        "its masks assume untied nn.Linear weights (a tied LM head would mask the "
        "embedding); not verified on language models"
    )

    def __init__(self, config: DSTConfig | None = None) -> None:
        super().__init__(config)
        # Persistent state: the final mask of every trained experience and its task id,
        # and (bias="first") which entries of the unmasked parameters are owned.
        self.masks: list[dict[str, Tensor]] = []
        self.task_ids: list[int] = []
        self.bias_owned: dict[str, Tensor] = {}
        self._metrics: dict[str, float] = {}
        # Per-experience state, rebuilt by on_experience_start.
        self.mask: dict[str, Tensor] = {}  # current mask M_t
        self._owned: dict[str, Tensor] = {}  # owned by earlier tasks
        self._eligible: dict[str, Tensor] = {}
        self._dense: dict[str, Tensor] = {}  # weights at experience start (owned values)
        self._frozen: dict[str, Tensor | None] = {}  # protect masks, every parameter
        self._bias_train: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}  # active entries per layer (constant)
        self._sizes: dict[str, int] = {}  # eligible entries per layer
        self._fired: dict[str, Tensor] = {}
        self._momentum: dict[str, Tensor] = {}  # dense-gradient momentum (growth)
        self._generator: torch.Generator | None = None
        self._start_step = 0
        self._total_steps: int | None = None

    # ----------------------------------------------------------------- hooks
    def on_experience_start(self, ctx: Context) -> None:
        """Draw the task's mask, zero the weights outside it, set up what stays frozen."""
        cfg, exp = self.config, ctx.experience
        params = dict(ctx.model.named_parameters())
        names = masked_weight_names(ctx.model)
        self._to_device(ctx.device)
        self._generator = torch.Generator(device=ctx.device).manual_seed(cfg.seed + exp.index)
        n_classes = ctx.stream.n_classes
        self._eligible = {
            n: task_entries(ctx.model, n, exp.classes, n_classes).expand_as(params[n])
            for n in names
        }
        self._sizes = sizes = {n: int(e.sum()) for n, e in self._eligible.items()}
        shapes = {n: effective_shape(params[n].shape, sizes[n]) for n in names}
        if cfg.init == "erk":
            densities = erk_densities(shapes, cfg.density)
        else:
            densities = {n: cfg.density for n in names}
        self._counts = layer_counts(sizes, densities, cfg.density)
        owned = self.owned()
        self.mask, self._owned, self._dense, self._frozen = {}, {}, {}, {}
        with torch.no_grad():
            for n in names:
                p = params[n]
                score = torch.rand(p.shape, generator=self._generator, device=p.device)
                mask = take_top(score, self._eligible[n].to(torch.int8) - 1, self._counts[n])
                self.mask[n] = mask
                self._owned[n] = owned.get(n, torch.zeros_like(mask))
                self._dense[n] = p.detach().clone()
                p.masked_fill_(~mask, 0.0)
                own = mask & ~self._owned[n]
                self._set_trainable(ctx, n, p, own, reset=own)
        self._setup_unmasked(ctx, params, names)
        self._fired = (
            {n: m.clone() for n, m in self.mask.items()} if cfg.growth == "unfired" else {}
        )
        momentum = cfg.growth == "momentum"
        self._momentum = {n: torch.zeros_like(params[n]) for n in names} if momentum else {}
        self._start_step = ctx.step
        self._total_steps = cfg.decay_steps or ctx.total_steps

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Add nothing; read the batch size once to size the prune-rate decay if needed."""
        if self._total_steps is None:
            self._total_steps = max(1, math.ceil(ctx.experience.n_train / batch.x.shape[0]))
        return {}

    def on_after_backward(self, ctx: Context) -> None:
        """Prune and regrow every ``update_frequency`` steps; protect all but the own weights."""
        if self._momentum:
            params = dict(ctx.model.named_parameters())
            for n, m in self._momentum.items():
                grad = params[n].grad
                if grad is not None:
                    m.mul_(MOMENTUM).add_(grad)
        done = ctx.step - self._start_step  # optimizer steps completed in this experience
        if self.config.prune_rate > 0 and done > 0 and done % self.config.update_frequency == 0:
            self.update_masks(ctx, self.prune_rate_at(done))
        for n, frozen in self._frozen.items():
            ctx.protect(n, frozen)

    def on_experience_end(self, ctx: Context) -> None:
        """Make the task's own weights owned, store its mask, restore the owned weights."""
        params = dict(ctx.model.named_parameters())
        with torch.no_grad():
            for n, mask in self.mask.items():
                own = mask & ~self._owned[n]
                params[n].copy_(torch.where(own, params[n], self._dense[n]))
        for n, train in self._bias_train.items():
            self.bias_owned[n] = self.bias_owned.get(n, torch.zeros_like(train)) | train
        self.masks.append({n: m.clone() for n, m in self.mask.items()})
        self.task_ids.append(ctx.experience.task_id)
        self._metrics = self._compute_metrics()
        self.mask, self._owned, self._eligible, self._dense = {}, {}, {}, {}
        self._frozen, self._bias_train, self._fired, self._momentum = {}, {}, {}, {}

    def on_eval_start(self, ctx: Context) -> None:
        """Zero the weights outside the evaluated task's mask.

        The task's mask is the union of the final masks of the trained experiences with
        the evaluated experience's task id (one in a task-incremental stream); a task not
        trained yet uses the latest mask. Before any training the model is used as it is.
        """
        if not self.masks:
            return
        self._to_device(ctx.device)
        same = [
            m for m, t in zip(self.masks, self.task_ids, strict=True) if t == ctx.experience.task_id
        ]
        params = dict(ctx.model.named_parameters())
        with torch.no_grad():
            for n in self.masks[-1]:
                mask = self.masks[-1][n]
                if same:
                    mask = same[0][n]
                    for other in same[1:]:
                        mask = mask | other[n]
                params[n].masked_fill_(~mask, 0.0)

    # ------------------------------------------------------------ prune/grow
    def prune_rate_at(self, step: int) -> float:
        """Return the cosine-decayed prune rate after ``step`` steps of the experience."""
        p = self.config.prune_rate
        low = min(MIN_PRUNE_RATE, p)
        total = self._total_steps or 1
        return low + (p - low) * (1 + math.cos(math.pi * min(step, total) / total)) / 2

    @torch.no_grad()
    def update_masks(self, ctx: Context, rate: float) -> None:
        """Prune ``ceil(rate * |M_l|)`` smallest-magnitude active entries per layer, regrow as many.

        Zeroes the pruned entries and the grown free ones (and their optimizer state);
        grown owned entries get back their owned values and stay frozen.
        """
        params = dict(ctx.model.named_parameters())
        for n, mask in self.mask.items():
            p, owned, eligible = params[n], self._owned[n], self._eligible[n]
            k = math.ceil(rate * self._counts[n])
            if k == 0:
                continue
            pruned = take_top(-p.abs(), mask.to(torch.int8) - 1, k)
            kept = mask & ~pruned
            # Tiers: free entries before owned ones; unfired (never active) free ones first.
            tier = torch.where(owned, 0, 1).to(torch.int8)
            if self._fired:
                tier = tier + (~self._fired[n] & ~owned).to(torch.int8)
            tier = tier.masked_fill(~eligible | kept, -1)
            grown = take_top(self._growth_score(n, p), tier, k)
            new = kept | grown
            p.copy_(torch.where(grown & owned, self._dense[n], p.masked_fill(~kept, 0.0)))
            self.mask[n] = new
            self._set_trainable(ctx, n, p, new & ~owned, reset=grown & ~owned)
            if self._fired:
                self._fired[n] |= new

    def _growth_score(self, name: str, p: Tensor) -> Tensor:
        """Score of every entry for growth (larger grows first)."""
        growth = self.config.growth
        if growth in ("random", "unfired"):
            return torch.rand(p.shape, generator=self._generator, device=p.device)
        if growth == "momentum":
            return self._momentum[name].abs()
        return p.grad.abs() if p.grad is not None else torch.zeros_like(p)

    def _set_trainable(
        self, ctx: Context, name: str, p: Tensor, trainable: Tensor, reset: Tensor
    ) -> None:
        """Protect all of ``p`` but ``trainable``; zero its optimizer state at ``reset``."""
        self._frozen[name] = ~trainable
        for value in ctx.optimizer.state.get(p, {}).values():
            if isinstance(value, Tensor) and value.shape == p.shape:
                value.masked_fill_(reset, 0.0)

    def _setup_unmasked(self, ctx: Context, params: dict[str, Tensor], names: list[str]) -> None:
        """Apply the ``bias`` policy to every parameter that is not a masked weight."""
        policy = self.config.bias
        self._bias_train = {}
        for n, p in params.items():
            if n in names or policy == "shared":
                continue
            if policy == "zero":
                if n.endswith("bias"):
                    with torch.no_grad():
                        p.zero_()
                self._frozen[n] = None
                continue
            classes = ctx.experience.classes
            eligible = task_entries(ctx.model, n, classes, ctx.stream.n_classes).expand_as(p)
            owned = self.bias_owned.get(n, torch.zeros_like(eligible))
            train = eligible & ~owned
            self._bias_train[n] = train
            self._frozen[n] = ~train if bool(train.any()) else None

    # ---------------------------------------------------------------- state
    def owned(self) -> dict[str, Tensor]:
        """Return, per masked weight, the entries owned by the trained tasks (union of masks)."""
        out: dict[str, Tensor] = {}
        for masks in self.masks:
            for n, m in masks.items():
                out[n] = out[n] | m if n in out else m.clone()
        return out

    def _to_device(self, device: torch.device) -> None:
        """Move the stored masks to ``device`` (e.g. after loading a checkpoint on the host)."""
        if self.masks and next(iter(self.masks[0].values())).device != torch.device(device):
            self.masks = [{n: m.to(device) for n, m in ms.items()} for ms in self.masks]
            self.bias_owned = {n: m.to(device) for n, m in self.bias_owned.items()}

    def _compute_metrics(self) -> dict[str, float]:
        """Densities, reuse and ownership of the mask just trained (one host sync)."""
        names = list(self.mask)
        if not names:
            return {}
        owned_after = self.owned()
        synced = torch.stack(
            [
                torch.stack([(self.mask[n] & self._owned[n]).sum(), owned_after[n].sum()])
                for n in names
            ]
        ).tolist()
        numel = {n: self.mask[n].numel() for n in names}
        out: dict[str, float] = {}
        for n, (reused, owned) in zip(names, synced, strict=True):
            out[f"density/{n}"] = self._counts[n] / max(self._sizes[n], 1)
            out[f"reused/{n}"] = reused / max(self._counts[n], 1)
            out[f"owned/{n}"] = owned / numel[n]
        active = sum(self._counts.values())
        out["density/overall"] = active / max(sum(self._sizes.values()), 1)
        out["reused/overall"] = sum(r for r, _ in synced) / max(active, 1)
        out["owned/overall"] = sum(o for _, o in synced) / sum(numel.values())
        return out

    def metrics(self) -> dict[str, float]:
        """Per masked layer and ``overall``, for the latest trained task.

        ``density/<layer>``: its mask's density over the layer's eligible entries (the
        task's rows of a multi-head head); ``reused/<layer>``: the fraction of its mask
        owned by earlier tasks; ``owned/<layer>``: the fraction of the layer owned by all
        tasks trained so far (capacity used; the next task can train only the rest).
        """
        return dict(self._metrics)

    def state_dict(self) -> dict[str, Any]:
        """Return the final masks, their task ids, the owned bias entries and the metrics."""
        return {
            "masks": [dict(m) for m in self.masks],
            "task_ids": list(self.task_ids),
            "bias_owned": dict(self.bias_owned),
            "metrics": dict(self._metrics),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        expected = {"masks", "task_ids", "bias_owned", "metrics"}
        if set(state) != expected:
            raise ValueError(f"dst: expected state keys {sorted(expected)}, got {sorted(state)}")
        if len(state["masks"]) != len(state["task_ids"]):
            raise ValueError("dst: 'masks' and 'task_ids' differ in length")
        self.masks = [{n: m.clone().bool() for n, m in ms.items()} for ms in state["masks"]]
        self.task_ids = [int(t) for t in state["task_ids"]]
        self.bias_owned = {n: m.clone().bool() for n, m in state["bias_owned"].items()}
        self._metrics = {k: float(v) for k, v in state["metrics"].items()}
