"""An exception in a strategy's hook names the strategy, hook, experience, step and line."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lifelong.platform.hook_errors import NOTE, driver_paths, reason
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.plugins import load_plugin
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import build_strategy

from conftest import run_sweep_with_failures, tiny_experiment

PLUGIN = '''\
"""Test plugin: strategies that raise in chosen hooks."""

import torch

from lifelong.strategies import Strategy, StrategyConfig, register_strategy
from lifelong.strategies.l2 import L2


def _ratio(a, b):
    return a / b  # line 10: the helper the hook calls


class Config(StrategyConfig):
    """When to fail."""

    at_step: int = 3


@register_strategy("herr_terms")
class FailsInTerms(Strategy):
    """Raise ZeroDivisionError from a helper of loss_terms at ``at_step``."""

    Config = Config

    def loss_terms(self, ctx, batch):
        """A term whose helper divides by zero at the chosen step."""
        if ctx.step == self.config.at_step:
            _ratio(1, 0)
        return {}


@register_strategy("herr_l2")
class FailsAfterStep(L2):
    """A subclass of a built-in: raise in on_after_step of experience 1."""

    def on_after_step(self, ctx):
        """Fail on the first step of experience 1."""
        if ctx.experience.index == 1:
            raise RuntimeError("after-step broke")


@register_strategy("herr_state")
class FailsInState(Strategy):
    """A state_dict that raises (at the first checkpoint)."""

    def state_dict(self):
        """Broken on purpose."""
        raise KeyError("no state here")
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hook-errors") / "failing_hooks.py"
    path.write_text(PLUGIN)
    load_plugin(str(path), path.parent)
    return path


def _line(text: str) -> int:
    """The 1-based line of ``text`` in the plugin."""
    return next(n for n, ln in enumerate(PLUGIN.splitlines(), 1) if text in ln)


@pytest.fixture(scope="module")
def stream():
    return build_stream(ScenarioConfig(source="digits", n_experiences=2, seed=0))


def _learner(stream, *names: str) -> Learner:
    strategies = [build_strategy(n, {}) for n in names]
    training = TrainingConfig(epochs=1, lr=0.05, batch_size=128)
    return Learner(stream, ModelConfig(hidden=[16]), strategies, training, seed=0)


def _note(error: BaseException) -> str:
    notes = [n for n in getattr(error, "__notes__", []) if n.startswith(NOTE)]
    assert len(notes) == 1, notes
    return notes[0]


def test_a_hook_error_keeps_its_type_and_names_strategy_hook_step_and_helper_line(
    plugin: Path, stream
) -> None:
    lrn = _learner(stream, "naive", "herr_terms")
    lrn.evaluate_untrained()
    with pytest.raises(ZeroDivisionError) as info:
        lrn.run_experience(0)
    assert _note(info.value) == (
        f"{NOTE}strategy 'herr_terms' (FailsInTerms), hook loss_terms, experience 0, "
        f"step 3, at {plugin}:{_line('line 10')}"
    )


def test_a_subclass_of_a_built_in_names_itself_and_its_own_line(plugin: Path, stream) -> None:
    lrn = _learner(stream, "herr_l2")
    lrn.evaluate_untrained()
    lrn.run_experience(0)
    steps = lrn.step
    with pytest.raises(RuntimeError, match="after-step broke") as info:
        lrn.run_experience(1)
    assert _note(info.value) == (
        f"{NOTE}strategy 'herr_l2' (FailsAfterStep), hook on_after_step, experience 1, "
        f"step {steps}, at {plugin}:{_line('after-step broke')}"
    )


def test_a_state_dict_error_at_the_checkpoint_names_the_method(plugin: Path, stream) -> None:
    lrn = _learner(stream, "herr_state")
    lrn.run_experience(0)
    with pytest.raises(KeyError) as info:
        lrn.state_dict()
    assert "hook state_dict, experience 0" in _note(info.value)
    assert f"{plugin}:{_line('no state here')}" in _note(info.value)


def test_the_platforms_own_errors_get_no_note(stream) -> None:
    lrn = _learner(stream, "naive")
    lrn.experiences = lrn.experiences[:1]
    with pytest.raises(IndexError) as info:
        lrn.run_experience(1)
    assert not getattr(info.value, "__notes__", [])


def test_reason_is_the_exception_line_then_where_and_driver_paths_replace_shipped_copies(
    plugin: Path,
) -> None:
    module = next(m for m in sys.modules if m.startswith("lifelong_plugin_failing_hooks"))
    shipped = (
        f"/tmp/ray/session/runtime_resources/py_modules/lifelong_shipped_0123456789/{module}.py"
    )
    text = (
        "Traceback (most recent call last):\n"
        f'  File "{shipped}", line 10, in _ratio\n'
        "ZeroDivisionError: division by zero\n"
        f"{NOTE}strategy 'x' (X), hook loss_terms, experience 0, step 3, at {shipped}:10\n"
    )
    assert reason(text) == (
        "ZeroDivisionError: division by zero (raised in strategy 'x' (X), hook loss_terms, "
        f"experience 0, step 3, at {plugin}:10)"
    )
    assert shipped not in driver_paths(text) and f'"{plugin}", line 10' in driver_paths(text)
    assert reason("") == "the trial failed without an error message"
    assert reason(traceback.format_exc().replace("NoneType: None", "ValueError: x")) == (
        "ValueError: x"
    )


def test_a_sweep_on_ray_records_where_and_the_whole_traceback(
    ray_instance: str, in_tmp: Path, plugin: Path
) -> None:
    spec = tiny_experiment("hook_errors", [str(plugin)], ["naive", "herr_l2"])
    uri, runs = run_sweep_with_failures(in_tmp, spec)
    client = MlflowClient(uri)
    assert runs["naive"].info.status == "FINISHED"
    failed = runs["herr_l2"]
    assert failed.info.status == "FAILED"
    error = failed.data.tags["lifelong.error"]
    assert error.startswith("RuntimeError: after-step broke (raised in strategy 'herr_l2'")
    # 2 classes x 20 samples per experience in batches of 16: 3 steps (0-2) in
    # experience 0, so experience 1's first step is step 3.
    assert "hook on_after_step, experience 1, step 3" in error
    assert error.endswith(f"at {plugin}:{_line('after-step broke')})")
    local = client.download_artifacts(failed.info.run_id, "traceback.txt", str(in_tmp))
    text = Path(local).read_text()
    assert f'File "{plugin}", line {_line("after-step broke")}, in on_after_step' in text
    assert "lifelong_shipped_" not in text
