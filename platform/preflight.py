"""Checks made before a sweep starts anything: every path it will write is writable.

A sweep writes four places: ``--storage`` (the trials' checkpoints), the
working directory's ``.lifelong/`` (sweep states, staged plugins), the
journal's root (``--spool-dir``; it must also have room) and, for the embedded
store, the SQLite file's directory. Each is checked by
creating (and removing) a file in it, the only test a read-only file system or
a full disk answers truthfully, so an unwritable path is one message naming
the option that chose it before Ray starts or a run is logged.

The SQLite store is also created here, once, under a file lock: two sweeps
started at once against a store that does not exist yet would otherwise both
run MLflow's schema migration on the same new file, and one of them fails.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

STATE_ROOT = Path(".lifelong")
#: Where trials keep their checkpoints unless ``--storage`` says otherwise.
DEFAULT_STORAGE = STATE_ROOT / "ray_results"


class UnwritablePath(OSError):
    """A path the sweep must write cannot be written; the message names its option."""


def check_writable(folder: Path, option: str) -> None:
    """Create ``folder`` if needed and a file in it, or raise :class:`UnwritablePath`.

    ``option`` names what chose the path (``--storage``, ``--tracking-uri``, ...).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lifelong-probe-", dir=folder)
        try:
            os.write(fd, b"\0" * 4096)  # a full disk refuses data, not always a new name
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        reason = e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)
        raise UnwritablePath(f"{option}: cannot write to {folder} ({reason})") from None


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (``None`` for other stores)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or ":memory:" in tracking_uri:
        return None
    return Path(tracking_uri[len(prefix) :].partition("?")[0])


def check_sweep_paths(storage: str | None, tracking_uri: str, *, checkpoints: bool = True) -> None:
    """Check every local path a sweep writes (see the module docstring).

    ``checkpoints``: whether trials keep checkpoints (not in the in-process runner).

    Raises:
        UnwritablePath: naming ``--storage``, ``--tracking-uri``, ``--spool-dir`` (also
            when its disk has under 64 MiB free) or the working directory.
    """
    check_writable(STATE_ROOT.resolve(), "the working directory (its .lifelong/ folder)")
    if checkpoints and (storage is None or storage.startswith("file://") or "://" not in storage):
        local = Path((storage or str(DEFAULT_STORAGE)).removeprefix("file://"))
        check_writable(local.resolve(), "--storage")
    db = sqlite_path(tracking_uri)
    if db is not None:
        check_writable(db.parent, f"--tracking-uri ({tracking_uri})")
        if db.exists() and not os.access(db, os.W_OK):
            raise UnwritablePath(f"--tracking-uri ({tracking_uri}): {db} is read-only")
    from lifelong.platform.mlflow_io import (
        SpoolSpaceError,
        check_spool_space,
        default_spool_root,
    )

    spool = default_spool_root(tracking_uri)
    check_writable(spool, "--spool-dir")
    try:
        check_spool_space(spool)
    except SpoolSpaceError as e:
        raise UnwritablePath(str(e)) from None


def create_store(tracking_uri: str) -> None:
    """Open the tracking store once, creating a new SQLite store under a lock.

    The lock is an ``flock`` on the database file itself (SQLite's own locks are
    POSIX record locks, which ``flock`` does not touch; an empty file is an empty
    SQLite database), so no lock file is left behind.
    """
    from mlflow.tracking import MlflowClient

    db = sqlite_path(tracking_uri)
    if db is None:
        return
    fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    finally:
        os.close(fd)  # releases the lock
