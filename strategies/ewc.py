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
from pydantic import Field
from torch import Tensor, nn

from ._importance import batch_fisher, empirical_fisher
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
    vectorize = "members"  # each trial's Fisher needs its own forward passes
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
