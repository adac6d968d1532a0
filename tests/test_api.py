"""The Python API (lifelong.run, lifelong.compare, __version__), the in-process runner, and
search spaces run on Ray (a searched scenario field gives each trial its own stream)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import lifelong
from lifelong.platform.cli import app

FAILING = '''\
"""Test plugin: a strategy whose hook raises at the second experience."""

from lifelong.strategies import Strategy, register_strategy


@register_strategy("breaks")
class Breaks(Strategy):
    """Raise in on_experience_start of experience 1."""

    def on_experience_start(self, ctx):
        """Fail on the second experience."""
        if ctx.experience.index == 1:
            raise ValueError("broken on purpose")
'''


def _experiment(tmp: Path, name: str = "api", **changes: object) -> Path:
    spec = {
        "name": name,
        "seeds": 2,
        "scenario": {
            "source": "gaussian",
            "protocol": "domain_incremental",
            "n_experiences": 2,
            "seed": 0,
            "options": {
                "n_classes": 4,
                "n_features": 8,
                "n_train_per_class": 24,
                "n_test_per_class": 12,
            },
        },
        "model": {"name": "mlp", "hidden": [16]},
        "training": {"epochs": 1, "lr": 0.1},
        "strategies": ["naive", {"l2": {"lambda": {"grid": [0.1, 10.0]}}}],
    }
    spec.update(changes)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _logged_R(client: MlflowClient, run_id: str, n: int) -> np.ndarray:
    R = np.full((n, n), np.nan)
    for j in range(n):
        for m in client.get_metric_history(run_id, f"acc/exp_{j}"):
            R[m.step, j] = m.value
    return R


def test_version_is_the_installed_one() -> None:
    assert lifelong.__version__ == metadata.version("lifelong")
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"lifelong {lifelong.__version__}"


def test_run_in_process_returns_results_and_logs_like_a_sweep(in_tmp: Path) -> None:
    path = _experiment(in_tmp)
    results = lifelong.run(path, in_process=True, training__epochs=2)
    labels = [(t.label, t.seed) for t in results.trials]
    assert labels == [
        ("naive", 0),
        ("naive", 1),
        ("l2 [l2.lambda=0.1]", 0),
        ("l2 [l2.lambda=0.1]", 1),
        ("l2 [l2.lambda=10.0]", 0),
        ("l2 [l2.lambda=10.0]", 1),
    ]
    assert all(t.status == "FINISHED" and t.R.shape == (2, 2) for t in results.trials)
    frame = results.to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 6
    assert frame.loc[2, "strategy.l2.lambda"] == 0.1 and "acc/avg" in frame.columns

    client = MlflowClient(results.tracking_uri)
    for t in results.trials:
        run = client.get_run(t.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["training.epochs"] == "2"  # the keyword override
        assert run.data.tags["mlflow.parentRunId"] == results.parent_run_id
        np.testing.assert_array_equal(_logged_R(client, t.run_id, 2), t.R)
        assert run.data.metrics["acc/avg"] == pytest.approx(t.metrics["acc/avg"])


def test_in_process_equals_ray(ray_instance: str, in_tmp: Path) -> None:
    path = _experiment(in_tmp)
    here = lifelong.run(path, in_process=True, experiment_name="here")
    result = CliRunner().invoke(app, ["run", str(path), "--experiment-name", "on_ray"])
    assert result.exit_code == 0, result.output
    assert "l2 [l2.lambda=10.0]" in result.stdout  # no markup ate the brackets
    client = MlflowClient(here.tracking_uri)
    exp = client.get_experiment_by_name("on_ray")
    runs = {
        r.info.run_name: r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("lifelong.role") == "trial"
    }
    assert len(runs) == len(here.trials) == 6
    for t in here.trials:
        ray_run = runs[f"{t.label}-seed{t.seed}"]
        np.testing.assert_array_equal(_logged_R(client, ray_run.info.run_id, 2), t.R)

    frame = lifelong.compare("here", "on_ray")  # one configuration, two sweeps: repeats
    assert sorted(frame["strategy"]) == ["l2 [l2.lambda=0.1]", "l2 [l2.lambda=10.0]", "naive"]
    assert list(frame["n_finished"]) == [2, 2, 2]
    assert any("ran 2 times" in n for n in frame.attrs["notes"])
    assert frame["rank"].tolist() == [1, 2, 3]


def test_a_failing_trial_fails_alone_in_process(in_tmp: Path) -> None:
    (in_tmp / "breaks.py").write_text(FAILING)
    path = _experiment(in_tmp, plugins=["breaks.py"], strategies=["naive", "breaks"], seeds=1)
    results = lifelong.run(path, in_process=True)
    status = {t.label: (t.status, t.error) for t in results.trials}
    assert status["naive"] == ("FINISHED", None)
    where = (
        "ValueError: broken on purpose (raised in strategy 'breaks' (Breaks), hook "
        f"on_experience_start, experience 1, step 3, at {in_tmp / 'breaks.py'}:13)"
    )
    assert status["breaks"] == ("FAILED", where)
    run = MlflowClient(results.tracking_uri).get_run(results.failed[0].run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["lifelong.error"] == where
    client = MlflowClient(results.tracking_uri)
    traceback = client.download_artifacts(run.info.run_id, "traceback.txt", str(in_tmp))
    text = Path(traceback).read_text()
    assert text.startswith("Traceback") and f'"{in_tmp / "breaks.py"}", line 13' in text
    with pytest.raises(ValueError, match="broken on purpose"):  # for pdb's post-mortem
        lifelong.run(path, in_process=True, raise_errors=True, experiment_name="again")


def test_a_searched_scenario_field_gives_each_trial_its_stream(
    ray_instance: str, in_tmp: Path
) -> None:
    path = _experiment(in_tmp, name="streams", strategies=["naive"], seeds=1)
    result = CliRunner().invoke(app, ["run", str(path), "scenario.n_experiences={grid: [2, 3]}"])
    assert result.exit_code == 0, result.output
    assert "2 streams" in result.stderr
    client = MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("streams")
    kids = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags["lifelong.role"] == "trial"
    ]
    by_n = {r.data.params["scenario.n_experiences"]: r for r in kids}
    assert set(by_n) == {"2", "3"}
    for n, run in by_n.items():
        assert run.data.tags["strategy"] == f"naive [scenario.n_experiences={n}]"
        logged = {k for k in run.data.metrics if k.startswith("acc/exp_")}
        assert logged == {f"acc/exp_{j}" for j in range(int(n))}
        assert not np.isnan(_logged_R(client, run.info.run_id, int(n))).any()
    parent = next(
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags["lifelong.role"] == "sweep"
    )
    assert parent.data.params["scenario.n_experiences.grid"] == "[2, 3]"
