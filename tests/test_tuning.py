"""The tuning protocol: validation streams, choosing per strategy, and an ASHA sweep end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.cluster.tuning import choose
from lifelong.platform.cli import app
from lifelong.platform.spec import SpecError, TrialSpec, parse_experiment
from lifelong.platform.tracking import TrialOutcome
from lifelong.platform.tuning import TuneSection, ValidationConfig, final_stream, validation_stream
from lifelong.scenarios import ScenarioConfig, build_stream

GAUSS = {
    "source": "gaussian",
    "protocol": "domain_incremental",
    "n_experiences": 3,
    "seed": 0,
    "options": {"n_classes": 4, "n_features": 8, "n_train_per_class": 30, "n_test_per_class": 10},
}


def _stream(**changes):
    return build_stream(ScenarioConfig.model_validate({**GAUSS, **changes}))


def test_holdout_takes_the_validation_set_from_the_training_data_only() -> None:
    stream = _stream()
    val = validation_stream(stream, ValidationConfig(holdout=0.25))
    assert len(val) == len(stream)
    for e, v in zip(stream, val, strict=True):
        assert v.n_train + v.n_test == e.n_train and v.n_test == e.n_train // 4
        rows = {tuple(x.tolist()) for x in e.x_train}
        assert all(tuple(x.tolist()) in rows for x in v.x_test)  # from the training set
        assert all(tuple(x.tolist()) in rows for x in v.x_train)
        train_rows = {tuple(x.tolist()) for x in v.x_train}
        assert not train_rows & {tuple(x.tolist()) for x in v.x_test}  # disjoint
        assert not {tuple(x.tolist()) for x in e.x_test} & (train_rows | rows)  # test unseen
    again = validation_stream(stream, ValidationConfig(holdout=0.25))
    assert all(torch.equal(a.x_test, b.x_test) for a, b in zip(val, again, strict=True))
    assert final_stream(stream, ValidationConfig(holdout=0.25)) is stream


def test_first_k_tunes_on_the_first_experiences_and_tests_on_the_rest() -> None:
    stream = _stream(protocol="task_incremental", source="gaussian", n_experiences=4)
    k = ValidationConfig(first_k=1)
    val, rest = validation_stream(stream, k), final_stream(stream, k)
    assert [e.index for e in val] == [0] and torch.equal(val[0].x_test, stream[0].x_test)
    assert [e.index for e in rest] == [0, 1, 2]
    assert [e.task_id for e in rest] == [0, 1, 2]
    assert [e.classes for e in rest] == [e.classes for e in stream.experiences[1:]]
    assert torch.equal(rest[0].x_train, stream[1].x_train)


def _outcome(label: str, seed: int, status: str, acc: float) -> TrialOutcome:
    trial = TrialSpec((), seed, label, base_label="ewc")
    return TrialOutcome(trial, f"run-{label}-{seed}", status=status, final={"acc/avg": acc})


def test_choose_needs_every_tuning_seed_and_takes_the_best_mean() -> None:
    tune = TuneSection(seeds=[100, 101])
    outcomes = [
        _outcome("a", 100, "FINISHED", 0.5),
        _outcome("a", 101, "FINISHED", 0.7),  # mean 0.6
        _outcome("b", 100, "FINISHED", 0.9),
        _outcome("b", 101, "STOPPED", 0.1),  # not every seed finished: not a candidate
        _outcome("c", 100, "FINISHED", 0.6),
        _outcome("c", 101, "FINISHED", 0.6),  # ties a: a was tried first
    ]
    choice = choose("ewc", outcomes, tune)
    assert choice.trial is not None and choice.trial.label == "a"
    assert choice.score == pytest.approx(0.6)
    assert (choice.configurations, choice.trials, choice.stopped) == (3, 6, 1)
    low = choose("ewc", outcomes, TuneSection(seeds=[100, 101], mode="min"))
    assert low.trial is not None and low.trial.label == "a"  # 0.6 = c, a tried first
    none = choose("ewc", [_outcome("b", 100, "FAILED", 0.0)], TuneSection(seeds=[100]))
    assert none.trial is None and np.isnan(none.score)


@pytest.mark.parametrize(
    ("tune", "where", "message"),
    [
        ({"seeds": [0]}, "tune.seeds", "tuning seeds must differ from the test seeds"),
        ({"validation": {"first_k": 3}}, "tune.validation.first_k", "must leave experiences"),
        ({"validation": {"holdout": 0.2, "first_k": 1}}, "tune.validation", "exactly one"),
        ({"search": "optuna", "seeds": [7, 8]}, "tune.seeds", "one seed"),
        ({"scheduler": "asha", "grace_period": 3}, "tune.grace_period", "below n_experiences"),
        ({"scheduler": "hyperband"}, "tune.scheduler", "Input should be"),
    ],
)
def test_bad_tune_sections_name_the_field(tune: dict, where: str, message: str) -> None:
    spec = {"seeds": 2, "scenario": GAUSS, "strategies": ["naive"], "tune": tune}
    with pytest.raises(SpecError) as e:
        parse_experiment(yaml.safe_dump(spec, sort_keys=False), file="t.yaml")
    assert f": {where}: " in str(e.value) and message in str(e.value), str(e.value)
    assert str(e.value).startswith("t.yaml:")


def _runs(client: MlflowClient, name: str):
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_asha_sweep_tunes_on_validation_and_reports_the_test_phase(
    ray_instance: str, in_tmp: Path
) -> None:
    spec = {
        "name": "tuned",
        "seeds": 2,
        "scenario": GAUSS,
        "model": {"name": "mlp", "hidden": [16]},
        # one trial at a time, best first: ASHA then stops the hopeless lr at rung 1
        "training": {"epochs": 1, "lr": {"grid": [0.1, 1e-6]}},
        "max_concurrent_trials": 1,
        "strategies": ["naive"],
        "tune": {"scheduler": "asha", "grace_period": 1, "seeds": [100]},
    }
    path = in_tmp / "tuned.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "validation phase" in result.stdout and "test phase" in result.stdout

    client = MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    runs = _runs(client, "tuned")
    parents = {
        r.data.tags["lifelong.phase"]: r for r in runs if r.data.tags["lifelong.role"] == "sweep"
    }
    assert set(parents) == {"tune", "test"}
    tune_parent, test_parent = parents["tune"], parents["test"]
    assert test_parent.data.tags["lifelong.tuned_by"] == tune_parent.info.run_id
    kids = [r for r in runs if r.data.tags["lifelong.role"] == "trial"]
    tuning = [r for r in kids if r.data.tags["lifelong.phase"] == "tune"]
    testing = [r for r in kids if r.data.tags["lifelong.phase"] == "test"]
    assert {r.data.params["scenario.split"] for r in tuning} == {"validation:holdout=0.2"}
    assert {r.data.params["seed"] for r in tuning} == {"100"}
    assert all("scenario.split" not in r.data.params for r in testing)

    by_lr = {r.data.params["training.lr"]: r for r in tuning}
    assert set(by_lr) == {"0.1", "1e-06"}
    good, bad = by_lr["0.1"], by_lr["1e-06"]
    assert good.info.status == "FINISHED"
    assert bad.info.status == "KILLED"
    assert bad.data.tags["lifelong.early_stopped"] == "stopped by asha after 1 of 3 experiences"
    assert [m.step for m in client.get_metric_history(bad.info.run_id, "acc/avg")] == [0]

    # the chosen configuration runs on the test stream with the fresh seeds
    chosen = sorted((r.data.params["training.lr"], r.data.params["seed"]) for r in testing)
    assert chosen == [("0.1", "0"), ("0.1", "1")]
    assert {r.data.tags["strategy"] for r in testing} == {"naive [training.lr=0.1]"}
    assert all(r.info.status == "FINISHED" for r in testing)
    tuning_json = client.download_artifacts(test_parent.info.run_id, "tuning.json", str(in_tmp))
    (choice,) = json.loads(Path(tuning_json).read_text())
    assert choice["chosen"] == "naive [training.lr=0.1]" and choice["stopped_early"] == 1
    assert choice["validation_score"] == pytest.approx(good.data.metrics["acc/avg"])

    table = CliRunner().invoke(app, ["compare", "tuned", "--phase", "test", "--format", "json"])
    assert table.exit_code == 0, table.output
    rows = json.loads(table.stdout)["strategies"]
    assert [r["strategy"] for r in rows] == ["naive"]  # one configuration: nothing differs
    assert rows[0]["seeds"] == [0, 1]


def _tuned(tmp: Path, tune: dict, strategies: list, num_samples: int = 1):
    spec = {
        "seeds": 1,
        "num_samples": num_samples,
        "scenario": GAUSS,
        "model": {"name": "mlp", "hidden": [16]},
        "training": {"epochs": 1, "lr": 0.1},
        "strategies": strategies,
        "tune": tune,
    }
    return parse_experiment(yaml.safe_dump(spec, sort_keys=False))


def test_the_tune_section_becomes_ray_tunes_schedulers_and_searchers(tmp_path: Path) -> None:
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule
    from ray.tune.search import ConcurrencyLimiter

    from lifelong.cluster.tuning import tune_run_for

    space = [{"l2": {"lambda": {"loguniform": [0.01, 10.0]}}}]
    asha = tune_run_for(_tuned(tmp_path, {"scheduler": "asha", "grace_period": 2}, space, 4), 0, 3)
    assert isinstance(asha.scheduler, ASHAScheduler) and asha.search_alg is None
    assert asha.scheduler._max_t == 3  # ASHA's rungs: experiences grace_period, 2x, ... < 3
    assert [m for m, _ in asha.scheduler._brackets[0]._rungs] == [2]
    assert (asha.scheduler._metric, asha.scheduler._mode) == ("acc/avg", "max")
    assert len(asha.trials) == 4 and asha.stopper == "asha"
    median = tune_run_for(
        _tuned(tmp_path, {"scheduler": "median", "metric": "forgetting/avg"}, space, 2), 0, 3
    )
    assert isinstance(median.scheduler, MedianStoppingRule)
    assert (median.scheduler._metric, median.scheduler._mode) == ("forgetting/avg", "min")
    optuna = tune_run_for(
        _tuned(
            tmp_path,
            {"search": "optuna", "max_concurrent": 2, "time_budget_s": 60},
            space,
            5,
        ),
        0,
        3,
    )
    assert isinstance(optuna.search_alg, ConcurrencyLimiter) and optuna.trials == []
    assert optuna.num_samples == 5 and optuna.time_budget_s == 60
    assert optuna.base is not None and optuna.base.seed == 1000
    assert set(optuna.space) == {"strategy.l2.lambda"}
    assert optuna.stopper == "the time budget"


def test_optuna_proposes_the_configurations(ray_instance: str, in_tmp: Path) -> None:
    spec = {
        "name": "optuna",
        "seeds": 1,
        "num_samples": 3,
        "scenario": {**GAUSS, "n_experiences": 2},
        "model": {"name": "mlp", "hidden": [16]},
        "training": {"epochs": 1, "lr": 0.1},
        "strategies": [{"l2": {"lambda": {"loguniform": [0.01, 10.0]}}}],
        "tune": {"search": "optuna", "seeds": [7]},
    }
    path = in_tmp / "optuna.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    runs = _runs(client, "optuna")
    tuning = [
        r
        for r in runs
        if r.data.tags["lifelong.role"] == "trial" and r.data.tags["lifelong.phase"] == "tune"
    ]
    lambdas = [float(r.data.params["strategy.l2.lambda"]) for r in tuning]
    assert len(tuning) == 3 and len(set(lambdas)) == 3
    assert all(0.01 <= v <= 10.0 for v in lambdas)
    top = max(r.data.metrics["acc/avg"] for r in tuning)
    ties = [r for r in tuning if r.data.metrics["acc/avg"] == top]
    best = min(ties, key=lambda r: r.info.start_time)  # an exact tie: the first tried
    testing = [r for r in runs if r.data.tags.get("lifelong.phase") == "test"]
    kids = [r for r in testing if r.data.tags["lifelong.role"] == "trial"]
    assert [r.data.params["strategy.l2.lambda"] for r in kids] == [
        best.data.params["strategy.l2.lambda"]
    ]
    assert kids[0].data.params["seed"] == "0"


def test_a_stopped_trial_frees_its_worker_for_the_next(ray_instance: str, in_tmp: Path) -> None:
    """ASHA stops a trial mid-experience; the next trial reuses the same worker.

    Each experience here takes seconds (longer than Tune's 2 s wait for a stopped
    function trainable's thread); before the learner checked for a stop every epoch,
    the next trial failed with "Trainable runner reuse requires reset_config()" and
    never reached MLflow.
    """
    slow = {**GAUSS, "options": {**GAUSS["options"], "n_train_per_class": 200}}
    spec = {
        "name": "reuse",
        "seeds": 1,
        "scenario": slow,
        "model": {"name": "mlp", "hidden": [256, 256]},  # about 4 s per experience here
        "training": {"epochs": 150, "lr": {"grid": [0.1, 1e-6, 2e-6]}},
        "max_concurrent_trials": 1,
        "strategies": ["naive"],
        "tune": {"scheduler": "asha", "seeds": [100]},
    }
    path = in_tmp / "reuse.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    tuning = [
        r
        for r in _runs(client, "reuse")
        if r.data.tags["lifelong.role"] == "trial" and r.data.tags["lifelong.phase"] == "tune"
    ]
    status = {r.data.params["training.lr"]: r.info.status for r in tuning}
    assert status == {"0.1": "FINISHED", "1e-06": "KILLED", "2e-06": "KILLED"}, status


def test_the_learner_stops_when_asked() -> None:
    from lifelong.platform.learner import Learner, TrainingStopped
    from lifelong.platform.models import ModelConfig
    from lifelong.platform.training import TrainingConfig

    learner = Learner(_stream(), ModelConfig(hidden=[8]), [], TrainingConfig(epochs=3), 0)
    asked = []
    learner.stop_requested = lambda: asked.append(1) or len(asked) > 3
    learner.run_experience(0)  # epochs 1..3 asked, none stopped
    with pytest.raises(TrainingStopped, match="experience 1"):
        learner.run_experience(1)
    assert len(asked) == 4 and learner.next_experience == 1
