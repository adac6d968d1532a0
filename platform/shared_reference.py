"""Work a sweep's trials share: the plasticity reference and the untrained model's row.

``plasticity/fresh`` (``training.plasticity_baseline``) trains a freshly
initialised model on each experience alone. It depends on the stream, the model
and training settings, the seed and the experience, never on the strategy, so
every strategy of a seed would compute the same numbers. A
:class:`ReferenceCache` keeps each value in a file named by the SHA-256 of
exactly those inputs, in a folder the sweep owns (``.lifelong/cache/<sweep
id>/reference``; removed when the sweep ends): the first trial of a seed to
reach an experience computes it, under a file lock, and the others read the
same float back. The numbers are bit-identical to computing each one again. The
untrained model's evaluation (forward transfer's baseline row) is shared the same
way: it depends on the stream, the model, the evaluation settings and the seed,
unless a strategy changes evaluation (``on_eval_start``, ``eval_logits``).

Each node of a cluster keeps its own folder (a per-node cache: at most one
computation per seed and node). ``LIFELONG_SHARED_REFERENCE=0`` turns sharing
off (``benchmarks/shared_reference.py`` measures it against that).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV = "LIFELONG_SHARED_REFERENCE"
CACHE_ROOT = Path(".lifelong") / "cache"


def reference_dir(sweep_id: str) -> Path:
    """The sweep's folder of shared reference values (absolute, for the workers)."""
    return (CACHE_ROOT / sweep_id / "reference").resolve()


def discard_reference(sweep_id: str) -> None:
    """Remove the sweep's shared values: it has ended (a resumed sweep keeps them)."""
    shutil.rmtree(CACHE_ROOT.resolve() / sweep_id, ignore_errors=True)


def sharing_enabled() -> bool:
    """False when ``$LIFELONG_SHARED_REFERENCE`` is ``0`` (every trial computes its own)."""
    return os.environ.get(ENV, "1") != "0"


class ReferenceCache:
    """Values computed once per key and read back by every other trial of the sweep."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.computed = 0  # how many values this process computed (the rest were read)

    def path(self, key: dict[str, Any]) -> Path:
        """The file of ``key`` (a JSON-able description of every input of the value)."""
        text = json.dumps(key, sort_keys=True, default=str)
        return self.directory / f"{hashlib.sha256(text.encode()).hexdigest()}.json"

    def get(self, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """The value of ``key``: read if a trial computed it, else computed here and kept.

        A value is a float or a list of floats (JSON keeps every float exactly).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a second trial waits for the first's value
            if path.exists():
                return json.loads(path.read_text())["value"]
            value = compute()
            partial = path.with_suffix(".tmp")
            partial.write_text(json.dumps({"value": value, "key": key}, default=str))
            partial.replace(path)  # atomic: a reader sees the whole file or none
            self.computed += 1
            return value
