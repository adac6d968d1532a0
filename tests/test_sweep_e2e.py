"""The quickstart, shrunk, end to end: real local Ray, real MLflow SQLite store, read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.plots import read_accuracy_matrix_csv

from conftest import ROOT


def shrunk_quickstart(tmp: Path, **changes) -> Path:
    spec = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec["seeds"] = 2
    spec["training"]["epochs"] = 1
    spec["model"]["hidden"] = [64]
    spec.update(changes)
    path = tmp / "quick.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def children(client: MlflowClient, name: str):
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lifelong.role") == "sweep"]
    kids = [r for r in runs if r.data.tags.get("lifelong.role") == "trial"]
    return parents, kids


def test_quickstart_end_to_end(ray_instance: str, in_tmp: Path) -> None:
    path = shrunk_quickstart(in_tmp)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "lifelong ui" in result.stdout
    for label in ("naive", "l2", "ewc"):
        assert label in result.stdout
    assert "trials: 6/6 done, 0 running, 0 failed" in result.stderr

    client = MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    parents, kids = children(client, "quickstart")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 6
    assert {k.data.tags["mlflow.parentRunId"] for k in kids} == {parents[0].info.run_id}
    assert sorted((k.data.params["strategy"], k.data.params["seed"]) for k in kids) == sorted(
        (s, str(seed)) for s in ("naive", "l2", "ewc") for seed in (0, 1)
    )
    for kid in kids:
        assert kid.info.status == "FINISHED"
        run_id = kid.info.run_id
        for key in ["acc/avg", "forgetting/avg", "bwt", "loss/ce"] + [
            f"acc/exp_{j}" for j in range(5)
        ]:
            steps = [m.step for m in client.get_metric_history(run_id, key)]
            assert sorted(steps) == list(range(5)), (key, steps)  # every step, exactly once
        assert [m.step for m in client.get_metric_history(run_id, "fwt")] == [4]
        if kid.data.params["strategy"] != "naive":
            assert kid.data.params[f"strategy.{kid.data.params['strategy']}.lambda"]
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert {"accuracy_matrix.csv", "accuracy_matrix.png"} <= artifacts
        csv = client.download_artifacts(run_id, "accuracy_matrix.csv", str(in_tmp))
        R, untrained = read_accuracy_matrix_csv(csv)
        assert untrained is not None and R.shape == (5, 5)
        last = {j: client.get_metric_history(run_id, f"acc/exp_{j}") for j in range(5)}
        row4 = [next(m.value for m in last[j] if m.step == 4) for j in range(5)]
        np.testing.assert_allclose(R[4], row4, atol=1e-6)
        assert kid.data.metrics["acc/avg"] == np.mean(R[4]).round(12) or np.isclose(
            kid.data.metrics["acc/avg"], R[4].mean()
        )
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert "experiment.yaml" in parent_artifacts


def test_diverging_trial_fails_alone(ray_instance: str, in_tmp: Path) -> None:
    path = shrunk_quickstart(
        in_tmp, seeds=[0], name="diverge", strategies=["naive", {"l2": {"lambda": 1e38}}]
    )
    uri = f"sqlite:///{in_tmp / 'other.db'}"
    result = CliRunner().invoke(app, ["run", str(path), "--tracking-uri", uri])
    assert result.exit_code == 1, result.output
    assert "FAILED l2" in result.stdout and "NaN/inf" in result.stdout
    client = MlflowClient(uri)
    parents, kids = children(client, "diverge")
    status = {k.data.params["strategy"]: k for k in kids}
    assert status["naive"].info.status == "FINISHED"
    assert status["l2"].info.status == "FAILED"
    assert "'l2' (from strategy 'l2')" in status["l2"].data.tags["lifelong.error"]
    assert parents[0].info.status == "FAILED"
    assert not (in_tmp / "mlflow.db").exists()  # --tracking-uri was honoured
