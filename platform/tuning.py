"""The ``tune:`` section: hyperparameters chosen by the continual-learning tuning protocol.

The protocol (built in; docs/tuning.md):

1. **Validation phase.** Every configuration the search spaces give (or that
   Optuna proposes) is trained on a *validation stream* with the tuning seeds
   ``tune.seeds``; a scalar ``tune.metric`` is reported to Ray Tune after every
   experience, so a scheduler (ASHA, median stopping) can stop weak
   configurations after ``grace_period`` experiences. The validation stream is
   either held out from the training data (``validation: {holdout: 0.2}``: a
   seeded 20 % of each experience's training set becomes its test set; the
   test sets are never seen) or the first ``k`` experiences
   (``validation: {first_k: 3}``, the protocol of Chaudhry et al. 2019, A-GEM,
   arXiv 1812.00420: those experiences are then left out of the test phase).
2. **Test phase.** The best configuration of each strategy entry (mean of
   ``tune.metric`` over the tuning seeds, among configurations whose every
   tuning trial finished) is trained again on the test stream with the fresh
   seeds of ``seeds``; those are the numbers reported.

MLflow keeps both phases apart: tuning trials carry the param
``scenario.split`` (``validation:holdout=0.2``) and the tag
``lifelong.phase = tune``; test trials the tag ``lifelong.phase = test``
(and ``scenario.split = test:after_first_k=3`` under ``first_k``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifelong.scenarios.stream import Experience, Stream

METRICS = ("acc/avg", "forgetting/avg", "bwt", "plasticity")
"""Scalars reported to Ray Tune after every experience (any of them can be ``tune.metric``)."""


class ValidationConfig(BaseModel):
    """Where the validation stream comes from: ``holdout`` or ``first_k``, exactly one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    holdout: float | None = Field(
        None, gt=0, lt=1, description="fraction of each experience's training set held out"
    )
    first_k: int | None = Field(
        None, ge=1, description="tune on the first k experiences; test on the others"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ValidationConfig:
        if (self.holdout is None) == (self.first_k is None):
            raise ValueError("give exactly one of holdout (a fraction) or first_k (a count)")
        return self

    @property
    def split(self) -> str:
        """The tuning trials' ``scenario.split`` param."""
        if self.holdout is not None:
            return f"validation:holdout={self.holdout:g}"
        return f"validation:first_k={self.first_k}"

    @property
    def test_split(self) -> str | None:
        """The test trials' ``scenario.split`` param (``None``: the whole test stream)."""
        return None if self.first_k is None else f"test:after_first_k={self.first_k}"


class TuneSection(BaseModel):
    """The ``tune:`` section of an experiment file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["acc/avg", "forgetting/avg", "bwt", "plasticity"] = Field(
        "acc/avg", description="scalar reported per experience and used to pick the best"
    )
    mode: Literal["max", "min"] | None = Field(
        None, description="max or min; default: min for forgetting, else max"
    )
    search: Literal["random", "optuna"] = Field(
        "random",
        description="random: the driver's grid and draws; optuna: Ray Tune's OptunaSearch (TPE)",
    )
    scheduler: Literal["fifo", "asha", "median"] = Field(
        "fifo", description="fifo (run all), asha (ASHAScheduler) or median (MedianStoppingRule)"
    )
    grace_period: int = Field(
        1, ge=1, description="experiences every trial trains before a scheduler may stop it"
    )
    reduction_factor: float = Field(2.0, gt=1, le=100, description="ASHA's reduction factor")
    max_concurrent: int | None = Field(
        None, ge=1, description="trials at once (Ray Tune's ConcurrencyLimiter with optuna)"
    )
    time_budget_s: float | None = Field(
        None, gt=0, description="wall-clock budget of each strategy's validation phase"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [1000], min_length=1, max_length=100, description="tuning seeds"
    )
    validation: ValidationConfig = Field(
        default_factory=lambda: ValidationConfig(holdout=0.2), description="validation stream"
    )

    @property
    def resolved_mode(self) -> str:
        """``mode``, or its default for ``metric``."""
        return self.mode or ("min" if self.metric.startswith("forgetting") else "max")


def problems(tune: TuneSection, seeds: Sequence[int], n_experiences: int) -> list[tuple]:
    """What is wrong with ``tune`` given the experiment (location, message) pairs."""
    out: list[tuple] = []
    shared = sorted(set(tune.seeds) & set(seeds))
    if shared:
        out.append(
            (
                ("tune", "seeds"),
                f"tuning seeds must differ from the test seeds (`seeds`); both have {shared}",
            )
        )
    if len(set(tune.seeds)) != len(tune.seeds) or min(tune.seeds) < 0:
        out.append((("tune", "seeds"), f"must be distinct seeds >= 0, got {tune.seeds}"))
    k = tune.validation.first_k
    if k is not None and k >= n_experiences:
        out.append(
            (
                ("tune", "validation", "first_k"),
                f"must leave experiences to test on: {k} >= n_experiences {n_experiences}",
            )
        )
    if tune.search == "optuna" and len(tune.seeds) != 1:
        out.append(
            (("tune", "seeds"), "optuna evaluates each configuration on one seed: give one seed")
        )
    if tune.scheduler != "fifo" and tune.grace_period >= n_experiences:
        out.append(
            (
                ("tune", "grace_period"),
                f"must be below n_experiences ({n_experiences}) for the scheduler to stop anything",
            )
        )
    return out


# ------------------------------------------------------------------ streams
def validation_stream(stream: Stream, validation: ValidationConfig) -> Stream:
    """The stream hyperparameters are chosen on (see :class:`ValidationConfig`).

    ``holdout``: each experience keeps a seeded ``1 - holdout`` of its training
    set for training and tests on the rest (its test set is dropped);
    ``first_k``: the first ``k`` experiences as they are.
    """
    if validation.first_k is not None:
        experiences = stream.experiences[: validation.first_k]
        return dataclasses.replace(
            stream, name=f"{stream.name} (first {len(experiences)})", experiences=experiences
        )
    assert validation.holdout is not None
    out = []
    for e in stream.experiences:
        g = torch.Generator().manual_seed(stream.seed * 7919 + e.index)
        order = torch.randperm(e.n_train, generator=g)
        n_val = max(1, min(e.n_train - 1, math.floor(e.n_train * validation.holdout)))
        val, keep = order[:n_val].sort().values, order[n_val:].sort().values
        out.append(
            Experience(
                e.index,
                e.task_id,
                e.classes,
                e.x_train[keep],
                e.y_train[keep],
                e.x_train[val],
                e.y_train[val],
            )
        )
    return dataclasses.replace(
        stream, name=f"{stream.name} (validation {validation.holdout:g})", experiences=tuple(out)
    )


def final_stream(stream: Stream, validation: ValidationConfig) -> Stream:
    """The stream the chosen configurations are reported on.

    The whole stream, except under ``first_k``, where the first ``k``
    experiences served for tuning and the others, re-indexed from 0, remain.
    """
    k = validation.first_k
    if k is None:
        return stream
    rest = tuple(
        Experience(
            i,
            e.task_id - k if e.task_id else 0,
            e.classes,
            e.x_train,
            e.y_train,
            e.x_test,
            e.y_test,
        )
        for i, e in enumerate(stream.experiences[k:])
    )
    return dataclasses.replace(stream, name=f"{stream.name} (after first {k})", experiences=rest)
