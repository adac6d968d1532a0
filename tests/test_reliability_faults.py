"""Numerical faults: a trial whose loss or gradient turns NaN/inf fails alone, naming the step.

Two fault-injecting strategies (a plugin file) make a loss term infinite, or
keep every loss term finite but make the gradient NaN, from a given optimizer
step. The learner must name that exact step, the experience and the term (and
its strategy); in a sweep that trial ends FAILED while the others finish.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.learner import DivergenceError, Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.plugins import load_plugin
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import build_strategy

PLUGIN = '''
"""Fault injection for tests: a term that becomes inf, or a NaN gradient, from a step on."""

import torch
from pydantic import Field

from lifelong.strategies import Strategy, StrategyConfig, register_strategy


class FaultConfig(StrategyConfig):
    """From which global optimizer step the fault starts."""

    at_step: int = Field(0, ge=0, description="first faulty optimizer step")


@register_strategy("fault_loss")
class FaultLoss(Strategy):
    """A loss term that is 0, then +inf from ``at_step`` on."""

    Config = FaultConfig

    def loss_terms(self, ctx, batch):
        """Return the faulty term."""
        w = next(ctx.model.parameters())
        bad = float("inf") if ctx.step >= self.config.at_step else 0.0
        return {"fault_loss": (w * 0).sum() + bad}


@register_strategy("fault_grad")
class FaultGrad(Strategy):
    """A term whose value stays 0 but whose gradient is NaN from ``at_step`` on."""

    Config = FaultConfig

    def loss_terms(self, ctx, batch):
        """sqrt(|w - w|) is 0, its derivative at 0 is inf * 0 = NaN."""
        if ctx.step < self.config.at_step:
            return {}
        w = next(ctx.model.parameters())
        return {"fault_grad": torch.sqrt((w - w.detach()).abs()).sum()}
'''


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plugin") / "faults_plugin.py"
    path.write_text(PLUGIN)
    load_plugin(str(path), path.parent)
    return path


@pytest.fixture(scope="module")
def stream():
    cfg = ScenarioConfig(
        source="gaussian",
        n_experiences=2,
        options={"n_classes": 4, "n_features": 6, "n_train_per_class": 40},
    )
    return build_stream(cfg)  # 80 training samples per experience: 10 steps of 8 per epoch


def fit(stream, name: str, at_step: int) -> DivergenceError:
    training = TrainingConfig(epochs=2, batch_size=8, lr=0.05, accelerator="cpu")
    strategy = build_strategy(name, {"at_step": at_step})
    learner = Learner(stream, ModelConfig(hidden=[16]), [strategy], training, 0)
    with pytest.raises(DivergenceError) as info:
        learner.fit()
    return info.value


@pytest.mark.parametrize(("at_step", "experience", "epoch"), [(3, 0, 0), (13, 0, 1), (27, 1, 0)])
def test_loss_fault_names_the_exact_step_experience_and_term(
    plugin_file: Path, stream, at_step: int, experience: int, epoch: int
) -> None:
    err = fit(stream, "fault_loss", at_step)
    assert (err.step, err.experience, err.epoch) == (at_step, experience, epoch)
    assert err.terms == ("fault_loss",) and not err.gradient
    assert f"experience {experience}, epoch {epoch}, optimizer step {at_step}" in str(err)
    assert "term 'fault_loss' (from strategy 'fault_loss')" in str(err)


@pytest.mark.parametrize("at_step", [5, 24])
def test_gradient_fault_with_finite_loss_names_the_exact_step(
    plugin_file: Path, stream, at_step: int
) -> None:
    err = fit(stream, "fault_grad", at_step)
    assert err.step == at_step and err.gradient and err.terms == ()
    assert err.experience == at_step // 20
    assert f"optimizer step {at_step}" in str(err)
    assert "gradients became NaN/inf" in str(err) and "every loss term was finite" in str(err)
    assert "'fault_grad' (from strategy 'fault_grad')" in str(err)


def test_faulty_trials_fail_alone_in_a_sweep(
    ray_instance: str, in_tmp: Path, plugin_file: Path
) -> None:
    spec = {
        "name": "faults",
        "plugins": [str(plugin_file)],  # the file the other tests loaded (one registration)
        "scenario": {
            "source": "gaussian",
            "n_experiences": 2,
            "options": {"n_classes": 4, "n_features": 6, "n_train_per_class": 40},
        },
        "model": {"hidden": [16]},
        "training": {"epochs": 2, "batch_size": 8},
        "strategies": ["naive", {"fault_loss": {"at_step": 27}}, {"fault_grad": {"at_step": 5}}],
    }
    path = in_tmp / "faults.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = f"sqlite:///{in_tmp / 'faults.db'}"
    result = CliRunner().invoke(app, ["run", str(path), "--tracking-uri", uri])
    assert result.exit_code == 1, result.output
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("faults")
    runs = {
        r.data.tags["strategy"]: r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("lifelong.role") == "trial"
    }
    assert runs["naive"].info.status == "FINISHED"
    assert runs["fault_loss"].info.status == "FAILED"
    assert runs["fault_grad"].info.status == "FAILED"
    loss_error = runs["fault_loss"].data.tags["lifelong.error"]
    assert "experience 1, epoch 0, optimizer step 27" in loss_error
    assert "'fault_loss' (from strategy 'fault_loss')" in loss_error
    grad_error = runs["fault_grad"].data.tags["lifelong.error"]
    assert "gradients became NaN/inf in experience 0, epoch 0, optimizer step 5" in grad_error
    # the failed trial keeps what it logged before the fault
    steps = [m.step for m in client.get_metric_history(runs["fault_loss"].info.run_id, "acc/avg")]
    assert steps == [0]
    assert "FAILED fault_loss" in result.stdout and "FAILED fault_grad" in result.stdout
