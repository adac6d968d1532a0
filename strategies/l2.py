"""L2 regularisation towards anchor weights.

Smith, Valkov, Halbe, Gutta, Feris, Kira & Kaluarachchi (2023), "A Closer Look
at Rehearsal-Free Continual Learning", arXiv:2304.09136: an unweighted L2
penalty towards the weights learned so far is a strong rehearsal-free baseline,

    L_l2(theta) = lambda * sum_i (theta_i - theta*_i)^2,

summed over every trainable parameter. With ``anchor="previous"`` (the paper's
setting) ``theta*`` is the model at the end of the previous experience, so the
term is absent during the first experience.

With ``anchor="initial"``, ``theta*`` is the model at the start of the first
experience and the term applies from the first experience on: L2-init, from
Kumar, Marklund & Van Roy (2023), "Maintaining Plasticity in Continual Learning
via Regenerative Regularization", arXiv:2308.11958, which keeps the weights
near their initialisation to preserve plasticity.

Smith et al.'s recipe, as their reference code runs it on a pre-trained ViT:
``anchor="pretrained"`` (during the first experience ``theta*`` is the model it
starts from, the pre-trained weights; afterwards the previous experience's, as
with ``previous``), ``scope="backbone"`` (the sum runs over the feature
extractor's parameters only, not the classifier head), and
``training.task_loss: bce_seen`` (binary cross-entropy over the classes seen so
far). The defaults (``previous``, ``all``) are the paper's equation as written.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ._penalty import Scope, in_scope
from ._registry import register_strategy
from .base import Batch, Context, Strategy, StrategyConfig


class L2Config(StrategyConfig):
    """Hyperparameters of the L2 penalty."""

    lambda_: float = Field(
        1.0, ge=0, alias="lambda", description="Penalty weight lambda (YAML key: `lambda`)."
    )
    anchor: Literal["previous", "initial", "pretrained"] = Field(
        "previous",
        description="Anchor theta*: the weights at the end of the previous experience "
        "(Smith et al. 2023), at the start of the first one (L2-init, Kumar et al. 2023), or "
        "the starting (pre-trained) weights during the first experience and the previous "
        "experience's afterwards (Smith et al.'s reference code).",
    )
    scope: Scope = Field(
        "all",
        description="Penalised parameters: all trainable ones, or the backbone's only "
        "(`backbone`: not the head, as in Smith et al.'s reference code).",
    )


@register_strategy("l2")
class L2(Strategy):
    """Penalise the squared distance of the trainable weights from an anchor."""

    formulas = ("distance",)
    vectorize = "stacked"  # snapshots and a squared distance: elementwise
    Config = L2Config
    config: L2Config

    def __init__(self, config: L2Config | None = None) -> None:
        super().__init__(config)
        self.anchor: dict[str, Tensor] | None = None  # parameter name -> theta*

    def on_experience_start(self, ctx: Context) -> None:
        """Snapshot the starting weights once, for ``anchor="initial"`` or ``"pretrained"``."""
        if self.config.anchor != "previous" and self.anchor is None:
            self.anchor = _snapshot(ctx.model, self.config.scope)

    def on_experience_end(self, ctx: Context) -> None:
        """Move the anchor to the weights just learned (``previous``, ``pretrained``)."""
        if self.config.anchor != "initial":
            self.anchor = _snapshot(ctx.model, self.config.scope)

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Return ``{"l2": lambda * ||theta - theta*||^2}``, or nothing before an anchor exists."""
        if self.anchor is None:
            return {}
        return {"l2": self.config.lambda_ * self.distance(ctx.model)}

    def distance(self, model: nn.Module) -> Tensor:
        """Return ``sum_i (theta_i - theta*_i)^2`` over the anchored parameters."""
        if self.anchor is None:
            raise RuntimeError("l2: no anchor yet")
        params = dict(model.named_parameters())
        names = list(self.anchor)
        if not names:
            return torch.zeros(())
        current = [params[n] for n in names]
        anchor = [self.anchor[n] for n in names]
        if anchor[0].device != current[0].device:  # e.g. restored on the host
            self.anchor = {n: a.to(current[0].device) for n, a in self.anchor.items()}
            anchor = [self.anchor[n] for n in names]
        diff = torch._foreach_sub(current, anchor)
        # One dot product per tensor: the gradient, 2 (theta - theta*), is elementwise
        # (a norm's would divide by the norm of the whole tensor, which couples the
        # entries: with trials stacked along a tensor's first dimension, one trial's
        # NaN would reach the others' gradients).
        return torch.stack([torch.dot(d.reshape(-1), d.reshape(-1)) for d in diff]).sum()

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"anchor": {param name: tensor}}`` (empty before the first snapshot)."""
        return {"anchor": dict(self.anchor) if self.anchor is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the anchor saved by :meth:`state_dict`."""
        if set(state) != {"anchor"}:
            raise ValueError(f"l2: expected state keys ['anchor'], got {sorted(state)}")
        anchor = state["anchor"]
        self.anchor = {n: t.detach().clone() for n, t in anchor.items()} if anchor else None


def _snapshot(model: nn.Module, scope: Scope) -> dict[str, Tensor]:
    """Copy the model's trainable parameters in ``scope``, by name."""
    return {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if p.requires_grad and in_scope(n, scope)
    }
