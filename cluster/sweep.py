"""Run an experiment's sweep as a Ray Tune run: one trial per (strategies, seed).

With no address a local Ray instance is started (its dashboard off, bound to
127.0.0.1); an address joins an existing cluster. The stream is put in Ray's
object store once and shared by every trial.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
from rich.console import Console

from lifelong.platform import provenance
from lifelong.platform.expand import trial_from_config
from lifelong.platform.hook_errors import driver_paths, reason
from lifelong.platform.mlflow_io import safe_name
from lifelong.platform.plugins import shipped_package
from lifelong.platform.preflight import DEFAULT_STORAGE
from lifelong.platform.shared_reference import discard_reference, reference_dir
from lifelong.platform.spec import Experiment, ExperimentSpec, TrialSpec
from lifelong.platform.tracking import SweepTracker, TrialOutcome
from lifelong.scenarios.stream import Stream

from .callbacks import ACTIVE, StorageFull, TrackingCallback, finish_from_result
from .data_parallel import RELAY_RESOURCES, max_concurrent, node_resources
from .progress import SweepProgress
from .shared import SharedStream
from .state import ENDED, INTERRUPTED, RUNNING, SweepState, state_file_of
from .trial import train_trial
from .vector_groups import plan_groups, stop_groups, trial_resources


def ensure_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> bool:
    """Connect to Ray: reuse a running connection, join ``address``, or start locally.

    ``runtime_env`` (e.g. shipped plugin files) applies to every worker of the job.
    Returns whether this call started the connection (and so should shut it down).
    A local instance this call starts is ended by a watchdog process should this
    process die without ``ray.shutdown`` (:mod:`lifelong.cluster.watchdog`).
    """
    if ray.is_initialized():
        return False
    # Ray 2.60 turns token authentication on for clusters it starts and says so on
    # every start; it is the safe default, so the notice is noise for a local sweep.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    options: dict[str, Any] = {
        "runtime_env": runtime_env or None,
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address:
        try:
            with _loopback_only() if _loopback_cluster(address) else contextlib.nullcontext():
                ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            raise ClusterConnectError(_connect_message(address, e)) from e
    else:
        with _loopback_only():
            ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **options)
        # A driver killed outright must not leave the instance's agents and workers
        # running: a detached watcher ends them (see cluster/watchdog.py).
        from .watchdog import start_watchdog

        start_watchdog()
    return True


def _loopback_cluster(address: str) -> bool:
    """Whether ``address`` is a cluster on this machine whose nodes are all on 127.0.0.1.

    Such a cluster (e.g. one a ``lifelong`` process started) is joined the way it
    was started, under :func:`_loopback_only`; else Ray would look for a raylet on
    the host's IP, where there is none, and the driver would wait forever.
    """
    host = address.rpartition("/")[2].rpartition(":")[0] or address
    if host not in ("127.0.0.1", "localhost", "::1"):
        return False
    try:
        from ray._raylet import GcsClient

        nodes = GcsClient(address=address.rpartition("/")[2]).get_all_node_info(timeout=10)
    except Exception:  # noqa: BLE001 - not reachable now: ray.init says why, as before
        return False
    alive = [n.node_manager_address for n in nodes.values() if n.state == 0]
    return bool(alive) and all(ip == "127.0.0.1" for ip in alive)


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Make a local Ray instance listen on 127.0.0.1 only, not on every interface.

    Ray 2.60 ignores ``_node_ip_address="127.0.0.1"`` on Linux: it swaps a
    loopback address for the machine's IP (``services.resolve_ip_for_localhost``),
    and its servers given a non-loopback node IP listen on all interfaces. It keeps
    127.0.0.1 only where ``ray_constants.ENABLE_RAY_CLUSTER`` is false (its value
    on macOS and Windows; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), read when
    ``ray.init`` runs. Never for ``--address``: a joined cluster needs the real IP.
    See docs/security.md.
    """
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


class ClusterConnectError(RuntimeError):
    """Joining an existing Ray cluster failed (wrong address, or its auth token is missing)."""


def _connect_message(address: str, error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    text = f"could not join the Ray cluster at {address!r}: {first}"
    if any(w in str(error).lower() for w in ("auth", "token", "unauthenticated")):
        text += (
            ". The cluster uses token authentication: give this process the cluster's "
            "token with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<file> (or "
            "RAY_AUTH_TOKEN=<token>); see docs/cluster.md"
        )
    return text


def in_ray_job() -> bool:
    """Whether this process is a Ray job's entrypoint whose runtime env has a working_dir.

    Such a job (``lifelong submit``) already ships the submitting directory, plugin
    files included, to every worker, whose working directory it becomes.
    """
    raw = os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR)
    if not raw:
        return False
    try:
        env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return False
    return bool(env.get("working_dir"))


def plugin_imports(
    experiment: Experiment, shipped: list[str] | None, *, relative_to: Path | None = None
) -> dict[str, list[str]]:
    """What workers import: the shipped modules, or (Ray joined as is) the local files.

    ``relative_to``: name files inside this directory relative to it (a Ray job's
    working directory, which is each worker's working directory too).
    """
    if shipped is not None:
        return {"modules": shipped, "files": []}
    files = [r.file for r in experiment.plugins if r.file is not None]
    if relative_to is not None:
        root = relative_to.resolve()
        files = [
            os.path.relpath(f, root) if Path(f).resolve().is_relative_to(root) else f for f in files
        ]
    return {"modules": [r.module for r in experiment.plugins if r.file is None], "files": files}


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Silence Tune's own console output; lifelong reports progress and errors itself."""
    # The syncer's tracebacks (a full --storage) too: the sweep stops with one message.
    loggers = [logging.getLogger(n) for n in ("ray.tune", "ray.train._internal.syncer")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class SweepInterrupted(RuntimeError):
    """The sweep was stopped (SIGINT/SIGTERM) before every trial ended.

    The unfinished trials' MLflow runs are KILLED and their checkpoints kept:
    ``lifelong run <file> --resume`` continues them.
    """


@contextlib.contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C: Tune stops the trials and saves its state for a resume."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _trainable(experiment: Experiment, stream: Stream | dict[str, Stream]) -> Any:
    spec = experiment.spec
    if isinstance(stream, dict):  # the trials learn different streams (scenario searched)
        shared = {k: SharedStream(v) for k, v in stream.items()}
        trainable = tune.with_parameters(train_trial, streams=shared)
    else:
        trainable = tune.with_parameters(train_trial, stream=SharedStream(stream))
    if spec.resources.workers > 1:  # the Train workers hold the CPUs and GPUs
        return tune.with_resources(trainable, RELAY_RESOURCES)
    if spec.resources.vector_size > 1:  # a vectorised trial asks for a sliver (vector_groups)
        return tune.with_resources(
            trainable, trial_resources(spec.resources.cpu, spec.resources.gpu)
        )
    return tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _say_groups(
    console: Console | None, groups: dict[str, dict[str, Any]], notes: list[str]
) -> None:
    """Print how many trials train vectorised, in how many groups, and why others do not."""
    if console is None or (not groups and not notes):
        return
    n = len({g["id"] for g in groups.values()})
    lines = [f"lifelong: {len(groups)} trials train vectorised, in {n} group(s)"] if groups else []
    lines += [f"lifelong: {note}" for note in notes]
    for line in lines:
        console.print(line, highlight=False, markup=False)


def _max_concurrent(spec: ExperimentSpec, vectorised: bool = False) -> int | None:
    """``max_concurrent_trials``, capped for data-parallel trials by the cluster's size.

    ``vectorised``: some trials wait on their group's actor (``resources.vectorize``)
    asking Tune for a sliver of a CPU, so Tune would start them all at once, a worker
    process each; unless the file sets a limit, twice as many trials as the cluster
    has room for run at once (a group's actor trains for all of its trials whichever
    asks first, and the others read what it has kept for them).
    """
    if vectorised and spec.max_concurrent_trials is None:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        return max(2, 2 * int(cpus // spec.resources.cpu))
    if spec.resources.workers == 1:
        return spec.max_concurrent_trials
    cap = max_concurrent(spec, node_resources())
    return min(cap, spec.max_concurrent_trials or cap)


@dataclass
class TuneRun:
    """One strategy entry's validation phase, run by :func:`run_sweep` (see ``tuning``).

    ``trials``: the driver-drawn trials; under a search algorithm (Optuna) they
    are empty and the algorithm fills ``space`` (param key -> Ray Tune domain)
    into ``base`` ``num_samples`` times. ``scheduler``/``search_alg`` are Ray
    Tune's; ``stopper`` names what may end a trial early (``asha``, ``median``,
    ``the time budget``), for the runs' ``lifelong.early_stopped`` tag.
    """

    trials: list[TrialSpec]
    base: TrialSpec | None = None
    space: dict[str, Any] = field(default_factory=dict)
    scheduler: Any = None
    search_alg: Any = None
    num_samples: int = 1
    time_budget_s: float | None = None
    stopper: str | None = None


def run_sweep(
    experiment: Experiment,
    stream: Stream | dict[str, Stream],
    tracker: SweepTracker,
    *,
    storage_path: Path | str | None = None,
    console: Console | None = None,
    plugins: dict[str, list[str]] | None = None,
    state_file: Path | None = None,
    state_folder: Path | None = None,
    resume: SweepState | None = None,
    tune_run: TuneRun | None = None,
    retry_failed: bool = False,
) -> list[TrialOutcome]:
    """Run every trial of ``experiment`` on the connected Ray cluster.

    ``stream``: the stream every trial learns, or (``scenario`` fields searched)
    every stream by :func:`~lifelong.platform.expand.scenario_key`.
    Metrics and artifacts go to MLflow through ``tracker`` from this (driver)
    process. ``plugins`` tells workers what to import (see :func:`plugin_imports`).
    ``state_file``: where to keep the :class:`SweepState` a later ``resume`` needs;
    ``state_folder``: or the folder where it goes, named by the sweep id.
    ``resume``: continue that stopped sweep: its finished trials are not run
    again, the others continue from their last checkpoints and log into their
    existing MLflow runs. Returns one outcome per trial, in the experiment's order.
    ``retry_failed``: with ``resume`` (an ended sweep): run its FAILED trials
    again, from scratch, into new child runs of its parent run (tag
    ``lifelong.retry_of``; the failed run gets ``lifelong.retried_by``).
    ``tune_run``: run that validation phase instead, into ``tracker``'s open parent
    run, which is left open; its outcomes are returned in the order trials started.

    Raises:
        SweepInterrupted: the sweep was stopped (SIGINT/SIGTERM) before it ended.
    """
    spec = experiment.spec
    trials = tune_run.trials if tune_run is not None else experiment.trials()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # lifelong logs to MLflow itself; Tune's CSV/JSON/TensorBoard loggers would only
    # duplicate it (and warn about the NaN rows of R not yet trained).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Save Tune's experiment state often, so a driver that is killed outright
    # (SIGKILL, a lost machine) resumes from recent trial checkpoints.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    first = next(iter(stream.values())) if isinstance(stream, dict) else stream
    progress = SweepProgress([t.trial_id for t in trials], console, len(first))
    tracker.streams = stream  # each child run logs its stream as an MLflow dataset input
    if resume is not None:
        tracker.reopen(resume.parent_run_id)
        state = resume
    else:
        if tracker.parent_run_id is None:
            tracker.start()
        storage = Path(storage_path or DEFAULT_STORAGE)
        if "://" not in str(storage_path or ""):
            storage = storage.resolve()
        name = f"{safe_name(experiment.name)}-{tracker.sweep_id}-{time.time_ns() % 10**6}"
        state = SweepState(
            experiment_file=str(experiment.path.resolve()) if experiment.path else "",
            file_sha256=experiment.digest if experiment.path else "",
            experiment_name=tracker.experiment_name,
            tracking_uri=tracker.tracking_uri,
            parent_run_id=str(tracker.parent_run_id),
            tune_path=f"{str(storage).rstrip('/')}/{name}",
            sweep_id=tracker.sweep_id,
            plugin_sha256=provenance.file_hashes(experiment.plugins),
        )
    if plugins is not None:
        state.shipped_package = shipped_package(plugins["modules"])
    if tracker.plugin_changes:  # allowed: the sweep goes on with the files as they are now
        state.plugin_sha256 = provenance.file_hashes(experiment.plugins)
    if state_file is None and state_folder is not None:
        state_file = state_file_of(state_folder, state.sweep_id)
    for o in tracker.outcomes.values():
        if o.status == "FINISHED":
            progress.state[o.trial.trial_id] = "finished"
    to_run, restarted = trials, False
    if resume is not None and (state.storage_full or not _tune_saved(state.tune_path)):
        # Killed before Tune's first save (its first second), or stopped by a full
        # --storage (Tune's files there may be cut): nothing of Tune's to restore.
        # The trials not yet ended run again, into their MLflow runs (the steps
        # they logged are not logged twice), in a new Tune run folder.
        ended = {t for t, o in tracker.outcomes.items() if o.status in ("FINISHED", "FAILED")}
        to_run = [t for t in trials if t.trial_id not in ended]
        state.tune_path = f"{state.tune_path}-restarted-{time.time_ns() % 10**6}"
        resume, restarted = None, True
        state.storage_full = False
    if retry_failed:
        failed = [
            t for t in trials if getattr(tracker.outcomes.get(t.trial_id), "status", "") == "FAILED"
        ]
        tracker.retry_of = {t.trial_id: tracker.outcomes.pop(t.trial_id).run_id for t in failed}
        to_run = failed
        if not failed and console is not None:
            console.print(
                f"lifelong: sweep {state.sweep_id} has no failed trial; nothing to retry",
                highlight=False,
                markup=False,
            )
        state.tune_path = f"{state.tune_path}-retry-{time.time_ns() % 10**6}"
        resume, restarted = None, True
    state.status = RUNNING
    state.claim()
    if state_file is not None:
        state.save(state_file)
    key = f"{state.parent_run_id}"
    ACTIVE[key] = (tracker, progress)
    before = set(tracker.outcomes)
    groups: dict[str, dict[str, Any]] = {}  # resources.vectorize: trial id -> its group
    if spec.resources.vector_size > 1:
        stop_groups(state.sweep_id)  # left by a driver that was killed (they are detached)
    if restarted and not to_run:  # every trial had ended: nothing left for Tune
        tuner = None
    elif resume is not None:
        with _quiet_tune():  # no "Failed to fetch metrics" per trial: Tune's loggers are off
            tuner = tune.Tuner.restore(
                state.tune_path,
                _trainable(experiment, stream),
                resume_unfinished=True,
                resume_errored=False,
            )
    else:
        searched = tune_run is not None and tune_run.search_alg is not None
        streams = stream if isinstance(stream, dict) else {"": stream}
        groups, notes = (
            ({}, [])
            if searched
            else plan_groups(to_run, spec, streams, state.sweep_id, state.tune_path)
        )
        _say_groups(console, groups, notes)
        param_space = {
            "trial": tune.grid_search([t.to_dict() for t in to_run]),
            "model": spec.model.model_dump(mode="json"),
            "training": spec.training.model_dump(mode="json"),
            "threads": max(1, int(spec.resources.cpu)),
            "resources": spec.resources.model_dump(mode="json"),
            "plugins": plugins if plugins is not None else plugin_imports(experiment, None),
            "reference_cache": str(reference_dir(state.sweep_id)),
            "vector_groups": groups,
        }
        if searched:
            assert tune_run is not None and tune_run.base is not None
            param_space |= {"trial": tune_run.base.to_dict(), "values": tune_run.space}
        storage_dir, _, run_name = state.tune_path.rpartition("/")
        tuner = tune.Tuner(
            _trainable(experiment, stream),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=_max_concurrent(spec, bool(groups)),
                reuse_actors=True,
                scheduler=tune_run.scheduler if tune_run else None,
                search_alg=tune_run.search_alg if tune_run else None,
                num_samples=tune_run.num_samples if searched and tune_run else 1,
                time_budget_s=tune_run.time_budget_s if tune_run else None,
            ),
            run_config=tune.RunConfig(
                name=run_name,
                storage_path=storage_dir,
                verbose=0,
                callbacks=[TrackingCallback(key, early_stopping=tune_run and tune_run.stopper)],
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    try:
        with progress, _quiet_tune(), _sigterm_as_sigint():
            grid = tuner.fit() if tuner is not None else []
    except BaseException as error:
        full = _cause(error, StorageFull)
        if full is not None:
            where = state.tune_path.rpartition("/")[0]
            message = (
                f"no space left on device under --storage {where}: a trial's checkpoint "
                f"could not be written ({full.strerror})"
            )
            tracker.abort(f"the sweep stopped: {message}")
            state.storage_full = True
            _save_status(state, state_file, INTERRUPTED)
            raise StorageFullStop(message, tracker.outcomes, len(trials)) from None
        tracker.abort("the sweep was interrupted")
        _save_status(state, state_file, INTERRUPTED)
        raise
    finally:
        ACTIVE.pop(key, None)
        stop_groups(state.sweep_id)
    if tune_run is not None:
        return _phase_outcomes(tracker, before, grid)
    _finish_terminated(tracker, grid)
    unfinished = [o for o in tracker.outcomes.values() if o.status not in ("FINISHED", "FAILED")]
    if unfinished or len(tracker.outcomes) < len(trials):
        tracker.abort("the sweep was stopped before this trial finished")
        _save_status(state, state_file, INTERRUPTED)
        raise SweepInterrupted(
            f"the sweep was stopped with {len(trials) - len(tracker.outcomes) + len(unfinished)}"
            f" of {len(trials)} trials unfinished"
        )
    failed = any(o.status == "FAILED" for o in tracker.outcomes.values())
    tracker.finish("FAILED" if failed else "FINISHED")
    _save_status(state, state_file, ENDED)
    discard_reference(state.sweep_id)  # no trial of the sweep reads it again
    by_id = tracker.outcomes
    return [by_id[t.trial_id] for t in trials if t.trial_id in by_id]


class StorageFullStop(RuntimeError):
    """The sweep stopped because the disk under ``--storage`` is full.

    Its unfinished trials' runs are KILLED; ``finished`` of ``total`` trials ended.
    Once there is room, ``lifelong run <file> --resume`` runs the others.
    """

    def __init__(self, message: str, outcomes: dict[str, TrialOutcome], total: int) -> None:
        super().__init__(message)
        self.finished = sorted(t for t, o in outcomes.items() if o.status == "FINISHED")
        self.total = total


def _cause(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``error`` or the first exception of its cause/context chain that is a ``kind``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return None


def _finish_terminated(tracker: SweepTracker, grid: Any) -> None:
    """End FINISHED the runs of trials Tune had saved as done before the driver died.

    A driver killed while it logged a finished trial's artifacts (after Tune saved
    the trial TERMINATED) restores a sweep where Tune has nothing left to run for
    it; its final result, kept by Tune, is logged now.
    """
    for result in grid:
        last = result.metrics or {}
        spec = trial_from_config(result.config)
        outcome = tracker.outcomes.get(spec.trial_id)
        if outcome is None or outcome.status != "RUNNING" or last.get("R") is None:
            continue
        if result.error is None:
            finish_from_result(tracker, spec.trial_id, last)


def _phase_outcomes(tracker: SweepTracker, before: set[str], grid: Any) -> list[TrialOutcome]:
    """The outcomes of a validation phase's trials; a trial left running was stopped.

    A trial that Tune failed before any callback saw it (e.g. a worker that could
    not be reused) is recorded FAILED from Tune's ``ResultGrid``, never dropped.
    """
    for result in grid:
        spec = trial_from_config(result.config)
        if spec.trial_id not in tracker.outcomes and result.error is not None:
            text = driver_paths(str(result.error))
            tracker.trial_started(spec)
            why = reason(text) if text.strip() else repr(result.error)
            tracker.trial_failed(spec.trial_id, why, text)
    mine = [o for tid, o in tracker.outcomes.items() if tid not in before]
    for o in mine:
        if o.status == "RUNNING":  # never reported a result before the budget ran out
            tracker.trial_stopped(o.trial.trial_id, "stopped by the time budget")
    return mine


def _tune_saved(tune_path: str) -> bool:
    """Whether Tune saved a state to restore at ``tune_path`` (its tuner and its trials).

    A driver killed in the sweep's first second leaves no ``tuner.pkl``, or one
    without the ``experiment_state-*.json`` of its trials; ``Tuner.restore`` then
    fails (``FileNotFoundError``, ``KeyError: 'trial'``).
    """
    if not tune.Tuner.can_restore(tune_path):
        return False
    if "://" in tune_path:  # remote storage: the tuner is there; trust Tune
        return True
    return any(Path(tune_path).glob("experiment_state-*.json"))


def _save_status(state: SweepState, path: Path | None, status: str) -> None:
    state.status = status
    if path is not None:
        state.save(path)
