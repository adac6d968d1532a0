"""Security: bound addresses, refused pickle payloads, plugins only when asked, safe names.

- ``lifelong ui`` and ``lifelong server`` listen on 127.0.0.1 only (read back
  from the kernel's socket table with psutil); the Ray instance lifelong starts
  has no dashboard. What
  Ray's own daemons bind (all interfaces; Ray has no setting to narrow them) is
  stated in docs/security.md, and checked here so the page stays true.
- A checkpoint carrying a pickle payload is refused by the trial's loading path
  (``torch.load(weights_only=True)``); the payload never runs.
- Plugin code runs only when the experiment lists it.
- Names from user input (``../`` in experiment names, strategy labels) write
  nothing outside the run's directories.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from ray import tune
from typer.testing import CliRunner

from lifelong.cluster import trial as trial_module
from lifelong.platform.cli import app
from lifelong.platform.learner import Learner
from lifelong.platform.mlflow_io import ResilientClient, safe_name
from lifelong.platform.spec import SpecError, load_experiment
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import build_strategy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket owned by ``pids``."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }


def tree(pid: int) -> set[int]:
    try:
        root = psutil.Process(pid)
        return {pid} | {p.pid for p in root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


# ------------------------------------------------------------------ addresses
def test_lifelong_ui_and_server_bind_loopback_only(tmp_path: Path) -> None:
    from typer.main import get_command

    lifelong = str(Path(sys.executable).with_name("lifelong"))
    commands = {"ui": ["--tracking-uri", f"sqlite:///{tmp_path / 'ui.db'}"]}
    if "server" in get_command(app).commands:  # type: ignore[attr-defined]
        commands["server"] = [
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", str(tmp_path / "artifacts"),
        ]  # fmt: skip
    procs: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for name, args in commands.items():  # started together: each takes a while
            port = free_port()
            procs[name] = (
                subprocess.Popen(
                    [lifelong, name, "--port", str(port), *args], cwd=tmp_path,
                    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ),
                port,
            )  # fmt: skip
        for name, (proc, port) in procs.items():
            found: set[tuple[str, int]] = set()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and port not in {p for _, p in found}:
                assert proc.poll() is None, f"lifelong {name} exited"
                time.sleep(0.5)
                found = listening(tree(proc.pid))
            assert port in {p for _, p in found}, (name, found)
            assert {ip for ip, _ in found} == {"127.0.0.1"}, (name, found)
            print(f"\nlifelong {name} listens on: {sorted(found)}")
    finally:
        for proc, _ in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in procs.values():
            proc.wait(30)


RAY_PROBE = textwrap.dedent(
    """
    import json, os, time
    import psutil, ray
    from lifelong.cluster.sweep import ensure_ray

    ensure_ray(num_cpus=1)
    node = ray._private.worker.global_worker.node

    def name(pid):
        p = psutil.Process(pid)
        return "dashboard" if "dashboard/dashboard.py" in " ".join(p.cmdline()) else p.name()

    deadline = time.monotonic() + 20  # the dashboard process opens its socket late
    while True:
        time.sleep(1)
        pids = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
        socks = []
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.pid in pids:
                socks.append([name(c.pid), c.laddr.ip, c.laddr.port])
        if "dashboard" in {s[0] for s in socks} or time.monotonic() > deadline:
            break
    out = {"node_ip": node.node_ip_address, "webui": node.address_info.get("webui_url"),
           "sockets": sorted(socks)}
    ray.shutdown()
    print(json.dumps(out))
    """
)


def test_ray_started_by_lifelong_has_no_dashboard_and_a_loopback_node(tmp_path: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths
    env = {**os.environ, "RAY_TMPDIR": str(scratch), "TMPDIR": str(scratch)}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", RAY_PROBE], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nRay (as lifelong starts it): node IP {info['node_ip']}, listening: {info['sockets']}")
    assert not info["webui"]  # include_dashboard=False: no dashboard (UI and REST API) ...
    assert all(port != 8265 for _, _, port in info["sockets"])  # ... on its port
    # Every listener of the local instance is on loopback (docs/security.md says why
    # Ray 2.60 needs ENABLE_RAY_CLUSTER off for that): GCS, raylet, agents, workers.
    assert info["node_ip"] == "127.0.0.1"
    names = {name for name, _, _ in info["sockets"]}
    assert {"gcs_server", "raylet"} <= names, info["sockets"]
    # Ray 2.60 starts its dashboard process (minimal: no UI) all the same; loopback too.
    loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    assert all(ip in loopback for _, ip, _ in info["sockets"]), info["sockets"]


# ------------------------------------------------------------------ payloads
class Payload:
    """Unpickling this runs ``Path(marker).touch()``: what an attacker's checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def tiny_stream():
    return build_stream(
        ScenarioConfig(
            source="gaussian",
            n_experiences=2,
            options={"n_classes": 4, "n_features": 5, "n_train_per_class": 10},
        )
    )


def poisoned_checkpoint(directory: Path, marker: Path, stream) -> Path:
    from lifelong.platform.models import ModelConfig
    from lifelong.platform.training import TrainingConfig

    learner = Learner(stream, ModelConfig(hidden=[8]), [build_strategy("naive")],
                      TrainingConfig(epochs=1, accelerator="cpu"), 0)  # fmt: skip
    state = learner.state_dict()
    state["strategies"]["naive"] = {"evil": Payload(marker)}
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / trial_module.CHECKPOINT_FILE)
    return directory


def test_checkpoint_with_pickle_payload_is_refused_by_the_trial(
    tmp_path: Path, tiny_stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "payload-ran"
    ckpt = poisoned_checkpoint(tmp_path / "ckpt", marker, tiny_stream)
    # the trial's own loading path, as Tune calls it when it restores a trial
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(ckpt))
    config = {
        "trial": {"seed": 0, "label": "naive", "strategies": [{"name": "naive", "params": {}}]},
        "model": {"name": "mlp", "hidden": [8]},
        "training": {"epochs": 1, "accelerator": "cpu"},
        "threads": 1,
        "plugins": {},
    }
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        trial_module.train_trial(config, tiny_stream)
    assert not marker.exists()
    # the same file loaded the unsafe way would have run it: the test can fail
    torch.load(ckpt / trial_module.CHECKPOINT_FILE, weights_only=False)
    assert marker.exists()


# ------------------------------------------------------------------- plugins
SNEAKY = "from pathlib import Path\nPath(__file__).with_suffix('.ran').touch()\n"


def test_plugin_code_runs_only_when_the_experiment_lists_it(in_tmp: Path) -> None:
    (in_tmp / "sneaky.py").write_text(SNEAKY)
    (in_tmp / "lifelong_plugin.py").write_text(SNEAKY)
    spec = {"strategies": ["naive"], "scenario": {"source": "gaussian", "n_experiences": 2}}
    path = in_tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    load_experiment(path)  # files beside it, in the working directory: not imported
    spec["strategies"] = ["sneaky"]  # a strategy named like a file: not imported either
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="unknown strategy 'sneaky'"):
        load_experiment(path)
    assert not (in_tmp / "sneaky.ran").exists() and not (in_tmp / "lifelong_plugin.ran").exists()
    spec["strategies"], spec["plugins"] = ["naive"], ["sneaky.py"]  # listed: now it runs
    path.write_text(yaml.safe_dump(spec))
    load_experiment(path)
    assert (in_tmp / "sneaky.ran").exists() and not (in_tmp / "lifelong_plugin.ran").exists()


# ------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "name", ["../../evil", "/etc/evil", "a/../../b", "..", "x" * 240, "ok\\..\\..\\win", "ü/ß"]
)
def test_safe_name_stays_one_plain_path_component(name: str) -> None:
    out = safe_name(name)
    assert "/" not in out and "\\" not in out and "\0" not in out
    assert not out.startswith(".") and 0 < len(out) <= 80
    assert (Path("/base") / out).resolve().parent == Path("/base")
    assert safe_name(name) == out and safe_name(name + "x") != out  # stable, distinct


def test_spool_dir_from_a_hostile_name_stays_under_the_spool_root(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    client = ResilientClient(uri, sweep="../../../evil", spool_root=tmp_path / "s")
    assert client.spool_dir.parent == (tmp_path / "s").resolve()


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_names_with_dotdot_write_nothing_outside_the_run_directories(
    ray_instance: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = {
        "name": "../../evil",
        "scenario": {
            "source": "gaussian",
            "n_experiences": 2,
            "options": {"n_classes": 4, "n_features": 5, "n_train_per_class": 10},
        },
        "model": {"hidden": [8]},
        "training": {"epochs": 1},
        "strategies": ["naive", {"l2": {"anchor": "initial"}}, {"l2": {"anchor": "previous"}}],
    }
    path = work / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    before = snapshot(tmp_path) - snapshot(work)
    result = CliRunner().invoke(app, ["run", str(path), "--experiment-name", "../../../x/y"])
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path) - snapshot(work) == before  # nothing new outside work/
    created = {p.relative_to(work).parts[0] for p in snapshot(work)}
    assert created <= {"exp.yaml", "mlflow.db", "mlruns", ".lifelong"}, created
    runs = list((work / ".lifelong" / "ray_results").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("_.._evil-")
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")  # absolute: MLflow caches stores
    exp = client.get_experiment_by_name("../../../x/y")  # the MLflow name is kept as given
    kids = client.search_runs([exp.experiment_id])
    assert {r.info.run_name for r in kids} >= {"l2(anchor=initial)-seed0", "naive-seed0"}
    for kid in kids:  # artifacts of every run inside mlruns/ of the working directory
        uri = kid.info.artifact_uri
        assert Path(uri.removeprefix("file://")).resolve().is_relative_to(work / "mlruns")
