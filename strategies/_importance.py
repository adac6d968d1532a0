"""Per-parameter importance estimators of a model on a set of examples, by parameter name.

- ``empirical_fisher``: the per-sample empirical Fisher of a classifier (the mean
  squared gradient of each example's cross-entropy), exact and fast for linear
  layers (:func:`linear_fisher`, one backward per chunk), by ``vmap`` elsewhere;
- ``batch_fisher``: the squared batch gradients of a language model's causal-LM
  loss;
- ``output_sensitivity``: MAS's ``mean |d ||f(x)||^2 / d theta|``.

EWC (``ewc.py``) weighs its penalty with a Fisher, MAS (``mas.py``) with the
output sensitivity; any strategy that needs either may import them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


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


def _squared_norm(logits: Tensor) -> Tensor:
    """``||logits||_2^2`` per row, ignoring masked (``-inf``) entries."""
    finite = torch.where(torch.isfinite(logits), logits, torch.zeros_like(logits))
    return finite.square().sum(-1)


def output_sensitivity(
    model: nn.Module,
    x: Tensor,
    *,
    task_id: int = 0,
    batch_size: int = 32,
    per_sample: bool = False,
) -> dict[str, Tensor]:
    """Return the MAS importance of ``model``'s trainable parameters on inputs ``x``, by name.

    ``per_sample=False`` (Avalanche): the mean over consecutive batches of
    ``|d mean_batch ||f(x)||^2 / d theta|``. ``per_sample=True`` (paper): the mean
    over samples of ``|d ||f(x_n)||^2 / d theta|``, from ``vmap(grad(...))``.
    The model runs in its current mode; its ``.grad`` fields are not touched.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    importance = {n: torch.zeros_like(p) for n, p in params.items()}
    acc = list(importance.values())
    chunks = range(0, x.shape[0], batch_size)
    if per_sample:
        detached = {n: p.detach() for n, p in params.items()}
        buffers = dict(model.named_buffers())

        def sample_norm(p: dict[str, Tensor], xi: Tensor) -> Tensor:
            out = functional_call(model, (p, buffers), (xi.unsqueeze(0),), {"task_id": task_id})
            return _squared_norm(out).sum()

        per_sample_grads = vmap(grad(sample_norm), in_dims=(None, 0))
        for start in chunks:
            grads = per_sample_grads(detached, x[start : start + batch_size])
            torch._foreach_add_(acc, [grads[n].abs().sum(0) for n in importance])
        denominator = max(x.shape[0], 1)
    else:
        names = list(params)
        for start in chunks:
            out = model(x[start : start + batch_size], task_id)
            grads = torch.autograd.grad(
                _squared_norm(out).mean(), [params[n] for n in names], allow_unused=True
            )
            used = [(a, g) for a, g in zip(acc, grads, strict=True) if g is not None]
            torch._foreach_add_([a for a, _ in used], [g.abs() for _, g in used])
        denominator = max(len(chunks), 1)
    torch._foreach_div_(acc, float(denominator))
    return importance
