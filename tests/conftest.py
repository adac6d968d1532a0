"""Shared fixtures: one real local Ray instance per test session, temp working dirs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def tiny_experiment(name: str, plugins: list[str], strategies: list[str]) -> dict:
    """An experiment that trains in a second: 2 experiences of 2 Gaussian classes x 20.

    Batches of 16 make 3 optimizer steps per experience (steps 0-2, then 3-5).
    """
    return {
        "name": name,
        "plugins": plugins,
        "scenario": {
            "source": "gaussian",
            "n_experiences": 2,
            "options": {"n_classes": 4, "n_features": 6, "n_train_per_class": 20},
        },
        "model": {"hidden": [8]},
        "training": {"epochs": 1, "batch_size": 16},
        "strategies": strategies,
    }


def run_sweep_with_failures(folder: Path, spec: dict) -> tuple[str, dict]:
    """``lifelong run`` ``spec`` (written to ``folder``), which must exit 1 (a trial failed).

    Returns the tracking URI and the trials' MLflow runs by strategy label.
    """
    import yaml
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from lifelong.platform.cli import app

    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["run", str(path), "--tracking-uri", uri])
    assert result.exit_code == 1, result.output
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(spec["name"])
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`lifelong.role` = 'trial'")
    return uri, {r.data.tags["strategy"]: r for r in runs}


# The tests' models are tiny and the machine has 2 cores shared with Ray workers:
# intra-op threads only add contention (up to 30x slower steps under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[str]:
    """A real local Ray instance (2 CPUs, bound to 127.0.0.1), shared by the session."""
    import ray

    from lifelong.cluster.sweep import ensure_ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ensure_ray(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test inside an empty temporary working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount small file systems for a test: ``tmpfs("4m")`` returns its directory.

    Needs root (CI runs as root); otherwise the test is skipped with the reason.
    Unmounted when the test ends.
    """
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=True)


def save_test_resnet(directory: Path, seed: int) -> Path:
    """Save timm's tiny ``test_resnet`` (random weights from ``seed``, 1000-class head)."""
    import timm

    torch.manual_seed(seed)
    path = directory / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), path)
    return path
