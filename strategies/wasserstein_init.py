"""Wasserstein regularisation towards the initial weight distribution.

Lewandowski, Kumar, Schuurmans, Gyorgy & Machado (2024), "Learning Continually
by Spectral Regularization", first version, arXiv:2406.06811v1 (the regulariser
first appears in Lewandowski, Tanaka, Schuurmans & Machado (2023), "Curvature
Explains Loss of Plasticity", arXiv:2312.00246). L2-init (Kumar et al. 2023)
pulls every weight back to its own initial value; this regulariser only asks
that the *distribution* of each parameter tensor stays close to its initial
distribution, which is less restrictive: any permutation of a tensor's entries
costs nothing. For one-dimensional empirical distributions with equally many
atoms, the optimal transport plan matches order statistics, so the squared
Wasserstein-2 distance is a sum over sorted entries:

    L_W = lambda * sum_l sum_i (sort(theta_l)_i - sort(theta_l^0)_i)^2,

summed over every trainable parameter tensor ``theta_l`` (weights and biases
separately), with ``theta^0`` snapshotted at the start of the first experience
and sorted once. As in the paper's formula, the distance is not divided by the
number of entries (that is ``W_2^2`` times ``n_l``), so a tensor weighs in with
its size, as in L2-init. The term applies from the first experience on.
The default ``lambda = 1e-3`` is a middle value of the range used for L2-init
(Kumar et al. sweep 1e-2 .. 1e-5); the paper's own value could not be checked.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from ._registry import register_strategy
from .base import Batch, Context, Strategy, StrategyConfig


class WassersteinInitConfig(StrategyConfig):
    """Hyperparameters of the Wasserstein-to-initialisation regulariser."""

    lambda_: float = Field(
        1e-3, ge=0, alias="lambda", description="Regularisation strength lambda (YAML: `lambda`)."
    )


@register_strategy("wasserstein_init")
class WassersteinInit(Strategy):
    """Keep each parameter tensor's empirical distribution close to its initial one."""

    formulas = ("distance",)
    Config = WassersteinInitConfig
    config: WassersteinInitConfig
    vectorize = "stacked"  # each trial's tensors sorted apart (ctx.trials)

    def __init__(self, config: WassersteinInitConfig | None = None) -> None:
        super().__init__(config)
        self.sorted_init: dict[str, Tensor] | None = None  # name -> sorted flattened theta^0

    def on_experience_start(self, ctx: Context) -> None:
        """Snapshot and sort the initial parameters, once (at the first experience)."""
        if self.sorted_init is None:
            self.sorted_init = {
                n: _sorted(p.detach(), ctx.trials)
                for n, p in ctx.model.named_parameters()
                if p.requires_grad
            }

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Return ``{"wasserstein_init": lambda * sum_l ||sort(theta_l) - sort(theta_l^0)||^2}``."""
        if self.sorted_init is None:
            return {}
        return {"wasserstein_init": self.config.lambda_ * self.distance(ctx.model, ctx.trials)}

    def distance(self, model: nn.Module, trials: int = 0) -> Tensor:
        """Return ``sum_l sum_i (sort(theta_l)_i - sort(theta_l^0)_i)^2`` (without lambda).

        ``trials``: S when the parameters are S trials' stacked (``ctx.trials``): each
        trial's tensor is sorted on its own, and the value is the trials' sum.
        """
        if self.sorted_init is None:
            raise RuntimeError("wasserstein_init: no initial snapshot yet")
        params = dict(model.named_parameters())
        names = list(self.sorted_init)
        if not names:
            return torch.zeros(())
        device = params[names[0]].device
        if self.sorted_init[names[0]].device != device:  # e.g. restored on the host
            self.sorted_init = {n: t.to(device) for n, t in self.sorted_init.items()}
        current = [_sorted(params[n], trials) for n in names]
        diff = torch._foreach_sub(current, [self.sorted_init[n] for n in names])
        # one dot product per tensor: an elementwise gradient (see l2.py)
        return torch.stack([torch.dot(d.reshape(-1), d.reshape(-1)) for d in diff]).sum()

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"sorted_init": {param name: sorted flat theta^0}}`` (empty before it)."""
        return {"sorted_init": dict(self.sorted_init) if self.sorted_init is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the sorted initial parameters saved by :meth:`state_dict`."""
        if set(state) != {"sorted_init"}:
            raise ValueError(
                f"wasserstein_init: expected keys ['sorted_init'], got {sorted(state)}"
            )
        snap = state["sorted_init"]
        self.sorted_init = {n: t.detach().clone() for n, t in snap.items()} if snap else None


def _sorted(p: Tensor, trials: int) -> Tensor:
    """``p`` flattened and sorted; per trial (a row each) when ``trials`` are stacked."""
    return (p.flatten(1) if trials else p.flatten()).sort(-1).values
