"""A tuned sweep: a validation phase per strategy entry, then the test phase.

See :mod:`lifelong.platform.tuning` for the protocol. Each strategy entry is
tuned in its own Ray Tune run (so ASHA or the median rule compare an entry's
configurations with each other, never one strategy with another), all under
one MLflow parent run ``tune-<sweep>``; the chosen configurations then run as
an ordinary sweep (its own parent run, tagged ``lifelong.tuned_by``) on the
test stream with the experiment's ``seeds``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lifelong.platform.expand import group_base
from lifelong.platform.spec import Experiment, TrialSpec
from lifelong.platform.tracking import SweepTracker, TrialOutcome
from lifelong.platform.tuning import TuneSection, final_stream, validation_stream
from lifelong.scenarios.stream import Stream

from .sweep import TuneRun, run_sweep


@dataclass(frozen=True)
class Choice:
    """What the validation phase chose for one strategy entry.

    ``trial``: the chosen configuration (first tuning seed), ``None`` when no
    configuration finished; ``score``: its mean ``tune.metric`` over the tuning
    seeds; ``configurations``/``trials``/``stopped``: how many were tried, run
    and stopped early; ``experiences``: experiences trained over all its trials.
    """

    label: str
    trial: TrialSpec | None
    score: float
    configurations: int
    trials: int
    stopped: int
    experiences: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the test parent run's ``tuning.json``)."""
        return {
            "strategy": self.label,
            "chosen": None if self.trial is None else self.trial.label,
            "values": {} if self.trial is None else dict(self.trial.varied),
            "validation_score": None if math.isnan(self.score) else self.score,
            "configurations": self.configurations,
            "trials": self.trials,
            "stopped_early": self.stopped,
            "experiences_trained": self.experiences,
        }


@dataclass
class TunedSweep:
    """Both phases' outcomes, the choices, and the two MLflow parent runs."""

    choices: list[Choice]
    tuning: list[TrialOutcome]
    test: list[TrialOutcome]
    tune_parent_run_id: str = ""
    test_parent_run_id: str = ""
    trial_experiences: int = field(default=0)


def _map(stream: Stream | dict[str, Stream], fn: Any) -> Stream | dict[str, Stream]:
    return {k: fn(v) for k, v in stream.items()} if isinstance(stream, dict) else fn(stream)


def tune_run_for(experiment: Experiment, i: int, n_experiences: int) -> TuneRun:
    """The Ray Tune set-up of strategy entry ``i``'s validation phase."""
    tune = experiment.spec.tune
    assert tune is not None
    metric, mode = tune.metric, tune.resolved_mode
    scheduler, stopper = _scheduler(tune, n_experiences), None
    if scheduler is not None:
        stopper = tune.scheduler
    if tune.time_budget_s is not None:
        stopper = f"{stopper} or the time budget" if stopper else "the time budget"
    trials = [t for t in experiment.trials() if t.base_label == experiment.labels()[i]]
    base, spaces = group_base(experiment, i)
    if tune.search == "random" or not spaces:  # nothing for Optuna to search: one config
        return TuneRun(
            trials, scheduler=scheduler, time_budget_s=tune.time_budget_s, stopper=stopper
        )
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study

    base = dataclasses.replace(base, seed=tune.seeds[0])
    search: Any = OptunaSearch(metric=metric, mode=mode, seed=experiment.spec.search_seed)
    if tune.max_concurrent:
        search = ConcurrencyLimiter(search, max_concurrent=tune.max_concurrent)
    return TuneRun(
        [],
        base=base,
        space={k: s.to_tune() for k, s in spaces.items()},
        scheduler=scheduler,
        search_alg=search,
        num_samples=experiment.spec.num_samples,
        time_budget_s=tune.time_budget_s,
        stopper=stopper,
    )


def _scheduler(tune: TuneSection, n_experiences: int) -> Any:
    if tune.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    common = {"time_attr": "training_iteration", "metric": tune.metric}
    if tune.scheduler == "asha":
        return ASHAScheduler(
            **common,
            mode=tune.resolved_mode,
            max_t=n_experiences,
            grace_period=tune.grace_period,
            reduction_factor=tune.reduction_factor,
        )
    return MedianStoppingRule(
        **common, mode=tune.resolved_mode, grace_period=tune.grace_period, min_samples_required=3
    )


def choose(label: str, outcomes: list[TrialOutcome], tune: TuneSection) -> Choice:
    """The best configuration among ``outcomes`` (one strategy entry's tuning trials).

    A configuration counts when every tuning seed's trial finished; its score is
    the mean final ``tune.metric``; the best is the max (or min); an exact tie
    goes to the configuration tried first.
    """
    by_config: dict[str, list[TrialOutcome]] = {}
    for o in outcomes:
        by_config.setdefault(o.trial.label, []).append(o)
    best: tuple[float, TrialSpec] | None = None
    sign = 1.0 if tune.resolved_mode == "max" else -1.0
    for group in by_config.values():
        done = [o for o in group if o.status == "FINISHED" and tune.metric in o.final]
        if len(done) < len(tune.seeds):
            continue
        score = sum(o.final[tune.metric] for o in done) / len(done)
        if math.isfinite(score) and (best is None or sign * score > sign * best[0]):
            best = (score, done[0].trial)
    return Choice(
        label,
        None if best is None else best[1],
        math.nan if best is None else best[0],
        len(by_config),
        len(outcomes),
        sum(o.status == "STOPPED" for o in outcomes),
        sum(len(o.logged_steps) for o in outcomes),
    )


def tune_phase(
    experiment: Experiment,
    stream: Stream | dict[str, Stream],
    tracking_uri: str,
    experiment_name: str,
    *,
    storage_path: Path | str | None = None,
    console: Console | None = None,
    plugins: dict[str, list[str]] | None = None,
) -> tuple[SweepTracker, list[Choice], list[TrialOutcome]]:
    """The validation phase alone: each strategy entry tuned, under one parent run.

    Returns the (finished) tracker, one :class:`Choice` per entry and every
    tuning trial's outcome.
    """
    tune = experiment.spec.tune
    assert tune is not None
    console = console or Console(stderr=True)
    validation = _map(stream, lambda s: validation_stream(s, tune.validation))
    some = next(iter(validation.values())) if isinstance(validation, dict) else validation
    tune_spec = experiment.spec.model_copy(update={"seeds": list(tune.seeds)})
    tune_experiment = dataclasses.replace(experiment, spec=tune_spec)
    tracker = SweepTracker(
        tune_experiment, tracking_uri, experiment_name, phase="tune", split=tune.validation.split
    )
    tracker.start()
    choices, tuning = [], []
    try:
        for i, label in enumerate(experiment.labels()):
            console.print(f"tuning {label} on {some.name}", highlight=False, markup=False)
            setup = tune_run_for(tune_experiment, i, len(some))
            outcomes = run_sweep(
                tune_experiment,
                validation,
                tracker,
                storage_path=storage_path,
                console=console,
                plugins=plugins,
                tune_run=setup,
            )
            tuning += outcomes
            choices.append(choose(label, outcomes, tune))
    except BaseException:
        tracker.abort("the sweep was interrupted while tuning")
        raise
    tracker.finish("FINISHED")
    return tracker, choices, tuning


def run_tuned(
    experiment: Experiment,
    stream: Stream | dict[str, Stream],
    tracking_uri: str,
    experiment_name: str,
    *,
    storage_path: Path | str | None = None,
    console: Console | None = None,
    plugins: dict[str, list[str]] | None = None,
) -> TunedSweep:
    """Tune every strategy entry on the validation stream, then test the choices.

    Raises:
        SweepInterrupted: the sweep was stopped during either phase.
    """
    tune = experiment.spec.tune
    assert tune is not None
    console = console or Console(stderr=True)
    test = _map(stream, lambda s: final_stream(s, tune.validation))
    tracker, choices, tuning = tune_phase(
        experiment,
        stream,
        tracking_uri,
        experiment_name,
        storage_path=storage_path,
        console=console,
        plugins=plugins,
    )
    chosen = [c.trial for c in choices if c.trial is not None]
    trials = tuple(dataclasses.replace(t, seed=s) for t in chosen for s in experiment.spec.seeds)
    result = TunedSweep(choices, tuning, [], tune_parent_run_id=str(tracker.parent_run_id))
    result.trial_experiences = sum(c.experiences for c in choices)
    if not trials:
        return result
    test_experiment = dataclasses.replace(experiment, fixed_trials=trials)
    test_tracker = SweepTracker(
        test_experiment,
        tracking_uri,
        experiment_name,
        phase="test",
        split=tune.validation.test_split,
    )
    test_tracker.start()
    parent = str(test_tracker.parent_run_id)
    test_tracker.client.set_tag(parent, "lifelong.tuned_by", str(tracker.parent_run_id))
    test_tracker.client.log_text(
        str(test_tracker.parent_run_id),
        json.dumps([c.to_dict() for c in choices], indent=2),
        "tuning.json",
    )
    result.test_parent_run_id = str(test_tracker.parent_run_id)
    result.test = run_sweep(
        test_experiment,
        test,
        test_tracker,
        storage_path=storage_path,
        console=console,
        plugins=plugins,
    )
    return result


def choices_table(result: TunedSweep, tune: TuneSection, title: str = "") -> Table:
    """One row per strategy entry: what was chosen on the validation stream, and the cost."""
    table = Table(title=title or None, title_justify="left", caption_justify="left")
    for name in ("strategy", "chosen values", f"validation {tune.metric}", "configs"):
        table.add_column(name, justify="left" if name != "configs" else "right")
    table.add_column("trials (stopped early)", justify="right")
    table.add_column("experiences reported", justify="right")
    for c in result.choices:
        values = (
            "no configuration finished"
            if c.trial is None
            else ", ".join(f"{k.removeprefix('strategy.')}={v}" for k, v in c.trial.varied)
            or "(nothing searched)"
        )
        score = "—" if math.isnan(c.score) else f"{c.score:.3f}"
        table.add_row(
            c.label,
            values,
            score,
            str(c.configurations),
            f"{c.trials} ({c.stopped})",
            str(c.experiences),
        )
    table.caption = (
        f"Chosen on the validation stream ({tune.validation.split}) with tuning seeds "
        f"{tune.seeds}, scheduler {tune.scheduler}, search {tune.search}; the test table "
        "below re-runs each choice on the test stream with the fresh seeds of `seeds`."
    )
    return table
