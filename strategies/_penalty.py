"""The importance-weighted quadratic penalty shared by EWC, SI and MAS.

``sum_i w_i (theta_i - a_i)^2`` over a model's parameter tensors is one
:class:`torch.autograd.Function` node (:func:`quadratic`): the forward pass is
three ``torch._foreach`` ops over all tensors, and the backward pass is one more
(``2 g w (theta - a)``, reusing the forward's ``w (theta - a)``). Built from
ordinary differentiable ops, the same penalty records a few autograd nodes per
parameter tensor and reads the parameters several more times. On this project's
2-core CPU, a 3-layer MLP's training step with the penalty went from about 840
to about 690 microseconds with the hand-written node (batch 32, measured in the
session that added it; see docs/performance.md). The result is differentiable once
(enough for training), like any ``loss_terms`` value.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

Scope = Literal["all", "backbone"]
"""Which trainable parameters a penalty covers: all, or the feature extractor's only."""


def in_scope(name: str, scope: Scope) -> bool:
    """Whether parameter ``name`` is penalised under ``scope``.

    ``backbone``: the model's body (``body.*``), not the classifier head, as in
    Smith et al. (2023)'s reference code, which regularises ``model.feat`` only.
    """
    return scope == "all" or name.startswith("body.")


def on_device(tensors: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """``tensors`` moved to ``device`` (the same dict when they are already there)."""
    if not tensors or next(iter(tensors.values())).device == device:
        return tensors
    return {n: t.to(device) for n, t in tensors.items()}


class _Quadratic(torch.autograd.Function):
    """``sum_i sum(w_i * (theta_i - a_i)^2)`` with an analytic backward pass."""

    @staticmethod
    def forward(ctx: Any, weights: list[Tensor], anchors: list[Tensor], *params: Tensor) -> Tensor:
        diff = torch._foreach_sub(params, anchors)
        weighted = torch._foreach_mul(diff, weights)
        ctx.weighted = weighted
        dots = [
            torch.dot(w.reshape(-1), d.reshape(-1)) for w, d in zip(weighted, diff, strict=True)
        ]
        return torch.stack(dots).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        grads = torch._foreach_mul(ctx.weighted, 2 * grad)
        ctx.weighted = None
        return (None, None, *grads)


def quadratic(
    params: Sequence[Tensor], weights: Sequence[Tensor], anchors: Sequence[Tensor]
) -> Tensor:
    """Return ``sum_i sum(w_i * (theta_i - a_i)^2)`` over aligned lists (differentiable).

    One autograd node whatever the number of tensors; no host sync.
    """
    if not params:
        raise ValueError("quadratic penalty over no parameters")
    return _Quadratic.apply(list(weights), list(anchors), *params)


class ParamCache:
    """The tensors of ``model.named_parameters()`` for a list of names, looked up once.

    ``named_parameters()`` walks every submodule; a per-step penalty asks for the
    same list each step. The lookup is redone when the model or the names change.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, tuple[str, ...]] | None = None
        self._params: list[Tensor] = []

    def __call__(self, model: nn.Module, names: Sequence[str]) -> list[Tensor]:
        """Return ``[params[n] for n in names]`` for ``model``."""
        names = tuple(names)
        key = self._key
        if key is None or key[0]() is not model or key[1] != names:
            params = dict(model.named_parameters())
            self._params = [params[n] for n in names]
            self._key = (weakref.ref(model), names)
        return self._params


def weighted_quadratic(
    model: nn.Module,
    anchor: dict[str, Tensor],
    importance: dict[str, Tensor],
    cache: ParamCache | None = None,
) -> Tensor:
    """Return ``sum_i Omega_i (theta_i - theta*_i)^2`` over the parameters in ``importance``.

    ``anchor`` (theta*) and ``importance`` (Omega) map parameter names to tensors on
    the model's device. ``cache`` keeps the parameter lookup between calls.
    """
    names = list(importance)
    params = (cache or ParamCache())(model, names)
    return quadratic(params, [importance[n] for n in names], [anchor[n] for n in names])


class FlatQuadratic:
    """``sum_k sum_i F_k,i (theta_i - theta*_k,i)^2`` folded into one quadratic.

    A sum of quadratics in ``theta`` is one quadratic: with ``A = sum_k F_k`` and
    ``m = sum_k F_k theta*_k / A`` (the importance-weighted mean anchor),

        sum_k F_k (theta - theta*_k)^2 = A (theta - m)^2 + c,
        c = sum_k F_k (theta*_k - m)^2  (a constant, >= 0).

    ``A``, ``m`` and ``c`` are computed once (in float64) when the pairs change;
    each step then costs one :func:`quadratic` node, whatever the number of
    pairs. With a single pair ``m`` is the anchor itself and ``c`` is 0, so the
    value at the anchor is exactly 0.
    """

    def __init__(self, importances: list[dict[str, Tensor]], anchors: list[dict[str, Tensor]]):
        names = list(dict.fromkeys(n for imp in importances for n in imp))
        self.names = names
        ref = {n: t for imp in importances for n, t in imp.items()}

        def full(d: dict[str, Tensor]) -> list[Tensor]:
            return [d[n] if n in d else torch.zeros_like(ref[n]) for n in names]

        fs = [full(f) for f in importances]
        ts = [full(a) for a in anchors]
        if len(fs) == 1:
            self.weights, self.anchors = fs[0], ts[0]
            self.const = torch.zeros((), dtype=fs[0][0].dtype, device=fs[0][0].device)
        else:
            self.weights, self.anchors = [], []
            const = torch.zeros((), dtype=torch.float64, device=fs[0][0].device)
            for i in range(len(names)):
                f64 = [f[i].double() for f in fs]
                t64 = [t[i].double() for t in ts]
                a = torch.stack(f64).sum(0)
                m = torch.stack([f * t for f, t in zip(f64, t64, strict=True)]).sum(0)
                m = torch.where(a > 0, m / a.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
                const = const + sum(
                    (f * (t - m).square()).sum() for f, t in zip(f64, t64, strict=True)
                )
                dtype = fs[0][i].dtype
                self.weights.append(a.to(dtype))
                self.anchors.append(m.to(dtype))
            self.const = const.to(fs[0][0].dtype)
        self.device = self.weights[0].device
        self._params = ParamCache()

    def __call__(self, model: nn.Module) -> Tensor:
        """Return the penalty for ``model``'s current parameters (differentiable)."""
        params = self._params(model, self.names)
        return quadratic(params, self.weights, self.anchors) + self.const
