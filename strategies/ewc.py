"""Elastic Weight Consolidation (EWC) and online EWC.

Kirkpatrick, Pascanu, Rabinowitz, Veness, Desjardins, Rusu, Milan, Quan,
Ramalho, Grabska-Barwinska, Hassabis, Clopath, Kumaran & Hadsell (2017),
"Overcoming catastrophic forgetting in neural networks", arXiv:1612.00796.
After experience k, each weight is anchored to its value ``theta*_k`` with a
stiffness given by the diagonal Fisher information ``F_k``:

    L_ewc(theta) = (lambda / 2) * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2.

``F`` here is the diagonal *empirical* Fisher: the mean over the experience's
training samples of the squared gradient of the per-sample cross-entropy at
the true label,

    F_i = 1/N sum_n (d/dtheta_i CE(f_theta(x_n), y_n))^2,

computed at the end of the experience with ``torch.func`` (``vmap`` of
``grad`` over chunks of samples), the model in eval mode.

``scope="backbone"`` penalises the feature extractor's parameters only (not the
classifier head): Smith et al. (2023), "A Closer Look at Rehearsal-Free
Continual Learning", arXiv:2304.09136, whose reference code runs online EWC this
way on a pre-trained ViT (``mode="online"``, ``gamma=1``), with
``training.task_loss: bce_seen``. Two differences from that code remain: its
Fisher squares each mini-batch's gradient of the BCE over the experience's
classes, where this one is the per-sample empirical Fisher of the
cross-entropy; and it drops the 1/2 (a factor of 2 in lambda). Their first task
is anchored to the pre-trained weights with a zero Fisher, which adds nothing,
so EWC has no ``pretrained`` anchor here (``l2`` has).

On a text stream (a language model) the Fisher is a batch-gradient one
(:func:`batch_fisher`): the square of each batch's gradient of the mean
causal-LM loss, batches of ``fisher_batch_size`` examples (8 by default there).

``mode="separate"`` keeps one ``(F_k, theta*_k)`` pair per past experience.
``mode="online"`` is online EWC from Schwarz, Luketina, Czarnecki,
Grabska-Barwinska, Teh, Pascanu & Hadsell (2018), "Progress & Compress: A
scalable framework for continual learning", arXiv:1805.06370: a single pair
with ``F <- gamma * F + F_new`` and ``theta* <- theta`` after each experience.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from ._penalty import FlatQuadratic, Scope, in_scope, on_device
from ._registry import register_strategy
from .base import Batch, Context, Strategy, StrategyConfig


class EWCConfig(StrategyConfig):
    """Hyperparameters of EWC and online EWC."""

    lambda_: float = Field(
        10.0, ge=0, alias="lambda", description="Penalty weight lambda (YAML key: `lambda`)."
    )
    mode: Literal["separate", "online"] = Field(
        "separate",
        description="`separate`: one (Fisher, anchor) pair per past experience (Kirkpatrick "
        "et al. 2017); `online`: a single decayed pair (Schwarz et al. 2018).",
    )
    gamma: float = Field(
        1.0, ge=0, le=1, description="Online mode: decay of the old Fisher, F <- gamma*F + F_new."
    )
    fisher_batch_size: int = Field(
        256,
        ge=1,
        description="Samples per Fisher chunk (memory bound); on text, each squared "
        "gradient's batch (8 there).",
    )
    scope: Scope = Field(
        "all",
        description="Penalised parameters: all trainable ones, or the backbone's only "
        "(`backbone`: not the head, as in Smith et al. 2023's reference code).",
    )
    fisher_max_samples: int | None = Field(
        None, ge=1, description="Estimate the Fisher on the first N training samples (all: None)."
    )


@register_strategy("ewc")
class EWC(Strategy):
    """Anchor each weight with a stiffness given by its diagonal empirical Fisher."""

    formulas = ("quadratic",)
    Config = EWCConfig
    config: EWCConfig

    def __init__(self, config: EWCConfig | None = None) -> None:
        super().__init__(config)
        # One entry per past experience (separate) or a single entry (online);
        # each maps parameter name -> tensor.
        self.fishers: list[dict[str, Tensor]] = []
        self.anchors: list[dict[str, Tensor]] = []
        # the pairs folded into one flat quadratic, keyed by the pairs it was built from
        self._quadratic: tuple[tuple[Any, ...], FlatQuadratic] | None = None

    def on_experience_end(self, ctx: Context) -> None:
        """Estimate this experience's Fisher and anchor the current weights."""
        exp = ctx.experience
        n = self.config.fisher_max_samples or exp.n_train
        fisher_of = batch_fisher if exp.y_train.ndim == 2 else empirical_fisher
        fisher = fisher_of(
            ctx.model,
            exp.x_train[:n],
            exp.y_train[:n],
            task_id=exp.task_id,
            batch_size=self.config.fisher_batch_size,
        )
        fisher = {name: f for name, f in fisher.items() if in_scope(name, self.config.scope)}
        anchor = {
            name: p.detach().clone() for name, p in ctx.model.named_parameters() if name in fisher
        }
        if self.config.mode == "online" and self.fishers:
            gamma = self.config.gamma
            old = self.fishers[0]
            fisher = {name: gamma * old[name].to(f.device) + f for name, f in fisher.items()}
            self.fishers, self.anchors = [fisher], [anchor]
        else:
            self.fishers.append(fisher)
            self.anchors.append(anchor)

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Return ``{"ewc": (lambda/2) * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2}``.

        Returns nothing until the first experience has been consolidated.
        """
        if not self.fishers:
            return {}
        return {"ewc": (self.config.lambda_ / 2) * self.quadratic(ctx.model)}

    def quadratic(self, model: nn.Module) -> Tensor:
        """Return ``sum_k sum_i F_k,i (theta_i - theta*_k,i)^2`` (without lambda/2).

        The pairs are folded into one quadratic (:class:`FlatQuadratic`), rebuilt
        only when the list of pairs changes: a step costs the same for any k.
        """
        device = next(model.parameters()).device
        self.fishers = [on_device(f, device) for f in self.fishers]  # e.g. restored on the host
        self.anchors = [on_device(a, device) for a in self.anchors]
        pairs = [(f, a) for f, a in zip(self.fishers, self.anchors, strict=True) if f]
        if not pairs:
            return torch.zeros((), device=device)
        key = (len(pairs), device, *(id(f) for f, _ in pairs), *(id(a) for _, a in pairs))
        if self._quadratic is None or self._quadratic[0] != key:
            fold = FlatQuadratic([f for f, _ in pairs], [a for _, a in pairs])
            self._quadratic = (key, fold)
        return self._quadratic[1](model)

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"fisher": [{name: F_k}], "anchor": [{name: theta*_k}]}``, one entry per k."""
        return {
            "fisher": [dict(f) for f in self.fishers],
            "anchor": [dict(a) for a in self.anchors],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the Fisher and anchor lists saved by :meth:`state_dict`."""
        if set(state) != {"fisher", "anchor"}:
            raise ValueError(f"ewc: expected state keys ['anchor', 'fisher'], got {sorted(state)}")
        if len(state["fisher"]) != len(state["anchor"]):
            raise ValueError("ewc: 'fisher' and 'anchor' lists differ in length")
        self.fishers = [{n: t.detach().clone() for n, t in f.items()} for f in state["fisher"]]
        self.anchors = [{n: t.detach().clone() for n, t in a.items()} for a in state["anchor"]]


def batch_fisher(
    model: nn.Module, x: Tensor, y: Tensor, *, task_id: int = 0, batch_size: int = 8
) -> dict[str, Tensor]:
    """The diagonal Fisher of a text stream from batch gradients, by parameter name.

    ``F_i = mean_b (d L_b / d theta_i)^2`` over consecutive batches ``b`` of
    ``batch_size`` examples, ``L_b`` the batch's mean causal-LM loss on response
    tokens. A per-sample Fisher would need one gradient of every parameter per
    example (a vmap over a 100M-parameter model); squaring batch gradients is what
    EWC implementations for large models do instead, and it is smaller than the
    per-sample Fisher by about the batch size where gradients are uncorrelated.
    The model runs in eval mode; its ``.grad`` fields are not touched.
    """
    from lifelong.platform.task_loss import lm_cross_entropy

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    batches = range(0, len(y), batch_size)
    try:
        for start in batches:
            chunk = slice(start, start + batch_size)
            loss = lm_cross_entropy(model(x[chunk], task_id=task_id), y[chunk])
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            used = [(f, g) for f, g in zip(fisher.values(), grads, strict=True) if g is not None]
            torch._foreach_add_([f for f, _ in used], [g.square() for _, g in used])
    finally:
        for m, training in modes:
            m.training = training
    return {n: f / max(len(batches), 1) for n, f in fisher.items()}


def empirical_fisher(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    task_id: int = 0,
    batch_size: int = 256,
    method: Literal["auto", "vmap"] = "auto",
) -> dict[str, Tensor]:
    """Return the diagonal empirical Fisher of ``model`` on ``(x, y)``, by parameter name.

    ``F_i = mean_n (d CE(model(x_n, task_id), y_n) / d theta_i)^2`` over the trainable
    parameters, from per-sample gradients (``vmap(grad(...))`` over chunks of
    ``batch_size`` samples). The model runs in eval mode (no dropout, batch-norm
    running statistics); its modes are restored afterwards.

    ``method="auto"`` first tries :func:`linear_fisher`, the same quantity in closed
    form when every trainable parameter belongs to an ``nn.Linear`` applied once
    to 2-D inputs (the MLPs): no per-sample gradient is materialised. Otherwise,
    or with ``method="vmap"``, per-sample gradients come from ``torch.func``.
    """
    modes = [(m, m.training) for m in model.modules()]
    if method == "auto":
        model.eval()
        try:
            fast = linear_fisher(model, x, y, task_id=task_id, batch_size=batch_size)
        finally:
            for m, training in modes:
                m.training = training
        if fast is not None:
            return fast
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def sample_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),), {"task_id": task_id})
        return F.cross_entropy(logits, yi.unsqueeze(0))

    per_sample_grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    model.eval()
    try:
        for start in range(0, len(y), batch_size):
            chunk = slice(start, start + batch_size)
            grads = per_sample_grads(params, x[chunk], y[chunk])
            torch._foreach_add_(list(fisher.values()), [grads[n].square().sum(0) for n in fisher])
    finally:
        for m, training in modes:
            m.training = training
    return {n: f / max(len(y), 1) for n, f in fisher.items()}


def linear_fisher(
    model: nn.Module, x: Tensor, y: Tensor, *, task_id: int = 0, batch_size: int = 256
) -> dict[str, Tensor] | None:
    """The diagonal empirical Fisher in closed form for models made of ``nn.Linear`` layers.

    For a linear layer ``z_n = W a_n + b`` the per-sample gradient is
    ``dW_n = delta_n a_n^T`` with ``delta_n = dCE_n/dz_n``, so
    ``sum_n dW_n^2 = (delta^2)^T (a^2)`` and ``sum_n db_n^2 = sum_n delta_n^2``:
    one forward and one backward of the summed loss per chunk, and a matrix
    product per layer. Exact when samples do not interact (eval mode) and each
    layer is applied once to ``(N, features)`` inputs; returns ``None`` (use
    :func:`empirical_fisher`'s ``vmap`` path) when the model is not of that kind.
    The model's ``.grad`` fields are left untouched.
    """
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    covered = {
        f"{n}.{k}" if n else k
        for n, m in linears
        for k, p in m.named_parameters(recurse=False)
        if p.requires_grad
    }
    if not trainable or covered != trainable:
        return None
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if n in trainable}
    calls: dict[str, list[tuple[Tensor, Tensor]]] = {}

    def recorder(name: str) -> Any:
        def hook(_: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            calls.setdefault(name, []).append((inputs[0].detach(), out))

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in linears]
    try:
        for start in range(0, len(y), batch_size):
            calls.clear()
            xc, yc = x[start : start + batch_size], y[start : start + batch_size]
            with torch.enable_grad():
                loss = F.cross_entropy(model(xc, task_id=task_id), yc, reduction="sum")
                if any(len(c) != 1 or c[0][0].dim() != 2 for c in calls.values()):
                    return None  # a layer applied twice, or to sequences: not per-sample
                names = [n for n, _ in linears if n in calls]
                outs = [calls[n][0][1] for n in names]
                deltas = torch.autograd.grad(loss, outs, allow_unused=True)
            with torch.no_grad():
                for n, delta in zip(names, deltas, strict=True):
                    if delta is None:
                        continue
                    a2, d2 = calls[n][0][0].square(), delta.square()
                    prefix = f"{n}." if n else ""
                    if prefix + "weight" in fisher:
                        fisher[prefix + "weight"].addmm_(d2.T, a2)
                    if prefix + "bias" in fisher:
                        fisher[prefix + "bias"].add_(d2.sum(0))
    finally:
        for h in handles:
            h.remove()
    return {n: f / max(len(y), 1) for n, f in fisher.items()}
