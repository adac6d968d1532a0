"""A fused update for plain SGD, the learner's most common optimizer.

``torch.optim.SGD.step`` spends most of a small model's step in Python: it
rebuilds the parameter lists, resolves the implementation and enters profiler
and grad-mode contexts on every call (about 30 us on this project's 2-core CPU
for a 3-layer MLP, against 10 us for the arithmetic). Without momentum, weight
decay, ``maximize`` or step hooks, SGD is ``p <- p - lr * g`` and nothing else:
no optimizer state is read or written. :func:`plain_sgd_step` does exactly that
with one ``torch._foreach_add_`` per parameter group, which computes the same
``add_(g, alpha=-lr)`` as SGD's own loop, so results are bit-identical.
Anything else falls back to ``optimizer.step()``.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks


def is_plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` is ``p -= lr * p.grad`` and has no side effects.

    True for a ``torch.optim.SGD`` (exactly; not a subclass) with no momentum, no
    weight decay, no ``maximize``, not ``differentiable``, float learning rates, no
    step hooks (its own or global), and no sparse gradients.
    """
    if type(optimizer) is not torch.optim.SGD:
        return False
    if (
        optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or _global_optimizer_pre_hooks
        or _global_optimizer_post_hooks
    ):
        return False
    for group in optimizer.param_groups:
        if (
            group["momentum"] != 0
            or group["weight_decay"] != 0
            or group["maximize"]
            or group.get("differentiable", False)
            or not isinstance(group["lr"], float | int)
        ):
            return False
    return True


@torch.no_grad()
def plain_sgd_step(optimizer: torch.optim.Optimizer) -> bool:
    """Apply ``p -= lr * p.grad`` to every parameter with a gradient, if SGD is plain.

    Returns False (and changes nothing) when :func:`is_plain_sgd` is False or a
    gradient is sparse; the caller then uses ``optimizer.step()``.
    """
    if not is_plain_sgd(optimizer):
        return False
    updates = []
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if any(g.is_sparse for g in grads):
            return False
        updates.append((params, grads, group["lr"]))
    for params, grads, lr in updates:
        if params:
            torch._foreach_add_(params, grads, alpha=-lr)
    return True
