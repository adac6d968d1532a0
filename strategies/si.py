"""Synaptic Intelligence (SI).

Zenke, Poole & Ganguli (2017), "Continual Learning Through Synaptic
Intelligence", ICML 2017, arXiv:1703.04200. Each weight's contribution to the
drop of the loss is integrated along the training trajectory of experience
``mu``,

    omega_i^mu = - sum_steps g_i(t) * (theta_i(t+1) - theta_i(t)),

with ``g`` the gradient the optimizer stepped with and ``theta(t+1) - theta(t)``
the update it actually applied. At the end of the experience it is normalised
by the squared total displacement ``Delta_i^mu = theta_i(end) - theta_i(start)``
and summed over experiences,

    Omega_i = clip( sum_mu omega_i^mu / ((Delta_i^mu)^2 + xi) ),

and later experiences are anchored to the weights ``theta*`` learned so far:

    L_si(theta) = (lambda / 2) * sum_i Omega_i (theta_i - theta*_i)^2.

Conventions follow Avalanche's ``SynapticIntelligencePlugin``
(``avalanche/training/plugins/synaptic_intelligence.py``: ``post_update``,
``update_ewc_data``, ``compute_ewc_loss``) so that the same hyperparameters mean
the same thing in both:

- ``lambda`` is Avalanche's ``si_lambda`` and the penalty carries its ``1/2``:
  the paper's strength ``c`` equals ``lambda / 2``;
- ``eps`` is the damping ``xi`` (Avalanche's default ``1e-7``; the paper's
  reference code uses 0.1 on permuted MNIST and 1e-3 on split CIFAR);
- ``Omega`` is clamped from above at ``clip_to`` = 0.001 (hard-coded in
  Avalanche; ``None`` disables it, as in the paper);
- deviation: ``Omega`` is also clamped at 0 from below by default
  (``nonnegative=True``, the ``relu`` of the paper's reference code,
  ganguli-lab/pathint ``PATH_INT_PROTOCOL``). Avalanche does not clamp it; with
  momentum, Adam or weight decay a step can move a weight *against* its
  gradient, ``omega`` turns negative, and ``omega / (Delta^2 + 1e-7)`` gives a
  large negative stiffness: a penalty unbounded below that makes training
  diverge. ``nonnegative=False`` reproduces Avalanche exactly; with plain SGD
  (``omega = lr * sum g^2 >= 0``) the two agree;
- ``g`` is the gradient of the *total* loss (task loss plus every strategy's
  terms, SI's own penalty included), read in ``on_after_backward``, as
  Avalanche reads ``param.grad``; the paper's reference code uses the gradient
  of the unregularised loss, which would need a second backward pass.

Note for comparisons: Avalanche 0.6.0's plugin snapshots weights with
``param.detach().cpu().flatten()``, which on a CPU model is a *view* of the live
parameter, so every recorded update and displacement is zero there and its SI
adds no penalty on CPU; it behaves as intended on CUDA, where ``.cpu()`` copies.

Each step stores ``(theta, g)`` in ``on_after_backward``, before the optimizer
runs, and ``on_after_step`` adds ``-g * (theta_now - theta)`` once it has
(after any ``ctx.protect`` restore), with ``torch._foreach`` ops on the device
and no host sync.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import AliasChoices, Field
from torch import Tensor, nn

from ._penalty import ParamCache, on_device, weighted_quadratic
from ._registry import register_strategy
from .base import Batch, Context, Strategy, StrategyConfig


class SIConfig(StrategyConfig):
    """Hyperparameters of Synaptic Intelligence."""

    lambda_: float = Field(
        1.0,
        ge=0,
        alias="lambda",
        validation_alias=AliasChoices("lambda", "si_lambda", "lambda_"),
        description="Penalty weight lambda, Avalanche's `si_lambda` (YAML key: `lambda`); "
        "the penalty is (lambda/2)*sum Omega (theta-theta*)^2, i.e. the paper's c = lambda/2.",
    )
    eps: float = Field(
        1e-7,
        gt=0,
        validation_alias=AliasChoices("eps", "xi"),
        description="Damping xi in omega / (Delta^2 + xi) (Avalanche default 1e-7; paper 0.1).",
    )
    clip_to: float | None = Field(
        0.001,
        gt=0,
        description="Upper clamp of the importance Omega (Avalanche's hard-coded 0.001; "
        "None: no clamp, as in the paper).",
    )
    nonnegative: bool = Field(
        True,
        description="Clamp Omega at 0 from below (the paper's reference code). False: "
        "Avalanche's behaviour, whose negative importances can make training diverge.",
    )


@register_strategy("si")
class SI(Strategy):
    """Anchor each weight with a stiffness given by its path-integral importance."""

    formulas = ("quadratic",)
    vectorize = "stacked"  # the path integral and penalty are elementwise
    Config = SIConfig
    config: SIConfig

    def __init__(self, config: SIConfig | None = None) -> None:
        super().__init__(config)
        self._lookup = ParamCache()  # parameter tensors by name, looked up once
        self.omega_sum: dict[str, Tensor] = {}  # sum_mu omega^mu / (Delta^mu^2 + xi), unclipped
        self.importance: dict[str, Tensor] = {}  # Omega: the clipped omega_sum
        self.anchor: dict[str, Tensor] = {}  # theta*: weights at the end of the last experience
        # per experience (reset at its start, never checkpointed: checkpoints fall between them)
        self.names: list[str] = []
        self.omega: list[Tensor] = []  # running path integral, one tensor per name
        self._start: list[Tensor] = []  # weights at the start of the experience
        self._theta: list[Tensor] = []  # weights before the current step
        self._grad: list[Tensor] = []  # gradient of the current step

    # ------------------------------------------------------------------ hooks
    def on_experience_start(self, ctx: Context) -> None:
        """Zero the path integral and remember the starting weights."""
        named = _trainable(ctx.model)
        self.names = list(named)
        params = list(named.values())
        self._start = [p.detach().clone() for p in params]
        self.omega = [torch.zeros_like(p) for p in params]
        self._theta = [torch.zeros_like(p) for p in params]
        self._grad = [torch.zeros_like(p) for p in params]

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Return ``{"si": (lambda/2) * sum_i Omega_i (theta_i - theta*_i)^2}``.

        Returns nothing before the first experience has been consolidated.
        """
        if not self.importance:
            return {}
        return {"si": (self.config.lambda_ / 2) * self.quadratic(ctx.model)}

    @torch.no_grad()
    def on_after_backward(self, ctx: Context) -> None:
        """Store this step's weights ``theta(t)`` and gradient ``g(t)``."""
        if not self.names:  # trained without on_experience_start
            self.on_experience_start(ctx)
        params = self._params(ctx.model)
        torch._foreach_copy_(self._theta, params)
        with_grad = [i for i, p in enumerate(params) if p.grad is not None]
        if len(with_grad) < len(params):
            for i, p in enumerate(params):
                if p.grad is None:
                    self._grad[i].zero_()
        if with_grad:
            torch._foreach_copy_(
                [self._grad[i] for i in with_grad],
                [params[i].grad for i in with_grad],  # type: ignore[misc]
            )

    @torch.no_grad()
    def on_after_step(self, ctx: Context) -> None:
        """``omega -= g(t) * (theta(t+1) - theta(t))``: the update the step applied."""
        step = torch._foreach_sub(self._params(ctx.model), self._theta)
        torch._foreach_mul_(step, self._grad)
        torch._foreach_sub_(self.omega, step)

    def on_experience_end(self, ctx: Context) -> None:
        """Fold omega into Omega and move the anchor to the weights learned."""
        if not self.names:
            return
        theta = [p.detach().clone() for p in self._params(ctx.model)]
        delta = torch._foreach_sub(theta, self._start)
        denominator = torch._foreach_mul(delta, delta)
        torch._foreach_add_(denominator, self.config.eps)
        contribution = torch._foreach_div(self.omega, denominator)
        if self.omega_sum:
            old = [self.omega_sum[n].to(theta[0].device) for n in self.names]
            contribution = torch._foreach_add(old, contribution)
        self.omega_sum = dict(zip(self.names, contribution, strict=True))
        self.anchor = dict(zip(self.names, theta, strict=True))
        self.importance = self._clip(self.omega_sum)

    # ------------------------------------------------------------ the penalty
    def quadratic(self, model: nn.Module) -> Tensor:
        """Return ``sum_i Omega_i (theta_i - theta*_i)^2`` (without lambda/2)."""
        device = next(model.parameters()).device
        self.anchor = on_device(self.anchor, device)  # e.g. restored on the host
        self.importance = on_device(self.importance, device)
        self.omega_sum = on_device(self.omega_sum, device)
        return weighted_quadratic(model, self.anchor, self.importance, self._lookup)

    # ------------------------------------------------------------ diagnostics
    def metrics(self) -> dict[str, float]:
        """Return the mean and max of Omega and the fraction of entries at ``clip_to``."""
        if not self.importance:
            return {}
        flat = torch.cat([t.flatten() for t in self.importance.values()])
        out = {"importance_mean": flat.mean(), "importance_max": flat.max()}
        if self.config.clip_to is not None:
            out["clipped_fraction"] = (flat >= self.config.clip_to).double().mean()
        return {k: float(v) for k, v in out.items()}

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Return ``{"omega_sum": {name: tensor}, "anchor": {name: theta*}}`` (empty at first)."""
        return {"omega_sum": dict(self.omega_sum), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the accumulated importance and the anchor saved by :meth:`state_dict`."""
        if set(state) != {"omega_sum", "anchor"}:
            raise ValueError(
                f"si: expected state keys ['anchor', 'omega_sum'], got {sorted(state)}"
            )
        if set(state["omega_sum"]) != set(state["anchor"]):
            raise ValueError("si: 'omega_sum' and 'anchor' name different parameters")
        self.omega_sum = {n: t.detach().clone() for n, t in state["omega_sum"].items()}
        self.anchor = {n: t.detach().clone() for n, t in state["anchor"].items()}
        self.importance = self._clip(self.omega_sum)

    # --------------------------------------------------------------- helpers
    def _params(self, model: nn.Module) -> list[Tensor]:
        return self._lookup(model, self.names)

    def _clip(self, omega_sum: dict[str, Tensor]) -> dict[str, Tensor]:
        lo = 0.0 if self.config.nonnegative else None
        hi = self.config.clip_to
        if lo is None and hi is None:
            return dict(omega_sum)
        return {n: t.clamp(min=lo, max=hi) for n, t in omega_sum.items()}


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    """The model's trainable parameters, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
