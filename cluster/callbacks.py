"""Tune callbacks that run on the driver: MLflow tracking and live progress."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.tune import Callback
from ray.tune.experiment import Trial

from lifelong.platform.expand import trial_from_config
from lifelong.platform.hook_errors import driver_paths, reason
from lifelong.platform.spec import TrialSpec
from lifelong.platform.tracking import SweepTracker

from .data_parallel import CHECKPOINT_FILE
from .progress import SweepProgress


def trial_spec(trial: Trial) -> TrialSpec:
    """The lifelong trial a Tune trial runs."""
    return trial_from_config(trial.config)


class StorageFull(OSError):
    """A trial's checkpoint could not be written: the disk under ``--storage`` is full."""


def _storage_full(reason: str) -> bool:
    return "No space left on device" in reason or "[Errno 28]" in reason


def error_text(trial: Trial) -> str:
    """The failed trial's traceback as Ray wrote it, with the driver's plugin paths."""
    if trial.error_file and Path(trial.error_file).exists():
        return driver_paths(Path(trial.error_file).read_text(errors="replace"))
    return ""


def error_reason(trial: Trial) -> str:
    """The exception line of a failed trial's traceback (``DivergenceError: ...``).

    When a strategy raised it: followed by ``(raised in strategy ..., hook ..., at
    FILE:LINE)`` (:mod:`lifelong.platform.hook_errors`).
    """
    return reason(error_text(trial))


def _final_result(trial: Trial) -> dict[str, Any] | None:
    """The trial's last result as Tune kept it (also across ``Tuner.restore``), if final.

    A callback restored from a saved sweep has no results of its own (see
    :meth:`TrackingCallback.__getstate__`); a trial that had reported its last
    experience before the driver was killed completes with nothing new.
    """
    last = trial.last_result or {}
    if "experience" in last and last.get("R") is not None:
        return dict(last)
    return None


def finish_from_result(tracker: SweepTracker, trial_id: str, last: dict[str, Any]) -> None:
    """End ``trial_id``'s run FINISHED from its last experience's result (idempotent)."""
    tracker.trial_finished(
        trial_id,
        np.asarray(last["R"], dtype=float),
        np.asarray(last["untrained"], dtype=float),
        np.asarray(last["fresh"], dtype=float) if last.get("fresh") else None,
        last.get("partial_R"),
    )


#: The tracker and progress view of each sweep this driver runs, by sweep key. A
#: callback that Tune unpickled from a stopped sweep's state (``Tuner.restore``)
#: finds its driver-side objects here.
ACTIVE: dict[str, tuple[SweepTracker, SweepProgress]] = {}


class TrackingCallback(Callback):
    """Forwards trial events to the :class:`SweepTracker` (MLflow) and the progress view.

    Args:
        key: the sweep's key in :data:`ACTIVE`, where the tracker and the progress
            view are registered (they live in this driver process only and are not
            pickled with Tune's experiment state).
        early_stopping: what may end a trial before its last experience (``asha``,
            ``median``, a time budget); such a trial's run ends KILLED with the tag
            ``lifelong.early_stopped``, not FAILED. ``None``: nothing may.
    """

    def __init__(self, key: str, *, early_stopping: str | None = None) -> None:
        self.key = key
        self.early_stopping = early_stopping
        self._last: dict[str, dict[str, Any]] = {}
        self._vectorized: set[str] = set()  # trials whose run has its lifelong.vectorized tag
        self._specs: dict[str, TrialSpec] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment state; the MLflow client and
        # the console live only in this driver process and are not part of it.
        return {
            "key": self.key,
            "_last": {},
            "early_stopping": self.early_stopping,
            "_specs": dict(getattr(self, "_specs", {})),
        }

    def spec(self, trial: Trial) -> TrialSpec:
        """The lifelong trial ``trial`` runs, remembered per Tune trial.

        A search algorithm's repeat of a configuration already tried gets a ``#n``
        suffix, so each Tune trial keeps its own MLflow run.
        """
        specs = self.__dict__.setdefault("_specs", {})
        if trial.trial_id not in specs:
            spec = trial_spec(trial)
            taken = {s.trial_id for s in specs.values()}
            n = 1
            while spec.trial_id in taken:
                n += 1
                spec = dataclasses.replace(spec, label=f"{trial_spec(trial).label} #{n}")
            specs[trial.trial_id] = spec
        return specs[trial.trial_id]

    @property
    def tracker(self) -> SweepTracker:
        """The sweep's tracker (registered in :data:`ACTIVE` by the driver)."""
        return ACTIVE[self.key][0]

    @property
    def progress(self) -> SweepProgress:
        """The sweep's progress view."""
        return ACTIVE[self.key][1]

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Open the trial's MLflow child run."""
        spec = self.spec(trial)
        self.tracker.trial_started(spec)
        self.progress.started(spec.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        """Log the experience's metrics (once per step)."""
        spec = self.spec(trial)
        step = int(result["experience"])
        self.tracker.trial_result(
            spec.trial_id,
            step,
            dict(result["metrics"]),
            dict(result["losses"]),
            dict(result.get("strategy_metrics", {})),
            result.get("node_id"),
            anytime=result.get("anytime") or (),
            system=result.get("system") or {},
        )
        vectorized = result.get("vectorized")  # trained with other seeds as one program
        if vectorized and spec.trial_id not in self._vectorized:
            self._vectorized.add(spec.trial_id)
            self.tracker.tag_trial(spec.trial_id, "lifelong.vectorized", json.dumps(vectorized))
        self._last[spec.trial_id] = result
        self.progress.result(spec.trial_id, step, int(result["n_experiences"]))

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Log final metrics and artifacts; the run ends FINISHED."""
        spec = self.spec(trial)
        done = self.tracker.outcomes.get(spec.trial_id)
        if done is not None and done.status == "FINISHED":
            return  # finished before the sweep was resumed: logged already
        last = self._last.get(spec.trial_id) or _final_result(trial)
        if last is None or int(last["experience"]) + 1 != int(last["n_experiences"]):
            if last is not None and self.early_stopping:
                n = int(last["experience"]) + 1
                reason = f"stopped by {self.early_stopping} after {n} of {last['n_experiences']}"
                self.tracker.trial_stopped(spec.trial_id, reason + " experiences")
                self.progress.stopped(spec.trial_id, reason)
                return
            self.on_trial_error(iteration, trials, trial)
            return
        if self.tracker.log_model and trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as d:
                state = torch.load(Path(d) / CHECKPOINT_FILE, weights_only=True)
            self.tracker.log_final_model(spec.trial_id, state["model"])
        finish_from_result(self.tracker, spec.trial_id, last)
        self.progress.finished(spec.trial_id, self.tracker.outcomes[spec.trial_id].final)

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """The trial failed and Tune restarts it (``max_failures``): say so and record it."""
        spec = self.spec(trial)
        if spec.trial_id not in self.tracker.outcomes:
            self.tracker.trial_started(spec)
        reason = error_reason(trial)
        if _storage_full(reason):
            raise StorageFull(28, reason)  # a restart would fail the same way: stop the sweep
        n = self.tracker.trial_restarted(spec.trial_id, reason)
        self.progress.restarted(spec.trial_id, reason, n, self.tracker.experiment.spec.max_failures)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """The run ends FAILED with the exception line as its reason."""
        spec = self.spec(trial)
        if spec.trial_id not in self.tracker.outcomes:
            self.tracker.trial_started(spec)
        reason = error_reason(trial)
        if _storage_full(reason):  # not the trial's fault: it is KILLED, the sweep stops
            raise StorageFull(28, reason)
        self.tracker.trial_failed(spec.trial_id, reason, error_text(trial))
        self.progress.failed(spec.trial_id, reason)
