"""Run a validated experiment: the one code path behind ``lifelong run`` and ``lifelong.run``.

:func:`execute` builds the streams, connects Ray (or, ``in_process``, does
without it), runs the sweep (a plain one, or the two phases of a tuned one)
with MLflow tracking, and returns :class:`Results`. It raises instead of
exiting; the command line turns the exceptions into exit codes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console

from lifelong.cluster.progress import stage
from lifelong.platform.preflight import UnwritablePath, check_sweep_paths, create_store
from lifelong.platform.spec import Experiment, build_checked_streams
from lifelong.platform.tracking import SweepTracker, TrialOutcome, resolve_tracking_uri

if TYPE_CHECKING:
    import pandas as pd

    from lifelong.cluster.state import SweepState
    from lifelong.cluster.tuning import TunedSweep
    from lifelong.scenarios.stream import Stream


class RunError(RuntimeError):
    """The run could not start as asked (e.g. nothing to resume); nothing was logged."""


@dataclass(frozen=True)
class TrialResult:
    """One trial's result: its accuracy matrix ``R``, final metrics and MLflow run.

    ``phase`` is ``tune`` for a tuned sweep's validation trials, ``test`` for
    its test trials and ``""`` in a plain sweep.
    """

    label: str
    seed: int
    status: str
    R: np.ndarray | None
    metrics: dict[str, float]
    run_id: str
    error: str | None
    varied: dict[str, Any]
    phase: str = ""


@dataclass
class Results:
    """What a run produced (``lifelong.run``'s return value).

    ``trials`` are the reported trials (a tuned sweep's test phase); ``tuning``
    holds a tuned sweep's validation trials and ``choices``; ``parent_run_id``
    is the MLflow parent run of the reported trials.
    """

    experiment_name: str
    tracking_uri: str
    parent_run_id: str
    trials: list[TrialResult]
    tuning: list[TrialResult] = field(default_factory=list)
    tuned: TunedSweep | None = None

    @property
    def failed(self) -> list[TrialResult]:
        """The reported trials that did not finish."""
        return [t for t in self.trials if t.status != "FINISHED"]

    def to_pandas(self, *, tuning: bool = False) -> pd.DataFrame:
        """One row per trial: label, seed, status, run id, varied values, final metrics.

        ``tuning``: the validation trials of a tuned sweep instead.
        """
        import pandas as pd

        rows = []
        for t in self.tuning if tuning else self.trials:
            row: dict[str, Any] = {
                "strategy": t.label,
                "seed": t.seed,
                "status": t.status,
                "run_id": t.run_id,
            }
            row.update(t.varied)
            row.update(t.metrics)
            rows.append(row)
        return pd.DataFrame(rows)


def _result(o: TrialOutcome, phase: str = "") -> TrialResult:
    return TrialResult(
        o.trial.label,
        o.trial.seed,
        o.status,
        None if o.R is None else np.array(o.R),
        dict(o.final),
        o.run_id,
        o.error,
        dict(o.trial.varied),
        phase,
    )


def execute(
    experiment: Experiment,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    experiment_name: str | None = None,
    num_cpus: int | None = None,
    storage: str | None = None,
    resume: SweepState | None = None,
    state_file: Path | None = None,
    state_folder: Path | None = None,
    in_process: bool = False,
    raise_errors: bool = False,
    console: Console | None = None,
    retry_failed: bool = False,
    log_model: bool = False,
) -> Results:
    """Run ``experiment`` and return its :class:`Results` (see the module docstring).

    ``log_model``: log each finished trial's final weights to its child run
    (``lifelong run --log-model``).

    ``retry_failed``: with ``resume`` (an ended sweep), run its failed trials again
    into new child runs (``lifelong run --retry-failed``).

    Raises:
        SpecError: the data of the stream is unusable (before anything starts).
        RunError: the request cannot be carried out (before anything starts).
        ClusterConnectError: ``address`` could not be joined.
        SweepInterrupted, KeyboardInterrupt: the sweep was stopped.
    """
    console = console or Console(stderr=True)
    tune = experiment.spec.tune
    if in_process and (resume is not None or retry_failed):
        raise RunError("--in-process does not continue a sweep; run it on Ray (without it)")
    if tune is not None and log_model:
        raise RunError("--log-model does not log a tuned sweep's models yet; drop it or `tune:`")
    if tune is not None and (resume is not None or in_process):
        what = "--resume" if resume is not None else "the in-process runner"
        raise RunError(
            f"{what} does not run a tuned sweep (a `tune:` section); run it on Ray, anew"
        )
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # e.g. "creating tables" notices
    with stage(console, "building the stream and opening the tracking store", log=False):
        streams = build_checked_streams(experiment)  # the data itself: empty, NaN, bad labels
        uri = resolve_tracking_uri(tracking_uri or (resume.tracking_uri if resume else None))
        try:  # before anything is written or Ray starts: every path the sweep writes
            check_sweep_paths(storage, uri, checkpoints=not in_process)
            create_store(uri)
        except UnwritablePath as e:
            raise RunError(str(e)) from None
        if resume is not None:
            _sync_journals(uri, console)
        streams = cache_features(experiment, streams, console)
    stream: Any = streams if len(streams) > 1 else next(iter(streams.values()))
    first = next(iter(streams.values()))
    name = experiment_name or experiment.name
    where = "in this process" if in_process else "on Ray"
    if tune is None:
        what = f"{len(experiment.trials())} trials"
    else:
        what = (
            f"tuning {len(experiment.groups)} strategy entries ({tune.search} search, "
            f"{tune.scheduler}, {tune.validation.split}), then the best of each × "
            f"{len(experiment.spec.seeds)} seeds"
        )
    console.print(
        f"lifelong: {what} on {first.name} ({len(first)} experiences"
        + (f"; {len(streams)} streams" if len(streams) > 1 else "")
        + f") {where}, tracking to {uri}",
        highlight=False,
        markup=False,
    )
    if in_process:
        from lifelong.cluster.inline import run_in_process

        tracker = SweepTracker(experiment, uri, name)
        tracker.log_model = log_model
        outcomes = run_in_process(experiment, stream, tracker, raise_errors=raise_errors)
        tracker.client.close()
        return Results(name, uri, str(tracker.parent_run_id), [_result(o) for o in outcomes])
    return _on_ray(
        experiment,
        stream,
        uri,
        name,
        address,
        num_cpus,
        storage,
        resume,
        (state_file, state_folder),
        console,
        retry_failed=retry_failed,
        log_model=log_model,
    )


def _sync_journals(uri: str, console: Console) -> None:
    """Before a resume: upload what earlier drivers journalled for ``uri`` (see ``sync``)."""
    from mlflow.exceptions import MlflowException

    from lifelong.platform.mlflow_io import SPOOL_ROOT, cause, default_spool_root, sync_pending

    try:
        reports = sync_pending(uri, [default_spool_root(uri), SPOOL_ROOT])
    except (MlflowException, OSError) as e:
        raise RunError(
            f"the sweep's journal of writes could not be uploaded to {uri} ({cause(e)}); "
            f"resume once the store answers (or upload it first with: lifelong sync)"
        ) from None
    for r in reports:
        console.print(
            f"lifelong: uploaded {r.replayed} journalled writes from {r.directory} first",
            highlight=False,
            markup=False,
        )


def cache_features(
    experiment: Experiment, streams: dict[str, Stream], console: Console
) -> dict[str, Stream]:
    """Encode each stream once with the frozen backbone, when every trial shares it.

    See :mod:`lifelong.platform.models.feature_cache`; on the first GPU when the
    driver has one and ``training.accelerator`` allows it, else on the CPU.
    """
    from lifelong.platform.models import ModelConfig
    from lifelong.platform.models.feature_cache import cacheable, encode_stream

    config = experiment.spec.model
    if not config.fixed_backbone:
        return streams
    if any(t.model and ModelConfig.model_validate(t.model) != config for t in experiment.trials()):
        return streams  # a searched model field: the trials' backbones differ
    gpu = experiment.spec.training.accelerator != "cpu" and torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    out = {}
    for key, stream in streams.items():
        if not cacheable(stream, config):
            out[key] = stream
            continue
        start = time.perf_counter()
        out[key] = encode_stream(stream, config, device=device)
        n = sum(e.n_train + e.n_test for e in stream.experiences)
        console.print(
            f"lifelong: the frozen {config.name} backbone encoded {n:,} images once on the "
            f"{device} ({time.perf_counter() - start:.1f} s); every trial trains on these "
            f"{out[key].input_shape[0]}-d features",
            highlight=False,
            markup=False,
        )
    return out


def _on_ray(
    experiment: Experiment,
    stream: Any,
    uri: str,
    name: str,
    address: str | None,
    num_cpus: int | None,
    storage: str | None,
    resume: SweepState | None,
    state: tuple[Path | None, Path | None],
    console: Console,
    *,
    retry_failed: bool = False,
    log_model: bool = False,
) -> Results:
    from lifelong.cluster.sweep import ensure_ray, in_ray_job, plugin_imports, run_sweep
    from lifelong.platform.plugins import discard_staged, stage_for_workers
    from lifelong.platform.provenance import changed_files

    job = in_ray_job()  # `lifelong submit`: the job's working_dir carries the plugins
    package = resume.shipped_package if resume is not None else None
    runtime_env, shipped = (
        ({}, None) if job else stage_for_workers(list(experiment.plugins), package or None)
    )
    staged = list(runtime_env.get("py_modules", []))  # ray.init rewrites them to URIs
    try:
        with stage(console, f"joining Ray at {address}" if address else "starting Ray"):
            started = ensure_ray(address, num_cpus=num_cpus, runtime_env=runtime_env)
    except BaseException:
        discard_staged(staged)
        raise
    imports = plugin_imports(
        experiment, shipped if started else None, relative_to=Path.cwd() if job else None
    )
    if experiment.spec.resources.workers > 1:  # before anything is logged
        import ray

        from lifelong.cluster.data_parallel import max_concurrent, node_resources

        try:
            max_concurrent(experiment.spec, node_resources())
        except ValueError as e:
            if started:
                ray.shutdown()
            discard_staged(staged)
            raise RunError(f"{experiment.path or 'the experiment'}: {e}") from None
    try:
        if experiment.spec.tune is not None:
            from lifelong.cluster.tuning import run_tuned

            tuned = run_tuned(
                experiment,
                stream,
                uri,
                name,
                storage_path=storage,
                console=console,
                plugins=imports,
            )
            return Results(
                name,
                uri,
                tuned.test_parent_run_id,
                [_result(o, "test") for o in tuned.test],
                [_result(o, "tune") for o in tuned.tuning],
                tuned,
            )
        tracker = SweepTracker(experiment, uri, name)
        tracker.log_model = log_model
        if resume is not None:  # the CLI refused changes unless --allow-changed-plugins
            tracker.plugin_changes = changed_files(resume.plugin_sha256, experiment.plugins)
        try:
            outcomes = run_sweep(
                experiment,
                stream,
                tracker,
                console=console,
                plugins=imports,
                storage_path=storage,
                state_file=state[0],
                state_folder=state[1],
                resume=resume,
                retry_failed=retry_failed,
            )
        except BaseException:
            tracker.client.close(wait=False)
            raise
        tracker.client.close()  # a store that was down: replay, or say where results are
        return Results(name, uri, str(tracker.parent_run_id), [_result(o) for o in outcomes])
    finally:
        if started:
            import ray

            ray.shutdown()
        discard_staged(staged)  # Ray uploaded the plugin files when it started
