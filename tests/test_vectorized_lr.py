"""Vectorised trials that differ in learning rate (issue 24 item 1) equal separate trials."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import yaml

from lifelong.cluster.vector_groups import plan_groups
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.spec import parse_experiment
from lifelong.platform.training import TrainingConfig
from lifelong.platform.vectorized import VectorizedLearner
from lifelong.scenarios import ScenarioConfig, Stream, build_stream
from lifelong.strategies import build_strategy

SEEDS = [0, 1, 2, 0]
RATES = {"sgd": [0.01, 0.05, 0.2, 0.2], "adam": [1e-3, 3e-3, 1e-2, 1e-2]}


@pytest.fixture(scope="module")
def digits() -> Stream:
    return build_stream(ScenarioConfig(source="digits", n_experiences=3, seed=0))


def _training(optimizer: str, lr: float) -> TrainingConfig:
    return TrainingConfig(
        epochs=1,
        lr=lr,
        momentum=0.9 if optimizer == "sgd" else 0.0,
        weight_decay=1e-3,
        optimizer=optimizer,
        reset_optimizer=optimizer == "sgd",
        accelerator="cpu",
    )


def _alone(stream: Stream, name: str, training: TrainingConfig, seed: int) -> Learner:
    return Learner(stream, ModelConfig(hidden=[32]), [build_strategy(name)], training, seed)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["naive", "ewc"])
def test_each_trial_steps_with_its_own_learning_rate(
    digits: Stream, name: str, optimizer: str
) -> None:
    rates = RATES[optimizer]
    vec = VectorizedLearner(
        digits,
        ModelConfig(hidden=[32]),
        lambda: [build_strategy(name)],
        _training(optimizer, rates[0]),
        SEEDS,
        lrs=rates,
    )
    vec.fit()
    n_test = min(e.n_test for e in digits)
    for s, (seed, lr) in enumerate(zip(SEEDS, rates, strict=True)):
        alone = _alone(digits, name, _training(optimizer, lr), seed)
        alone.fit()
        assert np.nanmax(np.abs(vec.R[s] - alone.R)) <= 1 / n_test
        for key, value in alone.model.state_dict().items():
            torch.testing.assert_close(vec.model_state(s)[key], value, rtol=1e-4, atol=1e-5)
    # trial 3 is trial 2's seed and rate on trial 0's seed: the rates took effect
    first = vec.model_state(0)
    assert any(not torch.equal(first[k], vec.model_state(3)[k]) for k in first)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_checkpoint_carries_the_trials_own_learning_rate(digits: Stream, optimizer: str) -> None:
    """A trial continued alone from its checkpoint steps at its own rate, not the group's 1."""
    rates = RATES[optimizer][:3]
    vec = VectorizedLearner(
        digits,
        ModelConfig(hidden=[32]),
        lambda: [build_strategy("naive")],
        _training(optimizer, rates[0]),
        SEEDS[:3],
        lrs=rates,
    )
    vec.evaluate_untrained()
    vec.run_experience(0)
    buf = io.BytesIO()
    torch.save(vec.member_state(2), buf)
    buf.seek(0)
    resumed = _alone(digits, "naive", _training(optimizer, rates[2]), SEEDS[2])
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.optimizer.param_groups[0]["lr"] == rates[2]
    alone = _alone(digits, "naive", _training(optimizer, rates[2]), SEEDS[2])
    np.testing.assert_allclose(resumed.fit(), alone.fit(), atol=1 / 50)


def test_trials_that_differ_in_seed_and_learning_rate_form_one_group(digits: Stream) -> None:
    experiment = parse_experiment(
        yaml.safe_dump(
            {
                "name": "lr-groups",
                "scenario": {"source": "digits", "n_experiences": 3},
                "training": {"lr": {"grid": [0.01, 0.1]}},
                "strategies": ["naive", "l2"],
                "seeds": [0, 1],
                "resources": {"vectorize": 8},
            }
        )
    )
    trials = experiment.trials()
    assert len(trials) == 8
    groups, notes = plan_groups(trials, experiment.spec, {"": digits}, "sweep", "salt")
    assert not notes
    by_group: dict[str, list[str]] = {}
    for trial_id, g in groups.items():
        by_group.setdefault(g["id"], []).append(trial_id)
    assert len(by_group) == 2  # one per strategy, each its 2 seeds x 2 rates
    for g in groups.values():
        assert sorted(zip(g["seeds"], g["lrs"], strict=True)) == [
            (0, 0.01),
            (0, 0.1),
            (1, 0.01),
            (1, 0.1),
        ]
    member_of = {t.trial_id: t for t in trials}
    for trial_id, g in groups.items():
        t = member_of[trial_id]
        assert g["seeds"][g["member"]] == t.seed
        assert g["lrs"][g["member"]] == TrainingConfig.model_validate(t.training).lr
