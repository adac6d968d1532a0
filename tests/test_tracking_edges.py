"""The tracking client at the edges, without a server: what is an outage, torn
journals, the grace waited once, and a full disk under the journal.

The full-disk tests mount a 1 MiB tmpfs (root only; skipped with the reason
otherwise; ``tmpfs`` in conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient
from test_reliability_tracking import free_port
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.mlflow_io import (
    Journal,
    ResilientClient,
    SpoolFullError,
    cause,
    default_spool_root,
    is_transient,
)

CUT = (
    "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
    "('Connection broken: IncompleteRead(120 bytes read, 121 more expected)', "
    "IncompleteRead(120 bytes read, 121 more expected))"
)
REFUSED = (
    "API request to http://127.0.0.1:9/api/2.0/mlflow/runs/log-batch failed with exception "
    "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
    "/api/2.0/mlflow/runs/log-batch (Caused by NewConnectionError('<urllib3.connection."
    "HTTPConnection object at 0x7f3a2c1d0e50>: Failed to establish a new connection: "
    "[Errno 111] Connection refused'))"
)


@pytest.mark.parametrize(
    "error",
    [
        MlflowException(CUT),
        MlflowException("API request to endpoint /x failed with error code 500 != 200. b''"),
        MlflowException("API request to endpoint /x failed with error code 507 != 200. b''"),
        RestException({"error_code": "INTERNAL_ERROR", "message": "database exploded"}),
        MlflowException(REFUSED),
        MlflowException("(sqlite3.OperationalError) database or disk is full"),
    ],
    ids=["incomplete read", "500", "507", "rest 500", "refused", "store disk full"],
)
def test_a_server_gone_or_broken_is_an_outage(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad metric"}),
        RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}),
        SpoolFullError(28, "journal full"),
    ],
    ids=["invalid", "missing", "journal full"],
)
def test_a_bad_write_is_not_an_outage(error: BaseException) -> None:
    assert not is_transient(error)


def test_the_outage_message_names_the_innermost_cause_in_full() -> None:
    assert cause(MlflowException(REFUSED)) == (
        "NewConnectionError('Failed to establish a new connection: [Errno 111] Connection refused'"
    )
    assert "IncompleteRead(120 bytes read, 121 more expected))" in cause(MlflowException(CUT))


def test_the_spool_goes_beside_a_local_store_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIFELONG_SPOOL_DIR", raising=False)
    store = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    assert default_spool_root(store) == tmp_path / "db" / ".lifelong" / "spool"
    monkeypatch.setenv("LIFELONG_SPOOL_DIR", str(tmp_path / "elsewhere"))
    assert default_spool_root(store) == tmp_path / "elsewhere"
    assert default_spool_root(store, env=False) == tmp_path / "db" / ".lifelong" / "spool"


def test_the_grace_for_a_dead_store_is_waited_once(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = ResilientClient(
        uri, spool_root=tmp_path, probe_interval=0.2, grace_s=1.5, notify=lambda m: None
    )
    client.log_param("spool-1", "a", 1)  # the store is down: journalled
    assert client.offline and client.pending() == 1
    with pytest.raises(MlflowException):
        client.get_run("some-run")  # a read waits the grace, then gives up
    probes = []
    reachable = client._reachable
    client._reachable = lambda: probes.append(1) or reachable()  # type: ignore[method-assign]
    assert client.close() == 1  # the end of the sweep: the grace is spent already
    assert len(probes) <= 1, f"close waited again: {len(probes)} probes"


def test_sync_skips_and_reports_a_torn_journal(in_tmp: Path) -> None:
    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    root = in_tmp / ".lifelong" / "spool"
    good = Journal(root / "good", tracking_uri=uri)
    good.append("create_experiment", {"name": "kept"})
    torn = root / "torn"
    torn.mkdir(parents=True)
    (torn / "meta.json").write_bytes(b"")  # what a full disk left before writes were atomic
    (torn / "ops.jsonl").write_bytes(b'{"key": "00000001", "op": "set_t')
    result = CliRunner().invoke(app, ["sync"])
    assert result.exit_code == 1, result.output
    assert f"skipped {torn}: meta.json is torn (0 bytes" in " ".join(result.stderr.split())
    assert "1 writes uploaded" in result.stdout
    assert MlflowClient(uri).get_experiment_by_name("kept") is not None
    assert not [p for p in good.directory.iterdir() if p.name.startswith(".meta.json")]


# ------------------------------------------------------------------ full disks
@pytest.fixture
def small_disk(tmpfs) -> Path:
    """A 1 MiB file system (see ``tmpfs`` in conftest.py)."""
    return tmpfs("1m")


def test_a_full_journal_disk_is_one_error_naming_it_and_the_option(
    tmp_path: Path, small_disk: Path
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    client = ResilientClient(uri, spool_root=small_disk, grace_s=0, notify=lambda m: None)
    client.log_param("spool-1", "a", 1)  # fits
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * 2**20))
    with pytest.raises(SpoolFullError) as caught:
        client.log_artifact("spool-1", str(big))
    message = caught.value.strerror
    assert str(small_disk) in message and "disk is full" in message and "--spool-dir" in message
    assert client.pending() == 1  # what was journalled before stays


def test_a_spool_dir_without_room_is_refused_before_the_sweep(
    in_tmp: Path, small_disk: Path
) -> None:
    spec = {
        "name": "roomless",
        "seeds": [0],
        "scenario": {"source": "gaussian", "n_experiences": 2, "options": {"n_classes": 4}},
        "strategies": ["naive"],
    }
    (in_tmp / "e.yaml").write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["run", "e.yaml", "--spool-dir", str(small_disk)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.stderr.split())
    assert f"spool directory {small_disk}" in text and "MiB free" in text
    assert "--spool-dir" in text
    assert not (in_tmp / "mlflow.db").exists() or not MlflowClient(
        f"sqlite:///{in_tmp / 'mlflow.db'}"
    ).get_experiment_by_name("roomless")


def test_a_resume_uploads_the_pending_journals_of_its_store_first(in_tmp: Path) -> None:
    from lifelong.platform.mlflow_io import sync_pending

    mine, other = (f"sqlite:///{in_tmp / n}" for n in ("mine.db", "other.db"))
    root = in_tmp / "spool"
    Journal(root / "a", tracking_uri=mine).append("create_experiment", {"name": "from-a"})
    Journal(root / "b", tracking_uri=other).append("create_experiment", {"name": "from-b"})
    done = Journal(root / "c", tracking_uri=mine)
    done.mark_done(done.append("create_experiment", {"name": "never"}))  # replayed before
    (root / "torn").mkdir()
    (root / "torn" / "meta.json").write_bytes(b"")
    reports = sync_pending(mine, [root, root])
    assert [(r.directory.name, r.replayed) for r in reports] == [("a", 1)]
    assert MlflowClient(mine).get_experiment_by_name("from-a") is not None
    assert MlflowClient(mine).get_experiment_by_name("never") is None
    assert Journal(root / "b").pending()  # another store's journal is left alone
