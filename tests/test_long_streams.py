"""Long streams: experiences built on demand, scheduled evaluation, metrics of a partial R."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import lifelong
from lifelong.cluster.shared import SharedStream
from lifelong.platform.cli import app
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.partial_metrics import coverage, partial_step_metrics, partial_summary
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import Experience, ScenarioConfig, build_stream
from lifelong.scenarios.derived import DerivedExperiences
from lifelong.strategies import Strategy, build_strategy

GAUSS = {"n_classes": 4, "n_features": 12, "n_train_per_class": 16, "n_test_per_class": 8}


def permuted(n: int, transform: str = "permuted", source: str = "gaussian"):
    options = GAUSS if source == "gaussian" else {}
    return build_stream(
        ScenarioConfig(
            source=source,
            protocol="domain_incremental",
            transform=transform,
            n_experiences=n,
            seed=3,
            options=options,
        )
    )


def eager(stream):
    """The same stream with every experience built up front, as tensors."""
    xs = tuple(
        Experience(e.index, e.task_id, e.classes, e.x_train, e.y_train, e.x_test, e.y_test)
        for e in stream.experiences
    )
    return dataclasses.replace(stream, experiences=xs)


def test_experiences_are_built_from_the_seed_as_the_eager_protocol_defined_them() -> None:
    stream = permuted(4)
    assert isinstance(stream.experiences, DerivedExperiences)
    base = stream[0]
    rng = np.random.default_rng([3, 2])  # the protocol's permutation purpose
    for i in range(1, 4):
        perm = torch.from_numpy(rng.permutation(12))
        torch.testing.assert_close(stream[i].x_train, base.x_train[:, perm], rtol=0, atol=0)
        torch.testing.assert_close(stream[i].x_test, base.x_test[:, perm], rtol=0, atol=0)
        assert torch.equal(stream[i].y_train, base.y_train)
    labels = permuted(3, "shuffled_labels")
    maps = labels.info["label_maps"]
    assert torch.equal(labels[2].y_test, torch.tensor(maps[2])[labels[0].y_test])
    assert [e.classes for e in labels] == [(0, 1, 2, 3)] * 3


def test_a_thousand_experiences_hold_the_data_once() -> None:
    small, long = permuted(10), permuted(1000)
    assert len(long) == 1000 and long[999].index == 999
    # only the permutations grow (12 int16 indices per experience), never the data
    assert long.experiences.nbytes - small.experiences.nbytes == 990 * 12 * 2
    e = long[500]
    assert not e._parts  # nothing is built before it is read
    assert e.n_test == 32 and list(e._parts) == ["test"]  # reading the test set builds it alone


def test_validation_builds_only_the_representatives(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    original = DerivedExperiences._build

    def counting(self, i, part):
        built.append(i)
        return original(self, i, part)

    monkeypatch.setattr(DerivedExperiences, "_build", counting)
    permuted(1000)
    assert sorted(set(built)) == [0, 1]


@pytest.mark.parametrize("transform", ["permuted", "shuffled_labels", "rotated"])
def test_a_derived_stream_travels_through_the_object_store_unchanged(transform: str) -> None:
    stream = permuted(3, transform, source="digits" if transform == "rotated" else "gaussian")
    back = SharedStream(stream).unpack()
    assert isinstance(back.experiences, DerivedExperiences) and len(back) == 3
    for a, b in zip(stream, back, strict=True):
        assert a.classes == b.classes
        for k in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(a, k), getattr(b, k))


def test_lazy_and_eager_streams_train_to_the_same_matrix() -> None:
    stream = permuted(4)
    training = TrainingConfig(epochs=1, batch_size=16, lr=0.1, accelerator="cpu")

    def fit(s):
        return Learner(s, ModelConfig(hidden=[8]), [build_strategy("ewc")], training, 0).fit()

    np.testing.assert_array_equal(fit(stream), fit(eager(stream)))


def test_scheduled_evaluation_fills_only_the_scheduled_cells() -> None:
    training = TrainingConfig(
        epochs=1, batch_size=16, accelerator="cpu", eval_every=3, eval_on="last_k", eval_last_k=2
    )
    learner = Learner(permuted(7), ModelConfig(hidden=[8]), [], training, 0)
    R = learner.fit()
    assert np.isnan(learner.untrained).all()  # nothing unseen is evaluated: no FWT
    filled = {(int(i), int(j)) for i, j in np.argwhere(np.isfinite(R))}
    assert filled == {(2, 1), (2, 2), (5, 4), (5, 5), (6, 5), (6, 6)}
    seen = TrainingConfig(epochs=1, batch_size=16, accelerator="cpu", eval_on="seen")
    R = Learner(permuted(3), ModelConfig(hidden=[8]), [], seen, 0).fit()
    assert np.array_equal(np.isfinite(R), np.tril(np.ones((3, 3), dtype=bool)))


def test_a_checkpoint_holds_the_evaluated_rows_only() -> None:
    training = TrainingConfig(epochs=1, batch_size=32, accelerator="cpu", eval_every=10)
    learner = Learner(permuted(30), ModelConfig(hidden=[8]), [], training, 0)
    for i in range(25):
        learner.run_experience(i)
    state = learner.state_dict()
    assert state["R_index"].tolist() == [9, 19] and state["R_rows"].shape == (2, 30)
    again = Learner(permuted(30), ModelConfig(hidden=[8]), [], training, 0)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.R, learner.R)  # nan where nothing was evaluated


def test_metrics_of_a_partial_matrix_use_the_evaluated_cells() -> None:
    nan = np.nan
    R = np.array(
        [
            [0.9, nan, nan, nan],
            [nan, nan, nan, nan],
            [0.6, 0.7, 0.8, nan],
            [0.5, nan, 0.6, 0.9],
        ]
    )
    assert partial_step_metrics(R, 1) == {}  # an unevaluated row logs nothing
    final = partial_summary(R, np.full(4, 0.25))
    assert final["acc/avg"] == pytest.approx((0.5 + 0.6 + 0.9) / 3)
    # j=0: best earlier 0.9 -> 0.5; j=2: best earlier 0.8 -> 0.6 (j=1 not evaluated now)
    assert final["forgetting/avg"] == pytest.approx(((0.9 - 0.5) + (0.8 - 0.6)) / 2)
    # pairs with the diagonal: j=0 (0.9 -> 0.5), j=2 (0.8 -> 0.6)
    assert final["bwt"] == pytest.approx(((0.5 - 0.9) + (0.6 - 0.8)) / 2)
    assert final["plasticity/avg"] == pytest.approx((0.9 + 0.8 + 0.9) / 3)
    assert final["fwt"] != final["fwt"]  # no R[j-1, j] was evaluated
    assert final["eval/coverage"] == pytest.approx(7 / 10) == coverage(R)
    step = partial_step_metrics(R, 2)
    assert set(step) >= {"acc/exp_0", "acc/exp_1", "acc/exp_2", "acc/avg", "eval/coverage"}
    assert "acc/exp_3" not in step and step["plasticity"] == 0.8


class Boundaries(Strategy):
    """Counts the boundary hooks it is given."""

    name = "boundaries"

    def __init__(self) -> None:
        super().__init__(Strategy.Config())
        self.calls: list[tuple[str, int]] = []

    def on_experience_start(self, ctx) -> None:
        self.calls.append(("start", ctx.experience.index))

    def on_experience_end(self, ctx) -> None:
        self.calls.append(("end", ctx.experience.index))


def test_a_task_free_stream_gives_the_strategies_no_boundary() -> None:
    stream = permuted(4)
    training = TrainingConfig(epochs=1, batch_size=16, accelerator="cpu")
    free = dataclasses.replace(stream, info={**stream.info, "task_free": True})
    told, blind = Boundaries(), Boundaries()
    Learner(stream, ModelConfig(hidden=[8]), [told], training, 0).fit()
    R = Learner(free, ModelConfig(hidden=[8]), [blind], training, 0).fit()
    assert told.calls == [(k, i) for i in range(4) for k in ("start", "end")]
    assert blind.calls == [("start", 0), ("end", 3)]
    assert np.isfinite(R).all()  # R keeps its rows at the nominal boundaries


def test_anytime_accuracy_is_taken_every_k_steps_without_changing_training() -> None:
    stream = permuted(3)  # 64 training samples per experience: 4 steps of 16
    plain = TrainingConfig(epochs=1, batch_size=16, lr=0.1, accelerator="cpu")
    online = plain.model_copy(update={"anytime_every": 2})
    ref = Learner(stream, ModelConfig(hidden=[8]), [build_strategy("l2")], plain, 0)
    learner = Learner(stream, ModelConfig(hidden=[8]), [build_strategy("l2")], online, 0)
    points = []
    for i in range(3):
        ref.run_experience(i)
        learner.run_experience(i)
        points += learner.anytime
    assert [seen for seen, _ in points] == [32, 64, 96, 128, 160, 192]
    assert all(0.0 <= acc <= 1.0 for _, acc in points)
    # the last point of an experience is the mean accuracy on the seen experiences
    assert points[3][1] == pytest.approx(float(np.mean(learner.R[1, :2])))
    np.testing.assert_array_equal(learner.R, ref.R)


def test_a_partial_matrix_is_logged_compressed_and_said_in_mlflow_and_compare(
    in_tmp: Path,
) -> None:
    spec = {
        "name": "long",
        "seeds": 1,
        "scenario": {
            "source": "gaussian",
            "protocol": "domain_incremental",
            "n_experiences": 30,
            "options": GAUSS,
        },
        "model": {"name": "mlp", "hidden": [8]},
        "training": {
            "epochs": 1,
            "batch_size": 32,
            "eval_every": 10,
            "eval_on": "last_k",
            "anytime_every": 20,
        },
        "strategies": ["naive"],
    }
    path = in_tmp / "long.yaml"
    path.write_text(yaml.safe_dump(spec))
    results = lifelong.run(path, in_process=True)
    (trial,) = results.trials
    assert trial.status == "FINISHED" and 0 < trial.metrics["eval/coverage"] < 1
    client = MlflowClient(results.tracking_uri)
    run = client.get_run(trial.run_id)
    assert "evaluated after every 10" in run.data.tags["lifelong.partial_R"]
    history = client.get_metric_history(trial.run_id, "acc/avg")
    assert sorted(m.step for m in history) == [9, 19, 29]
    anytime = client.get_metric_history(trial.run_id, "anytime/acc")
    assert sorted(m.step for m in anytime) == [640, 1280, 1920]  # every 20 steps of 32
    npz = client.download_artifacts(trial.run_id, "accuracy_matrix.npz", str(in_tmp))
    with np.load(npz) as data:
        R = data["R"]
    assert R.shape == (30, 30) and np.isfinite(R).sum() == 30
    np.testing.assert_array_equal(R, trial.R)
    shown = CliRunner().invoke(
        app, ["compare", "long", "--tracking-uri", results.tracking_uri], terminal_width=200
    )
    assert shown.exit_code == 0, shown.output
    assert "partial accuracy matrix" in shown.output
