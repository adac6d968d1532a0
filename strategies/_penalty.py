"""The importance-weighted quadratic penalty shared by EWC, SI and MAS."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def on_device(tensors: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """``tensors`` moved to ``device`` (the same dict when they are already there)."""
    if not tensors or next(iter(tensors.values())).device == device:
        return tensors
    return {n: t.to(device) for n, t in tensors.items()}


def weighted_quadratic(
    model: nn.Module, anchor: dict[str, Tensor], importance: dict[str, Tensor]
) -> Tensor:
    """Return ``sum_i Omega_i (theta_i - theta*_i)^2`` over the parameters in ``importance``.

    ``anchor`` (theta*) and ``importance`` (Omega) map parameter names to tensors on
    the model's device; one fused ``torch._foreach`` pass, no host sync.
    """
    params = dict(model.named_parameters())
    names = list(importance)
    diff = torch._foreach_sub([params[n] for n in names], [anchor[n] for n in names])
    squared = torch._foreach_mul(diff, diff)
    weighted = torch._foreach_mul(squared, [importance[n] for n in names])
    return torch.stack([w.sum() for w in weighted]).sum()


class FlatQuadratic:
    """``sum_k sum_i F_k,i (theta_i - theta*_k,i)^2`` folded into one flat quadratic.

    A sum of quadratics in ``theta`` is one quadratic: with ``A = sum_k F_k`` and
    ``m = sum_k F_k theta*_k / A`` (the importance-weighted mean anchor),

        sum_k F_k (theta - theta*_k)^2 = A (theta - m)^2 + c,
        c = sum_k F_k (theta*_k - m)^2  (a constant, >= 0).

    ``A``, ``m`` and ``c`` are computed once (in float64) when the pairs change;
    each step then costs one concatenation of the parameters and a weighted dot
    product, whatever the number of pairs: three autograd nodes instead of a few
    per parameter tensor and pair. With a single pair ``m`` is the anchor itself
    and ``c`` is 0, so the value at the anchor is exactly 0.
    """

    def __init__(self, importances: list[dict[str, Tensor]], anchors: list[dict[str, Tensor]]):
        names = list(dict.fromkeys(n for imp in importances for n in imp))
        self.names = names

        def flat(d: dict[str, Tensor], like: dict[str, Tensor]) -> Tensor:
            return torch.cat(
                [(d[n] if n in d else torch.zeros_like(like[n])).reshape(-1) for n in names]
            )

        ref = {n: t for imp in importances for n, t in imp.items()}
        fs = [flat(f, ref) for f in importances]
        ts = [flat(a, ref) for a in anchors]
        if len(fs) == 1:
            self.weight, self.anchor = fs[0], ts[0]
            self.const = torch.zeros((), dtype=fs[0].dtype, device=fs[0].device)
        else:
            f64 = [f.double() for f in fs]
            t64 = [t.double() for t in ts]
            a = torch.stack(f64).sum(0)
            m = torch.stack([f * t for f, t in zip(f64, t64, strict=True)]).sum(0)
            m = torch.where(a > 0, m / a.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
            c = sum((f * (t - m).square()).sum() for f, t in zip(f64, t64, strict=True))
            dtype = fs[0].dtype
            self.weight, self.anchor = a.to(dtype), m.to(dtype)
            self.const = torch.as_tensor(c).to(dtype)
        self.device = self.weight.device

    def __call__(self, model: nn.Module) -> Tensor:
        """Return the penalty for ``model``'s current parameters (differentiable)."""
        params = dict(model.named_parameters())
        theta = torch.cat([params[n].reshape(-1) for n in self.names])
        d = theta - self.anchor
        return torch.dot(self.weight * d, d) + self.const
