"""``lifelong compare``: strategies side by side, read back from MLflow.

Each argument names what to compare, tried in this order:

1. a run id (32 hex digits) of a sweep's parent run: that sweep's trials;
2. an MLflow experiment name, then an experiment id: every lifelong trial in it
   (several sweeps of one experiment merge; see below);
3. a sweep id (the ``sweep`` tag, e.g. ``20261123-090000``): that sweep's trials.

Several arguments are compared together. **Trials merge into one row only when
their whole resolved configuration is equal except the seed**: the child run's
params ``scenario.*``, ``model.*``, ``training.*``, ``strategy.*``, ``tune.*``,
``strategies`` and ``phase`` (:func:`config_of`); not ``seed``, not the
``strategy`` label (display only) and not ``resources.*`` (how much hardware a
trial had does not change what it computes). Each configuration is one row,
named by its strategy label; where rows differ in settings, the label shows the
differing values (:func:`row_labels`): ``naive [training.lr=0.1]``,
``ewc [ewc.mode=online]``, with a short digest of the configuration as a last
resort. A configuration logged under several labels takes the first in sorted
order.

Within a row, one run per seed counts: the newest FINISHED one (else the newest
run, shown as failed). Other runs of the same configuration and seed are
*repeats*: they are not averaged in, but counted in the seeds column
(``2 (+4 repeats)``), listed on stderr and in JSON (``repeats``). Final values
are the runs' latest metrics (the last experience's step); the curves come from
``acc/avg``'s history.

The statistics (mean ± sample std over seeds, the paired or Welch t-test
against the best, alpha) are those of :mod:`lifelong.platform.summary`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lifelong.platform.partial_metrics import PARTIAL_NOTE
from lifelong.platform.provenance import TAG_CHANGED as PLUGINS_CHANGED
from lifelong.platform.summary import ALPHA, TrialRecord

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

FORMATS = ("table", "md", "csv", "json", "latex")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_SWEEP_ID = re.compile(r"^[\w.\-]+$")
_EXP_J = re.compile(r"^acc/exp_(\d+)$")

CONFIG_PREFIXES: tuple[str, ...] = ("scenario.", "model.", "training.", "strategy.", "tune.")
"""Params whose key starts with one of these are part of a trial's configuration."""

CONFIG_KEYS: tuple[str, ...] = ("strategies", "phase")
"""Params that are part of a trial's configuration by their exact key."""

MISSING = "∅"
"""Shown in a label for a configuration key a run did not log."""

_SHORT = 8  # hex digits of a run id or digest shown to people


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

    from lifelong.platform.mlflow_io import find_experiment

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
    exp = find_experiment(client, arg)
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


# ----------------------------------------------------------- configurations
def config_of(params: Mapping[str, str]) -> dict[str, str]:
    """A trial's resolved configuration from its MLflow params, keys sorted.

    Everything that decides what the trial computes except its seed: the params
    under :data:`CONFIG_PREFIXES` and those named in :data:`CONFIG_KEYS`. Not
    ``seed``, not ``strategy`` (the label, display only), not ``resources.*``.
    """
    return {
        k: str(params[k])
        for k in sorted(params)
        if k.startswith(CONFIG_PREFIXES) or k in CONFIG_KEYS
    }


def config_digest(config: Mapping[str, str]) -> str:
    """A stable digest of a configuration (SHA-256 hex of its canonical JSON).

    Equal for equal configurations whatever the key order; any other
    difference, a missing key included, changes it.
    """
    text = json.dumps(sorted(config.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_strategy_key(key: str) -> bool:
    """Strategy-side keys: compared only among rows of one strategy label."""
    return key == "strategies" or key.startswith("strategy.")


@dataclass(frozen=True)
class RowConfig:
    """One row of a comparison before it is labelled: a configuration and its label."""

    base: str
    config: Mapping[str, str]
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", config_digest(self.config))


def _differs(configs: Sequence[Mapping[str, str]], key: str) -> bool:
    """Whether ``key`` has more than one value (missing counts as a value) in ``configs``."""
    return len({c.get(key) for c in configs}) > 1


def _strategy_keys_by_label(rows: Sequence[RowConfig]) -> dict[str, list[str]]:
    """Per strategy label, the strategy-side keys its configurations differ in."""
    groups: dict[str, list[Mapping[str, str]]] = {}
    for r in rows:
        groups.setdefault(r.base, []).append(r.config)
    out = {}
    for base, configs in groups.items():
        keys = sorted({k for c in configs for k in c if _is_strategy_key(k)})
        out[base] = [k for k in keys if _differs(configs, k)]
    return out


def _global_keys(rows: Sequence[RowConfig]) -> list[str]:
    """The non-strategy keys whose value is not the same in every configuration."""
    configs = [r.config for r in rows]
    keys = sorted({k for c in configs for k in c if not _is_strategy_key(k)})
    return [k for k in keys if _differs(configs, k)]


def differing_keys(rows: Sequence[RowConfig]) -> list[str]:
    """The configuration keys rows differ in, sorted.

    A non-strategy key counts when its value is not the same in all
    configurations; a strategy key (``strategies``, ``strategy.<name>.<field>``)
    when it differs among the configurations of one strategy label.
    """
    keys = set(_global_keys(rows))
    for ks in _strategy_keys_by_label(rows).values():
        keys.update(ks)
    return sorted(keys)


def _shown_name(key: str) -> str:
    """A key as a label shows it: ``strategy.ewc.mode`` as ``ewc.mode``."""
    return key.removeprefix("strategy.")


def _label(row: RowConfig, keys: Sequence[str]) -> str:
    if not keys:
        return row.base
    values = ", ".join(f"{_shown_name(k)}={row.config.get(k, MISSING)}" for k in keys)
    return f"{row.base} [{values}]"


def row_labels(rows: Sequence[RowConfig]) -> dict[str, str]:
    """A unique display label per configuration digest.

    Each row shows the non-strategy keys that differ across all rows and the
    ``strategy.<name>.<field>`` keys (as ``<name>.<field>``) that differ among
    the rows of its strategy label, sorted as shown: ``naive [training.lr=0.1]``.
    Values are shown verbatim, :data:`MISSING` where a run did not log the key.
    Rows whose labels still coincide (they differ only in a key a label does not
    show, such as ``strategies``) get a short digest suffix: ``naive #1a2b3c4d``.
    """
    shared = _global_keys(rows)
    own = _strategy_keys_by_label(rows)
    labels = {}
    for r in rows:
        shown = {*shared, *(k for k in own[r.base] if k.startswith("strategy."))}
        labels[r.digest] = _label(r, sorted(shown, key=_shown_name))
    return _disambiguate(labels)


def _disambiguate(labels: dict[str, str]) -> dict[str, str]:
    """Append a digest prefix, as long as needed, to labels that several digests share."""
    out = dict(labels)
    for n in (_SHORT, 16, 64):
        seen: dict[str, list[str]] = {}
        for digest, label in out.items():
            seen.setdefault(label, []).append(digest)
        clashes = [d for ds in seen.values() if len(ds) > 1 for d in ds]
        if not clashes:
            break
        for d in clashes:
            out[d] = f"{labels[d]} #{d[:n]}"
    return out


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
        label=_base_label(run),
        seed=_seed(run),
        status=run.info.status,
        final=dict(run.data.metrics),
        curve=curve,
        final_acc=final_acc,
        scenario=tags.get("scenario", ""),
        sweep=tags.get("sweep", ""),
        run_id=run.info.run_id,
        error=tags.get("lifelong.error") or tags.get("lifelong.early_stopped"),
    )


def _order(m) -> tuple[int, int]:  # noqa: ANN001 - mlflow Metric
    return (m.step, m.timestamp)


def _base_label(run: Run) -> str:
    """The strategy label a run was logged under, without search values (tags, param, name).

    A trial of a search space is tagged ``lifelong.strategy_base`` (``ewc``) beside
    its full label (``ewc [ewc.lambda=10]``); the row label adds the values again.
    """
    tags, params = run.data.tags, run.data.params
    return (
        tags.get("lifelong.strategy_base")
        or tags.get("strategy")
        or params.get("strategy")
        or run.info.run_name
        or "?"
    )


def _seed(run: Run) -> int:
    return int(run.data.tags.get("seed", run.data.params.get("seed", -1)))


def _newest_finished_first(run: Run) -> tuple[bool, int, str]:
    """Which run of a (configuration, seed) counts: finished first, then the newest."""
    return (run.info.status != "FINISHED", -(run.info.start_time or 0), run.info.run_id)


@dataclass(frozen=True)
class Loaded:
    """Trials read back for a comparison, one record per (configuration, seed).

    ``lines`` describes each argument; ``differing_keys`` are the configuration
    keys the rows differ in; ``notes`` are the lines ``compare`` prints on stderr
    about them and about repeated runs.
    """

    records: list[TrialRecord]
    lines: list[str]
    differing_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _unique_runs(sources: Sequence[Source]) -> list[Run]:
    runs: dict[str, Run] = {}
    for s in sources:
        for r in s.runs:
            runs.setdefault(r.info.run_id, r)
    return list(runs.values())


def _row_configs(runs: Sequence[Run]) -> tuple[dict[str, str], dict[str, RowConfig]]:
    """Each run's configuration digest, and one :class:`RowConfig` per digest."""
    digest_of: dict[str, str] = {}
    configs: dict[str, dict[str, str]] = {}
    bases: dict[str, set[str]] = {}
    for r in runs:
        config = config_of(r.data.params)
        d = config_digest(config)
        digest_of[r.info.run_id] = d
        configs[d] = config
        bases.setdefault(d, set()).add(_base_label(r))
    rows = {d: RowConfig(min(bases[d]), configs[d], d) for d in configs}
    return digest_of, rows


def _repeat_note(record: TrialRecord, runs: Sequence[Run]) -> str:
    ids = ", ".join(r.info.run_id[:_SHORT] for r in runs)
    counted = record.run_id[:_SHORT]
    which = (
        f"the newest finished run ({counted}) counts"
        if record.status == "FINISHED"
        else f"none finished; the newest ({counted}) is shown"
    )
    return f"note: {record.label} seed {record.seed} ran {len(runs)} times (runs {ids}); {which}"


def load(client: MlflowClient, args: Sequence[str], phase: str | None = None) -> Loaded:
    """Resolve every argument, read its trials and merge them (see the module docstring).

    ``phase``: only a tuned sweep's ``tune`` (validation) or ``test`` trials
    (tag ``lifelong.phase``); trials of untuned sweeps count as ``test``.
    """
    sources = [resolve(client, a) for a in args]
    runs = _unique_runs(sources)
    if phase is not None:
        runs = [r for r in runs if r.data.tags.get("lifelong.phase", "test") == phase]
    digest_of, row_configs = _row_configs(runs)
    labels = row_labels(list(row_configs.values()))
    groups: dict[tuple[str, int], list[Run]] = {}
    for r in sorted(runs, key=_newest_finished_first):
        groups.setdefault((digest_of[r.info.run_id], _seed(r)), []).append(r)
    records, notes = [], []
    partials: dict[str, str] = {}  # a partial accuracy matrix is said once per row
    changed: dict[str, list[int]] = {}  # seeds resumed with changed plugin code, per row
    for (digest, _), group in groups.items():
        record = replace(
            record_from_run(client, group[0]),
            label=labels[digest],
            config_digest=digest,
            repeats=tuple(r.info.run_id for r in group[1:]),
        )
        records.append(record)
        if len(group) > 1:
            notes.append((record.label, record.seed, _repeat_note(record, group)))
        partial = group[0].data.tags.get("lifelong.partial_R")
        if partial:
            partials[record.label] = f"note: {record.label}: {partial}; {PARTIAL_NOTE}"
        if PLUGINS_CHANGED in group[0].data.tags:  # its experiences ran two versions of code
            changed.setdefault(record.label, []).append(record.seed)
    records.sort(key=lambda r: (r.label, r.seed))
    keys = differing_keys(list(row_configs.values()))
    head = (
        [f"note: rows differ in {', '.join(keys)}; rows are never merged across different settings"]
        if keys
        else []
    )
    lines = [f"{s.description}: {len(s.runs)} trial run(s)" for s in sources]
    tail = [partials[k] for k in sorted(partials)]
    tail += [
        f"note: {label}: seed(s) {', '.join(map(str, sorted(seeds)))} resumed with changed "
        f"plugin code (tag {PLUGINS_CHANGED}): experiences before and after the change ran "
        "different code"
        for label, seeds in sorted(changed.items())
    ]
    return Loaded(records, lines, keys, head + [n for *_, n in sorted(notes)] + tail)


def load_records(client: MlflowClient, args: Sequence[str]) -> tuple[list[TrialRecord], list[str]]:
    """The records and the per-argument lines of :func:`load`."""
    loaded = load(client, args)
    return loaded.records, loaded.lines


def comparison_frame(
    names: Sequence[str],
    *,
    tracking_uri: str | None = None,
    metric: str = "acc/avg",
    alpha: float = ALPHA,
    phase: str | None = None,
) -> pd.DataFrame:
    """The comparison of ``names`` as a DataFrame (``lifelong.compare``; see its docstring).

    Raises:
        CompareError: a name matches nothing, or no trial logged ``metric``.
    """
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from lifelong.platform.summary import SUMMARY_METRICS, columns_for, compare_rows, summarize
    from lifelong.platform.summary import to_records as comparison_records
    from lifelong.platform.tracking import resolve_tracking_uri

    client = MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    loaded = load(client, names, phase)
    if metric not in {k for r in loaded.records for k in r.final}:
        raise CompareError(f"no trial of {', '.join(names)} logged {metric!r}")
    extra = [] if metric in SUMMARY_METRICS else [metric]
    rows = summarize(loaded.records, [*SUMMARY_METRICS, *extra])
    comparison = compare_rows(rows, metric, alpha, columns_for(rows, [metric]))
    digests = {r.label: r.config_digest for r in loaded.records}
    out = []
    for rec in comparison_records(comparison):
        row: dict[str, object] = {
            "rank": rec["rank"],
            "strategy": rec["strategy"],
            "n_finished": rec["n_finished"],
            "seeds": rec["seeds"],
            "config_digest": digests.get(rec["strategy"], ""),
        }
        for m, cell in rec["metrics"].items():
            row |= {
                f"{m}:mean": cell["mean"],
                f"{m}:std": cell["std"],
                f"{m}:best": cell["best"],
                f"{m}:p_vs_best": cell["p_vs_best"],
            }
        out.append(row)
    frame = pd.DataFrame(out)
    frame.attrs["differing_keys"] = list(loaded.differing_keys)
    frame.attrs["notes"] = list(loaded.notes)
    return frame


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
        str,
        typer.Option("--format", help="table (rich), md, csv, json or latex (booktabs) on stdout"),
    ] = "table",
    plots: Annotated[
        Path | None, typer.Option(help="also write the summary figures into this folder")
    ] = None,
    fig_format: Annotated[
        str, typer.Option(help="with --plots: the figures' format, png, pdf or svg")
    ] = "png",
    dpi: Annotated[int, typer.Option(min=30, max=1200, help="with --plots: resolution")] = 110,
    no_title: Annotated[
        bool,
        typer.Option("--no-title", help="with --plots: no titles (a paper's caption has them)"),
    ] = False,
    phase: Annotated[
        str,
        typer.Option(
            help="a tuned sweep's trials to compare: test (the reported numbers), tune "
            "(the validation phase) or all"
        ),
    ] = "all",
    alpha: Annotated[
        float, typer.Option(min=1e-6, max=0.5, help="significance level of the t-tests")
    ] = ALPHA,
) -> None:
    """Compare strategies over seeds: ranked mean ± std table, best and seed-noise ties marked.

    One row per configuration: trials merge only when every setting but the
    seed is equal; labels show the settings rows differ in (``naive
    [training.lr=0.1]``), and repeated runs of a seed are reported on stderr.

    Differences from the best strategy of each column are tested with a
    two-sided paired t-test over the seeds both finished (Welch's t-test where
    they share fewer than two); ≈ marks p >= alpha (within seed noise).
    """
    import logging

    from mlflow.tracking import MlflowClient

    from lifelong.platform.cli import _bad_input, err, out
    from lifelong.platform.figures import FIG_FORMATS, FigureStyle, write_figures
    from lifelong.platform.latex import render_latex
    from lifelong.platform.summary import (
        SUMMARY_METRICS,
        columns_for,
        compare_rows,
        render_csv,
        render_json,
        render_markdown,
        summarize,
    )
    from lifelong.platform.terminal_table import render_table
    from lifelong.platform.tracking import NO_STORE_HINT, missing_store, resolve_tracking_uri

    if format not in FORMATS:
        raise _bad_input(f"--format: unknown format {format!r}; use one of {', '.join(FORMATS)}")
    if fig_format not in FIG_FORMATS:
        choices = ", ".join(FIG_FORMATS)
        raise _bad_input(f"--fig-format: unknown format {fig_format!r}; use one of {choices}")
    given = [o for o, on in (("--fig-format", fig_format != "png"), ("--dpi", dpi != 110),
                             ("--no-title", no_title)) if on]  # fmt: skip
    if given and plots is None:
        raise _bad_input(f"{', '.join(given)}: only for figures; add --plots DIR")
    style = FigureStyle(format=fig_format, dpi=dpi, titles=not no_title)  # type: ignore[arg-type]
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = resolve_tracking_uri(tracking_uri)
    if (absent := missing_store(uri)) is not None:
        raise _bad_input(f"no tracking store at {absent} (tracking URI {uri}): {NO_STORE_HINT}")
    client = MlflowClient(tracking_uri=uri)
    try:
        if phase not in ("all", "tune", "test"):
            raise CompareError(f"--phase: use all, tune or test, not {phase!r}")
        loaded = load(client, sources, None if phase == "all" else phase)
    except CompareError as e:
        raise _bad_input(f"{e} (tracking URI {uri})") from None
    records, lines = loaded.records, loaded.lines
    logged = {k for r in records for k in r.final}
    if metric not in logged:
        shown = ", ".join(sorted(k for k in logged if not k.startswith("acc/exp_")))
        raise _bad_input(f"--metric: no trial logged {metric!r}; logged: {shown}")
    rows = summarize(records, [*SUMMARY_METRICS, *([] if metric in SUMMARY_METRICS else [metric])])
    if not any(r.n_finished for r in rows):
        raise _bad_input(f"none of the {len(records)} trials of {', '.join(sources)} finished")
    comparison = compare_rows(rows, metric, alpha, columns_for(rows, [metric]))
    for line in [*lines, *loaded.notes]:  # labels hold brackets: no rich markup
        err.print(line, highlight=False, soft_wrap=True, markup=False)
    title = " + ".join(sources)
    if format == "table":
        head = f"{title}: final metrics over seeds"
        out.print(render_table(comparison, title=head, width=out.width))
    elif format == "md":
        sys.stdout.write(render_markdown(comparison, title))
    elif format == "csv":
        sys.stdout.write(render_csv(comparison))
    elif format == "latex":
        sys.stdout.write(render_latex(comparison, title))
    else:
        sys.stdout.write(render_json(comparison, lines, loaded.differing_keys))
    if plots is not None:
        for path in write_figures(records, plots, title=title, style=style):
            err.print(f"wrote {path}", highlight=False, soft_wrap=True)
    failed = [(r.label, f) for r in rows for f in r.failed]
    for label, reason in failed:
        err.print(f"not counted: {label} {reason}", highlight=False, soft_wrap=True, markup=False)
    if any(math.isnan(r.mean.get(metric, math.nan)) for r in rows if r.n_finished):
        err.print(f"note: some strategies have no finite {metric}", highlight=False)
