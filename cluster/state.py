"""The sweep-state files: what ``lifelong run exp.yaml --resume`` needs to continue a sweep.

Each sweep has its own small JSON file, keyed by its sweep id, in a folder per
(experiment file, MLflow experiment name, overrides) under ``.lifelong/sweeps/``:
the Tune run directory holding the trials' checkpoints, the MLflow store, the
sweep's parent run and the driver that runs it. Two sweeps of one file started
at once so never share a state: ``--resume`` continues the file's latest sweep
whose driver is gone, ``--resume --sweep SWEEP_ID`` a chosen one. The child runs and the
steps they already logged are read back from MLflow itself (the single source of
truth), so nothing is logged twice after a resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

STATE_DIR = Path(".lifelong") / "sweeps"

#: ``status`` values: the driver is running (or was killed), was interrupted, or ended.
RUNNING, INTERRUPTED, ENDED = "running", "interrupted", "ended"


@dataclass
class SweepState:
    """Where a sweep's checkpoints and MLflow runs are, and which driver runs it.

    Attributes:
        experiment_file: the experiment file, resolved.
        file_sha256: its contents' hash when the sweep started (a changed file is refused).
        experiment_name: the MLflow experiment name.
        tracking_uri: the MLflow tracking URI the sweep logs to.
        parent_run_id: the sweep's MLflow parent run.
        tune_path: the Tune run directory (checkpoints and Tune's experiment state).
        status: ``running``, ``interrupted`` or ``ended``.
        sweep_id: the sweep's id (the ``sweep`` tag and name of its parent run).
        host, driver_pid, driver_started: the driver process (its start time tells
            it from a later process that got the same pid).
        started_at: when the sweep started (seconds since the epoch).
        storage_full: the sweep stopped because ``--storage`` was full; what Tune
            left there is not trusted, and a resume runs the unfinished trials anew.
        plugin_sha256: ``{plugin file: sha256}`` when the sweep started (a changed
            file is refused by ``--resume`` unless ``--allow-changed-plugins``).
        shipped_package: the package name the plugin files were shipped to workers
            under; a resume ships them under it again (the trials' configs name it).
    """

    experiment_file: str
    file_sha256: str
    experiment_name: str
    tracking_uri: str
    parent_run_id: str
    tune_path: str
    status: str = RUNNING
    sweep_id: str = ""
    host: str = ""
    driver_pid: int = 0
    driver_started: float = 0.0
    started_at: float = field(default_factory=time.time)
    storage_full: bool = False
    plugin_sha256: dict[str, str] = field(default_factory=dict)
    shipped_package: str = ""

    def save(self, path: Path) -> None:
        """Write the state atomically (a killed driver never leaves half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> SweepState | None:
        """The state saved at ``path``, or ``None`` when there is none."""
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def claim(self) -> None:
        """Record this process as the sweep's driver."""
        me = psutil.Process()
        self.host, self.driver_pid, self.driver_started = (
            socket.gethostname(),
            me.pid,
            me.create_time(),
        )

    def driver_alive(self) -> bool:
        """Whether the process that drives this sweep still runs (on this host)."""
        if self.status != RUNNING or not self.driver_pid or self.host != socket.gethostname():
            return False
        try:
            proc = psutil.Process(self.driver_pid)
            return proc.status() != psutil.STATUS_ZOMBIE and (
                abs(proc.create_time() - self.driver_started) < 1.0
            )
        except psutil.Error:
            return False

    @property
    def condition(self) -> str:
        """``running``, ``stale`` (its driver died), ``interrupted`` or ``ended``."""
        if self.status == RUNNING:
            return RUNNING if self.driver_alive() else "stale"
        return self.status


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state_dir(
    experiment_file: Path,
    experiment_name: str,
    root: Path = STATE_DIR,
    overrides: tuple[str, ...] = (),
) -> Path:
    """The folder of the sweep states of ``experiment_file`` logged as ``experiment_name``.

    Command-line ``overrides`` make other sweeps of the same file, with their own folder.
    """
    key = "\0".join([str(experiment_file.resolve()), experiment_name, *overrides]).encode()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment_name)[:60] or "sweep"
    return root / f"{safe}-{hashlib.sha256(key).hexdigest()[:12]}"


def state_file_of(folder: Path, sweep_id: str) -> Path:
    """The state file of sweep ``sweep_id`` in ``folder``."""
    return folder / f"{sweep_id}.json"


def sweep_states(folder: Path) -> dict[Path, SweepState]:
    """Every sweep state in ``folder`` (and the one-file state of lifelong < 0.9), oldest first."""
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    legacy = folder.with_suffix(".json")
    if legacy.is_file():
        paths.insert(0, legacy)
    states = {}
    for path in paths:
        state = SweepState.load(path)
        if state is not None:
            states[path] = state
    return dict(sorted(states.items(), key=lambda kv: kv[1].started_at))


class NothingToResume(ValueError):
    """``--resume`` named no sweep that can be continued; the message says why."""


def retryable(folder: Path, sweep_id: str | None = None) -> tuple[Path, SweepState]:
    """The ended sweep ``--retry-failed`` runs the failed trials of: ``sweep_id``, or the latest.

    Raises:
        NothingToResume: no such sweep, or it has not ended (``--resume`` continues it).
    """
    states = sweep_states(folder)
    found = [
        (p, s) for p, s in states.items() if sweep_id is None or sweep_id in (s.sweep_id, p.stem)
    ]
    if not found:
        what = f"no sweep {sweep_id!r} of this file" if sweep_id else "no sweep of this file"
        raise NothingToResume(f"{what} to retry (states: {folder})")
    path, state = found[-1]
    if state.status != ENDED:
        raise NothingToResume(
            f"sweep {state.sweep_id} has not ended ({state.condition}); continue it with --resume"
        )
    return path, state


def resumable(folder: Path, sweep_id: str | None = None) -> tuple[Path, SweepState]:
    """The sweep ``--resume`` continues: ``sweep_id``, or the latest whose driver is gone.

    Raises:
        NothingToResume: no such sweep, it ended, or its driver still runs.
    """
    states = sweep_states(folder)
    known = ", ".join(f"{s.sweep_id or p.stem} ({s.condition})" for p, s in states.items())
    if sweep_id is not None:
        found = [(p, s) for p, s in states.items() if sweep_id in (s.sweep_id, p.stem)]
        if not found:
            raise NothingToResume(
                f"no sweep {sweep_id!r} of this file" + (f"; its sweeps: {known}" if known else "")
            )
        path, state = found[0]
        if state.status == ENDED:
            raise NothingToResume(f"sweep {sweep_id} ended; nothing to resume")
        if state.driver_alive():
            raise NothingToResume(
                f"sweep {sweep_id} is still running (driver pid {state.driver_pid}); "
                "stop it first (Ctrl-C or SIGTERM)"
            )
        return path, state
    candidates = [(p, s) for p, s in states.items() if s.condition in ("stale", INTERRUPTED)]
    if not candidates:
        what = "no stopped sweep" if not states else "no stopped sweep (its sweeps: " + known + ")"
        raise NothingToResume(f"{what} to resume (states: {folder})")
    return candidates[-1]
