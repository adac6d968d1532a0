"""Vectorised trials (issue 24 item 1): S seeds as one program equal S separate trials."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.platform.vectorized import VectorizedLearner, vectorization_blocker
from lifelong.scenarios import ScenarioConfig, Stream, build_stream
from lifelong.strategies import Batch, Context, Strategy, build_strategy

from conftest import tiny_experiment

PARAMS = {
    "naive": {},
    "l2": {"lambda": 0.1},
    "ewc": {"lambda": 10.0},
    "si": {"lambda": 10.0},
    "mas": {"lambda": 1.0},
    "spectral": {"lambda": 1e-3},
    "wasserstein_init": {"lambda": 1e-2},
    "lwf": {"lambda": 1.0},
}
SEEDS = [0, 1, 2]
PENALTY_LOSSES = (
    "a stacked strategy's loss/<term> is the group's mean; loss/ce and a per_trial "
    "strategy's terms are this trial's own"
)


@pytest.fixture(scope="module")
def digits() -> Stream:
    return build_stream(ScenarioConfig(source="digits", n_experiences=3, seed=0))


def _training(optimizer: str) -> TrainingConfig:
    lr = 0.05 if optimizer == "sgd" else 0.003
    return TrainingConfig(
        epochs=1, batch_size=32, lr=lr, momentum=0.9, optimizer=optimizer, accelerator="cpu"
    )


def _vectorised(stream: Stream, name: str, training: TrainingConfig) -> VectorizedLearner:
    return VectorizedLearner(
        stream,
        ModelConfig(hidden=[32]),
        lambda: [build_strategy(name, PARAMS[name])],
        training,
        SEEDS,
    )


def _separate(stream: Stream, name: str, training: TrainingConfig, seed: int) -> Learner:
    return Learner(
        stream, ModelConfig(hidden=[32]), [build_strategy(name, PARAMS[name])], training, seed
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_vectorised_trials_equal_the_separate_trials(
    digits: Stream, name: str, optimizer: str
) -> None:
    training = _training(optimizer)
    vec = _vectorised(digits, name, training)
    vec.evaluate_untrained()
    losses = [vec.run_experience(i)[1] for i in range(len(digits))]
    for s, seed in enumerate(SEEDS):
        alone = _separate(digits, name, training, seed)
        alone.evaluate_untrained()
        own = [alone.run_experience(i)[1] for i in range(len(digits))]
        # one misclassified test sample at most (a batched product sums in another order)
        assert np.nanmax(np.abs(vec.R[s] - alone.R)) <= 1 / min(e.n_test for e in digits)
        np.testing.assert_array_equal(vec.untrained[s], alone.untrained)
        weights = vec.model_state(s)
        for key, value in alone.model.state_dict().items():
            torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5)
        for mine, theirs in zip(losses, own, strict=True):
            assert mine["ce"][s] == pytest.approx(theirs["ce"], rel=1e-5)
        for key, value in alone.strategy_metrics().items():
            assert vec.strategy_metrics(s)[key] == pytest.approx(value, rel=1e-5)


def test_a_per_trial_term_is_each_trials_own(digits: Stream) -> None:
    """LwF's distillation runs per trial on live outputs: its logged term is the trial's."""
    training = _training("sgd")
    vec = _vectorised(digits, "lwf", training)
    vec.run_experience(0)
    _, losses = vec.run_experience(1)
    for s, seed in enumerate(SEEDS):
        alone = _separate(digits, "lwf", training, seed)
        alone.run_experience(0)
        assert losses["lwf"][s] == pytest.approx(alone.run_experience(1)[1]["lwf"], rel=1e-5)
    assert len(set(losses["lwf"].tolist())) == len(SEEDS)


class _PerTrialAfterStep(Strategy):
    """A per_trial strategy with a per-step hook its trial's model cannot serve."""

    name = "per_trial_after_step"
    vectorize = "per_trial"

    def on_after_step(self, ctx: Context) -> None:
        pass


def test_a_per_trial_strategy_with_a_per_step_hook_is_refused(digits: Stream) -> None:
    reason = vectorization_blocker(digits, _training("sgd"), [_PerTrialAfterStep()])
    assert reason is not None and "on_after_step" in reason


def test_a_per_trial_strategy_on_a_multi_head_model_is_refused() -> None:
    stream = build_stream(
        ScenarioConfig(source="digits", n_experiences=2, seed=0, protocol="task_incremental")
    )
    with pytest.raises(ValueError, match="multi-head, whose other heads strategy 'lwf'"):
        _vectorised(stream, "lwf", _training("sgd"))


def test_the_penalty_is_logged_as_the_mean_over_the_trials(digits: Stream) -> None:
    training = _training("sgd")
    vec = _vectorised(digits, "l2", training)
    vec.run_experience(0)
    _, losses = vec.run_experience(1)
    own = []
    for seed in SEEDS:
        alone = _separate(digits, "l2", training, seed)
        alone.run_experience(0)
        own.append(alone.run_experience(1)[1]["l2"])
    assert losses["l2"] == pytest.approx(np.full(3, np.mean(own)), rel=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_trials_state_goes_on_in_a_learner_as_if_it_had_trained_alone(
    digits: Stream, optimizer: str
) -> None:
    training = _training(optimizer)
    vec = _vectorised(digits, "ewc", training)
    vec.evaluate_untrained()
    vec.run_experience(0)
    buf = io.BytesIO()
    torch.save(vec.member_state(1), buf)
    buf.seek(0)
    resumed = _separate(digits, "ewc", training, SEEDS[1])
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.next_experience == 1
    alone = _separate(digits, "ewc", training, SEEDS[1])
    np.testing.assert_allclose(resumed.fit(), alone.fit(), atol=1 / 100)


@pytest.mark.parametrize("name", ["naive", "l2", "ewc", "si", "spectral"])
def test_a_trial_that_diverges_fails_alone(digits: Stream, name: str) -> None:
    training = _training("sgd")
    vec = _vectorised(digits, name, training)
    vec.evaluate_untrained()
    vec.run_experience(0)
    with torch.no_grad():
        next(iter(vec.params.values()))[1].fill_(float("nan"))  # trial 1 blows up
    vec.run_experience(1)
    assert set(vec.failed) == {1}
    assert "seed 1" in vec.failed[1] and "experience 1" in vec.failed[1]
    first = -(-digits.experiences[0].n_train // training.batch_size)  # exp 1's first step
    assert f"'ce' became NaN/inf at step {first} (epoch 0) of experience 1" in vec.failed[1]
    vec.run_experience(2)
    for s in (0, 2):  # the others are where they would be alone
        alone = _separate(digits, name, training, SEEDS[s])
        alone.fit()
        assert np.isfinite(vec.R[s]).all()
        weights = vec.model_state(s)
        for key, value in alone.model.state_dict().items():
            torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5)


def test_what_cannot_train_vectorised_says_why(digits: Stream) -> None:
    center = build_strategy("center_loss", {})
    training = _training("sgd")
    assert "center_loss" in str(vectorization_blocker(digits, training, [center]))
    assert vectorization_blocker(digits, training, [build_strategy("ewc", {})]) is None
    reference = training.model_copy(update={"plasticity_baseline": True})
    assert "plasticity" in str(vectorization_blocker(digits, reference, []))


def test_a_model_whose_batchnorm_trains_is_refused(digits: Stream, tmp_path: Path) -> None:
    from conftest import save_test_resnet

    weights = str(save_test_resnet(tmp_path, seed=0))
    model = {"name": "timm", "arch": "test_resnet", "weights": weights, "input_size": 32}
    training = _training("sgd")
    with pytest.raises(ValueError, match="BatchNorm layers that train"):
        VectorizedLearner(digits, ModelConfig(**model), lambda: [], training, [0, 1])
    frozen = ModelConfig(**model, freeze="backbone")  # BatchNorm in eval mode: accepted
    VectorizedLearner(digits, frozen, lambda: [], training, [0, 1])


def _runs(uri: str, name: str) -> dict[tuple[str, str], object]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], "tags.`lifelong.role` = 'trial'")
    return {(r.data.tags["strategy"], r.data.tags["seed"]): r for r in runs}


def _same_final_metrics(runs: dict, reference: dict) -> None:
    """Every run's final metrics equal (1e-6) those of the reference run of its key."""
    for key, run in runs.items():
        mine, theirs = run.data.metrics, reference[key].data.metrics
        for metric in ("acc/avg", "forgetting/avg", "bwt", "fwt"):
            assert mine[metric] == pytest.approx(theirs[metric], abs=1e-6), (key, metric)


def test_a_vectorised_sweep_logs_every_trial_as_its_own_run(
    ray_instance: str, in_tmp: Path
) -> None:
    spec = tiny_experiment("vectorised", [], ["ewc", "lwf", "dst"])
    spec["seeds"] = 3
    spec["resources"] = {"vectorize": 4}
    path = in_tmp / "vectorised.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    cli = CliRunner()
    result = cli.invoke(app, ["run", str(path), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "6 trials train vectorised, in 2 group(s)" in result.output
    assert "dst: each seed trains on its own" in result.output
    together = _runs(uri, "vectorised")
    assert len(together) == 9
    for (strategy, seed), run in together.items():
        tag = run.data.tags.get("lifelong.vectorized")  # type: ignore[attr-defined]
        if strategy == "dst":
            assert tag is None
        else:
            assert yaml.safe_load(tag) == {
                "size": 3,
                "seeds": [0, 1, 2],
                "lrs": [0.01, 0.01, 0.01],
                "penalty_losses": PENALTY_LOSSES,
            }, (strategy, seed)
        assert run.info.status == "FINISHED"  # type: ignore[attr-defined]
    result = cli.invoke(
        app,
        [
            "run",
            str(path),
            "resources.vectorize=1",
            "--experiment-name",
            "alone",
            "--tracking-uri",
            uri,
        ],
    )
    assert result.exit_code == 0, result.output
    _same_final_metrics(together, _runs(uri, "alone"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("resources.vectorize=0", "vectorize is auto or a number of trials from 1 to 1024"),
        ("resources.workers=2", "choose one"),
    ],
)
def test_a_bad_vectorize_setting_exits_2_before_ray_starts(
    in_tmp: Path, override: str, message: str
) -> None:
    spec = tiny_experiment("badvec", [], ["naive"])
    spec["resources"] = {"vectorize": 2}
    path = in_tmp / "badvec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(path), override, "--dry-run"])
    assert result.exit_code == 2, result.output
    assert message in result.output


class _FailsAtStep(Strategy):
    """Raises in ``loss_terms`` at step 5 (stacked): the error names it."""

    name = "vec_fails"
    vectorize = "stacked"

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, torch.Tensor]:
        if ctx.step == 5:
            raise RuntimeError("boom")
        return {}


class _Protects(Strategy):
    """Protects a parameter, which a vectorised step cannot honour."""

    name = "vec_protects"
    vectorize = "stacked"

    def on_after_backward(self, ctx: Context) -> None:
        ctx.protect("head.linear.weight")


def test_an_error_in_a_hook_names_the_strategy_hook_experience_and_step(digits: Stream) -> None:
    vec = VectorizedLearner(
        digits, ModelConfig(hidden=[32]), lambda: [_FailsAtStep()], _training("sgd"), SEEDS
    )
    with pytest.raises(RuntimeError, match="boom") as info:
        vec.run_experience(0)
    (note,) = info.value.__notes__
    assert "strategy 'vec_fails'" in note and "hook loss_terms" in note
    assert "experience 0, step 5" in note and "test_vectorized.py" in note


def test_a_protected_parameter_is_refused(digits: Stream) -> None:
    vec = VectorizedLearner(
        digits, ModelConfig(hidden=[32]), lambda: [_Protects()], _training("sgd"), SEEDS
    )
    with pytest.raises(ValueError, match="ctx.protect"):
        vec.run_experience(0)


ONCE = '''\
"""Test plugin: fails once at experience 1, stacked with the strategies beside it."""

from pathlib import Path

from lifelong.strategies import Strategy, StrategyConfig, register_strategy


class OnceConfig(StrategyConfig):
    """``marker``: the file that records the one failure."""

    marker: str = ""


@register_strategy("once")
class Once(Strategy):
    """No loss term, no state; raises the first time experience 1 starts."""

    Config = OnceConfig
    vectorize = "stacked"

    def on_experience_start(self, ctx):
        """Raise once at experience 1."""
        marker = Path(self.config.marker)
        if ctx.experience.index == 1 and not marker.exists():
            marker.write_text("failed")
            raise RuntimeError("once: experience 1 fails the first time")
'''


def test_a_group_that_fails_restarts_its_trials_alone_from_their_checkpoints(
    ray_instance: str, in_tmp: Path
) -> None:
    (in_tmp / "once.py").write_text(ONCE)
    marker = in_tmp / "failed-once"
    spec = tiny_experiment("restarted", ["once.py"], [["ewc", {"once": {"marker": str(marker)}}]])
    spec["seeds"] = 2
    spec["max_failures"] = 1
    spec["resources"] = {"vectorize": 2}
    path = in_tmp / "restarted.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    cli = CliRunner()
    result = cli.invoke(app, ["run", str(path), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "2 trials train vectorised, in 1 group(s)" in result.output
    assert marker.read_text() == "failed"  # the group did fail once
    client = MlflowClient(uri)
    restarted = _runs(uri, "restarted")
    for run in restarted.values():
        assert run.info.status == "FINISHED"  # type: ignore[attr-defined]
        tags = run.data.tags  # type: ignore[attr-defined]
        assert tags["lifelong.restarts"] == "1"
        assert "once: experience 1" in tags["lifelong.restart_1"]
        assert yaml.safe_load(tags["lifelong.vectorized"])["seeds"] == [0, 1]  # experience 0
        for key in ("acc/avg", "loss/ce"):  # every step exactly once
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))  # type: ignore[attr-defined]
            assert steps == [0, 1], key
    marker.unlink()
    marker.write_text("failed")  # the reference run does not fail
    result = cli.invoke(
        app,
        [
            "run",
            str(path),
            "resources.vectorize=1",
            "max_failures=0",
            "--experiment-name",
            "reference",
            "--tracking-uri",
            uri,
        ],
    )
    assert result.exit_code == 0, result.output
    _same_final_metrics(restarted, _runs(uri, "reference"))


def _dropout_mlp(input_shape: tuple[int, ...], hidden: list[int]) -> tuple[torch.nn.Module, int]:
    """A body with dropout: ``Flatten, Linear, ReLU, Dropout(0.5)``."""
    n_in = int(np.prod(input_shape))
    body = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(n_in, hidden[0]),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
    )
    return body, hidden[0]


def test_dropout_draws_its_own_masks_for_every_trial(
    digits: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifelong.platform.models import MODELS

    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # registered for this test
    MODELS.register("vec_dropout_mlp", _dropout_mlp)
    model = ModelConfig(name="vec_dropout_mlp", hidden=[32])
    # two trials with the same seed: the same weights and batches, so only the dropout
    # masks can tell them apart
    vec = VectorizedLearner(digits, model, lambda: [], _training("sgd"), [0, 0])
    first = vec.model_state(0)
    torch.testing.assert_close(first, vec.model_state(1))
    vec.run_experience(0)
    after = [vec.model_state(s)["body.1.weight"] for s in (0, 1)]
    assert not torch.equal(after[0], after[1])
    nodrop = VectorizedLearner(
        digits, ModelConfig(hidden=[32]), lambda: [], _training("sgd"), [0, 0]
    )
    nodrop.run_experience(0)  # the control: without dropout the two stay equal
    torch.testing.assert_close(nodrop.model_state(0), nodrop.model_state(1))
