"""Tracking outages: a real MLflow server stopped mid-sweep; nothing lost, nothing duplicated.

The server is ``mlflow server`` on 127.0.0.1 (a random free port, SQLite store in
the test's directory), started and stopped as a subprocess. The sweep runs
through the real CLI on the session's Ray instance. The outage lasts
``LIFELONG_TEST_OUTAGE_S`` seconds (default 30, as the issue asks).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.platform.cli import app

OUTAGE_S = float(os.environ.get("LIFELONG_TEST_OUTAGE_S", "30"))
N_EXP = 3
PER_STEP = ["acc/avg", "forgetting/avg", "bwt", "loss/ce", "plasticity"] + [
    f"acc/exp_{j}" for j in range(N_EXP)
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``mlflow server`` on 127.0.0.1:``port`` with its SQLite store and artifacts in ``root``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
            + ["--port", str(self.port), "--workers", "1"]
            + ["--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
            + ["--artifacts-destination", str(self.root / "artifacts")],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.uri}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        raise AssertionError("the MLflow server did not start in 120 s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def metric_rows(self) -> int:
        try:
            with sqlite3.connect(self.root / "mlflow.db", timeout=5) as db:
                return int(db.execute("select count(*) from metrics").fetchone()[0])
        except sqlite3.Error:
            return 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One server for the module (each start costs 10-20 s here); tests restart it as needed."""
    srv = Server(tmp_path_factory.mktemp("mlflow_server"), free_port())
    srv.start()
    yield srv
    srv.stop()


def experiment_file(tmp: Path, name: str) -> Path:
    spec = {
        "name": name,
        "seeds": 2,
        "scenario": {
            "source": "gaussian",
            "n_experiences": N_EXP,
            "options": {"n_classes": 6, "n_train_per_class": 300, "n_test_per_class": 50},
        },
        "model": {"hidden": [64]},
        "training": {"epochs": 1},
        "strategies": ["naive", {"l2": {"lambda": 0.1}}],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def check_exactly_once(uri: str, name: str) -> dict[str, int]:
    """Every trial FINISHED; each per-step metric at every step exactly once; counts returned."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id])
    kids = [r for r in runs if r.data.tags.get("lifelong.role") == "trial"]
    parents = [r for r in runs if r.data.tags.get("lifelong.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 4, [r.info.run_name for r in runs]
    counts = {"points": 0, "duplicated": 0, "lost": 0}
    for kid in kids:
        assert kid.info.status == "FINISHED", kid.info.run_name
        assert {"accuracy_matrix.csv", "accuracy_matrix.png"} <= {
            a.path for a in client.list_artifacts(kid.info.run_id)
        }
        for key in set(kid.data.metrics) | set(PER_STEP):
            steps = [m.step for m in client.get_metric_history(kid.info.run_id, key)]
            counts["points"] += len(steps)
            counts["duplicated"] += len(steps) - len(set(steps))
            if key in PER_STEP or key.startswith("system/"):  # system/: per experience too
                expected = set(range(N_EXP))
            elif key.startswith("loss/"):  # a strategy's term: from its first experience on
                expected = set(range(min(steps, default=0), N_EXP))
            else:  # final metrics (fwt, ...)
                expected = {N_EXP - 1}
            counts["lost"] += len(expected - set(steps))
            assert sorted(steps) == sorted(expected), (kid.info.run_name, key, steps)
    return counts


def stop_when_logging(srv: Server, outage_s: float | None, events: dict[str, float]) -> None:
    """Stop the server once it holds metrics (mid-sweep); restart it ``outage_s`` later."""
    deadline = time.monotonic() + 300
    while srv.metric_rows() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    srv.stop()
    events["stopped"] = time.monotonic()
    if outage_s is not None:
        time.sleep(outage_s)
        srv.start()
        events["restarted"] = time.monotonic()


def test_server_down_30s_mid_sweep_loses_and_duplicates_nothing(
    ray_instance: str, in_tmp: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFELONG_TRACKING_GRACE_S", "240")  # the restart may take a while
    path = experiment_file(in_tmp, "outage")
    events: dict[str, float] = {}
    killer = threading.Thread(target=stop_when_logging, args=(server, OUTAGE_S, events))
    killer.start()
    result = CliRunner().invoke(app, ["run", str(path), "--tracking-uri", server.uri])
    killer.join()
    assert result.exit_code == 0, result.output
    assert "unreachable" in result.stderr and "is back; replayed" in result.stderr
    assert events["restarted"] - events["stopped"] >= OUTAGE_S
    counts = check_exactly_once(server.uri, "outage")
    print(f"\noutage {OUTAGE_S:.0f} s mid-sweep: {counts}")
    assert counts["lost"] == 0 and counts["duplicated"] == 0


def test_server_never_returns_results_spooled_then_synced_once(
    ray_instance: str, in_tmp: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFELONG_TRACKING_GRACE_S", "1")
    path = experiment_file(in_tmp, "gone")
    events: dict[str, float] = {}
    killer = threading.Thread(target=stop_when_logging, args=(server, None, events))
    killer.start()
    result = CliRunner().invoke(app, ["run", str(path), "--tracking-uri", server.uri])
    killer.join()
    assert result.exit_code == 0, result.output  # training finished for every trial
    assert "still unreachable" in result.stderr and "lifelong sync" in result.stderr
    spools = list((in_tmp / ".lifelong" / "spool").iterdir())
    assert len(spools) == 1 and (spools[0] / "ops.jsonl").stat().st_size > 0

    assert server.proc is not None and server.proc.poll() is not None  # it stayed down
    server.start()  # later: the server is back (same port, same store)
    first = CliRunner().invoke(app, ["sync"])
    assert first.exit_code == 0, first.output
    assert "writes uploaded" in first.stdout and " 0 writes uploaded" not in first.stdout
    counts = check_exactly_once(server.uri, "gone")
    second = CliRunner().invoke(app, ["sync", str(spools[0])])
    assert second.exit_code == 0 and " 0 writes uploaded" in second.stdout, second.output
    assert check_exactly_once(server.uri, "gone") == counts
    print(f"\nserver never returned; after sync (twice): {counts}")
    assert counts["lost"] == 0 and counts["duplicated"] == 0


def test_sync_of_a_missing_spool_is_bad_input(in_tmp: Path) -> None:
    result = CliRunner().invoke(app, ["sync", "nowhere"])
    assert result.exit_code == 2 and "not a lifelong spool directory" in result.stderr
