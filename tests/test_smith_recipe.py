"""Smith et al. (2023)'s recipe: BCE over seen classes, backbone-only penalty, pretrained anchor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.task_loss import bce_seen
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig
from lifelong.scenarios.builder import build_stream
from lifelong.strategies import build_strategy

from conftest import save_test_resnet

BCE = TrainingConfig(epochs=3, batch_size=32, lr=0.5, accelerator="cpu", task_loss="bce_seen")
TUNE = BCE.model_copy(update={"epochs": 1, "lr": 0.05})  # fine-tuning the backbone


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timm ResNet with random weights (seed 2), saved."""
    return save_test_resnet(tmp_path_factory.mktemp("weights"), seed=2)


@pytest.fixture(scope="module")
def digits():
    return build_stream(ScenarioConfig(source="digits", n_experiences=2))


def backbone(weights: Path) -> ModelConfig:
    return ModelConfig(name="timm", arch="test_resnet", weights=str(weights), input_size=32)


def test_bce_seen_is_the_reference_codes_loss() -> None:
    """``nn.BCELoss()(sigmoid(logits[:, :seen]), one_hot(y, seen))``, as in Smith et al.'s code."""
    torch.manual_seed(0)
    logits, y = torch.randn(16, 10), torch.randint(0, 4, (16,))
    reference = nn.BCELoss()(torch.sigmoid(logits[:, :4]), nn.functional.one_hot(y, 4).float())
    torch.testing.assert_close(bce_seen(logits, y, torch.arange(4)), reference)


def test_bce_seen_trains_and_predicts_among_the_seen_classes(digits) -> None:
    learner = Learner(digits, ModelConfig(hidden=[32]), [], BCE, seed=0)
    losses = learner.train_experience(0)
    assert set(losses) == {"bce"}
    seen = list(digits[0].classes)
    unseen = [c for c in range(10) if c not in seen]
    before = learner.evaluate()
    with torch.no_grad():  # make every unseen class the highest logit
        learner.model.head.linear.bias[unseen] += 1000.0
    after = learner.evaluate()
    assert after[0] == before[0] > 0.5  # the unseen classes are never predicted
    assert after[1] == 0.0
    ce = Learner(
        digits,
        ModelConfig(hidden=[32]),
        [],
        BCE.model_copy(update={"task_loss": "cross_entropy"}),
        0,
    )
    ce.train_experience(0)
    with torch.no_grad():
        ce.model.head.linear.bias[unseen] += 1000.0
    assert ce.evaluate()[0] == 0.0  # cross-entropy's evaluation ranks every class


def test_bce_seen_in_a_multi_head_model_stays_finite() -> None:
    stream = build_stream(
        ScenarioConfig(source="digits", protocol="task_incremental", n_experiences=2)
    )
    learner = Learner(stream, ModelConfig(hidden=[32]), [], BCE, seed=0)
    R = learner.fit()
    assert torch.isfinite(torch.tensor(R)).all() and R[1, 1] > 0.5


def test_l2_pretrained_anchor_and_backbone_scope(weights: Path, digits) -> None:
    l2 = build_strategy("l2", {"lambda": 1.0, "anchor": "pretrained", "scope": "backbone"})
    learner = Learner(digits, backbone(weights), [l2], TUNE, seed=0)
    start = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    losses = learner.train_experience(0)
    assert "l2" in losses and losses["l2"] > 0  # anchored to the starting weights from step 0
    assert l2.anchor is not None and all(n.startswith("body.") for n in l2.anchor)
    assert not any(n.startswith("head.") for n in l2.anchor)
    moved = dict(learner.model.named_parameters())
    for n, a in l2.anchor.items():  # after experience 0: the weights just learned
        assert torch.equal(a, moved[n].detach())
        assert not torch.equal(a, start[n]) or not moved[n].requires_grad
    plain = build_strategy("l2", {"lambda": 1.0})
    learner = Learner(digits, backbone(weights), [plain], TUNE, seed=0)
    assert "l2" not in learner.train_experience(0)  # `previous`: nothing during experience 0
    assert any(n.startswith("head.") for n in plain.anchor)


def test_ewc_backbone_scope_leaves_the_head_out(weights: Path, digits) -> None:
    ewc = build_strategy("ewc", {"scope": "backbone", "mode": "online", "fisher_batch_size": 64})
    learner = Learner(digits, backbone(weights), [ewc], TUNE, seed=0)
    learner.fit()
    names = set(ewc.fishers[0])
    assert names and all(n.startswith("body.") for n in names)
    full = build_strategy("ewc", {"fisher_batch_size": 64})
    Learner(digits, backbone(weights), [full], TUNE, seed=0).fit()
    assert set(full.fishers[0]) == names | {"head.linear.weight", "head.linear.bias"}


@pytest.mark.parametrize(
    ("model", "scenario", "pattern"),
    [
        (
            "{name: timm, arch: resnet1800}",
            "{source: digits, n_experiences: 2}",
            r"model.arch: timm has no architecture 'resnet1800'; did you mean",
        ),
        (
            "{name: torchvision, arch: resnet18, weights: nowhere.pt}",
            "{source: digits, n_experiences: 2}",
            r"model.weights: no file 'nowhere.pt'",
        ),
        (
            "{name: efficientnet_lite0}",
            "{source: mnist1d, n_experiences: 2}",
            r"model.name: model 'efficientnet_lite0' needs images shaped \(1 or 3, H, W\)",
        ),
    ],
)
def test_bad_backbone_settings_exit_2_before_anything_starts(
    model: str, scenario: str, pattern: str, in_tmp: Path
) -> None:
    import re

    path = in_tmp / "exp.yaml"
    path.write_text(f"name: bad\nscenario: {scenario}\nmodel: {model}\nstrategies: [naive]\n")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert re.search(pattern, result.stderr.replace("\n", " ")), result.stderr
    assert "Traceback" not in result.output
    assert not (in_tmp / "mlflow.db").exists()
