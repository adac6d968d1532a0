"""Compute-bound training options: channels-last, fused optimizers, torch.compile."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.platform.vectorized import vectorization_blocker
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import build_strategy

CNN = ModelConfig(name="cnn", hidden=[8, 16])


@pytest.fixture(scope="module")
def split_digits():
    return build_stream(ScenarioConfig(source="digits", n_experiences=3, seed=0))


def fit(stream, model: ModelConfig, strategy: str = "naive", **training) -> Learner:
    config = TrainingConfig(**{"epochs": 1, "lr": 0.05, **training})
    learner = Learner(stream, model, [build_strategy(strategy)], config, seed=0)
    learner.fit()
    return learner


def conv_weights(learner: Learner) -> list[torch.Tensor]:
    return [p for p in learner.model.parameters() if p.dim() == 4]


def test_channels_last_convolutions_train_like_the_default(split_digits) -> None:
    """The CNN's convolution weights are channels-last, and train to the same result."""
    plain = fit(split_digits, CNN)
    last = fit(split_digits, CNN, channels_last=True)
    weights = conv_weights(last)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not all(w.is_contiguous() for w in weights)
    assert all(w.is_contiguous() for w in conv_weights(plain))
    # another convolution algorithm: rounding-level differences only
    n_test = min(e.n_test for e in split_digits)
    np.testing.assert_allclose(last.R, plain.R, atol=1.5 / n_test)
    for a, b in zip(
        last.model.state_dict().values(), plain.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_channels_last_checkpoint_loads_into_a_default_learner(split_digits) -> None:
    """A channels-last checkpoint is plain tensors: weights_only loads it anywhere."""
    last = fit(split_digits, CNN, channels_last=True)
    buffer = io.BytesIO()
    torch.save(last.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    plain = Learner(split_digits, CNN, [build_strategy("naive")], TrainingConfig(epochs=1), seed=0)
    plain.load_state_dict(state)
    for a, b in zip(
        plain.model.state_dict().values(), last.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(plain.evaluate(), last.evaluate())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fused_optimizer_steps_like_the_default(split_digits, optimizer: str) -> None:
    """``fused_optimizer`` builds torch's fused kernel; the weights follow the default's."""
    common = {"optimizer": optimizer, "momentum": 0.9 if optimizer == "sgd" else 0.0}
    common["lr"] = 1e-3 if optimizer == "adam" else 0.05
    fused = fit(split_digits, ModelConfig(hidden=[32]), "ewc", fused_optimizer=True, **common)
    plain = fit(split_digits, ModelConfig(hidden=[32]), "ewc", **common)
    assert fused.optimizer.param_groups[0]["fused"] is True
    assert not plain.optimizer.param_groups[0]["fused"]
    for a, b in zip(fused.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_compile_trains_through_the_compiled_feature_extractor(split_digits) -> None:
    """``compile`` routes training and evaluation through ``torch.compile``; results hold."""
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = fit(split_digits, ModelConfig(hidden=[32]), compile=True)
    assert counters["stats"]["unique_graphs"] >= 2  # training and evaluation graphs
    assert compiled._features is not compiled.model.features
    plain = fit(split_digits, ModelConfig(hidden=[32]))
    n_test = min(e.n_test for e in split_digits)
    np.testing.assert_allclose(compiled.R, plain.R, atol=1.5 / n_test)
    for a, b in zip(compiled.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert set(compiled.model.state_dict()) == set(plain.model.state_dict())


@pytest.mark.parametrize(
    ("option", "reason"),
    [("compile", "training.compile"), ("channels_last", "training.channels_last")],
)
def test_vectorised_trials_name_the_option_they_do_not_apply(split_digits, option, reason) -> None:
    training = TrainingConfig(**{option: True})
    blocker = vectorization_blocker(split_digits, training, [build_strategy("naive")])
    assert blocker is not None and blocker.startswith(reason)
    assert vectorization_blocker(split_digits, TrainingConfig(), [build_strategy("naive")]) is None
