"""Resilient MLflow writes: retry, spool to a local journal while the store is down, sync later.

:class:`ResilientClient` stands in for :class:`mlflow.tracking.MlflowClient` in
the driver-side tracker. Every write goes straight to the tracking store while
it answers. When a write fails with a connection error (a tracking server that
stopped, a timeout, a locked SQLite file that stays locked), the client goes
*offline*: that write and every later one are appended to a journal, JSON lines
under ``.lifelong/spool/<sweep>/``, so training never waits on the store and no
result is lost. Runs created while offline get a placeholder ID
(``spool-<key>``) that later writes refer to. Every few seconds the client
probes the store; once it answers, the journal is replayed in order and the
client is online again. :meth:`ResilientClient.close` (end of the sweep) waits a
grace period for a store that is still down, then says where the journal is and
that ``lifelong sync`` uploads it.

Nothing is written twice. Each journal entry has a key; a replayed entry is
recorded in ``done.jsonl`` with its result (the real run ID for a created run),
and replay skips recorded keys, so ``lifelong sync`` can run any number of
times. Metrics keep the timestamp they were spooled with, and MLflow stores a
(key, step, timestamp, value) once, so even a write that reached the server
before its connection dropped is not duplicated when it is sent again.

Retries of single requests use MLflow's own HTTP settings
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``,
``MLFLOW_HTTP_REQUEST_TIMEOUT``); lifelong lowers their defaults (1 retry,
factor 1, 3 s per read) so that a store that is down or hung (a stopped
process that still accepts connections) costs about 6 s, not minutes, before
the client spools. Values already set in the environment are kept.

Runs are created with a ``lifelong.create_key`` tag; replaying a ``create_run``
whose answer was lost (a connection cut after the server created the run)
finds that run instead of creating a second one.

Journals live under :func:`default_spool_root` (beside a local store, or
``.lifelong/spool`` for a server), or where ``LIFELONG_SPOOL_DIR`` (``lifelong
run --spool-dir``) says; :func:`check_spool_space` refuses a root without room.
A journal that cannot be written (its disk is full) raises
:class:`SpoolFullError`, naming the directory and the option that chose it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

SPOOL_ROOT = Path(".lifelong") / "spool"
"""Where journals are kept for a tracking server, relative to the working directory."""

SPOOL_ENV = "LIFELONG_SPOOL_DIR"
"""Environment variable (set by ``--spool-dir``) naming the journals' root."""

MIN_FREE_BYTES = 64 * 2**20
"""Free space a spool root must have when a sweep starts."""

CREATE_KEY = "lifelong.create_key"
"""Tag that makes a replayed ``create_run`` idempotent."""

PLACEHOLDER = "spool-"
"""Prefix of the IDs given to experiments and runs created while offline."""

HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
}

_TRANSIENT = (
    "max retries exceeded",
    "connection refused",
    "connectionerror",
    "connection aborted",
    "connection reset",
    "remotedisconnected",
    "timed out",
    "timeout",
    "temporarily unavailable",
    "database is locked",
    "failed to establish a new connection",
    "connection broken",
    "incompleteread",
    "chunkedencodingerror",
    "protocolerror",
    "remote end closed",
    "too many 5",  # urllib3: "too many 500 error responses"
    "database or disk is full",  # a local store's disk: the journal may live elsewhere
    "no space left on device",
)

_SERVER_ERROR = re.compile(r"error code 5\d\d")


class SpoolFullError(OSError):
    """The journal could not be written: its disk is full (or it is not writable)."""


class SpoolSpaceError(ValueError):
    """A spool root has too little free space for a sweep to start."""


def safe_name(text: str, *, max_len: int = 80) -> str:
    """A file-system-safe form of user text, for directory and file names.

    Keeps letters, digits, ``.``, ``_`` and ``-``; anything else (``/``, backslash,
    NUL, spaces, other Unicode) becomes ``_``; leading dots are dropped (so
    ``..`` cannot climb a directory); long names are cut. When anything changed,
    a short hash of the original keeps distinct names distinct.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".") or "_"
    if cleaned == text and len(text) <= max_len:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: max_len - 9]}-{digest}"


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means the store is unreachable or busy (retry later), not a bad write."""
    if isinstance(error, SpoolFullError):
        return False
    if isinstance(error, ConnectionError | TimeoutError | OSError) and not isinstance(
        error, FileNotFoundError | PermissionError
    ):
        return True
    text = f"{type(error).__name__}: {error}".lower()
    if isinstance(error, MlflowException):
        code = getattr(error, "error_code", "")
        if code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"):
            return True
        if code == "INTERNAL_ERROR" and error.get_http_status_code() >= 500:
            return True  # a 5xx: the server is broken, the write may be fine
    return any(word in text for word in _TRANSIENT) or bool(_SERVER_ERROR.search(text))


def cause(error: BaseException) -> str:
    """One line saying why ``error`` happened: its innermost cause, not cut mid-word.

    MLflow wraps a connection failure in several layers (``API request to ...
    failed with exception HTTPConnectionPool(...): Max retries exceeded ...
    (Caused by NewConnectionError(...: Connection refused))``); the last
    ``Caused by`` is what a user needs.
    """
    text = " ".join(str(error).split()) or type(error).__name__
    if "Caused by " in text:
        text = text.rsplit("Caused by ", 1)[1].rstrip(")")
    text = re.sub(r"<[^<>]* object at 0x[0-9a-f]+>: ", "", text)
    return text if len(text) <= 300 else text[:297] + "..."


def default_spool_root(tracking_uri: str, *, env: bool = True) -> Path:
    """Where journals go by default: beside a local store, else ``.lifelong/spool``.

    ``LIFELONG_SPOOL_DIR`` (``--spool-dir``) overrides it unless ``env`` is false.
    """
    if env and os.environ.get(SPOOL_ENV):
        return Path(os.environ[SPOOL_ENV]).expanduser().resolve()
    for scheme in ("sqlite:///", "file://"):
        if tracking_uri.startswith(scheme):
            store = Path(tracking_uri[len(scheme) :].split("?", 1)[0])
            return (store.parent / SPOOL_ROOT).resolve()
    return SPOOL_ROOT.resolve()


def check_spool_space(root: Path, *, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Refuse a spool root that cannot be created or has under ``min_free_bytes`` free.

    Raises:
        SpoolSpaceError: naming ``root`` and the option that chose it.
    """
    probe = Path(root)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < min_free_bytes:
        raise SpoolSpaceError(
            f"spool directory {root}: only {free / 2**20:.1f} MiB free on its disk "
            f"(a tracking outage needs room for the journal); free some space or choose "
            f"another disk with --spool-dir"
        )


class _HandledStoreErrors(logging.Filter):
    """Drops MLflow's own traceback of a local store's error that the client handles.

    MLflow logs every SQLAlchemy error with its traceback before raising it; a
    full disk or a locked file is an outage here, said once in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        text = text.lower()
        return not ("database or disk is full" in text or "database is locked" in text)


_STORE_FILTER = _HandledStoreErrors()


def _apply_http_defaults() -> None:
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # MLflow prints "View run ... at: URL" to stdout for every run an http store ends;
    # interleaved with the progress display. The summary says where the runs are.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    store_log = logging.getLogger("mlflow.store.db.utils")
    if _STORE_FILTER not in store_log.filters:
        store_log.addFilter(_STORE_FILTER)


# ---------------------------------------------------------------------- journal
@dataclass
class Entry:
    """One journalled write: its key, the client method and its JSON arguments."""

    key: str
    op: str
    args: dict[str, Any]


class Journal:
    """An append-only JSON-lines journal of writes and a log of the replayed ones.

    Files in ``directory``: ``meta.json`` (tracking URI, sweep), ``ops.jsonl``
    (one entry per write), ``done.jsonl`` (keys replayed, with their results)
    and ``files/<key>/`` (copies of artifact files).
    """

    def __init__(self, directory: Path, *, tracking_uri: str | None = None) -> None:
        self.directory = Path(directory)
        self._seq = 0
        if tracking_uri is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            meta = {"tracking_uri": tracking_uri, "created": time.time(), "pid": os.getpid()}
            _write_atomic(self.directory / "meta.json", json.dumps(meta))
        self._seq = len(self.entries())

    @property
    def tracking_uri(self) -> str:
        """The tracking URI the journalled writes were meant for.

        Raises:
            TornJournalError: ``meta.json`` is empty or not a journal's (cut by a crash
                or a full disk before this version wrote it atomically).
        """
        path = self.directory / "meta.json"
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["tracking_uri"])
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            size = path.stat().st_size
            raise TornJournalError(
                f"{self.directory}: meta.json is torn ({size} bytes, not a journal's JSON); "
                f"nothing in it can be uploaded"
            ) from None

    def append(self, op: str, args: dict[str, Any], files: dict[str, str] | None = None) -> str:
        """Add a write; copy ``files`` (argument name -> path) into the journal. Return its key."""
        self._seq += 1
        key = f"{self._seq:08d}"
        args = dict(args)
        for name, path in (files or {}).items():
            dest = self.directory / "files" / key / Path(path).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            args[name] = str(dest.relative_to(self.directory))
        with open(self.directory / "ops.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "op": op, "args": args}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return key

    def entries(self) -> list[Entry]:
        """Every journalled write, in order."""
        return [Entry(**d) for d in _read_jsonl(self.directory / "ops.jsonl")]

    def results(self) -> dict[str, Any]:
        """Replayed keys and their results."""
        return {d["key"]: d.get("result") for d in _read_jsonl(self.directory / "done.jsonl")}

    def pending(self) -> list[Entry]:
        """Journalled writes not replayed yet, in order."""
        done = self.results()
        return [e for e in self.entries() if e.key not in done]

    def mark_done(self, key: str, result: Any = None) -> None:
        """Record that ``key`` reached the store (with ``result``, e.g. a real run ID)."""
        with open(self.directory / "done.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "result": result}) + "\n")
            f.flush()
            os.fsync(f.fileno())


class TornJournalError(ValueError):
    """A journal whose ``meta.json`` was cut (a crash or a full disk while writing it)."""


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write: never acknowledged
                continue
    return out


# ------------------------------------------------------------------ the client
class ResilientClient:
    """An :class:`MlflowClient` for a sweep's writes that survives tracking outages.

    The write methods the tracker uses (``create_experiment``, ``create_run``,
    ``log_batch``, ``log_metric``, ``log_param``, ``set_tag``, ``update_run``,
    ``set_terminated``, ``log_text``, ``log_artifact``) are journalled while the
    store is down; any other attribute is the wrapped client's (reads go to the
    store as they are).

    Args:
        tracking_uri: the MLflow tracking URI.
        sweep: a name for the journal directory (sanitised; a timestamp is added).
        spool_root: where journals go (default :func:`default_spool_root`).
        probe_interval: seconds between reconnection attempts while offline.
        grace_s: how long a read, or :meth:`close`, waits for a store that is down:
            once per outage, however many of them wait.
        notify: called with one line when the client goes offline, comes back,
            or closes with writes left in the journal (default: print to stderr).
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        sweep: str = "sweep",
        spool_root: Path | None = None,
        probe_interval: float = 5.0,
        grace_s: float | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        _apply_http_defaults()
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        root = Path(spool_root or default_spool_root(tracking_uri)).resolve()
        self.spool_dir = root / f"{safe_name(sweep, max_len=60)}-{stamp}-{os.getpid()}"
        self.probe_interval = probe_interval
        if grace_s is None:
            grace_s = float(os.environ.get("LIFELONG_TRACKING_GRACE_S", "60"))
        self.grace_s = grace_s
        self.notify = notify or _stderr
        self.offline = False
        self.spooled = 0  # writes journalled in total
        self.replayed = 0  # of those, replayed to the store
        self._journal: Journal | None = None
        self._ids: dict[str, str] = {}  # placeholder -> real ID
        self._next_probe = 0.0
        self._grace_deadline: float | None = None  # when this outage's grace ends
        self._lock = threading.RLock()

    # ------------------------------------------------------------- writes
    def create_experiment(self, name: str, **kwargs: Any) -> str:
        """Create the experiment (or, offline, return a placeholder ID)."""
        return str(self._write("create_experiment", {"name": name, **kwargs}))

    def get_experiment_by_name(self, name: str) -> Any:
        """The experiment named ``name``, or None (also while the store is down)."""
        with self._lock:
            if self._ready():
                try:
                    return self.client.get_experiment_by_name(name)
                except Exception as e:  # noqa: BLE001 - classified below
                    if not is_transient(e):
                        raise
                    self._go_offline(e)
            return None

    def create_run(
        self,
        experiment_id: str,
        start_time: int | None = None,
        tags: dict[str, str] | None = None,
        run_name: str | None = None,
    ) -> Any:
        """Create a run; offline, an object whose ``info.run_id`` is a placeholder."""
        args = {
            "experiment_id": experiment_id,
            "start_time": start_time or int(time.time() * 1000),
            "tags": {**(tags or {}), CREATE_KEY: uuid.uuid4().hex},
            "run_name": run_name,
        }
        run_id = self._write("create_run", args)
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, experiment_id=experiment_id))

    def log_batch(
        self,
        run_id: str,
        metrics: list[Metric] | tuple[Metric, ...] = (),
        params: list[Param] | tuple[Param, ...] = (),
        tags: list[RunTag] | tuple[RunTag, ...] = (),
        **kwargs: Any,
    ) -> None:
        """Log metrics (timestamps kept: a replay is idempotent), params and tags."""
        self._write(
            "log_batch",
            {
                "run_id": run_id,
                "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                "params": [[p.key, p.value] for p in params],
                "tags": [[t.key, t.value] for t in tags],
            },
        )

    def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        timestamp: int | None = None,
        step: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Log one metric (as a batch of one)."""
        ts = timestamp or int(time.time() * 1000)
        self.log_batch(run_id, metrics=[Metric(key, float(value), ts, step or 0)])

    def log_param(self, run_id: str, key: str, value: Any, **kwargs: Any) -> None:
        """Log one param."""
        self.log_batch(run_id, params=[Param(key, str(value))])

    def set_tag(self, run_id: str, key: str, value: Any, **kwargs: Any) -> None:
        """Set one tag."""
        self._write("set_tag", {"run_id": run_id, "key": key, "value": str(value)})

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove tag ``key`` from the run (nothing when it has none)."""
        self._write("delete_tag", {"run_id": run_id, "key": key})

    def log_input(self, run_id: str, dataset: dict[str, str], context: str) -> None:
        """Log a dataset input (an entity's name, digest, source_type, source, profile)."""
        self._write("log_input", {"run_id": run_id, "dataset": dict(dataset), "context": context})

    def update_run(self, run_id: str, status: str | None = None, name: str | None = None) -> None:
        """Change a run's status or name."""
        self._write("update_run", {"run_id": run_id, "status": status, "name": name})

    def set_terminated(
        self, run_id: str, status: str | None = None, end_time: int | None = None
    ) -> None:
        """End a run with ``status`` (the end time is the moment of the call, also offline)."""
        args = {"run_id": run_id, "status": status, "end_time": end_time or int(time.time() * 1000)}
        self._write("set_terminated", args)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file``."""
        self._write("log_text", {"run_id": run_id, "text": text, "artifact_file": artifact_file})

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        """Upload a file (offline: a copy is kept in the journal)."""
        args = {"run_id": run_id, "local_path": str(local_path), "artifact_path": artifact_path}
        self._write("log_artifact", args, files={"local_path": str(local_path)})

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        """Upload a directory's files (offline: copies are kept in the journal)."""
        for path in sorted(Path(local_dir).rglob("*")):
            if path.is_file():
                sub = path.parent.relative_to(local_dir).as_posix()
                parts = [p for p in (artifact_path, None if sub == "." else sub) if p]
                self.log_artifact(run_id, str(path), "/".join(parts) or None)

    def __getattr__(self, name: str) -> Any:
        """Anything else is the wrapped :class:`MlflowClient`'s (reads, mostly).

        While the store is down such a call waits for it (what is left of the
        outage's ``grace_s``), since its answer cannot be journalled; then it raises.
        """
        if name.startswith("_") or name == "client":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._wait_online()
                args, kwargs = self._translate(list(args)), self._translate(kwargs)
                try:
                    return attr(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - classified below
                    if not is_transient(e):
                        raise
                    self._go_offline(e)
                    if not self._wait_online():
                        raise
                    return attr(*args, **kwargs)

        return call

    def _wait_online(self) -> bool:
        """Offline: wait for the store until this outage's grace ends; return online.

        The grace (``grace_s``) starts with the first wait of an outage; later waits
        (a read, then :meth:`close`) share it, so an outage costs ``grace_s`` once.
        """
        if not self.offline:
            return True
        if self._grace_deadline is None:
            self._grace_deadline = time.monotonic() + self.grace_s
        deadline = self._grace_deadline
        while True:
            self._next_probe = 0.0
            if self._ready():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.probe_interval, max(0.0, deadline - time.monotonic())))

    def resolve(self, run_id: str) -> str:
        """The real ID of ``run_id`` (a placeholder once its run reached the store)."""
        return self._ids.get(run_id, run_id)

    # ---------------------------------------------------------- machinery
    def _write(self, op: str, args: dict[str, Any], files: dict[str, str] | None = None) -> Any:
        with self._lock:
            if self._ready():
                try:
                    return self._apply_with_retries(op, self._translate(args))
                except Exception as e:  # noqa: BLE001 - classified below
                    if not is_transient(e):
                        raise
                    self._go_offline(e)
            return self._spool(op, args, files)

    def _apply_with_retries(self, op: str, args: dict[str, Any]) -> Any:
        """Apply a write; a busy local store (a locked SQLite file) is retried in place.

        An HTTP store's requests are retried by MLflow itself (see the module notes).
        """
        attempts = 1 if self.tracking_uri.startswith(("http://", "https://")) else 5
        for attempt in range(attempts):
            try:
                return _apply(self.client, op, args)
            except Exception as e:  # noqa: BLE001 - classified below
                if attempt == attempts - 1 or not is_transient(e):
                    raise
                time.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    def _ready(self) -> bool:
        """Online, or offline but the store answers again and the journal replayed."""
        if not self.offline:
            return True
        if time.monotonic() < self._next_probe:
            return False
        self._next_probe = time.monotonic() + self.probe_interval
        if not self._reachable():
            return False
        try:
            self._flush()
        except Exception as e:  # noqa: BLE001
            if not is_transient(e):
                raise
            return False
        self.offline = False
        self._grace_deadline = None
        self.notify(
            f"lifelong: tracking store {self.tracking_uri} is back; replayed "
            f"{self.replayed} journalled writes"
        )
        return True

    def _reachable(self) -> bool:
        if self.tracking_uri.startswith(("http://", "https://")):
            import requests

            try:
                url = self.tracking_uri.rstrip("/") + "/health"
                return requests.get(url, timeout=2).status_code == 200
            except requests.RequestException:
                return False
        return True  # a local store: try the replay itself

    def _go_offline(self, error: BaseException) -> None:
        if not self.offline:
            self.notify(
                f"lifelong: tracking store {self.tracking_uri} unreachable ({cause(error)}); "
                f"training goes on, writes are kept in {self.spool_dir} and replayed "
                f"when it answers"
            )
        self.offline = True
        self._next_probe = time.monotonic() + self.probe_interval

    def _spool(self, op: str, args: dict[str, Any], files: dict[str, str] | None) -> Any:
        try:
            if self._journal is None:
                self._journal = Journal(self.spool_dir, tracking_uri=self.tracking_uri)
            key = self._journal.append(op, args, files)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                why = "its disk is full"
            else:
                why = e.strerror or str(e)
            raise SpoolFullError(
                e.errno,
                f"the tracking store {self.tracking_uri} is unreachable and its journal "
                f"{self.spool_dir} cannot be written ({why}); free space there, or put the "
                f"journal on another disk with --spool-dir, then resume the sweep",
            ) from e
        self.spooled += 1
        return f"{PLACEHOLDER}{key}" if op in ("create_experiment", "create_run") else None

    def _flush(self) -> None:
        if self._journal is None:
            return
        for entry, result in replay_entries(self._journal, self.client, self._ids):
            del entry, result
            self.replayed += 1

    def _translate(self, value: Any) -> Any:
        return _translate(value, self._ids)

    def pending(self) -> int:
        """Journalled writes not yet in the store."""
        return len(self._journal.pending()) if self._journal is not None else 0

    def close(self, *, wait: bool = True) -> int:
        """End of the sweep: replay what is journalled (waiting up to ``grace_s``).

        Returns the number of writes still only in the journal; when there are
        any, says where they are and how to upload them.
        """
        with self._lock:
            if wait:
                self._wait_online()
            left = self.pending()
            if left:
                self.notify(
                    f"lifelong: tracking store {self.tracking_uri} still unreachable: "
                    f"{left} writes (every result of this sweep) are kept in "
                    f"{self.spool_dir}; upload them with: lifelong sync {self.spool_dir}"
                )
            return left


def _stderr(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(message, highlight=False, markup=False)


def _translate(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, dict):
        return {k: _translate(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_translate(v, ids) for v in value]
    return value


def _apply(client: MlflowClient, op: str, args: dict[str, Any], *, replay: bool = False) -> Any:
    """Perform one write on ``client``; return the created ID for create ops.

    ``replay``: the write comes from a journal; it may have reached the store
    before (its answer lost), so a created run is looked up first.
    """
    if op == "create_experiment":
        existing = client.get_experiment_by_name(args["name"])
        if existing is not None:  # idempotent: another process or an earlier replay made it
            return existing.experiment_id
        return client.create_experiment(**args)
    if op == "create_run":
        if replay and CREATE_KEY in args["tags"]:  # its answer may have been lost, not it
            found = client.search_runs(
                [args["experiment_id"]],
                filter_string=f"tags.`{CREATE_KEY}` = '{args['tags'][CREATE_KEY]}'",
                max_results=1,
            )
            if found:
                return found[0].info.run_id
        return client.create_run(**args).info.run_id
    if op == "log_batch":
        client.log_batch(
            args["run_id"],
            metrics=[Metric(k, float(v), int(ts), int(s)) for k, v, ts, s in args["metrics"]],
            params=[Param(k, v) for k, v in args["params"]],
            tags=[RunTag(k, v) for k, v in args["tags"]],
        )
        return None
    if op == "set_tag":
        client.set_tag(args["run_id"], args["key"], args["value"])
    elif op == "delete_tag":  # idempotent: a replay may find it gone already
        if args["key"] in client.get_run(args["run_id"]).data.tags:
            client.delete_tag(args["run_id"], args["key"])
    elif op == "log_input":  # MLflow keeps one input per (run, dataset): a replay adds none
        entity = DatasetEntity(**args["dataset"])
        tag = InputTag(MLFLOW_DATASET_CONTEXT, args["context"])
        client.log_inputs(args["run_id"], datasets=[DatasetInput(entity, tags=[tag])])
    elif op == "update_run":
        client.update_run(args["run_id"], status=args["status"], name=args["name"])
    elif op == "set_terminated":
        client.set_terminated(args["run_id"], status=args["status"], end_time=args["end_time"])
    elif op == "log_text":
        client.log_text(args["run_id"], args["text"], args["artifact_file"])
    elif op == "log_artifact":
        client.log_artifact(args["run_id"], args["local_path"], args["artifact_path"])
    else:
        raise ValueError(f"unknown journalled operation {op!r}")
    return None


def find_experiment(client: MlflowClient, name_or_id: str) -> Any:
    """The MLflow experiment named ``name_or_id``, else numbered so; None when there is none."""
    exp = client.get_experiment_by_name(name_or_id)
    if exp is None and name_or_id.isdigit():
        try:
            exp = client.get_experiment(name_or_id)
        except MlflowException:
            exp = None
    return exp


def replay_entries(
    journal: Journal, client: MlflowClient, ids: dict[str, str]
) -> Iterator[tuple[Entry, Any]]:
    """Replay ``journal``'s pending writes in order through ``client``.

    ``ids`` maps placeholders to real IDs; it is filled from earlier replays
    (``done.jsonl``) and by the runs this replay creates. Each write is
    recorded as done right after the store accepted it.
    """
    for key, result in journal.results().items():
        if result is not None:
            ids[f"{PLACEHOLDER}{key}"] = result
    for entry in journal.pending():
        args = _translate(entry.args, ids)
        if entry.op == "log_artifact":
            args["local_path"] = str(journal.directory / args["local_path"])
        result = _apply(client, entry.op, args, replay=True)
        journal.mark_done(entry.key, result)
        if result is not None:
            ids[f"{PLACEHOLDER}{entry.key}"] = result
        yield entry, result


@dataclass
class SyncReport:
    """What :func:`sync` did for one journal."""

    directory: Path
    tracking_uri: str
    replayed: int
    already_done: int


def sync(directory: Path, tracking_uri: str | None = None) -> SyncReport:
    """Upload a journal's pending writes to ``tracking_uri`` (default: the one it was for).

    Safe to run again: writes already replayed are skipped.

    Raises:
        FileNotFoundError: ``directory`` is not a journal.
        MlflowException: the store refused a write or is still unreachable.
    """
    directory = Path(directory)
    if not (directory / "meta.json").exists():
        raise FileNotFoundError(f"{directory} is not a lifelong spool directory (no meta.json)")
    journal = Journal(directory)
    uri = tracking_uri or journal.tracking_uri
    _apply_http_defaults()
    client = MlflowClient(tracking_uri=uri)
    before = len(journal.results())
    replayed = sum(1 for _ in replay_entries(journal, client, {}))
    return SyncReport(directory, uri, replayed, before)


def sync_pending(tracking_uri: str, roots: list[Path]) -> list[SyncReport]:
    """Upload every journal under ``roots`` meant for ``tracking_uri`` with writes pending.

    Done before a sweep resumes, so that the runs it reads back are as the
    journal left them (a run that FINISHED while the store was down is FINISHED).
    Torn journals are left for ``lifelong sync`` to report.
    """
    reports = []
    for root in dict.fromkeys(Path(r).resolve() for r in roots):
        for d in spool_dirs(root):
            journal = Journal(d)
            try:
                if journal.tracking_uri != tracking_uri or not journal.pending():
                    continue
            except TornJournalError:
                continue
            reports.append(sync(d))
    return reports


def spool_dirs(root: Path | None = None) -> list[Path]:
    """Every journal under ``root`` (default ``.lifelong/spool``), oldest first."""
    root = Path(root or SPOOL_ROOT)
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / "meta.json").exists())
