"""Faults between the driver and a real MLflow server, injected by a relay on 127.0.0.1.

The relay (:mod:`relay`) sits in front of ``mlflow server``: it cuts answers
halfway after the server applied the request (``IncompleteRead``), or holds a
request while the test kills the driver. The server itself is also stopped
with SIGSTOP (hung, not dead). Each sweep is compared with R trained
undisturbed in this process: runs lost, points lost or duplicated, R identical.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from relay import Relay
from test_reliability_tracking import Server, check_exactly_once, experiment_file, free_port
from typer.testing import CliRunner

from lifelong.cluster.trial import build_learner
from lifelong.platform.cli import app
from lifelong.platform.mlflow_io import ResilientClient
from lifelong.platform.plots import read_accuracy_matrix_csv
from lifelong.platform.spec import build_checked_stream, load_experiment

LIFELONG = str(Path(sys.executable).parent / "lifelong")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One MLflow server for the module."""
    srv = Server(tmp_path_factory.mktemp("mlflow_relayed"), free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def relay(server: Server):
    """A relay in front of the module's server."""
    r = Relay(server.port)
    yield r
    r.close()


def reference(path: Path) -> dict[tuple[str, int], np.ndarray]:
    """Each trial's R, trained undisturbed in this process, by (strategy, seed)."""
    exp = load_experiment(path)
    stream = build_checked_stream(exp)
    out = {}
    for trial in exp.trials():
        config = {
            "trial": trial.to_dict(),
            "model": exp.spec.model.model_dump(mode="json"),
            "training": exp.spec.training.model_dump(mode="json"),
        }
        out[(trial.label, trial.seed)] = build_learner(config, stream).fit()
    return out


def assert_same_R(uri: str, name: str, expected: dict, where: Path) -> None:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    for kid in client.search_runs([exp.experiment_id], "tags.`lifelong.role` = 'trial'"):
        csv = client.download_artifacts(kid.info.run_id, "accuracy_matrix.csv", str(where))
        key = (kid.data.params["strategy"], int(kid.data.params["seed"]))
        np.testing.assert_array_equal(read_accuracy_matrix_csv(csv)[0], expected[key])


def test_an_answer_cut_halfway_is_an_outage_and_nothing_is_written_twice(
    server: Server, relay: Relay, tmp_path: Path
) -> None:
    notes: list[str] = []
    client = ResilientClient(
        relay.uri, spool_root=tmp_path, probe_interval=0.2, grace_s=60, notify=notes.append
    )
    exp_id = client.create_experiment("cut-client")
    relay.rules += [("runs/create", "cut"), ("runs/log-batch", "cut")]
    run = client.create_run(exp_id, run_name="once")  # the server creates it; the answer is cut
    assert client.offline and run.info.run_id.startswith("spool-")
    assert "IncompleteRead" in notes[0] or "Connection broken" in notes[0], notes
    client.log_batch(run.info.run_id, metrics=[Metric("m", 1.0, 1234, 0)])
    assert client.close() == 0  # replayed: the run found by its key, the cut batch resent
    runs = MlflowClient(server.uri).search_runs([exp_id])
    assert [r.info.run_name for r in runs] == ["once"]
    history = MlflowClient(server.uri).get_metric_history(runs[0].info.run_id, "m")
    assert [(m.step, m.value) for m in history] == [(0, 1.0)]


def test_a_sweep_whose_answers_are_cut_matches_an_undisturbed_one(
    ray_instance: str, in_tmp: Path, server: Server, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFELONG_TRACKING_GRACE_S", "120")
    path = experiment_file(in_tmp, "cut")
    relay.rules += [
        ("runs/create", "cut"),  # the parent run
        ("runs/log-batch", "cut"),
        ("runs/create", "cut"),  # a trial's run
        ("accuracy_matrix.npz", "cut"),
        ("runs/update", "cut"),
    ]
    result = CliRunner().invoke(app, ["run", str(path), "--tracking-uri", relay.uri])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "FAILED" not in result.output
    assert "View run" not in result.output  # MLflow's lines would cut into the progress
    assert not relay.rules, f"faults not injected: {relay.rules}"
    counts = check_exactly_once(server.uri, "cut")
    print(f"\nanswers cut mid-sweep: {counts}")
    assert counts["lost"] == 0 and counts["duplicated"] == 0
    assert_same_R(server.uri, "cut", reference(path), in_tmp)


def test_a_stopped_server_is_detected_by_the_request_timeout(
    server: Server, tmp_path: Path
) -> None:
    client = ResilientClient(server.uri, spool_root=tmp_path, probe_interval=0.5, grace_s=120)
    exp_id = client.create_experiment("hung")
    run_id = client.create_run(exp_id, run_name="r").info.run_id
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGSTOP)  # hung: connections accepted, no answers
    try:
        start = time.monotonic()
        client.log_param(run_id, "p", "1")
        waited = time.monotonic() - start
        assert client.offline and client.pending() == 1
    finally:
        os.killpg(server.proc.pid, signal.SIGCONT)
    print(f"\na stopped server cost one write {waited:.1f} s before it was journalled")
    assert client.close() == 0
    assert MlflowClient(server.uri).get_run(run_id).data.params == {"p": "1"}


def test_a_driver_killed_while_it_ends_a_finished_trial_resumes_it_finished(
    ray_instance: str,
    in_tmp: Path,
    server: Server,
    relay: Relay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The kill lands after the trial's last result, while its artifacts upload."""
    path = experiment_file(in_tmp, "ending")
    relay.rules.append(("accuracy_matrix.npz", "hold"))
    with (in_tmp / "first.log").open("w") as log:
        proc = subprocess.Popen(
            [LIFELONG, "run", str(path), "--tracking-uri", relay.uri, "--num-cpus", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"},  # Tune's state: every step
        )
    try:
        assert relay.held.wait(300), (in_tmp / "first.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        relay.release.set()
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("ending")
    ending = [r for r in client.search_runs([exp.experiment_id]) if r.info.status == "RUNNING"]
    assert any("fwt" in r.data.metrics for r in ending), "not killed while ending a trial"
    result = CliRunner().invoke(app, ["run", str(path), "--resume", "--tracking-uri", relay.uri])
    assert result.exit_code == 0, result.output
    assert not [r for r in caplog.records if "Failed to fetch metrics" in r.getMessage()]
    counts = check_exactly_once(server.uri, "ending")
    for kid in client.search_runs([exp.experiment_id], "tags.`lifelong.role` = 'trial'"):
        fwt = client.get_metric_history(kid.info.run_id, "fwt")
        assert len(fwt) == 1, (kid.info.run_name, fwt)
    print(f"\nkilled while ending a finished trial, then resumed: {counts}")
    assert counts["lost"] == 0 and counts["duplicated"] == 0
    assert_same_R(server.uri, "ending", reference(path), in_tmp)
