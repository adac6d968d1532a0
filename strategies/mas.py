"""Memory Aware Synapses (MAS).

Aljundi, Babiloni, Elhoseiny, Rohrbach & Tuytelaars (2018), "Memory Aware
Synapses: Learning what (not) to forget", ECCV 2018, arXiv:1711.09601. A
weight is important if changing it changes the model's *output* (no labels
needed): the importance is the mean magnitude of the gradient of the squared
L2 norm of the logits,

    Omega_i = 1/N sum_n | d ||f_theta(x_n)||_2^2 / d theta_i |,

and later experiences are anchored to the weights ``theta*`` learned so far:

    L_mas(theta) = lambda * sum_i Omega_i (theta_i - theta*_i)^2.

By default this matches Avalanche's ``MASPlugin``
(``avalanche/training/plugins/mas.py``: ``_get_importance``,
``after_training_exp``, ``before_backward``; itself based on FACIL), defaults
``lambda_reg = 1``, ``alpha = 0.5``:

- *batch-level* gradients (``per_sample=False``): the training set is cut in
  consecutive batches of ``batch_size`` (Avalanche: the training mini-batch
  size), each batch's gradient of ``mean_n ||f(x_n)||^2`` is taken in absolute
  value and the result is averaged over batches. The paper's per-sample
  estimate above is ``per_sample=True`` (``torch.func`` ``vmap`` of ``grad``);
  batch-level magnitudes are smaller, as signs cancel inside a batch;
- importances of successive experiences are combined as a running average
  ``Omega <- alpha * Omega + (1 - alpha) * Omega_new`` (the first experience's
  importance is taken as is); ``accumulate="sum"`` adds them instead, as the
  paper does for a sequence of tasks;
- the penalty has no ``1/2`` factor (Avalanche's current ``before_backward``
  and the paper's Eq. 3);
- the importance pass runs with the model in its training mode.

Multi-head models mask the logits of other tasks' classes to ``-inf``; those
entries are replaced by 0 before taking the norm (only the experience's own
head counts, as with Avalanche's per-task heads), so no NaN appears.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import AliasChoices, Field
from torch import Tensor, nn

from ._importance import output_sensitivity
from ._penalty import ParamCache, on_device, weighted_quadratic
from ._registry import register_strategy
from .base import Batch, Context, Strategy, StrategyConfig


class MASConfig(StrategyConfig):
    """Hyperparameters of Memory Aware Synapses."""

    lambda_: float = Field(
        1.0,
        ge=0,
        alias="lambda",
        validation_alias=AliasChoices("lambda", "lambda_reg", "lambda_"),
        description="Penalty weight lambda, Avalanche's `lambda_reg` (YAML key: `lambda`).",
    )
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="accumulate='average': Omega <- alpha*Omega + (1-alpha)*Omega_new "
        "(Avalanche default 0.5).",
    )
    accumulate: Literal["average", "sum"] = Field(
        "average",
        description="Combine the experiences' importances by a running average (Avalanche) "
        "or a sum (paper).",
    )
    per_sample: bool = Field(
        False,
        description="Average per-sample gradient magnitudes (paper) instead of batch-gradient "
        "magnitudes (Avalanche/FACIL).",
    )
    batch_size: int = Field(
        32,
        ge=1,
        description="Batch size of the importance pass (Avalanche: the training mini-batch "
        "size; set it equal to training.batch_size to match).",
    )
    max_samples: int | None = Field(
        None,
        ge=1,
        description="Estimate the importance on the first N training samples (all: None).",
    )


@register_strategy("mas")
class MAS(Strategy):
    """Anchor each weight with a stiffness given by the sensitivity of the output norm."""

    formulas = ("quadratic",)
    vectorize = "members"  # each trial's importance needs its own forward passes
    Config = MASConfig
    config: MASConfig

    def __init__(self, config: MASConfig | None = None) -> None:
        super().__init__(config)
        self._lookup = ParamCache()  # parameter tensors by name, looked up once
        self.importance: dict[str, Tensor] = {}  # Omega, by parameter name
        self.anchor: dict[str, Tensor] = {}  # theta*

    def on_experience_end(self, ctx: Context) -> None:
        """Estimate this experience's importance, combine it with the old one, move the anchor."""
        exp = ctx.experience
        n = self.config.max_samples or exp.n_train
        new = output_sensitivity(
            ctx.model,
            exp.x_train[:n],
            task_id=exp.task_id,
            batch_size=self.config.batch_size,
            per_sample=self.config.per_sample,
        )
        if self.importance:
            old = [self.importance[k].to(t.device) for k, t in new.items()]
            if self.config.accumulate == "sum":
                combined = torch._foreach_add(old, list(new.values()))
            else:
                combined = torch._foreach_mul(old, self.config.alpha)
                torch._foreach_add_(combined, list(new.values()), alpha=1 - self.config.alpha)
            new = dict(zip(new, combined, strict=True))
        self.importance = new
        params = dict(ctx.model.named_parameters())
        self.anchor = {k: params[k].detach().clone() for k in new}

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Return ``{"mas": lambda * sum_i Omega_i (theta_i - theta*_i)^2}``.

        Returns nothing before the first experience has been consolidated.
        """
        if not self.importance:
            return {}
        return {"mas": self.config.lambda_ * self.quadratic(ctx.model)}

    def quadratic(self, model: nn.Module) -> Tensor:
        """Return ``sum_i Omega_i (theta_i - theta*_i)^2`` (without lambda)."""
        device = next(model.parameters()).device
        self.anchor = on_device(self.anchor, device)  # e.g. restored on the host
        self.importance = on_device(self.importance, device)
        return weighted_quadratic(model, self.anchor, self.importance, self._lookup)

    def metrics(self) -> dict[str, float]:
        """Return the mean and max of the importance Omega."""
        if not self.importance:
            return {}
        flat = torch.cat([t.flatten() for t in self.importance.values()])
        return {"importance_mean": float(flat.mean()), "importance_max": float(flat.max())}

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"importance": {name: Omega}, "anchor": {name: theta*}}`` (empty at first)."""
        return {"importance": dict(self.importance), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the importance and the anchor saved by :meth:`state_dict`."""
        if set(state) != {"importance", "anchor"}:
            raise ValueError(
                f"mas: expected state keys ['anchor', 'importance'], got {sorted(state)}"
            )
        if set(state["importance"]) != set(state["anchor"]):
            raise ValueError("mas: 'importance' and 'anchor' name different parameters")
        self.importance = {n: t.detach().clone() for n, t in state["importance"].items()}
        self.anchor = {n: t.detach().clone() for n, t in state["anchor"].items()}
