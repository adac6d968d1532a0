"""A disk that fills mid-sweep: under ``--storage`` (checkpoints) or under the tracking store.

Each disk is a small tmpfs mounted by the test (root only; else skipped with
the reason), filled to the last byte once the sweep has written to it. The
results are compared with an undisturbed run: runs lost, points lost or
duplicated, R identical.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_reliability_tracking import check_exactly_once, experiment_file
from test_tracking_faults import assert_same_R, reference
from typer.testing import CliRunner

from lifelong.platform.cli import app


def fill_when(ready: Callable[[], bool], disk: Path, done: threading.Event) -> None:
    """Once ``ready()``, write ``disk/filler`` until the disk refuses a byte more."""
    deadline = time.monotonic() + 300
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(disk / "filler", "wb", buffering=0) as f:
        for size in (65536, 1):  # big writes, then the last bytes one by one
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError:
                pass
    done.set()


def test_a_full_storage_disk_stops_the_sweep_and_a_resume_after_freeing_it_finishes(
    ray_instance: str, in_tmp: Path, tmpfs: Callable[[str], Path]
) -> None:
    disk = tmpfs("16m")
    path = experiment_file(in_tmp, "fullstorage")
    filled = threading.Event()
    ready = lambda: any(disk.rglob("learner.pt"))  # noqa: E731 - a first checkpoint is there
    filler = threading.Thread(target=fill_when, args=(ready, disk, filled), daemon=True)
    filler.start()
    first = CliRunner().invoke(app, ["run", str(path), "--storage", str(disk)])
    filler.join(60)
    assert filled.is_set()
    assert first.exit_code == 1, first.output
    text = " ".join(first.stderr.split())
    assert f"no space left on device under --storage {disk}" in text, text[-3000:]
    assert "trials finished" in text and "--resume" in text
    assert "Traceback" not in first.output and "Aborted" not in first.output
    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fullstorage").experiment_id])
    statuses = sorted(r.info.status for r in runs)
    print(f"\nfull --storage, before the resume: {statuses}")
    assert "FAILED" not in statuses and "KILLED" in statuses

    (disk / "filler").unlink()
    again = CliRunner().invoke(app, ["run", str(path), "--resume"])
    assert again.exit_code == 0, again.output
    counts = check_exactly_once(uri, "fullstorage")
    print(f"full --storage, after freeing it and --resume: {counts}")
    assert counts["lost"] == 0 and counts["duplicated"] == 0
    assert_same_R(uri, "fullstorage", reference(path), in_tmp)


def test_a_full_tracking_store_disk_journals_elsewhere_and_sync_uploads_it_once(
    ray_instance: str,
    in_tmp: Path,
    tmpfs: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIFELONG_TRACKING_GRACE_S", "1")
    disk = tmpfs("16m")
    db = disk / "mlflow.db"
    uri = f"sqlite:///{db}"
    path = experiment_file(in_tmp, "fullstore")

    def logging_started() -> bool:
        try:
            with sqlite3.connect(db, timeout=5) as con:
                return int(con.execute("select count(*) from metrics").fetchone()[0]) > 0
        except sqlite3.Error:
            return False

    filled = threading.Event()
    filler = threading.Thread(target=fill_when, args=(logging_started, disk, filled), daemon=True)
    filler.start()
    spool = in_tmp / "journal"  # on another disk than the store
    result = CliRunner().invoke(
        app, ["run", str(path), "--tracking-uri", uri, "--spool-dir", str(spool)]
    )
    filler.join(60)
    assert filled.is_set()
    assert result.exit_code == 0, result.output  # every trial trained
    text = " ".join(result.stderr.split())
    assert "database or disk is full" in text and f"lifelong sync {spool}" in text, text[-3000:]
    assert "Traceback" not in result.output

    (disk / "filler").unlink()
    synced = CliRunner().invoke(app, ["sync", "--spool-dir", str(spool), "--tracking-uri", uri])
    assert synced.exit_code == 0, synced.output
    counts = check_exactly_once(uri, "fullstore")
    print(f"\nfull tracking-store disk, journal elsewhere, then sync: {counts}")
    assert counts["lost"] == 0 and counts["duplicated"] == 0
    assert_same_R(uri, "fullstore", reference(path), in_tmp)
    assert not os.listdir(disk) or "filler" not in os.listdir(disk)
