"""Vectorised trials: S trials that differ only in seed (and learning rate) train as one program.

A research sweep repeats the same model, stream and strategy over seeds. Trained
one by one, each seed's step is a handful of small kernels; trained together,
the S models' parameters are stacked (:func:`torch.func.stack_module_state`,
a leading trial dimension on every tensor), the forward pass is one ``vmap`` of
:func:`torch.func.functional_call` over the stacked parameters (each trial its
own batch), the loss is the sum of the trials' losses, and one optimizer steps
the stacked parameters. The sum's gradient with respect to trial ``s``'s slice
is trial ``s``'s own gradient, and SGD and Adam are elementwise, so each trial
follows the path it would follow alone, up to float rounding (a batched matrix
product sums in another order).

Every trial keeps its own seed: its weights are drawn as :class:`Learner` draws
them (``seed_everything(seed)`` then the model), its batches come from its own
generator seeded the same way, and it gets its own row of every result (``R``,
``untrained``, the losses). A strategy says how it trains in this mode
(:attr:`lifelong.strategies.Strategy.vectorize`): ``"stacked"`` strategies run
every hook once on the stacked model; ``"members"`` strategies run their
experience and epoch hooks once per trial on the trial's own model (whose
parameters are views of its slice of the stacked ones) and their per-step hooks
once on the state stacked from the trials' :meth:`state_dict`. A penalty's
logged value is then the mean over the trials (the stacked term is their sum).

What trains this way is checked up front (:func:`vectorization_blocker`):
streamed or augmented experiences, text streams, ``bce_seen``, the plasticity
reference, anytime evaluation and strategies not marked for it are refused with
the reason, and so is a model whose BatchNorm layers train (their running
statistics are not stacked; frozen ones, in eval mode, are fine). Dropout draws
different masks per trial (``randomness="different"``).

A trial whose task loss or weights become NaN/inf fails alone (:attr:`failed`):
its slice is zeroed, so the stacked penalties, sums over the trials with
elementwise gradients, stay finite for the others.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from lifelong.platform.hook_errors import annotate
from lifelong.platform.learner import _fabric, _overrides
from lifelong.platform.loader import StreamedExperience, place_experiences
from lifelong.platform.models import ContinualModel, ModelConfig, build_model, frozen_modules
from lifelong.platform.models.feature_cache import is_encoded
from lifelong.platform.sgd import plain_sgd_step
from lifelong.platform.stacked_state import place, stack_states, unstack_state, zero_slice
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios.stream import Experience, Stream
from lifelong.strategies.base import Batch, Context, Strategy

BOUNDARY_HOOKS = ("on_experience_start", "on_epoch_start", "on_epoch_end", "on_experience_end")
STEP_HOOKS = ("loss_terms", "on_after_backward", "on_after_step")
PER_TRIAL_UNSUPPORTED = ("on_after_backward", "on_after_step")
"""Per-step hooks a ``per_trial`` strategy may not override (its trial's model has no grad)."""
UNSUPPORTED_HOOKS = (
    "transform_batch",
    "task_loss",
    "on_task_gradient",
    "on_eval_start",
    "eval_logits",
)


def vectorization_blocker(
    stream: Stream, training: TrainingConfig, strategies: Sequence[Strategy]
) -> str | None:
    """Why these trials cannot train as one program, or ``None`` when they can."""
    if stream.info.get("kind") == "text":
        return "a text stream (language model) trains one trial at a time"
    if stream.info.get("augment"):
        return "scenario.augment streams every experience from the host"
    if training.data_on_device == "never":
        return "training.data_on_device: never streams every experience from the host"
    if training.task_loss != "cross_entropy":
        return f"training.task_loss: {training.task_loss} is not vectorised (cross_entropy is)"
    if training.plasticity_baseline:
        return "training.plasticity_baseline trains one reference per trial"
    if training.anytime_every is not None:
        return "training.anytime_every evaluates inside an experience"
    if stream.info.get("task_free"):
        return "a task-free stream is not vectorised"
    if training.compile:
        return "training.compile: the vectorised step is not compiled"
    if training.channels_last:
        return "training.channels_last: the vectorised step keeps the default memory format"
    for s in strategies:
        if s.vectorize not in ("stacked", "members", "per_trial"):
            return f"strategy {s.name!r}: {s.vectorize}"
        used = [h for h in UNSUPPORTED_HOOKS if _overrides(s, h)]
        if s.vectorize == "per_trial":
            used += [h for h in PER_TRIAL_UNSUPPORTED if _overrides(s, h)]
        if used:
            return f"strategy {s.name!r} overrides {used[0]}, which vectorised trials do not call"
    return None


def per_trial_blocker(model: ContinualModel, strategies: Sequence[Strategy]) -> str | None:
    """Why ``model`` cannot run a ``per_trial`` strategy vectorised, else ``None``.

    A per-trial term sees its trial's slice of the stacked features and logits; on a
    multi-head model it would call the trial's own head, whose weights are a view
    without the stacked weights' gradient.
    """
    named = [s.name for s in strategies if s.vectorize == "per_trial"]
    if named and model.head.multi_head:
        return f"is multi-head, whose other heads strategy {named[0]!r} cannot reach vectorised"
    return None


def trial_model(stream: Stream, model_config: ModelConfig) -> ContinualModel:
    """The model a trial of ``stream`` builds (random weights from the current RNG state)."""
    multi_head = model_config.multi_head
    if multi_head is None:
        multi_head = stream.protocol == "task_incremental"
    task_classes = stream.task_classes if multi_head else []
    encoded = is_encoded(stream, model_config)
    return build_model(
        model_config, stream.input_shape, stream.n_classes, task_classes, encoded=encoded
    )


def batchnorm_blocker(model: nn.Module) -> str | None:
    """Why ``model`` cannot train vectorised: BatchNorm layers that train, else ``None``."""
    frozen = {id(sub) for m in frozen_modules(model) for sub in m.modules()}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in frozen:
            return (
                f"has BatchNorm layers that train ({name}, ...), whose running statistics "
                "are not stacked"
            )
    return None


class _FeaturesAndLogits(nn.Module):
    """``model``'s features and logits from one forward pass (the functional call's root)."""

    def __init__(self, model: ContinualModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, task_id: int) -> tuple[Tensor, Tensor]:
        """Return ``(h(x), logits)``."""
        h = self.model.features(x)
        return h, self.model.classify(h, task_id)


class VectorizedLearner:
    """Trains one model per seed on ``stream`` with the same strategies, as one program.

    Args:
        stream: the task sequence (tensors on the host).
        model_config: which built-in model to build.
        make_strategies: builds a fresh list of the strategies (called once for the
            stacked trials and once per trial).
        training: as for :class:`Learner` (see :func:`vectorization_blocker`).
        seeds: the trials' seeds, one trial each.
        lrs: each trial's learning rate, when they differ (``None``: ``training.lr``).
            The optimizer then steps with learning rate 1 and each trial's
            displacement is scaled by its own rate: SGD (with momentum and weight
            decay) and Adam move by ``lr`` times a step whose state does not depend
            on ``lr``, so this is each trial's own update up to rounding.

    ``R`` is ``(S, T, T)``, ``untrained`` ``(S, T)``: trial ``s``'s rows are
    those a :class:`Learner` with ``seeds[s]`` fills, within float rounding.
    """

    def __init__(
        self,
        stream: Stream,
        model_config: ModelConfig,
        make_strategies: Callable[[], list[Strategy]],
        training: TrainingConfig,
        seeds: Sequence[int],
        lrs: Sequence[float] | None = None,
    ) -> None:
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("vectorised trials need at least one seed")
        if lrs is not None and len(lrs) != len(self.seeds):
            raise ValueError(f"{len(lrs)} learning rates for {len(self.seeds)} vectorised trials")
        self.lrs = [float(lr) for lr in lrs] if lrs is not None else [training.lr] * len(seeds)
        self._per_trial_lr = len(set(self.lrs)) > 1
        self.stream, self.training, self.model_config = stream, training, model_config
        self.strategies = make_strategies()
        blocker = vectorization_blocker(stream, training, self.strategies)
        if blocker:
            raise ValueError(f"these trials cannot be vectorised: {blocker}")
        self.members = [make_strategies() for _ in self.seeds]
        self.fabric = _fabric(training.accelerator, training.precision)
        self.device = self.fabric.device
        self.models: list[ContinualModel] = []
        for seed in self.seeds:  # each trial's weights, drawn as its own Learner draws them
            self.fabric.seed_everything(seed, verbose=False)
            self.models.append(self.fabric.to_device(trial_model(stream, model_config)))
        norm = batchnorm_blocker(self.models[0])
        if norm:
            raise ValueError(
                f"these trials cannot be vectorised: model {model_config.name!r} {norm}. Freeze "
                "them (model.freeze) or train the seeds separately (resources.vectorize: 1)"
            )
        heads = per_trial_blocker(self.models[0], self.strategies)
        if heads:
            raise ValueError(f"these trials cannot be vectorised: model {heads}")
        # strategies whose loss terms run once per trial on its slice of the outputs
        self._per_trial = [k for k, st in enumerate(self.strategies) if st.vectorize == "per_trial"]
        params, buffers = stack_module_state(self.models)
        trainable = {n for n, p in self.models[0].named_parameters() if p.requires_grad}
        self.params = {
            n: nn.Parameter(t.detach(), requires_grad=n in trainable) for n, t in params.items()
        }
        self.buffers = buffers
        # The stacked model: the first trial's modules holding the stacked tensors. It is
        # the functional forward's structure and the stacked strategies' ``ctx.model``.
        self.stacked = copy.deepcopy(self.models[0])
        for n, t in {**self.params, **self.buffers}.items():
            place(self.stacked, n, t)
        self._both = _FeaturesAndLogits(self.stacked)
        self._both_params = {f"model.{n}": p for n, p in self.params.items()}
        self._both_buffers = {f"model.{n}": b for n, b in self.buffers.items()}
        self._trainable = {n: p for n, p in self._both_params.items() if p.requires_grad}
        self._frozen = {n: p for n, p in self._both_params.items() if not p.requires_grad}
        # the same storage without autograd history: torch.func.grad differentiates these,
        # and the outer graph records nothing
        self._trainable_data = {n: p.detach() for n, p in self._trainable.items()}
        self._task_grad = vmap(
            grad_and_value(self._task_loss, has_aux=True),
            in_dims=(0, 0, 0, 0, 0, None),
            randomness="different",
        )
        # Each trial's own model now reads and writes its slice of the stacked tensors.
        for s, model in enumerate(self.models):
            for n, p in model.named_parameters():
                p.data = self.params[n].detach()[s]
            for n, b in model.named_buffers():
                b.data = self.buffers[n][s]
        self.optimizer = self._make_optimizer()
        # each trial's learning rate, shaped to scale its slice of every trainable tensor
        rates = torch.tensor(self.lrs, dtype=torch.float32, device=self.device)
        self._rates = [
            rates.view(-1, *[1] * (p.dim() - 1)) for p in self.params.values() if p.requires_grad
        ]
        self.generators = [
            torch.Generator(device=self.device).manual_seed(seed) for seed in self.seeds
        ]
        self.experiences = place_experiences(
            stream.experiences, self.device, training, augment=False
        )
        streamed = [e for e in self.experiences if isinstance(e, StreamedExperience)]
        if streamed:
            raise ValueError(
                "these trials cannot be vectorised: an experience is too large for the device "
                "and streams from the host (training.device_data_mb)"
            )
        n, size = len(stream), len(self.seeds)
        self.R = np.full((size, n, n), np.nan)
        self.untrained = np.full((size, n), np.nan)
        self.step = 0
        self.samples_seen = 0
        self.next_experience = 0
        self.failed: dict[int, str] = {}  # trial index -> why it failed (the others go on)
        self._ctx: Context | None = None  # while an experience trains

    @property
    def size(self) -> int:
        """S, the number of trials trained together."""
        return len(self.seeds)

    # ------------------------------------------------------------ forward
    def _forward(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, task_id: int
    ) -> tuple[Tensor, Tensor]:
        """One trial's features and logits (``params``, ``buffers``: its slices)."""
        return functional_call(self._both, (params, buffers), (x, task_id))

    def _task_loss(
        self,
        trainable: dict[str, Tensor],
        frozen: dict[str, Tensor],
        buffers: dict[str, Tensor],
        x: Tensor,
        y: Tensor,
        task_id: int,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One trial's cross-entropy, and its features and logits as auxiliaries."""
        features, logits = self._forward({**trainable, **frozen}, buffers, x, task_id)
        loss = F.cross_entropy(logits, y)
        return loss, (features.detach(), logits.detach())

    def outputs(self, x: Tensor, task_id: int, *, shared_input: bool) -> tuple[Tensor, Tensor]:
        """Every trial's features ``(S, N, H)`` and logits ``(S, N, C)``.

        ``x`` is ``(S, N, ...)``, one batch per trial, or ``(N, ...)`` seen by all
        trials when ``shared_input``.
        """
        run = vmap(
            self._forward,
            in_dims=(0, 0, None if shared_input else 0, None),
            randomness="different",
        )
        return run(self._both_params, self._both_buffers, x, task_id)

    # ------------------------------------------------------------ contexts
    def _context(self, experience: Experience) -> Context:
        return Context(
            self.stacked,
            self.optimizer,
            self.stream,
            experience,
            self.device,
            self.step,
            seed=self.seeds[0],
            trials=self.size,
        )

    def _member_context(self, s: int, experience: Experience, ctx: Context) -> Context:
        return Context(
            self.models[s],
            self.optimizer,
            self.stream,
            experience,
            self.device,
            ctx.step,
            total_steps=ctx.total_steps,
            epoch=ctx.epoch,
            seed=self.seeds[s],
        )

    def _boundary(self, hook: str, ctx: Context) -> None:
        """Run ``hook`` of every strategy: stacked, or per trial with the state moved."""
        for k, stacked in enumerate(self.strategies):
            if not _overrides(stacked, hook):
                continue
            if stacked.vectorize == "stacked":
                getattr(stacked, hook)(ctx)
                continue
            state = stacked.state_dict()
            for s, member in enumerate(self.members):
                strategy = member[k]
                strategy.load_state_dict(unstack_state(state, s))
                getattr(strategy, hook)(self._member_context(s, ctx.experience, ctx))
            stacked.load_state_dict(
                stack_states([m[k].state_dict() for m in self.members], stacked.name)
            )
        for model in self.models:  # hooks on a trial's model leave no gradient behind
            for p in model.parameters():
                p.grad = None

    # ------------------------------------------------------------ training
    def train_experience(self, i: int) -> dict[str, np.ndarray]:
        """Train every trial on experience ``i``; return each loss term's mean, ``(S,)``."""
        exp = self.experiences[i]
        if self.training.reset_optimizer:
            self.optimizer = self._make_optimizer()
        ctx = self._context(exp)
        ctx.total_steps = self.training.epochs * -(-exp.n_train // self.training.batch_size)
        self._ctx = ctx  # for the step an error names
        self._boundary("on_experience_start", ctx)
        hooks = {h: [s for s in self.strategies if _overrides(s, h)] for h in STEP_HOOKS}
        history: dict[str, list[Tensor]] = {}
        self.stacked.train()
        bs, n = self.training.batch_size, exp.n_train
        for epoch in range(self.training.epochs):
            ctx.epoch = epoch
            self._boundary("on_epoch_start", ctx)
            perms = torch.stack(
                [torch.randperm(n, device=self.device, generator=g) for g in self.generators]
            )  # (S, n): each trial's own batch order
            xs, ys = exp.x_train[perms], exp.y_train[perms]
            for start in range(0, n, bs):
                x, y = xs[:, start : start + bs], ys[:, start : start + bs]
                terms = self._step(ctx, hooks, x, y, exp.task_id, perms[:, start : start + bs])
                for k, v in terms.items():
                    history.setdefault(k, []).append(v)
            self._boundary("on_epoch_end", ctx)
        self._boundary("on_experience_end", ctx)
        self.step = ctx.step
        self._ctx = None
        stacked = {k: torch.stack(v) for k, v in history.items()}  # (steps, S) each
        out = {k: v.double().mean(0).cpu().numpy() for k, v in stacked.items()}
        where: dict[int, str] = {}  # trial -> the first step whose task loss is non-finite
        if "ce" in stacked:
            bad = ~torch.isfinite(stacked["ce"])
            firsts = bad.to(torch.int8).argmax(0).tolist()  # each trial's first True
            per_epoch = -(-n // bs)
            start = ctx.step - len(stacked["ce"])
            for t, (j, any_bad) in enumerate(zip(firsts, bad.any(0).tolist(), strict=True)):
                if any_bad:
                    where[t] = f"at step {start + j} (epoch {j // per_epoch})"
        self._check_finite(i, out.get("ce"), where)
        self.samples_seen += self.training.epochs * n
        return out

    def _check_finite(
        self,
        i: int,
        ce: np.ndarray | None,
        where: dict[int, str] | None = None,
    ) -> None:
        """Fail the trials whose task loss or weights became NaN/inf; the others go on.

        ``where``: per trial, the step at which its task loss first became non-finite.

        A failed trial's slice of the weights and of the strategies' state is zeroed,
        so the stacked penalty (a sum over the trials) is finite again for the rest.
        """
        finite = (
            torch.stack(
                [p.detach().reshape(self.size, -1).isfinite().all(1) for p in self.params.values()]
            )
            .all(0)
            .cpu()
            .numpy()
        )
        for s in range(self.size):
            if s in self.failed:
                continue
            at = None
            if ce is not None and not np.isfinite(ce[s]):
                what, at = "the task loss 'ce'", (where or {}).get(s)
            elif not finite[s]:
                what = "the weights"
            else:
                continue
            place = f"{at} of experience {i}" if at else f"in experience {i}"
            self.failed[s] = (
                f"{what} became NaN/inf {place} (trial with seed {self.seeds[s]}, "
                f"trained vectorised with seeds {self.seeds}; the others go on)"
            )
            self._retire(s)

    @torch.no_grad()
    def _retire(self, s: int) -> None:
        """Zero trial ``s``'s weights and strategy state (see :meth:`_check_finite`)."""
        for p in self.params.values():
            p[s].zero_()
        for strategy in self.strategies:
            state = strategy.state_dict()
            strategy.load_state_dict(zero_slice(state, s))

    def _step(
        self,
        ctx: Context,
        hooks: dict[str, list[Strategy]],
        x: Tensor,
        y: Tensor,
        task_id: int,
        index: Tensor,
    ) -> dict[str, Tensor]:
        """One optimizer step of every trial: per-trial task gradients, then the terms'."""
        for p in self._trainable.values():
            p.grad = None
        if self._per_trial and hooks["loss_terms"]:
            terms = self._backward_through_outputs(ctx, hooks, x, y, task_id, index)
        else:
            terms = self._backward_vmapped(ctx, hooks, x, y, task_id, index)
        for s in hooks["on_after_backward"]:
            s.on_after_backward(ctx)
        if ctx.protected:
            raise ValueError(
                f"vectorised trials: a strategy protected {sorted(ctx.protected)[0]!r} "
                "(ctx.protect), which the vectorised step does not honour; mark the strategy "
                "vectorize = '<why not>'"
            )
        self._optimizer_step()
        for s in hooks["on_after_step"]:
            s.on_after_step(ctx)
        ctx.step += 1
        return terms

    def _backward_through_outputs(
        self,
        ctx: Context,
        hooks: dict[str, list[Strategy]],
        x: Tensor,
        y: Tensor,
        task_id: int,
        index: Tensor,
    ) -> dict[str, Tensor]:
        """Every gradient by autograd through one vmapped forward pass (``per_trial`` terms).

        A ``per_trial`` strategy's loss terms need the logits' or features' gradient:
        each trial's own strategy computes them on its slice of the live stacked
        outputs, and one backward pass of the sum gives every trial its gradient.
        """
        with self.fabric.autocast():
            features, logits = self.outputs(x, task_id, shared_input=False)
            each = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            ce = each.view(self.size, -1).mean(1)  # (S,): each trial's batch mean
        terms: dict[str, Tensor] = {"ce": ce.detach()}
        loss: Tensor = ce.sum()
        live = Batch(x, y, task_id, features, logits, index)
        for k, st in enumerate(self.strategies):
            if not any(st is h for h in hooks["loss_terms"]):
                continue
            if k not in self._per_trial:  # stacked: one call on the stacked batch
                with self.fabric.autocast():
                    values = st.loss_terms(ctx, live)
                self._record_stacked(terms, st, values)
                for value in values.values():
                    loss = loss + value
                continue
            values: dict[str, list[Tensor]] = {}
            for s, member in enumerate(self.members):
                own = Batch(x[s], y[s], task_id, features[s], logits[s], index[s])
                with self.fabric.autocast():
                    got = member[k].loss_terms(self._member_context(s, ctx.experience, ctx), own)
                for name, value in got.items():
                    values.setdefault(name, []).append(value)
            for name, parts in values.items():
                if len(parts) != self.size:
                    raise ValueError(
                        f"loss term {name!r} of strategy {st.name!r} is returned by some trials "
                        "and not by others"
                    )
                if name in terms:
                    raise ValueError(f"loss term {name!r} of strategy {st.name!r} is already used")
                stacked = torch.stack(parts)
                terms[name] = stacked.detach()  # each trial's own value
                loss = loss + stacked.sum()
        loss.backward()
        return terms

    def _record_stacked(
        self, terms: dict[str, Tensor], st: Strategy, values: dict[str, Tensor]
    ) -> None:
        """Record a stacked strategy's terms, each logged as the trials' mean.

        A stacked term is the sum of the trials' values, so its logged value is the
        group's mean (the run's ``lifelong.vectorized`` tag says so).
        """
        for name, value in values.items():
            if name in terms:
                raise ValueError(f"loss term {name!r} of strategy {st.name!r} is already used")
            terms[name] = (value.detach() / self.size).expand(self.size)

    def _backward_vmapped(
        self,
        ctx: Context,
        hooks: dict[str, list[Strategy]],
        x: Tensor,
        y: Tensor,
        task_id: int,
        index: Tensor,
    ) -> dict[str, Tensor]:
        """Each trial's task gradient by ``vmap(grad)``, plus the stacked terms' by autograd."""
        # vmap of grad: each trial's task-loss gradient by torch.func's batching rules
        # (on a 2-core CPU about 1.5x faster than autograd through a vmapped forward).
        with self.fabric.autocast():  # per step: autocast caches its casts of the weights
            grads, (ce, (features, logits)) = self._task_grad(
                self._trainable_data, self._frozen, self._both_buffers, x, y, task_id
            )
        terms: dict[str, Tensor] = {"ce": ce}
        penalty: Tensor | None = None
        batch = Batch(x, y, task_id, features, logits, index)  # leading trial dimension
        for s in hooks["loss_terms"]:
            with self.fabric.autocast():
                values = s.loss_terms(ctx, batch)
            self._record_stacked(terms, s, values)
            for value in values.values():
                penalty = value if penalty is None else penalty + value
        if penalty is not None and penalty.requires_grad:
            penalty.backward()
        for name, p in self._trainable.items():
            g = grads[name]
            p.grad = g if p.grad is None else p.grad.add_(g)
        return terms

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer over the stacked trainable tensors (learning rate 1 when per trial)."""
        training = self.training
        if self._per_trial_lr:
            training = training.model_copy(update={"lr": 1.0})
        return training.make_optimizer([p for p in self.params.values() if p.requires_grad])

    def _optimizer_step(self) -> None:
        """Step every trial; with per-trial rates, scale each trial's displacement by its own.

        The optimizer stepped with rate 1 moved ``theta`` by ``-u``, ``u`` independent
        of the rate for SGD (momentum, weight decay) and Adam; ``theta_before +
        lr_s * (theta - theta_before)`` is then trial ``s``'s own step, to within twice
        a float's rounding of ``theta``.
        """
        if not self._per_trial_lr:
            if not plain_sgd_step(self.optimizer):
                self.optimizer.step()
            return
        params = [p for p in self.params.values() if p.requires_grad]
        with torch.no_grad():
            before = [p.detach().clone() for p in params]
            if not plain_sgd_step(self.optimizer):
                self.optimizer.step()
            moved = torch._foreach_sub([p.detach() for p in params], before)
            torch._foreach_mul_(moved, self._rates)
            torch._foreach_add_(before, moved)
            torch._foreach_copy_([p.detach() for p in params], before)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, columns: Sequence[int] | None = None) -> np.ndarray:
        """Every trial's accuracy on each experience's test set: ``(S, T)``, nan elsewhere."""
        n = len(self.experiences)
        columns = list(range(n) if columns is None else columns)
        self.stacked.eval()
        bs = self.training.eval_batch_size
        accs = []
        with self.fabric.autocast():
            for j in columns:
                exp = self.experiences[j]
                correct = torch.zeros(self.size, dtype=torch.long, device=self.device)
                for start in range(0, exp.n_test, bs):
                    x = exp.x_test[start : start + bs]
                    y = exp.y_test[start : start + bs]
                    _, logits = self.outputs(x, exp.task_id, shared_input=True)
                    correct += (logits.argmax(-1) == y).sum(1)
                accs.append(correct.double() / exp.n_test)
        self.stacked.train()
        rows = np.full((self.size, n), np.nan)
        if accs:
            rows[:, columns] = torch.stack(accs, dim=1).cpu().numpy()
        return rows

    def evaluate_untrained(self) -> np.ndarray:
        """Every trial's untrained row (forward transfer's baseline), ``(S, T)``."""
        if self.training.eval_on == "all":
            self.untrained = self.evaluate()
        return self.untrained

    def run_experience(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Train experience ``i`` and evaluate; return row ``i`` of every trial's R, losses.

        An exception a strategy raised gains the note saying which strategy, hook,
        experience, step and line (:func:`lifelong.platform.hook_errors.annotate`).
        """
        try:
            return self._run_experience(i)
        except Exception as error:
            annotate(error, i, self._ctx.step if self._ctx is not None else self.step)
            self._ctx = None
            raise

    def _run_experience(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        losses = self.train_experience(i)
        n = len(self.experiences)
        if self.training.evaluated_row(i, n):
            self.R[:, i] = self.evaluate(self.training.evaluated_columns(i, n))
        self.next_experience = i + 1
        self._sync_members()
        return self.R[:, i], losses

    def fit(self) -> np.ndarray:
        """Train every trial through the whole stream; return ``R``, ``(S, T, T)``."""
        if self.next_experience == 0 and np.isnan(self.untrained).all():
            self.evaluate_untrained()
        for i in range(self.next_experience, len(self.experiences)):
            self.run_experience(i)
        return self.R

    # ------------------------------------------------------------ per trial
    def _sync_members(self) -> None:
        """Give every trial's strategies their slice of the stacked state (metrics, checkpoints)."""
        for k, stacked in enumerate(self.strategies):
            state = stacked.state_dict()
            for s, member in enumerate(self.members):
                member[k].load_state_dict(unstack_state(state, s))

    def strategy_metrics(self, s: int) -> dict[str, float]:
        """Trial ``s``'s strategy diagnostics, keyed ``<strategy>/<key>``."""
        return {f"{m.name}/{k}": float(v) for m in self.members[s] for k, v in m.metrics().items()}

    def member_state(self, s: int) -> dict[str, Any]:
        """Trial ``s``'s state in :meth:`Learner.state_dict`'s format (tensors copied).

        A :class:`Learner` built for that trial and given this state continues exactly
        where the vectorised trial is (a resumed trial goes on alone). Between
        experiences, where :meth:`run_experience` has given each trial its state.
        """
        opt = self.optimizer.state_dict()
        shapes = [tuple(p.shape) for p in self.params.values() if p.requires_grad]
        state: dict[int, dict[str, Any]] = {}
        for k, entry in opt["state"].items():
            state[k] = {
                name: v[s].clone()
                if isinstance(v, Tensor) and tuple(v.shape) == shapes[k]
                else (v.clone() if isinstance(v, Tensor) else v)
                for name, v in entry.items()
            }
        rows = ~np.isnan(self.R[s]).all(axis=1)
        groups = [{**g, "lr": self.lrs[s]} for g in opt["param_groups"]]  # the trial's own rate
        return {
            "model": self.model_state(s),
            "optimizer": {"state": state, "param_groups": groups},
            "strategies": {m.name: m.state_dict() for m in self.members[s]},
            "generator": self.generators[s].get_state(),
            "torch_rng": torch.get_rng_state(),
            "R_index": torch.from_numpy(np.flatnonzero(rows)),
            "R_rows": torch.from_numpy(self.R[s][rows].copy()),
            "untrained": torch.from_numpy(self.untrained[s].copy()),
            "fresh": torch.from_numpy(np.full(len(self.experiences), np.nan)),
            "retention_base": {},
            "retention": {},
            "step": self.step,
            "samples_seen": self.samples_seen,
            "next_experience": self.next_experience,
        }

    def model_state(self, s: int) -> dict[str, Tensor]:
        """Trial ``s``'s model weights, as its own :class:`Learner` would save them."""
        return {k: v.detach().clone() for k, v in self.models[s].state_dict().items()}
