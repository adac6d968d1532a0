"""Spectral regularisation: keep every layer's largest singular value near one.

Lewandowski, Bortkiewicz, Kumar, Gyorgy, Schuurmans, Ostaszewski & Machado
(2025), "Learning Continually by Spectral Regularization", ICLR 2025,
arXiv:2406.06811. At initialisation the singular values of each layer are
close to one, which keeps gradients diverse and the network trainable; the
regulariser sustains that property throughout continual training:

    L_spectral = lambda * R,   R = sum_l [(sigma_max(W_l)^k - 1)^2 + ||b_l||^(2k)],

over every ``nn.Linear`` and ``nn.Conv*`` layer, the classifier head included
("each layer"); the bias, seen as a one-column matrix whose only singular
value is ``||b||``, is pulled towards zero. Convolution kernels are reshaped
to ``(out, in * kh * kw)``, the usual cheap surrogate of the convolution's
operator norm (as in ``torch.nn.utils.parametrizations.spectral_norm``).

``sigma_max`` is estimated by power iteration with left/right vectors ``u, v``
that persist across steps: ``power_iterations`` (default one) iteration per
training step, ``v <- W^T u / ||W^T u||``, ``u <- W v / ||W v||``, then
``sigma = u^T W v`` with ``u, v`` detached, so the gradient flows to ``W`` only
(``d sigma / dW = u v^T``), as PyTorch's ``spectral_norm`` does. The vectors
start from a ``torch.Generator`` seeded with ``seed`` and, like
``spectral_norm``, get 15 warm-up iterations when created. Default
``lambda = 1e-4``: the value a public reimplementation attributes to the paper
(not checked against the paper's text here); the paper reports low sensitivity
to it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ._registry import register_strategy
from .base import Batch, Context, Strategy, StrategyConfig

WARM_UP_ITERATIONS = 15
"""Power iterations run once when a layer's vectors are created (as ``spectral_norm``)."""


class SpectralConfig(StrategyConfig):
    """Hyperparameters of spectral regularisation."""

    lambda_: float = Field(
        1e-4, ge=0, alias="lambda", description="Regularisation strength lambda (YAML: `lambda`)."
    )
    k: int = Field(2, ge=1, description="Exponent k in (sigma_max^k - 1)^2 + ||b||^(2k).")
    power_iterations: int = Field(1, ge=1, description="Power iterations per training step.")
    seed: int = Field(0, ge=0, description="Seed of the initial power-iteration vectors.")


@register_strategy("spectral")
class Spectral(Strategy):
    """Regularise each layer's spectral norm towards one and its bias towards zero."""

    formulas = (
        "regularizer",
        "sigma_max",
    )
    Config = SpectralConfig
    config: SpectralConfig
    vectorize = "stacked"  # batched power iteration; R sums over the trials

    def __init__(self, config: SpectralConfig | None = None) -> None:
        super().__init__(config)
        self.u: dict[str, Tensor] = {}  # layer name -> left singular vector estimate
        self.v: dict[str, Tensor] = {}  # layer name -> right singular vector estimate
        self.sigma: dict[str, Tensor] = {}  # layer name -> latest sigma_max estimate

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Advance the power iteration one training step; return ``{"spectral": lambda * R}``."""
        return {"spectral": self.config.lambda_ * self.regularizer(ctx.model, ctx.trials)}

    def regularizer(self, model: nn.Module, trials: int = 0) -> Tensor:
        """Return ``R = sum_l (sigma_l^k - 1)^2 + ||b_l||^(2k)``, advancing every estimate.

        ``trials``: S when the weights are S trials' stacked along a first dimension
        (``ctx.trials``); ``R`` is then the sum of the trials' values.
        """
        k = self.config.k
        terms = []
        for name, layer in spectral_layers(model):
            if not layer.weight.requires_grad:
                continue
            sigma = self.sigma_max(name, layer.weight, trials)
            terms.append((sigma.pow(k) - 1).square().sum())
            if layer.bias is not None:
                terms.append(layer.bias.square().sum(-1).pow(k).sum())
        if not terms:
            return torch.zeros((), device=next(model.parameters()).device)
        return torch.stack(terms).sum()

    def sigma_max(self, name: str, weight: Tensor, trials: int = 0) -> Tensor:
        """Return ``u^T W v`` after ``power_iterations`` steps on layer ``name`` (grad to W).

        With ``trials`` (S stacked weights) one estimate per trial, shape ``(S,)``.
        """
        w = weight.flatten(2 if trials else 1)  # (S,) out x in*kh*kw
        if not torch.is_autocast_enabled(w.device.type):  # skip the context's cost per step
            return self._sigma_max(name, w)
        with torch.autocast(w.device.type, enabled=False):  # estimate in the weights' precision
            return self._sigma_max(name, w)

    def _sigma_max(self, name: str, w: Tensor) -> Tensor:
        if name not in self.u:
            g = torch.Generator().manual_seed(self.config.seed)
            u = F.normalize(torch.randn(w.shape[-2], generator=g), dim=0).to(w)
            v = F.normalize(torch.randn(w.shape[-1], generator=g), dim=0).to(w)
            lead = w.shape[:-2]  # every stacked trial starts from the same vectors
            self.u[name], self.v[name] = u.expand(*lead, -1).clone(), v.expand(*lead, -1).clone()
            self._power_iteration(name, w, WARM_UP_ITERATIONS)
        elif self.u[name].device != w.device:  # e.g. restored on the host
            self.u[name], self.v[name] = self.u[name].to(w), self.v[name].to(w)
        self._power_iteration(name, w, self.config.power_iterations)
        sigma = (self.u[name] * _matvec(w, self.v[name])).sum(-1)
        self.sigma[name] = sigma.detach()
        return sigma

    @torch.no_grad()
    def _power_iteration(self, name: str, w: Tensor, steps: int) -> None:
        u, v = self.u[name], self.v[name]
        for _ in range(steps):
            v = F.normalize(_matvec(w.transpose(-2, -1), u), dim=-1, eps=1e-12)
            u = F.normalize(_matvec(w, v), dim=-1, eps=1e-12)
        self.u[name], self.v[name] = u.detach(), v.detach()  # fresh tensors: no copy needed

    def metrics(self) -> dict[str, float]:
        """The current ``sigma_max`` estimate per layer, keyed ``sigma_max/<layer name>``."""
        names = list(self.sigma)
        values = torch.stack([self.sigma[n].float().cpu() for n in names]).tolist() if names else []
        return {f"sigma_max/{n}": v for n, v in zip(names, values, strict=True)}

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"u": {layer: tensor}, "v": {layer: tensor}, "sigma": {layer: tensor}}``."""
        return {"u": dict(self.u), "v": dict(self.v), "sigma": dict(self.sigma)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the power-iteration vectors and estimates saved by :meth:`state_dict`."""
        if set(state) != {"u", "v", "sigma"}:
            raise ValueError(f"spectral: expected keys ['sigma', 'u', 'v'], got {sorted(state)}")
        if set(state["u"]) != set(state["v"]):
            raise ValueError("spectral: 'u' and 'v' name different layers")
        self.u = {n: t.detach().clone() for n, t in state["u"].items()}
        self.v = {n: t.detach().clone() for n, t in state["v"].items()}
        self.sigma = {n: t.detach().clone() for n, t in state["sigma"].items()}


def _matvec(w: Tensor, x: Tensor) -> Tensor:
    """``w @ x`` over any leading (trial) dimensions: ``(..., m, n) x (..., n) -> (..., m)``."""
    return (w @ x.unsqueeze(-1)).squeeze(-1)


def spectral_layers(model: nn.Module) -> list[tuple[str, nn.Linear | nn.modules.conv._ConvNd]]:
    """Return the ``(name, module)`` of every Linear and Conv layer, in module order."""
    kinds = (nn.Linear, nn.modules.conv._ConvNd)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
