"""Sparse-topology helpers of dynamic sparse training (``dst.py``).

Which weights are masked, which entries a task may use, the Erdos-Renyi-Kernel
layer densities of Evci et al. (2020, RigL) with their rounding to entry counts,
and the deterministic top-k selection that prune and growth steps share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn


def masked_weight_names(model: nn.Module) -> list[str]:
    """Return the names of the weights DST masks: every ``nn.Linear`` and ``nn.Conv*`` weight."""
    return [
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.modules.conv._ConvNd)
    ]


def task_entries(model: nn.Module, name: str, classes: Sequence[int], n_classes: int) -> Tensor:
    """Return the entries of parameter ``name`` an experience with ``classes`` may use.

    The head's parameters with one row per class (``head.*``, first dimension
    ``n_classes``) are restricted to the rows of ``classes``; everything else is fully
    eligible. The result broadcasts to the parameter's shape.
    """
    param = dict(model.named_parameters())[name]
    if name.startswith("head.") and param.dim() > 0 and param.shape[0] == n_classes:
        rows = torch.zeros(n_classes, dtype=torch.bool, device=param.device)
        rows[list(classes)] = True
        return rows.view(-1, *([1] * (param.dim() - 1)))
    return torch.ones((1,) * param.dim(), dtype=torch.bool, device=param.device)


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    """Return Erdos-Renyi-Kernel densities ``d_l`` with overall density ``density``.

    ``d_l = eps * sum(shape_l) / prod(shape_l)``, ``eps`` such that the layers hold
    ``density * sum_l prod(shape_l)`` weights; while that puts the largest ``d_l`` above
    one, the layers with the largest ratio become dense and ``eps`` is recomputed.
    """
    if density >= 1:
        return {n: 1.0 for n in shapes}
    dense: set[str] = set()
    while True:
        rhs, divisor, raw = 0.0, 0.0, {}
        for n, shape in shapes.items():
            size = math.prod(shape)
            if size == 0:
                continue
            if n in dense:
                rhs -= size * (1 - density)
            else:
                rhs += size * density
                raw[n] = sum(shape) / size
                divisor += raw[n] * size
        eps = rhs / divisor
        top = max(raw.values())
        if top * eps <= 1:
            return {n: 1.0 if n in dense else eps * raw.get(n, 0.0) for n in shapes}
        dense |= {n for n, r in raw.items() if r == top}


def layer_counts(
    sizes: Mapping[str, int], densities: Mapping[str, float], density: float
) -> dict[str, int]:
    """Return per-layer entry counts near ``d_l * size_l`` summing to ``round(d * sum size_l)``.

    Largest-remainder rounding: floor every layer, then give one more entry to the layers
    with the largest fractional parts (never above a layer's size).
    """
    exact = {n: min(densities[n], 1.0) * sizes[n] for n in sizes}
    counts = {n: min(sizes[n], math.floor(v)) for n, v in exact.items()}
    missing = round(density * sum(sizes.values())) - sum(counts.values())
    order = sorted(sizes, key=lambda n: counts[n] - exact[n])  # largest fraction first
    for n in order:
        if missing <= 0:
            break
        if counts[n] < sizes[n]:
            counts[n] += 1
            missing -= 1
    return counts


def effective_shape(shape: torch.Size, size: int) -> tuple[int, ...]:
    """The shape ERK sees: the weight's, with the rows cut to the eligible ``size`` entries."""
    rest = math.prod(shape[1:])
    return (size // rest, *shape[1:])


def take_top(score: Tensor, tier: Tensor, k: int) -> Tensor:
    """Return a bool mask of ``k`` entries: highest ``tier`` first, then highest ``score``.

    Entries with a negative tier are never taken (the caller keeps ``k`` within the
    others). Stable sorts make ties deterministic (lowest flat index first).
    """
    order = torch.argsort(score.flatten(), descending=True, stable=True)
    order = order[torch.argsort(tier.flatten()[order], descending=True, stable=True)]
    out = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    out[order[:k]] = True
    return out.view(score.shape)
