"""Determinism on the CPU: same file and seed give the same accuracy matrix; seeds differ.

Checked through the trial's own code path in this process (the experiment file
parsed, the stream built and the learner built from the Tune config, twice from
scratch: bit-identical), and end to end: a sweep of the same file on Ray
workers gives the same matrices (read back from the MLflow artifacts). Resuming from a checkpoint is
covered with the cluster work (tests/test_resume*.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.cluster.trial import build_learner
from lifelong.platform.cli import app
from lifelong.platform.plots import read_accuracy_matrix_csv
from lifelong.platform.spec import build_checked_stream, load_experiment

SPEC = {
    "name": "determinism",
    "seeds": [0, 1],
    "scenario": {
        "source": "gaussian",
        "n_experiences": 2,
        "options": {"n_classes": 4, "n_features": 6, "n_train_per_class": 30, "separation": 1.0},
    },
    "model": {"hidden": [16]},
    "training": {"epochs": 2, "batch_size": 8, "lr": 0.05, "accelerator": "cpu"},
    "strategies": [{"ewc": {"lambda": 10.0}}],
}


def write(tmp: Path) -> Path:
    path = tmp / "determinism.yaml"
    path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    return path


def matrices_in_process(path: Path) -> dict[int, np.ndarray]:
    experiment = load_experiment(path)
    stream = build_checked_stream(experiment)  # rebuilt from the file every time
    spec = experiment.spec
    out = {}
    for trial in experiment.trials():
        config = {
            "trial": trial.to_dict(),
            "model": spec.model.model_dump(mode="json"),
            "training": spec.training.model_dump(mode="json"),
        }
        out[trial.seed] = build_learner(config, stream).fit().copy()
    return out


def test_same_file_and_seed_same_matrix_in_process(tmp_path: Path) -> None:
    path = write(tmp_path)
    first, second = matrices_in_process(path), matrices_in_process(path)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], first[1])


def sweep_matrices(uri: str, parent_run_id: str) -> dict[int, np.ndarray]:
    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    kids = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )
    out = {}
    for kid in kids:
        local = client.download_artifacts(kid.info.run_id, "accuracy_matrix.csv")
        out[int(kid.data.params["seed"])] = read_accuracy_matrix_csv(local)[0]
    return out


def test_a_sweep_gives_the_same_matrices_as_a_run_in_this_process(
    ray_instance: str, in_tmp: Path
) -> None:
    path = write(in_tmp)
    uri = f"sqlite:///{in_tmp / 'det.db'}"
    result = CliRunner().invoke(app, ["run", str(path), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("determinism")
    (parent,) = [
        r.info.run_id
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("lifelong.role") == "sweep"
    ]
    swept, here = sweep_matrices(uri, parent), matrices_in_process(path)
    assert set(swept) == {0, 1}
    for seed in (0, 1):  # a Ray worker and this process: the same matrix (CSV keeps 6 digits)
        np.testing.assert_allclose(swept[seed], here[seed], atol=1e-6)
    assert not np.allclose(swept[0], swept[1])
