"""The sweep-state file: what ``lifelong run exp.yaml --resume`` needs to continue a sweep.

One small JSON file per (experiment file, MLflow experiment name) under
``.lifelong/sweeps/``: the Tune run directory holding the trials' checkpoints,
the MLflow store and the sweep's parent run. The child runs and the steps they
already logged are read back from MLflow itself (the single source of truth),
so nothing is logged twice after a resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_DIR = Path(".lifelong") / "sweeps"

#: ``status`` values: the driver is running (or was killed), was interrupted, or ended.
RUNNING, INTERRUPTED, ENDED = "running", "interrupted", "ended"


@dataclass
class SweepState:
    """Where a sweep's checkpoints and MLflow runs are.

    Attributes:
        experiment_file: the experiment file, resolved.
        file_sha256: its contents' hash when the sweep started (a changed file is refused).
        experiment_name: the MLflow experiment name.
        tracking_uri: the MLflow tracking URI the sweep logs to.
        parent_run_id: the sweep's MLflow parent run.
        tune_path: the Tune run directory (checkpoints and Tune's experiment state).
        status: ``running``, ``interrupted`` or ``ended``.
    """

    experiment_file: str
    file_sha256: str
    experiment_name: str
    tracking_uri: str
    parent_run_id: str
    tune_path: str
    status: str = RUNNING

    def save(self, path: Path) -> None:
        """Write the state atomically (a killed driver never leaves half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> SweepState | None:
        """The state saved at ``path``, or ``None`` when there is none."""
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state_path(
    experiment_file: Path,
    experiment_name: str,
    root: Path = STATE_DIR,
    overrides: tuple[str, ...] = (),
) -> Path:
    """The state file of the sweep of ``experiment_file`` logged as ``experiment_name``.

    Command-line ``overrides`` make another sweep of the same file, with its own state.
    """
    key = "\0".join([str(experiment_file.resolve()), experiment_name, *overrides]).encode()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment_name)[:60] or "sweep"
    return root / f"{safe}-{hashlib.sha256(key).hexdigest()[:12]}.json"
