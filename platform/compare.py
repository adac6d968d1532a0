"""``lifelong compare``: strategies side by side, read back from MLflow.

Each argument names what to compare, tried in this order:

1. a run id (32 hex digits) of a sweep's parent run: that sweep's trials;
2. an MLflow experiment name, then an experiment id: every lifelong trial in it
   (several sweeps of one experiment merge; see below);
3. a sweep id (the ``sweep`` tag, e.g. ``20261123-090000``): that sweep's trials.

Several arguments are compared together. Trials merge by strategy label;
when the same (scenario, strategy, seed) appears more than once, the newest
finished run counts. Strategies of different scenarios are told apart by a
``[scenario]`` suffix. Final values are the runs' latest metrics (the last
experience's step); the curves come from ``acc/avg``'s history.

The statistics (mean ± sample std over seeds, the paired or Welch t-test
against the best, alpha) are those of :mod:`lifelong.platform.summary`.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lifelong.platform.summary import ALPHA, TrialRecord

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

FORMATS = ("table", "md", "csv", "json")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_SWEEP_ID = re.compile(r"^[\w.\-]+$")
_EXP_J = re.compile(r"^acc/exp_(\d+)$")


class CompareError(ValueError):
    """A name that matches no experiment, sweep or run, or an unusable request."""


@dataclass(frozen=True)
class Source:
    """One resolved argument: what it matched and the trial runs it holds."""

    arg: str
    description: str
    runs: tuple[Run, ...]


def _all_pages(fetch, **kwargs) -> list:  # noqa: ANN001 - MLflow's paged search methods
    items, token = [], None
    while True:
        page = fetch(page_token=token, **kwargs)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _search(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Run]:
    return _all_pages(
        client.search_runs, experiment_ids=experiment_ids, filter_string=filter_string
    )


def _trials_of_parent(client: MlflowClient, parent: Run) -> list[Run]:
    return _search(
        client,
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`lifelong.role` = 'trial'",
    )


def resolve(client: MlflowClient, arg: str) -> Source:
    """What ``arg`` names: a sweep's parent run id, an experiment (name/id) or a sweep id.

    Raises:
        CompareError: if it names none of them, or names a run that is not a sweep.
    """
    from mlflow.exceptions import MlflowException

    if _RUN_ID.match(arg):
        try:
            run = client.get_run(arg)
        except MlflowException:
            run = None
        if run is not None:
            role = run.data.tags.get("lifelong.role")
            if role != "sweep":
                what = "a trial (child) run" if role == "trial" else "not a lifelong sweep run"
                raise CompareError(
                    f"run {arg} is {what}; give its sweep's parent run id, sweep id or experiment"
                )
            sweep = run.data.tags.get("sweep", "?")
            return Source(arg, f"sweep {sweep} (run {arg})", tuple(_trials_of_parent(client, run)))
    exp = client.get_experiment_by_name(arg)
    if exp is None and arg.isdigit():
        try:
            exp = client.get_experiment(arg)
        except MlflowException:
            exp = None
    if exp is not None:
        runs = _search(client, [exp.experiment_id], "tags.`lifelong.role` = 'trial'")
        if not runs:
            raise CompareError(f"experiment {exp.name!r} (id {exp.experiment_id}) has no trials")
        return Source(arg, f"experiment {exp.name!r} (id {exp.experiment_id})", tuple(runs))
    if _SWEEP_ID.match(arg):
        ids = [e.experiment_id for e in _all_pages(client.search_experiments)]
        parents = (
            _search(client, ids, f"tags.sweep = '{arg}' and tags.`lifelong.role` = 'sweep'")
            if ids
            else []
        )
        if parents:
            runs = [r for p in parents for r in _trials_of_parent(client, p)]
            return Source(arg, f"sweep {arg} ({len(parents)} parent run(s))", tuple(runs))
    names = sorted(e.name for e in _all_pages(client.search_experiments))
    known = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
    raise CompareError(
        f"{arg!r} is no MLflow experiment name or id, sweep id or sweep run id in this "
        f"tracking store; experiments: {known or 'none'}"
    )


def record_from_run(client: MlflowClient, run: Run) -> TrialRecord:
    """A :class:`TrialRecord` from a child run: tags, latest metrics, ``acc/avg`` history."""
    tags, finished = run.data.tags, run.info.status == "FINISHED"
    curve: tuple[float, ...] = ()
    final_acc: tuple[float, ...] = ()
    if finished:
        by_step: dict[int, float] = {}
        for m in sorted(client.get_metric_history(run.info.run_id, "acc/avg"), key=_order):
            by_step[m.step] = m.value  # the newest value per step wins
        curve = tuple(by_step[s] for s in sorted(by_step))
        per_exp = {
            int(match.group(1)): v
            for k, v in run.data.metrics.items()
            if (match := _EXP_J.match(k))
        }
        if per_exp and sorted(per_exp) == list(range(len(per_exp))):
            final_acc = tuple(per_exp[j] for j in range(len(per_exp)))
    return TrialRecord(
        label=tags.get("strategy") or run.data.params.get("strategy", run.info.run_name or "?"),
        seed=int(tags.get("seed", run.data.params.get("seed", -1))),
        status=run.info.status,
        final=dict(run.data.metrics),
        curve=curve,
        final_acc=final_acc,
        scenario=tags.get("scenario", ""),
        sweep=tags.get("sweep", ""),
        run_id=run.info.run_id,
        error=tags.get("lifelong.error"),
    )


def _order(m) -> tuple[int, int]:  # noqa: ANN001 - mlflow Metric
    return (m.step, m.timestamp)


def load_records(client: MlflowClient, args: Sequence[str]) -> tuple[list[TrialRecord], list[str]]:
    """Resolve every argument, read its trials and merge them (see the module docstring).

    Returns the records and one description line per argument.
    """
    sources = [resolve(client, a) for a in args]
    runs: dict[str, Run] = {}
    for s in sources:
        for r in s.runs:
            runs.setdefault(r.info.run_id, r)

    def newest_first(r: Run) -> tuple[bool, int]:
        return (r.info.status != "FINISHED", -(r.info.start_time or 0))

    chosen: dict[tuple[str, str, str], Run] = {}
    for r in sorted(runs.values(), key=newest_first):
        t = r.data.tags
        chosen.setdefault((t.get("scenario", ""), t.get("strategy", ""), t.get("seed", "")), r)
    records = [record_from_run(client, r) for r in chosen.values()]
    if len({r.scenario for r in records}) > 1:
        records = [replace(r, label=f"{r.label} [{r.scenario}]") for r in records]
    records.sort(key=lambda r: (r.label, r.seed))
    lines = [f"{s.description}: {len(s.runs)} trial run(s)" for s in sources]
    return records, lines


def compare(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="MLflow experiment names or ids, sweep ids or sweep parent run ids",
            metavar="EXPERIMENT_OR_SWEEP",
            show_default=False,
        ),
    ],
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
        ),
    ] = None,
    metric: Annotated[
        str, typer.Option(help="final metric to rank by (forgetting*: lower is better)")
    ] = "acc/avg",
    format: Annotated[  # noqa: A002 - the option is --format
        str, typer.Option("--format", help="table (rich), md, csv or json on stdout")
    ] = "table",
    plots: Annotated[
        Path | None, typer.Option(help="also write the summary figures (PNG) into this folder")
    ] = None,
    alpha: Annotated[
        float, typer.Option(min=1e-6, max=0.5, help="significance level of the t-tests")
    ] = ALPHA,
) -> None:
    """Compare strategies over seeds: ranked mean ± std table, best and seed-noise ties marked.

    Differences from the best strategy of each column are tested with a
    two-sided paired t-test over the seeds both finished (Welch's t-test where
    they share fewer than two); ≈ marks p >= alpha (within seed noise).
    """
    import logging

    from mlflow.tracking import MlflowClient

    from lifelong.platform.cli import _bad_input, err, out
    from lifelong.platform.figures import write_figures
    from lifelong.platform.summary import (
        SUMMARY_METRICS,
        columns_for,
        compare_rows,
        render_csv,
        render_json,
        render_markdown,
        render_table,
        summarize,
    )
    from lifelong.platform.tracking import resolve_tracking_uri

    if format not in FORMATS:
        raise _bad_input(f"--format: unknown format {format!r}; use one of {', '.join(FORMATS)}")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        records, lines = load_records(client, sources)
    except CompareError as e:
        raise _bad_input(f"{e} (tracking URI {uri})") from None
    logged = {k for r in records for k in r.final}
    if metric not in logged:
        shown = ", ".join(sorted(k for k in logged if not k.startswith("acc/exp_")))
        raise _bad_input(f"--metric: no trial logged {metric!r}; logged: {shown}")
    rows = summarize(records, [*SUMMARY_METRICS, *([] if metric in SUMMARY_METRICS else [metric])])
    if not any(r.n_finished for r in rows):
        raise _bad_input(f"none of the {len(records)} trials of {', '.join(sources)} finished")
    comparison = compare_rows(rows, metric, alpha, columns_for(rows, [metric]))
    for line in lines:
        err.print(line, highlight=False, soft_wrap=True)
    title = " + ".join(sources)
    if format == "table":
        out.print(render_table(comparison, title=f"{title}: final metrics over seeds"))
    elif format == "md":
        sys.stdout.write(render_markdown(comparison, title))
    elif format == "csv":
        sys.stdout.write(render_csv(comparison))
    else:
        sys.stdout.write(render_json(comparison, lines))
    if plots is not None:
        for path in write_figures(records, plots, title=title):
            err.print(f"wrote {path}", highlight=False, soft_wrap=True)
    failed = [(r.label, f) for r in rows for f in r.failed]
    for label, reason in failed:
        err.print(f"not counted: {label} {reason}", highlight=False, soft_wrap=True)
    if any(math.isnan(r.mean.get(metric, math.nan)) for r in rows if r.n_finished):
        err.print(f"note: some strategies have no finite {metric}", highlight=False)
