"""MLflow's own features on every trial run: system metrics, the stream as a dataset, weights.

A real sweep on the session's Ray instance logs to a real SQLite store; the test
reads the child runs back with :class:`MlflowClient` and checks each feature
against what it should hold, the final weights by evaluating them again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.models import ModelConfig, build_model
from lifelong.platform.stream_dataset import StreamDataset, stream_digest
from lifelong.scenarios import ScenarioConfig, build_stream

from conftest import tiny_experiment


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, ray_instance: str) -> dict:
    """``lifelong run --log-model``: naive and l2 on two Gaussian experiences, one seed."""
    folder = tmp_path_factory.mktemp("features")
    spec = tiny_experiment("features", [], ["naive", "l2"])
    path = folder / "features.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["run", str(path), "--tracking-uri", uri, "--log-model"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("features")
    runs = client.search_runs([exp.experiment_id], "tags.`lifelong.role` = 'trial'")
    return {"client": client, "runs": {r.data.tags["strategy"]: r for r in runs}, "spec": spec}


def test_each_trial_logs_system_metrics_per_experience(sweep: dict) -> None:
    client = sweep["client"]
    for run in sweep["runs"].values():
        history = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        assert sorted(m.step for m in history) == [0, 1]  # one sample mean per experience
        assert all(0 <= m.value <= 100 for m in history)
        memory = run.data.metrics["system/system_memory_usage_megabytes"]
        assert memory > 10  # MLflow's CPU monitor: the machine's used memory, in MB
        assert run.data.tags["node_id"]  # where they were measured


def test_each_trial_logs_its_stream_as_a_dataset_input_with_its_digest(sweep: dict) -> None:
    stream = build_stream(ScenarioConfig.model_validate(sweep["spec"]["scenario"]))
    digest, of = stream_digest(stream)
    for run in sweep["runs"].values():
        (dataset_input,) = run.inputs.dataset_inputs
        dataset = dataset_input.dataset
        assert (dataset.name, dataset.digest, of) == (stream.name, digest, "data")
        assert {t.key: t.value for t in dataset_input.tags} == {"mlflow.data.context": "training"}
        profile = json.loads(dataset.profile)
        assert profile["experiences"] == 2 and profile["train_samples"] == 80
        assert json.loads(dataset.source)["tags"]["source"] == "gaussian"


def test_the_digest_sees_every_value_of_the_stream() -> None:
    stream = build_stream(ScenarioConfig(source="digits", n_experiences=5, seed=0))
    before = StreamDataset(stream, {"source": "digits"}).digest
    last = stream.experiences[-1]
    last.x_test[-1, -1] += 1.0  # one value, far past the first 10,000 MLflow would hash
    assert stream_digest(stream)[0] != before


def test_log_model_logs_weights_that_reproduce_the_final_accuracy(
    sweep: dict, tmp_path: Path
) -> None:
    client = sweep["client"]
    run = sweep["runs"]["l2"]
    assert run.data.tags["lifelong.model"] == "model/state_dict.pt"
    folder = Path(client.download_artifacts(run.info.run_id, "model", str(tmp_path)))
    about = json.loads((folder / "model.json").read_text())
    state = torch.load(folder / "state_dict.pt", weights_only=True)
    model = build_model(
        ModelConfig.model_validate(about["model"]),
        about["input_shape"],
        about["n_classes"],
        about.get("task_classes", ()),
    )
    model.load_state_dict(state)
    model.eval()
    stream = build_stream(ScenarioConfig.model_validate(about["scenario"]))
    accuracy = []
    with torch.no_grad():
        for exp in stream:
            logits = model(exp.x_test, exp.task_id)
            accuracy.append(float((logits.argmax(1) == exp.y_test).float().mean()))
    R = np.load(client.download_artifacts(run.info.run_id, "accuracy_matrix.npz", str(tmp_path)))
    np.testing.assert_allclose(accuracy, R["R"][-1], atol=1e-6)
