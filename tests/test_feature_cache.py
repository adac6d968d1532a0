"""A frozen backbone's features, computed once per stream: equal results, one forward pass."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.models.feature_cache import cacheable, encode_stream, is_encoded
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig
from lifelong.scenarios.builder import build_stream
from lifelong.strategies import build_strategy

from conftest import save_test_resnet

TRAINING = TrainingConfig(epochs=2, batch_size=32, lr=0.05, accelerator="cpu")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timm ResNet with random weights (seed 1), saved."""
    return save_test_resnet(tmp_path_factory.mktemp("weights"), seed=1)


def frozen(weights: Path) -> ModelConfig:
    return ModelConfig(
        name="timm", arch="test_resnet", weights=str(weights), input_size=32, freeze="backbone"
    )


@pytest.mark.parametrize("strategy", ["naive", "l2", "ewc", "lwf"])
def test_training_on_cached_features_gives_the_same_R(weights: Path, strategy: str) -> None:
    stream = build_stream(ScenarioConfig(source="digits", n_experiences=3))
    config = frozen(weights)
    assert cacheable(stream, config)
    encoded = encode_stream(stream, config)
    assert is_encoded(encoded, config) and not is_encoded(stream, config)
    assert encoded.input_shape == (timm.create_model("test_resnet").num_features,)
    results = []
    for s in (stream, encoded):
        learner = Learner(s, config, [build_strategy(strategy)], TRAINING, seed=3)
        results.append((learner.fit(), dict(learner.model.named_parameters())))
    (R_full, p_full), (R_cached, p_cached) = results
    np.testing.assert_allclose(R_cached, R_full, atol=1 / 60)  # at most one test sample apart
    assert set(p_cached) == {n for n, p in p_full.items() if p.requires_grad}
    for n, p in p_cached.items():
        torch.testing.assert_close(p, p_full[n], atol=1e-4, rtol=1e-4)


def test_what_is_not_cached(weights: Path) -> None:
    stream = build_stream(ScenarioConfig(source="digits", n_experiences=2))
    random_backbone = ModelConfig(name="timm", arch="test_resnet", input_size=32, freeze="backbone")
    assert not cacheable(stream, random_backbone)  # random weights differ per seed
    assert not cacheable(stream, frozen(weights).model_copy(update={"freeze": "none"}))
    augmented = build_stream(
        ScenarioConfig(source="digits", n_experiences=2, augment=["horizontal_flip"])
    )
    assert not cacheable(augmented, frozen(weights))


def test_a_sweep_encodes_once_and_every_trial_finishes(weights: Path, in_tmp: Path) -> None:
    path = in_tmp / "exp.yaml"
    path.write_text(
        f"""
name: cached
scenario: {{source: digits, n_experiences: 2}}
model: {{name: timm, arch: test_resnet, weights: {weights}, input_size: 32, freeze: backbone}}
training: {{epochs: 1, accelerator: cpu}}
strategies: [naive, {{l2: {{lambda: 1.0}}}}]
seeds: [0]
"""
    )
    result = CliRunner().invoke(app, ["run", str(path), "--in-process"])
    assert result.exit_code == 0, result.output
    assert re.search(r"timm backbone encoded 1,797 images once", result.stderr.replace("\n", " "))
