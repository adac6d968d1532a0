"""Concurrent sweeps of one file keep separate states; unwritable paths fail before Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lifelong.cluster.state import (
    ENDED,
    INTERRUPTED,
    RUNNING,
    NothingToResume,
    SweepState,
    resumable,
    state_dir,
    state_file_of,
    sweep_states,
)
from lifelong.platform.cli import app
from lifelong.platform.preflight import UnwritablePath, check_sweep_paths, create_store

EXPERIMENT = """\
name: t
seeds: 1
scenario: {source: digits, n_experiences: 2}
training: {epochs: 1}
strategies: [naive]
"""


def _state(folder: Path, sweep_id: str, status: str, started: float, pid: int = 0) -> SweepState:
    state = SweepState("exp.yaml", "sha", "t", "sqlite:///x.db", "run", "tune", status, sweep_id)
    state.started_at = started
    if pid:
        state.claim()
        state.driver_pid = pid
    state.save(state_file_of(folder, sweep_id))
    return state


def test_each_sweep_has_its_own_state_and_resume_takes_the_latest_stopped(tmp_path: Path) -> None:
    folder = state_dir(tmp_path / "exp.yaml", "t", root=tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _state(folder, "a", INTERRUPTED, 1.0)
    _state(folder, "b", RUNNING, 2.0, pid=dead.pid)  # its driver was SIGKILLed
    _state(folder, "c", ENDED, 3.0)
    assert [s.sweep_id for s in sweep_states(folder).values()] == ["a", "b", "c"]
    assert [s.condition for s in sweep_states(folder).values()] == ["interrupted", "stale", "ended"]
    path, state = resumable(folder)
    assert (path.name, state.sweep_id) == ("b.json", "b")
    assert resumable(folder, "a")[1].sweep_id == "a"
    with pytest.raises(NothingToResume, match="sweep c ended"):
        resumable(folder, "c")
    with pytest.raises(NothingToResume, match=r"no sweep 'zz'.*a \(interrupted\)"):
        resumable(folder, "zz")


def test_a_sweep_whose_driver_still_runs_is_not_resumed(tmp_path: Path) -> None:
    folder = state_dir(tmp_path / "exp.yaml", "t", root=tmp_path)
    _state(folder, "live", RUNNING, 1.0, pid=os.getpid())
    assert sweep_states(folder)[state_file_of(folder, "live")].condition == "running"
    with pytest.raises(NothingToResume, match=r"still running \(driver pid"):
        resumable(folder, "live")
    with pytest.raises(NothingToResume, match="no stopped sweep"):
        resumable(folder)


def test_a_pid_reused_by_another_process_is_not_the_driver(tmp_path: Path) -> None:
    folder = state_dir(tmp_path / "exp.yaml", "t", root=tmp_path)
    state = _state(folder, "x", RUNNING, 1.0, pid=os.getpid())
    state.driver_started -= 100.0  # the pid is ours, but the driver started earlier
    assert not state.driver_alive()


def test_unwritable_paths_are_named_before_anything_starts(in_tmp: Path) -> None:
    blocker = in_tmp / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UnwritablePath, match=r"^--storage: cannot write to .*file/ckpt"):
        check_sweep_paths(str(blocker / "ckpt"), "sqlite:///ok.db")
    with pytest.raises(UnwritablePath, match=r"^--tracking-uri \(sqlite:///.*file/m.db\)"):
        check_sweep_paths(None, f"sqlite:///{blocker}/m.db")
    check_sweep_paths("s3://bucket/x", "http://127.0.0.1:1")  # remote: not checked here
    check_sweep_paths(None, "sqlite:///ok.db", checkpoints=False)


def test_cli_refuses_unwritable_storage_with_exit_2_and_logs_nothing(in_tmp: Path) -> None:
    (in_tmp / "exp.yaml").write_text(EXPERIMENT)
    (in_tmp / "ro").write_text("")
    result = CliRunner().invoke(app, ["run", "exp.yaml", "--storage", "ro/ckpt"])
    assert result.exit_code == 2, result.output
    assert "--storage: cannot write to" in result.output
    assert not (in_tmp / "mlflow.db").exists()  # refused before the store was created


def test_two_drivers_create_one_new_store_at_once(tmp_path: Path) -> None:
    """Both processes open a store that does not exist yet; the lock runs the migration once."""
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    code = (
        "import sys, time; from lifelong.platform.preflight import create_store; "
        "from mlflow.tracking import MlflowClient; "
        f"time.sleep(max(0.0, {time.time() + 3.0} - time.time())); create_store(sys.argv[1]); "
        "MlflowClient(sys.argv[1]).create_experiment(sys.argv[2])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, uri, f"e{i}"], stderr=subprocess.PIPE)
        for i in range(2)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    create_store(uri)
    from mlflow.tracking import MlflowClient

    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert {"e0", "e1"} <= names


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at a temp folder (root only; skipped where mounting is refused)."""
    where = tmp_path / "fs"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_and_full_file_systems_are_refused_by_the_cli(
    in_tmp: Path, small_fs: Path
) -> None:
    (in_tmp / "exp.yaml").write_text(EXPERIMENT)
    (small_fs / "filler").write_bytes(b"\0" * (1024 * 1024 - 4096 * 2))
    with open(small_fs / "filler", "ab") as f:  # fill the last blocks
        try:
            f.write(b"\0" * 1024 * 1024)
        except OSError:
            pass
    result = CliRunner().invoke(app, ["run", "exp.yaml", "--storage", str(small_fs / "c")])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    result = CliRunner().invoke(app, ["run", "exp.yaml", "--storage", str(small_fs / "c")])
    assert result.exit_code == 2, result.output
    assert "--storage: cannot write to" in result.output
    assert "Read-only file system" in result.output
    assert not (in_tmp / "mlflow.db").exists()
