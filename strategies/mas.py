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
from torch.func import functional_call, grad, vmap

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


def _squared_norm(logits: Tensor) -> Tensor:
    """``||logits||_2^2`` per row, ignoring masked (``-inf``) entries."""
    finite = torch.where(torch.isfinite(logits), logits, torch.zeros_like(logits))
    return finite.square().sum(-1)


def output_sensitivity(
    model: nn.Module,
    x: Tensor,
    *,
    task_id: int = 0,
    batch_size: int = 32,
    per_sample: bool = False,
) -> dict[str, Tensor]:
    """Return the MAS importance of ``model``'s trainable parameters on inputs ``x``, by name.

    ``per_sample=False`` (Avalanche): the mean over consecutive batches of
    ``|d mean_batch ||f(x)||^2 / d theta|``. ``per_sample=True`` (paper): the mean
    over samples of ``|d ||f(x_n)||^2 / d theta|``, from ``vmap(grad(...))``.
    The model runs in its current mode; its ``.grad`` fields are not touched.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    importance = {n: torch.zeros_like(p) for n, p in params.items()}
    acc = list(importance.values())
    chunks = range(0, x.shape[0], batch_size)
    if per_sample:
        detached = {n: p.detach() for n, p in params.items()}
        buffers = dict(model.named_buffers())

        def sample_norm(p: dict[str, Tensor], xi: Tensor) -> Tensor:
            out = functional_call(model, (p, buffers), (xi.unsqueeze(0),), {"task_id": task_id})
            return _squared_norm(out).sum()

        per_sample_grads = vmap(grad(sample_norm), in_dims=(None, 0))
        for start in chunks:
            grads = per_sample_grads(detached, x[start : start + batch_size])
            torch._foreach_add_(acc, [grads[n].abs().sum(0) for n in importance])
        denominator = max(x.shape[0], 1)
    else:
        names = list(params)
        for start in chunks:
            out = model(x[start : start + batch_size], task_id)
            grads = torch.autograd.grad(
                _squared_norm(out).mean(), [params[n] for n in names], allow_unused=True
            )
            used = [(a, g) for a, g in zip(acc, grads, strict=True) if g is not None]
            torch._foreach_add_([a for a, _ in used], [g.abs() for _, g in used])
        denominator = max(len(chunks), 1)
    torch._foreach_div_(acc, float(denominator))
    return importance
