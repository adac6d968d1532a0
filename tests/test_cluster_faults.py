"""Sweeps on a real three-node Ray cluster survive lost workers, lost nodes and a stopped driver.

The module fixture starts a head and two worker nodes with `ray start` (one CPU
each, all on 127.0.0.1, token authentication, the job server on 127.0.0.1) and
stops exactly the processes it started. Trials run a tiny plugin strategy,
``gate``, that logs every experience it starts (with pid and Ray node) and holds
the trials at experience 1 while a ``hold`` file exists: the test injects its
fault while every trial is known to be mid-sweep, then lifts the hold.

Every test checks the same outcome: each trial's MLflow run FINISHED, one child
run per trial, every (metric, step) logged exactly once, and R identical to an
undisturbed run of the same trial (computed in this process, on the CPU).
Figures (faults, trials affected, recovery time) are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

BIN = Path(sys.executable).parent
RAY = shutil.which("ray") or str(BIN / "ray")
LIFELONG = shutil.which("lifelong") or str(BIN / "lifelong")
N_EXP = 2
# One plugin file for every sweep of the module (this process loads it once, for the
# reference runs); it travels to the workers in each sweep's runtime env.
PLUGIN = str(Path(tempfile.gettempdir()) / f"gate_plugin_{os.getpid()}.py")

GATE = '''\
"""Test plugin: log each experience a trial starts; hold at one while a file exists."""

import os
import time
from pathlib import Path

import ray

from lifelong.strategies import Strategy, StrategyConfig, register_strategy


class GateConfig(StrategyConfig):
    """Where the log and the hold file are, which experience is held, a tag."""

    dir: str = ""
    at: int = 1
    hold: bool = True
    tag: str = ""


@register_strategy("gate")
class Gate(Strategy):
    """No loss term and no state: results are those of plain training."""

    Config = GateConfig

    def on_experience_start(self, ctx):
        """Append `tag experience pid node time` to trained.log; wait while `hold` exists."""
        if not self.config.dir:
            return
        d = Path(self.config.dir)
        i = ctx.experience.index
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "-"
        with open(d / "trained.log", "a") as f:
            f.write(f"{self.config.tag} {i} {os.getpid()} {node} {time.time()}\\n")
        deadline = time.monotonic() + 300
        while self.config.hold and i == self.config.at and (d / "hold").exists():
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
'''

WAIT_FOR_NODES = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False,
         logging_level="ERROR")
deadline = time.monotonic() + float(sys.argv[2])
while True:
    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    if len(alive) >= int(sys.argv[3]) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(alive))
"""


@dataclass
class Cluster:
    """A running test cluster: how to join it and its node processes."""

    address: str
    dashboard: str
    env: dict[str, str]
    temp: Path
    procs: dict[str, subprocess.Popen[bytes]]


def _free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _node_ports() -> list[str]:
    ports = _free_ports(6)
    names = (
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
    )
    return [arg for name, port in zip(names, ports, strict=True) for arg in (name, str(port))]


def _group(pgid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        proc.poll()
        if not _group(proc.pid):
            break
        time.sleep(0.2)
    for p in _group(proc.pid):
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait(timeout=10)


def _started(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> bool:
    """Wait until ``ray start --block`` says its node is up; False if it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.3)
    return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Head + two worker nodes (1 CPU each) on 127.0.0.1, job server on; stopped at the end."""
    temp = Path(tempfile.mkdtemp(prefix="llf-", dir="/tmp"))  # Ray's socket paths are long
    gcs, client_port, dash = _free_ports(3)
    address = f"127.0.0.1:{gcs}"
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env |= {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `lifelong` for submitted jobs
    }
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1"]
    # A temp dir per node, as on separate machines: nodes sharing one would share (and
    # garbage-collect) each other's runtime-env packages, such as a job's working_dir.
    own = {n: ["--temp-dir", str(temp / n)] for n in ("head", "w1", "w2")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {n: open(temp / f"{n}.log", "wb") for n in ("head", "w1", "w2")}  # noqa: SIM115
    try:
        procs["head"] = subprocess.Popen(
            [RAY, "start", "--head", "--port", str(gcs), "--disable-usage-stats"]
            + ["--ray-client-server-port", str(client_port), "--include-dashboard", "true"]
            + ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash)]
            + common
            + own["head"]
            + _node_ports()
            + ["--block"],
            env=env,
            stdout=logs["head"],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # One node at a time: on a loaded machine nodes starting together can miss
        # `ray start`'s fixed 30 s registration window. A node that did gets one retry.
        _started(procs["head"], temp / "head.log")
        for name in ("w1", "w2"):
            for _ in range(2):
                logs[name].seek(0)
                logs[name].truncate()
                procs[name] = subprocess.Popen(
                    [RAY, "start", "--address", address, *common, *own[name]]
                    + _node_ports()
                    + ["--block"],
                    env=env,
                    stdout=logs[name],
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                if _started(procs[name], temp / f"{name}.log"):
                    break
        probe = subprocess.run(
            [sys.executable, "-c", WAIT_FOR_NODES, address, "90", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
        for name, p in procs.items():
            assert p.poll() is None, f"ray {name} exited: {(temp / f'{name}.log').read_text()}"
        assert probe.returncode == 0, probe.stderr[-3000:]
        assert len(json.loads(probe.stdout.strip().splitlines()[-1])) == 3
        Path(PLUGIN).write_text(GATE)
        yield Cluster(address, f"http://127.0.0.1:{dash}", env, temp, procs)
    finally:
        for p in reversed(list(procs.values())):
            _stop(p)
        for f in logs.values():
            f.close()
        shutil.rmtree(temp, ignore_errors=True)
        Path(PLUGIN).unlink(missing_ok=True)


# ---------------------------------------------------------------- helpers
def experiment(
    where: Path, gates: list[dict[str, object]], seeds: int, name: str, plugin: str
) -> Path:
    """An experiment of ``gate`` trials on a tiny stream (2 experiences)."""
    spec = {
        "name": name,
        "plugins": [plugin],
        "seeds": seeds,
        "max_failures": 3,
        "scenario": {
            "source": "gaussian",
            "n_experiences": N_EXP,
            "options": {
                "n_classes": 4,
                "n_features": 8,
                "n_train_per_class": 40,
                "n_test_per_class": 10,
            },
        },
        "model": {"hidden": [16]},
        "training": {"epochs": 1},
        "strategies": [{"gate": g} for g in gates],
        "resources": {"cpu": 1},
    }
    path = where / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def reference(path: Path) -> dict[str, np.ndarray]:
    """R of each trial trained undisturbed in this process (the gate does nothing here)."""
    from lifelong.cluster.trial import build_learner
    from lifelong.platform.spec import load_experiment
    from lifelong.scenarios import build_stream

    exp = load_experiment(path)
    stream = build_stream(exp.spec.scenario)
    out = {}
    for trial in exp.trials():
        d = trial.to_dict()
        for s in d["strategies"]:
            s["params"] = {**s["params"], "dir": ""}
        config = {
            "trial": d,
            "model": exp.spec.model.model_dump(mode="json"),
            "training": exp.spec.training.model_dump(mode="json"),
        }
        learner = build_learner(config, stream)
        learner.evaluate_untrained()
        for i in range(N_EXP):
            learner.run_experience(i)
        out[trial.trial_id] = learner.R.copy()
    return out


def log_lines(d: Path) -> list[tuple[str, int, int, str, float]]:
    """The gate's log: (tag, experience, pid, node, time) per experience started."""
    f = d / "trained.log"
    if not f.exists():
        return []
    rows = []
    for line in f.read_text().splitlines():
        tag, i, pid, node, t = line.split(" ")
        rows.append((tag, int(i), int(pid), node, float(t)))
    return rows


def wait_for(what: str, cond: Callable[[], bool], proc: subprocess.Popen, timeout: float) -> None:
    """Poll ``cond`` until true; fail early if the driver ``proc`` exited."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            out, errs = proc.communicate()
            pytest.fail(f"driver exited {proc.returncode} waiting for {what}:\n{errs[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_run(cluster: Cluster, path: Path, uri: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [LIFELONG, "run", path.name, "--address", cluster.address, "--tracking-uri", uri]
        + list(extra),
        cwd=path.parent,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    out, errs = proc.communicate(timeout=timeout)
    return proc.returncode, out + errs


def check_mlflow(uri: str, name: str, ref: dict[str, np.ndarray]) -> dict[str, str]:
    """All runs FINISHED, one child per trial, each (metric, step) once, R == reference."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    parents = [r for r in runs if r.data.tags.get("lifelong.role") == "sweep"]
    kids = [r for r in runs if r.data.tags.get("lifelong.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(k.info.run_name for k in kids) == sorted(ref)  # one child per trial
    for kid in kids:
        assert kid.info.status == "FINISHED", (kid.info.run_name, kid.info.status)
        R = np.full((N_EXP, N_EXP), np.nan)
        for key in kid.data.metrics:
            steps = [m.step for m in client.get_metric_history(kid.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"{kid.info.run_name} {key} steps {steps}"
            if key.startswith(("acc/", "loss/")):
                assert sorted(steps) == list(range(N_EXP)), (key, steps)
            if key.startswith("acc/exp_"):
                for m in client.get_metric_history(kid.info.run_id, key):
                    R[m.step, int(key.rsplit("_", 1)[1])] = m.value
        np.testing.assert_array_equal(R, ref[kid.info.run_name])
    return {k.info.run_name: k.data.tags.get("node_id", "") for k in kids}


def sweep_dir(where: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="sweep-", dir=where))


def _raylet(pid: int) -> psutil.Process:
    """The raylet (node manager) that started worker process ``pid``."""
    proc: psutil.Process | None = psutil.Process(pid)
    while proc is not None and proc.name() != "raylet":
        proc = proc.parent()
    assert proc is not None, f"no raylet above pid {pid}"
    return proc


# ------------------------------------------------------------------ tests
def test_sigkill_trial_worker_resumes_from_checkpoint(cluster: Cluster) -> None:
    """Trials spread over the 3 nodes; SIGKILL one trial's worker mid-experience."""
    d = sweep_dir(cluster.temp)
    path = experiment(d, [{"dir": str(d), "tag": "t"}], 3, "workerkill", PLUGIN)
    ref = reference(path)
    (d / "hold").touch()
    uri = f"sqlite:///{d / 'mlflow.db'}"
    proc = start_run(cluster, path, uri)
    at_gate = lambda: len([r for r in log_lines(d) if r[1] == 1]) >= 3  # noqa: E731
    wait_for("3 trials at experience 1", at_gate, proc, 150)
    first = [r for r in log_lines(d) if r[1] == 1]
    assert len({r[3] for r in first}) == 3, f"trials did not spread over 3 nodes: {first}"
    victim = first[0][2]
    os.kill(victim, signal.SIGKILL)
    t_kill = time.time()
    (d / "hold").unlink()
    rc, output = finish(proc)
    assert rc == 0, output[-4000:]
    again = [r for r in log_lines(d) if r[1] == 1 and r[4] > t_kill]
    assert len(again) == 1 and again[0][2] != victim  # the one affected trial, restarted
    assert not [r for r in log_lines(d) if r[1] == 0 and r[4] > t_kill]  # from its checkpoint
    nodes = check_mlflow(uri, "workerkill", ref)
    assert "restarted (1 of at most 3) after:" in output, output[-4000:]  # said, and recorded:
    restarted = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("workerkill").experiment_id],
        "tags.`lifelong.restarts` = '1'",
    )
    assert len(restarted) == 1 and "lifelong.restart_1" in restarted[0].data.tags
    print(f"\nFIGURES worker SIGKILL: faults 1, trials affected 1, finished {len(nodes)}/3")


def test_sigint_marks_killed_then_resume_finishes(cluster: Cluster) -> None:
    """Ctrl-C: runs KILLED, exit != 0, checkpoints kept; --resume runs only what was unfinished."""
    d = sweep_dir(cluster.temp)
    gates = [
        {"dir": str(d), "tag": "a", "hold": False},
        {"dir": str(d), "tag": "b"},
        {"dir": str(d), "tag": "c"},
    ]
    path = experiment(d, gates, 1, "stopped", PLUGIN)
    ref = reference(path)
    (d / "hold").touch()
    uri = f"sqlite:///{d / 'mlflow.db'}"
    proc = start_run(cluster, path, uri)
    client = MlflowClient(uri)

    def a_finished() -> bool:
        held = {r[0] for r in log_lines(d) if r[1] == 1} >= {"b", "c"}
        if not held or client.get_experiment_by_name("stopped") is None:
            return False
        runs = client.search_runs([client.get_experiment_by_name("stopped").experiment_id])
        # b and c train experience 1 while their experience-0 result (and checkpoint) is
        # still on its way to the driver: wait until the driver has logged it
        reported = {r.info.run_name for r in runs if r.info.status == "RUNNING" and r.data.metrics}
        done = [r for r in runs if r.info.status == "FINISHED"]
        return (
            len(done) == 1 and len(reported & {n for n in ref if n != done[0].info.run_name}) == 2
        )

    wait_for("trial a finished, b and c held", a_finished, proc, 150)
    proc.send_signal(signal.SIGINT)
    rc, output = finish(proc, 120)
    assert rc == 130, output[-4000:]
    assert "--resume" in output
    runs = client.search_runs([client.get_experiment_by_name("stopped").experiment_id])
    status = {r.info.run_name or "": r.info.status for r in runs}
    assert sorted(status.values()) == ["FINISHED", "KILLED", "KILLED", "KILLED"], status
    checkpoints = list((d / ".lifelong" / "ray_results").rglob("learner.pt"))
    assert len(checkpoints) >= 2, checkpoints  # b and c keep their experience-0 checkpoints

    t_stop = time.time()
    (d / "hold").unlink()
    rc, output = finish(start_run(cluster, path, uri, "--resume"))
    assert rc == 0, output[-4000:]
    rerun = [r for r in log_lines(d) if r[4] > t_stop]
    assert {r[0] for r in rerun} == {"b", "c"}, rerun  # trial a is not run again
    assert {r[1] for r in rerun} == {1}, rerun  # b and c continue from experience 1
    check_mlflow(uri, "stopped", ref)
    print("\nFIGURES driver SIGINT + resume: faults 1, trials affected 2, finished 3/3")


def test_submit_job_with_local_plugin_to_tracking_server(cluster: Cluster) -> None:
    """`lifelong submit` ships the submitting dir (plugin file included) as a Ray job.

    The job logs to a `lifelong server` (MLflow tracking server on 127.0.0.1);
    `lifelong status` and `lifelong logs` follow the job.
    """
    d = sweep_dir(cluster.temp)
    (d / "local_gate.py").write_text(GATE)  # exists only in the submitting directory
    gates = [{"dir": str(d), "tag": "job", "hold": False}]
    path = experiment(d, gates, 2, "submitted", "local_gate.py")
    ref = reference(experiment(sweep_dir(cluster.temp), gates, 2, "submitted", PLUGIN))
    (port,) = _free_ports(1)
    server = subprocess.Popen(
        [LIFELONG, "server", "--backend-store-uri", f"sqlite:///{d / 'server.db'}"]
        + ["--artifacts-destination", str(d / "artifacts"), "--port", str(port)],
        env=cluster.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while not _healthy(uri):
            assert server.poll() is None and time.monotonic() < deadline, "no MLflow server"
            time.sleep(0.3)
        bound = {
            c.laddr.ip
            for p in [psutil.Process(server.pid), *psutil.Process(server.pid).children(True)]
            for c in p.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert bound == {"127.0.0.1"}, bound

        cli = [LIFELONG]
        job_env = cluster.env
        sub = subprocess.run(
            cli
            + ["submit", path.name, "--address", cluster.dashboard]
            + ["--tracking-uri", uri, "--wait"],
            cwd=d,
            env=job_env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
        job = sub.stdout.strip().splitlines()[0]
        status = subprocess.run(
            cli + ["status", job, "--address", cluster.dashboard],
            env=job_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0 and "SUCCEEDED" in status.stdout, status
        logs = subprocess.run(
            cli + ["logs", job, "--address", cluster.dashboard],
            env=job_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "trials: 2/2 done" in logs.stdout, logs.stdout[-3000:]
        check_mlflow(uri, "submitted", ref)
        assert {r[0] for r in log_lines(d)} == {"job"}  # the plugin from the submitting dir ran
    finally:
        _stop(server)


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def test_lost_worker_node(cluster: Cluster) -> None:
    """Kill a worker node (its raylet and workers) mid-sweep: its trial reruns elsewhere."""
    d = sweep_dir(cluster.temp)
    path = experiment(d, [{"dir": str(d), "tag": "t"}], 3, "nodekill", PLUGIN)
    ref = reference(path)
    (d / "hold").touch()
    uri = f"sqlite:///{d / 'mlflow.db'}"
    proc = start_run(cluster, path, uri)
    at_gate = lambda: len([r for r in log_lines(d) if r[1] == 1]) >= 3  # noqa: E731
    wait_for("3 trials at experience 1", at_gate, proc, 150)
    first = [r for r in log_lines(d) if r[1] == 1]
    raylets = {r[2]: _raylet(r[2]) for r in first}
    workers = {cluster.procs[n].pid for n in ("w1", "w2")}
    victim = next(p for p, raylet in raylets.items() if os.getpgid(raylet.pid) in workers)
    lost_node = next(r[3] for r in first if r[2] == victim)
    # A lost machine: its raylet and every process it started die at once (a worker
    # whose raylet alone died would still finish its task and report to the driver).
    doomed = [raylets[victim], *raylets[victim].children(recursive=True)]
    for p in doomed:
        p.kill()
    t_kill = time.time()
    (d / "hold").unlink()
    rc, output = finish(proc)
    assert rc == 0, output[-4000:]
    again = [r for r in log_lines(d) if r[1] == 1 and r[4] > t_kill]
    assert len(again) == 1 and again[0][3] != lost_node
    assert not [r for r in log_lines(d) if r[1] == 0 and r[4] > t_kill]
    check_mlflow(uri, "nodekill", ref)
    print(
        f"\nFIGURES lost node: faults 1, trials affected 1, finished 3/3, "
        f"recovered (trial restarted on another node) after {again[0][4] - t_kill:.1f} s"
    )


def test_two_sweeps_of_one_file_at_once_kill_one_resume_it(cluster: Cluster) -> None:
    """Each sweep keeps its own state: the killed one resumes after the other has ended."""
    d = sweep_dir(cluster.temp)
    path = experiment(d, [{"dir": str(d), "tag": "a"}], 1, "twice", PLUGIN)
    ref = reference(path)
    (d / "hold").touch()
    uri = f"sqlite:///{d / 'mlflow.db'}"  # a new store: both drivers create it at once
    first, second = start_run(cluster, path, uri), start_run(cluster, path, uri)

    def both_held() -> bool:
        return len({r[2] for r in log_lines(d) if r[1] == 1}) == 2

    wait_for("both sweeps' trials held", both_held, second, 150)
    first.kill()  # SIGKILL: no handler runs, its state stays "running"
    first.wait(30)
    (d / "hold").unlink()
    rc, output = finish(second)
    assert rc == 0, output[-4000:]
    listed = subprocess.run(
        [LIFELONG, "sweeps", path.name], cwd=d, env=cluster.env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert "stale" in listed.stdout and "ended" in listed.stdout, listed.stdout
    assert "RUNNING (stale: driver gone)" in listed.stdout, listed.stdout
    rc, output = finish(start_run(cluster, path, uri, "--resume"))
    assert rc == 0, output[-4000:]
    rc, output = finish(start_run(cluster, path, uri, "--resume"))
    assert rc == 2 and "no stopped sweep" in output, output[-2000:]

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("twice").experiment_id])
    parents = [r for r in runs if r.data.tags.get("lifelong.role") == "sweep"]
    assert len({p.data.tags["sweep"] for p in parents}) == 2
    assert [p.info.status for p in parents] == ["FINISHED", "FINISHED"]
    for parent in parents:
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert [k.info.status for k in kids] == ["FINISHED"], kids
        history = client.get_metric_history(kids[0].info.run_id, "acc/avg")
        assert sorted(m.step for m in history) == list(range(N_EXP))  # nothing logged twice
        R = np.full((N_EXP, N_EXP), np.nan)
        for j in range(N_EXP):
            for m in client.get_metric_history(kids[0].info.run_id, f"acc/exp_{j}"):
                R[m.step, j] = m.value
        np.testing.assert_array_equal(R, ref[kids[0].info.run_name])
