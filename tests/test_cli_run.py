"""The installed `lifelong` console script: --address, MLFLOW_TRACKING_URI, `lifelong ui`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from lifelong.platform.spec import load_experiment

from conftest import ROOT

LIFELONG = shutil.which("lifelong") or str(Path(sys.executable).parent / "lifelong")


# examples/plugin_package/experiment.yaml needs that package installed: it is run
# for real by tests/test_plugin_package.py.
EXAMPLES = sorted(
    str(p.relative_to(ROOT / "examples"))
    for p in (ROOT / "examples").rglob("*.yaml")
    if "plugin_package" not in p.parts
)


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_validate(name: str) -> None:
    exp = load_experiment(ROOT / "examples" / name)
    assert exp.trials()


def test_run_joins_existing_cluster_and_honours_env_uri(ray_instance: str, tmp_path: Path) -> None:
    spec = {
        "name": "joined",
        "seeds": [5],
        "scenario": {
            "source": "gaussian",
            "n_experiences": 2,
            "options": {
                "n_classes": 4,
                "n_features": 8,
                "n_train_per_class": 50,
                "n_test_per_class": 20,
            },
        },
        "model": {"hidden": [16]},
        "strategies": ["naive", {"ewc": {"lambda": 1.0}}],
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'env.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run(
        [LIFELONG, "run", "exp.yaml", "--address", ray_instance],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "naive" in proc.stdout and "ewc" in proc.stdout
    assert f"lifelong ui --tracking-uri {uri}" in proc.stdout
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("joined").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_binds_loopback(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [LIFELONG, "ui", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        bound: set[str] = set()
        deadline = time.monotonic() + 180  # mlflow ui starts slowly on a loaded machine
        while time.monotonic() < deadline and not bound:
            for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]:
                try:
                    bound |= {
                        c.laddr.ip
                        for c in p.net_connections("inet")
                        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
                    }
                except psutil.NoSuchProcess:
                    pass
            assert proc.poll() is None, "lifelong ui exited early"
            time.sleep(0.5)
        assert bound == {"127.0.0.1"}
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
