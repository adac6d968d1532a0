"""The training configuration shared by every trial of an experiment."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field


class TrainingConfig(BaseModel):
    """How each experience is trained and evaluated.

    Attributes:
        epochs: passes over each experience's training set.
        batch_size: training batch size.
        eval_batch_size: batch size of evaluation forward passes.
        optimizer: ``sgd`` or ``adam``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay of the optimizer.
        reset_optimizer: build a fresh optimizer at the start of each experience.
        accelerator: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        precision: Lightning Fabric precision, ``32-true`` or ``bf16-mixed``.
        compile: ``torch.compile`` the model's feature extractor (its ``features``),
            which the training step and evaluation call; strategies' own passes
            (an EWC Fisher, an LwF teacher) stay eager.
        channels_last: keep 4-D weights (convolutions) channels-last, so that
            convolutions take and give channels-last activations; changes nothing
            for a model without 4-D weights.
        fused_optimizer: torch's fused SGD/Adam kernel (``fused=True``): one kernel
            updates every parameter; plain SGD is already one fused update.
        plasticity_baseline: also train a freshly initialised model on each
            experience alone and log its accuracy (``plasticity/fresh``) beside
            the learner's (``plasticity``); costs one extra training per experience.
        data_on_device: ``auto``: an experience moves to the device whole (the
            fast path) unless its training tensors exceed ``device_data_mb``,
            then it is streamed from the host through a DataLoader; ``always``:
            every experience moves; ``never``: every experience streams.
            ``scenario.augment`` streams every experience (``always`` is then an error).
        device_data_mb: the ``auto`` threshold, in MiB of one experience's
            training inputs and labels.
        loader_workers: DataLoader worker processes of a streamed experience
            (0: batches are gathered in the training process).
        prefetch_factor: batches each worker prepares ahead.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(1, ge=1, le=10_000, description="passes over each experience")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="training batch size")
    eval_batch_size: int = Field(1024, ge=1, le=1_000_000, description="evaluation batch size")
    task_loss: Literal["cross_entropy", "bce_seen"] = Field(
        "cross_entropy",
        description="cross_entropy (softmax), or bce_seen: binary cross-entropy over the classes "
        "seen so far, which also predicts among them only (Smith et al. 2023's code)",
    )
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="optimizer")
    lr: float = Field(0.01, gt=0, le=100, description="learning rate")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0, le=1, description="optimizer weight decay")
    reset_optimizer: bool = Field(True, description="fresh optimizer state per experience")
    accelerator: Literal["auto", "cpu", "cuda"] = Field("auto", description="device kind")
    precision: Literal["32-true", "bf16-mixed"] = Field("32-true", description="precision")
    plasticity_baseline: bool = Field(
        False, description="train a fresh model per experience as the plasticity reference"
    )
    compile: bool = Field(False, description="torch.compile the model's feature extractor")
    channels_last: bool = Field(False, description="keep convolution weights channels-last")
    fused_optimizer: bool = Field(False, description="torch's fused SGD/Adam update kernel")

    eval_every: int = Field(
        1, ge=1, le=1_000_000, description="evaluate after every k-th experience (and the last)"
    )
    eval_on: Literal["all", "seen", "last_k"] = Field(
        "all", description="test sets evaluated: all, the seen ones, or the last_k seen"
    )
    eval_last_k: int = Field(10, ge=1, le=1_000_000, description="k of eval_on: last_k")
    anytime_every: int | None = Field(
        None, ge=1, le=1_000_000_000, description="evaluate the seen experiences every k steps"
    )

    data_on_device: Literal["auto", "always", "never"] = Field(
        "auto", description="move experiences to the device whole, or stream them from the host"
    )
    device_data_mb: float = Field(
        1024.0, gt=0, le=2**30, description="auto: stream experiences with more training MiB"
    )
    loader_workers: int = Field(2, ge=0, le=256, description="DataLoader workers when streaming")
    prefetch_factor: int = Field(2, ge=1, le=1024, description="batches prefetched per worker")

    @property
    def partial_R(self) -> bool:
        """Whether evaluations leave cells of the accuracy matrix unfilled."""
        return self.eval_every > 1 or self.eval_on != "all"

    def evaluated_row(self, i: int, n: int) -> bool:
        """Whether the learner evaluates after experience ``i`` of ``n``."""
        return (i + 1) % self.eval_every == 0 or i == n - 1

    def evaluated_columns(self, i: int, n: int) -> range:
        """The experiences whose test sets are evaluated after experience ``i`` of ``n``."""
        if self.eval_on == "seen":
            return range(i + 1)
        if self.eval_on == "last_k":
            return range(max(0, i + 1 - self.eval_last_k), i + 1)
        return range(n)

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """Build the configured optimizer over ``params``."""
        fused = True if self.fused_optimizer else None  # None: torch's default kernel
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, fused=fused)
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, fused=fused
        )
