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
``MLFLOW_HTTP_REQUEST_TIMEOUT``); lifelong lowers their defaults (2 retries,
factor 1, 10 s) so that a store that is down costs seconds, not minutes, before
the client spools. Values already set in the environment are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

SPOOL_ROOT = Path(".lifelong") / "spool"
"""Where journals are kept, relative to the working directory."""

PLACEHOLDER = "spool-"
"""Prefix of the IDs given to experiments and runs created while offline."""

HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
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
    "error code 502",
    "error code 503",
    "error code 504",
)


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
    if isinstance(error, ConnectionError | TimeoutError | OSError) and not isinstance(
        error, FileNotFoundError | PermissionError
    ):
        return True
    text = f"{type(error).__name__}: {error}".lower()
    if isinstance(error, MlflowException):
        code = getattr(error, "error_code", "")
        if code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"):
            return True
    return any(word in text for word in _TRANSIENT)


def _apply_http_defaults() -> None:
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


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
            (self.directory / "meta.json").write_text(json.dumps(meta))
        self._seq = len(self.entries())

    @property
    def tracking_uri(self) -> str:
        """The tracking URI the journalled writes were meant for."""
        return str(json.loads((self.directory / "meta.json").read_text())["tracking_uri"])

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
        spool_root: where journals go (default ``.lifelong/spool``).
        probe_interval: seconds between reconnection attempts while offline.
        grace_s: how long :meth:`close` waits for a store that is down.
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
        root = Path(spool_root or SPOOL_ROOT).resolve()
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
        self._gave_up = False  # a read waited grace_s in this outage already
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
            "tags": dict(tags or {}),
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

        While the store is down such a call waits for it (up to ``grace_s``, once
        per outage), since its answer cannot be journalled; then it raises.
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
        """Offline: wait up to ``grace_s`` (once per outage) for the store; return online."""
        if not self.offline:
            return True
        deadline = time.monotonic() + (0.0 if self._gave_up else self.grace_s)
        while True:
            self._next_probe = 0.0
            if self._ready():
                return True
            if time.monotonic() >= deadline:
                self._gave_up = True
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
        self._gave_up = False
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
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            self.notify(
                f"lifelong: tracking store {self.tracking_uri} unreachable ({first}); "
                f"training goes on, writes are kept in {self.spool_dir} and replayed "
                f"when it answers"
            )
        self.offline = True
        self._next_probe = time.monotonic() + self.probe_interval

    def _spool(self, op: str, args: dict[str, Any], files: dict[str, str] | None) -> Any:
        if self._journal is None:
            self._journal = Journal(self.spool_dir, tracking_uri=self.tracking_uri)
        key = self._journal.append(op, args, files)
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
                self._gave_up = False
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


def _apply(client: MlflowClient, op: str, args: dict[str, Any]) -> Any:
    """Perform one write on ``client``; return the created ID for create ops."""
    if op == "create_experiment":
        existing = client.get_experiment_by_name(args["name"])
        if existing is not None:  # idempotent: another process or an earlier replay made it
            return existing.experiment_id
        return client.create_experiment(**args)
    if op == "create_run":
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
        result = _apply(client, entry.op, args)
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


def spool_dirs(root: Path | None = None) -> list[Path]:
    """Every journal under ``root`` (default ``.lifelong/spool``), oldest first."""
    root = Path(root or SPOOL_ROOT)
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / "meta.json").exists())
