"""Center loss regularisation for continual learning.

Olpadkar & Gavas (2021), "Center Loss Regularization for Continual Learning",
arXiv:2110.11314. The penultimate features ``h(x)`` are pulled towards one
centre ``c_y`` per class with the center loss of Wen, Zhang, Li & Qiao (2016),
"A Discriminative Feature Learning Approach for Deep Face Recognition" (ECCV),

    L_C = lambda * 1/2 * 1/M sum_i ||h(x_i) - c_{y_i}||^2     (M = batch size).

Wen et al. write the sum over the mini-batch; their reference Caffe layer
(``center_loss_layer.cpp``: ``loss = dot / M / 2``) divides by ``M``, and so do
we (the batch mean), so ``lambda`` does not depend on the batch size.

During the first experience the centres follow Wen et al.'s update, once per
training step on the step's batch (vectorised: a one-hot matrix product, which,
unlike ``index_add_``, sums in a fixed order on CUDA too):

    delta c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j),    c_j <- c_j - alpha * delta c_j.

After the first experience the centres and the classifier head are frozen, so
later experiences (new domains with the same labels) must map their features
onto the old centres and the old decision boundaries stay valid. The method is
meant for domain-incremental streams: with a frozen head, classes first seen
after the first experience cannot be learned.

The centres start at zero. ``alpha = 0.5`` is Wen et al.'s value; the default
``lambda = 0.1`` was chosen on permuted digits (the paper's own value could not
be checked here).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ._registry import register_strategy
from .base import Batch, Context, Strategy, StrategyConfig


class CenterLossConfig(StrategyConfig):
    """Hyperparameters of center loss regularisation."""

    lambda_: float = Field(
        0.1, ge=0, alias="lambda", description="Weight lambda of the center loss (YAML: `lambda`)."
    )
    alpha: float = Field(
        0.5, gt=0, le=1, description="Learning rate alpha of the centres (Wen et al. 2016: 0.5)."
    )
    freeze_after_first: bool = Field(
        True,
        description="Freeze the centres and the classifier head after the first experience "
        "(the paper); False keeps training both.",
    )


@register_strategy("center_loss")
class CenterLoss(Strategy):
    """Pull features to per-class centres learned in the first experience, then frozen."""

    Config = CenterLossConfig
    vectorize = (
        "it updates its centres after every backward pass and freezes the head "
        "(ctx.protect), neither of which a vectorised trial's strategy can do"
    )
    config: CenterLossConfig
    language_models = "its class centres need class labels; a text stream has next-token labels"
    data_parallel = (
        "its class centres move with each batch's features, of which each worker sees a slice"
    )

    def __init__(self, config: CenterLossConfig | None = None) -> None:
        super().__init__(config)
        self.centers: Tensor | None = None  # (n_classes, feature_dim), created at the first batch
        self.frozen = False
        self._last: tuple[Tensor, Tensor] | None = None  # this step's (features, labels)
        self._head: list[str] = []  # the head's parameter names, once frozen

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Return ``{"center_loss": lambda/2 * mean_i ||h(x_i) - c_{y_i}||^2}``."""
        h = batch.features.reshape(len(batch.y), -1)
        if self.centers is None:
            self.centers = torch.zeros(ctx.stream.n_classes, h.shape[1], device=h.device)
        elif self.centers.device != h.device:  # e.g. restored on the host
            self.centers = self.centers.to(h.device)
        self._last = (h.detach(), batch.y)
        return {"center_loss": self.config.lambda_ * center_loss(h, batch.y, self.centers)}

    def on_after_backward(self, ctx: Context) -> None:
        """Update the centres on this step's batch, or keep centres and head frozen."""
        if self.frozen:
            if not self._head:  # looked up once: named_parameters() walks the modules
                self._head = [f"head.{name}" for name, _ in ctx.model.head.named_parameters()]
            for name in self._head:
                ctx.protect(name)
        elif self._last is not None and self.centers is not None:
            features, labels = self._last
            self.centers -= self.config.alpha * center_delta(features, labels, self.centers)
        self._last = None

    def on_experience_end(self, ctx: Context) -> None:
        """Freeze the centres and the head after the first experience (if configured)."""
        if self.config.freeze_after_first and self.centers is not None:
            self.frozen = True

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"centers": tensor (empty before the first batch), "frozen": bool}``."""
        centers = self.centers if self.centers is not None else torch.empty(0)
        return {"centers": centers.detach().clone(), "frozen": self.frozen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the centres and the frozen flag saved by :meth:`state_dict`."""
        if set(state) != {"centers", "frozen"}:
            raise ValueError(
                f"center_loss: expected keys ['centers', 'frozen'], got {sorted(state)}"
            )
        centers = state["centers"]
        self.centers = centers.detach().clone() if centers.numel() else None
        self.frozen = bool(state["frozen"])
        self._last = None


def center_loss(features: Tensor, labels: Tensor, centers: Tensor) -> Tensor:
    """Return ``1/2 * mean_i ||features_i - centers[labels_i]||^2`` (Wen et al. 2016)."""
    diff = features.float() - centers[labels]
    return 0.5 * diff.square().sum(dim=1).mean()


@torch.no_grad()
def center_delta(features: Tensor, labels: Tensor, centers: Tensor) -> Tensor:
    """Return Wen et al.'s ``delta c_j = sum_{y_i=j} (c_j - x_i) / (1 + n_j)`` for every class j."""
    diff = centers[labels] - features.float()
    onehot = F.one_hot(labels, len(centers)).to(centers.dtype)  # (M, n_classes)
    total, count = onehot.t() @ diff, onehot.sum(dim=0)  # a matmul: deterministic on CUDA
    return total / (1.0 + count).unsqueeze(1)
