"""Strategy summaries: per strategy, mean ± std over seeds of the final metrics, compared.

One code path serves the end of ``lifelong run`` (from the trials' outcomes in
memory), the sweep's parent run in MLflow (``summary.csv``, ``summary.md``, the
table artifact ``summary_table.json`` and the figures) and ``lifelong compare``
(from runs read back from MLflow). Trials become :class:`TrialRecord` objects;
:func:`summarize` aggregates them per strategy label; :func:`compare_rows` ranks
the strategies, marks the best per column and which differences from the best
lie within seed noise; the ``render_*`` functions write the result.

Statistics: the mean and the sample standard deviation (``ddof=1``; undefined,
shown as ``—``, for a single seed) over the finished trials of a strategy.
Whether a strategy differs from the best one in a column is a two-sided t-test
over seeds at level :data:`ALPHA`: *paired* (:func:`scipy.stats.ttest_rel`) on
the seeds both strategies finished when they share at least two, else *Welch's*
unequal-variance test (:func:`scipy.stats.ttest_ind` with ``equal_var=False``).
A strategy whose p-value is at least ``alpha`` is "within seed noise" of the best.

Ties: rows are ranked by a total order that does not depend on the order of the
input, the ranking metric's mean (a row without a finite value last), then the
label; the ``★`` best of every column is the first row in that same order for
the column's own metric. So the end of ``lifelong run`` and ``lifelong compare``
rank and mark the same trials identically. A row's mean is taken over its values
in seed order, so that it, too, does not depend on the order of the trials.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lifelong.platform import metrics as M

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from lifelong.platform.tracking import TrialOutcome

SUMMARY_METRICS: tuple[str, ...] = ("acc/avg", "forgetting/avg", "bwt", "fwt", "plasticity/avg")
"""Final metrics shown per strategy (forgetting: Chaudhry et al. 2018, max-based).

``plasticity/fresh_avg`` is added where trials measured it (``plasticity_baseline``).
"""

OPTIONAL_METRICS: tuple[str, ...] = ("plasticity/fresh_avg", "retention/ppl")
"""Shown as a column when at least one strategy's trials measured it."""

ALPHA = 0.05
"""Default significance level of the tests against the best strategy."""

LOWER_IS_BETTER_PREFIXES: tuple[str, ...] = (
    "forgetting",
    "loss",
    "retention/ppl",
    "retention/base_ppl",
)
"""Metrics whose names start with one of these rank ascending; all others descending."""

PAIRED = "paired t-test (scipy.stats.ttest_rel) over shared seeds"
WELCH = "Welch's t-test (scipy.stats.ttest_ind, equal_var=False)"

ARTIFACT_CSV = "summary.csv"
ARTIFACT_MD = "summary.md"
ARTIFACT_TABLE = "summary_table.json"
MLFLOW_RUN_NOTE = "mlflow.note.content"
"""The tag MLflow shows as a run's description, at the top of its page (Markdown)."""
DESCRIPTION_FOOTER = (
    "\nFigures: the artifacts `figures/`. Compare in a terminal: `lifelong compare <sweep id>`.\n"
)
ARTIFACT_FIGURES = "figures"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the summary sees it, whether from memory or read back from MLflow.

    ``final`` holds the final metrics (``acc/avg``, ``fwt``, ...); ``curve`` the
    average accuracy after each experience (``acc/avg`` at step ``i``);
    ``final_acc`` the accuracy on each experience after the last one (the last
    row of the accuracy matrix). Both are empty when unknown.

    ``config_digest`` identifies the trial's resolved configuration (everything
    but the seed; see :func:`lifelong.platform.compare.config_of`) where it is
    known, and ``repeats`` holds the run ids of the other runs of the same
    configuration and seed that were not counted (``lifelong compare`` counts the
    newest finished one); both are empty for a sweep's own trials.
    """

    label: str
    seed: int
    status: str
    final: Mapping[str, float] = field(default_factory=dict)
    curve: tuple[float, ...] = ()
    final_acc: tuple[float, ...] = ()
    scenario: str = ""
    sweep: str = ""
    run_id: str = ""
    error: str | None = None
    config_digest: str = ""
    repeats: tuple[str, ...] = ()


def record_from_outcome(outcome: TrialOutcome, scenario: str = "", sweep: str = "") -> TrialRecord:
    """The :class:`TrialRecord` of an in-memory trial outcome (see ``tracking``)."""
    curve: tuple[float, ...] = ()
    final_acc: tuple[float, ...] = ()
    R = outcome.R
    if R is not None and np.isfinite(R).all():
        curve = tuple(M.average_accuracy(R, i) for i in range(R.shape[0]))
        final_acc = tuple(float(v) for v in R[-1])
    return TrialRecord(
        label=outcome.trial.label,
        seed=outcome.trial.seed,
        status=outcome.status,
        final=dict(outcome.final),
        curve=curve,
        final_acc=final_acc,
        scenario=scenario,
        sweep=sweep,
        run_id=outcome.run_id,
        error=outcome.error,
    )


def _as_records(items: Iterable[TrialRecord | TrialOutcome]) -> list[TrialRecord]:
    return [i if isinstance(i, TrialRecord) else record_from_outcome(i) for i in items]


@dataclass(frozen=True)
class StrategySummary:
    """Final metrics of one strategy over its seeds.

    ``mean`` and ``std`` map metric names to the mean and the sample standard
    deviation (ddof=1; ``nan`` for a single seed) over the finished trials;
    ``values`` maps each metric to its per-seed values (seed -> value).
    ``config_digest`` is the configuration its trials share (empty when unknown
    or mixed); ``repeats`` maps a seed to the run ids of its other, uncounted
    runs of the same configuration (see :class:`TrialRecord`).
    """

    label: str
    n_finished: int
    failed: tuple[str, ...]
    mean: dict[str, float]
    std: dict[str, float]
    values: dict[str, dict[int, float]] = field(default_factory=dict)
    config_digest: str = ""
    repeats: dict[int, tuple[str, ...]] = field(default_factory=dict)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds of the finished trials, sorted."""
        return tuple(sorted({s for v in self.values.values() for s in v}))

    @property
    def n_repeats(self) -> int:
        """How many runs repeated a (configuration, seed) already counted."""
        return sum(len(ids) for ids in self.repeats.values())


def summarize(
    items: Iterable[TrialRecord | TrialOutcome], metrics: Sequence[str] = SUMMARY_METRICS
) -> list[StrategySummary]:
    """Group trials by strategy label (first-seen order) and aggregate over seeds.

    Only FINISHED trials count; the others are listed in ``failed``. Values are
    taken in seed order (the mean does not depend on the order of ``items``). The
    metrics of :data:`OPTIONAL_METRICS` are added for a strategy whose finished
    trials all measured them. A metric a trial did not log is left out of its
    values (a column then shows ``—`` where no trial has it).
    """
    records = _as_records(items)
    labels = list(dict.fromkeys(r.label for r in records))
    rows = []
    for label in labels:
        mine = sorted((r for r in records if r.label == label), key=lambda r: r.seed)
        done = [r for r in mine if r.status == "FINISHED"]
        failed = tuple(
            f"seed {r.seed}: {r.error or r.status}" for r in mine if r.status != "FINISHED"
        )
        wanted = list(metrics)
        for m in OPTIONAL_METRICS:
            if m not in wanted and done and all(m in r.final for r in done):
                wanted.append(m)
        mean, std, values = {}, {}, {}
        for m in wanted:
            per_seed = {r.seed: float(r.final[m]) for r in done if m in r.final}
            finite = np.array([v for v in per_seed.values() if math.isfinite(v)], dtype=float)
            values[m] = per_seed
            mean[m] = float(finite.mean()) if len(finite) else float("nan")
            std[m] = float(finite.std(ddof=1)) if len(finite) > 1 else float("nan")
        digests = {r.config_digest for r in mine}
        repeats = {r.seed: r.repeats for r in mine if r.repeats}
        digest = digests.pop() if len(digests) == 1 else ""
        rows.append(StrategySummary(label, len(done), failed, mean, std, values, digest, repeats))
    return rows


# ----------------------------------------------------------------- comparing
def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better (forgetting, losses)."""
    return metric.startswith(LOWER_IS_BETTER_PREFIXES)


@dataclass(frozen=True)
class Mark:
    """One cell's standing against the column's best strategy.

    ``p`` is the two-sided p-value of ``test`` (``"paired"`` or ``"welch"``)
    against the best, ``None`` for the best itself or when there are too few
    seeds to test; ``within_noise`` is ``p >= alpha`` (``None`` when untested).
    """

    best: bool = False
    p: float | None = None
    test: str | None = None
    within_noise: bool | None = None


@dataclass(frozen=True)
class Comparison:
    """Strategies ranked by ``metric`` with every cell marked against its column's best."""

    rows: list[StrategySummary]
    columns: list[str]
    metric: str
    alpha: float
    marks: dict[tuple[str, str], Mark]

    def rank(self, label: str) -> int:
        """1-based rank of ``label`` (rows are in rank order)."""
        return [r.label for r in self.rows].index(label) + 1


def _test(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[float, str] | None:
    """Two-sided p-value of a against b: paired on >= 2 shared seeds, else Welch."""
    from scipy import stats

    a = {s: v for s, v in a.items() if math.isfinite(v)}
    b = {s: v for s, v in b.items() if math.isfinite(v)}
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        x = np.array([a[s] for s in shared])
        y = np.array([b[s] for s in shared])
        if np.allclose(x - y, (x - y)[0], rtol=0, atol=1e-12):  # no spread: t undefined
            return (1.0 if abs(x[0] - y[0]) <= 1e-12 else 0.0), "paired"
        return float(stats.ttest_rel(x, y).pvalue), "paired"
    if len(a) >= 2 and len(b) >= 2:
        x, y = np.array(list(a.values())), np.array(list(b.values()))
        if np.ptp(x) <= 1e-12 and np.ptp(y) <= 1e-12:
            return (1.0 if abs(x.mean() - y.mean()) <= 1e-12 else 0.0), "welch"
        return float(stats.ttest_ind(x, y, equal_var=False).pvalue), "welch"
    return None


def columns_for(rows: Sequence[StrategySummary], extra: Sequence[str] = ()) -> list[str]:
    """The summary metrics, the optional ones some row has, then ``extra``."""
    cols = list(SUMMARY_METRICS)
    cols += [m for m in OPTIONAL_METRICS if any(m in r.mean for r in rows)]
    cols += [m for m in extra if m not in cols]
    return cols


def rank_key(row: StrategySummary, metric: str) -> tuple[bool, float, str]:
    """The total order rows are ranked in by ``metric``: best mean first, ties by label.

    A row without a finite mean comes last. The order depends only on the rows
    themselves, never on the order they are given in.
    """
    v = row.mean.get(metric, float("nan"))
    if not math.isfinite(v):
        return (True, 0.0, row.label)
    return (False, v if lower_is_better(metric) else -v, row.label)


def compare_rows(
    rows: Sequence[StrategySummary],
    metric: str = "acc/avg",
    alpha: float = ALPHA,
    columns: Sequence[str] | None = None,
) -> Comparison:
    """Rank ``rows`` by ``metric`` and mark, per column, the best and its seed-noise ties.

    Rows are ranked by :func:`rank_key`; the best of each column is the first
    row by :func:`rank_key` for that column's metric (so an exact tie goes to the
    label that sorts first, in the ranking and in the ``★`` alike).
    """
    cols = list(columns) if columns is not None else columns_for(rows, [metric])
    ranked = sorted(rows, key=lambda r: rank_key(r, metric))
    marks: dict[tuple[str, str], Mark] = {}
    for m in cols:
        have = [r for r in ranked if math.isfinite(r.mean.get(m, float("nan")))]
        if not have:
            continue
        best = min(have, key=lambda r, m=m: rank_key(r, m))
        for r in have:
            if r is best:
                marks[(r.label, m)] = Mark(best=True)
                continue
            result = _test(r.values.get(m, {}), best.values.get(m, {}))
            if result is None:
                marks[(r.label, m)] = Mark()
            else:
                p, test = result
                marks[(r.label, m)] = Mark(p=p, test=test, within_noise=p >= alpha)
    return Comparison(list(ranked), cols, metric, alpha, marks)


def method_note(comparison: Comparison) -> str:
    """One paragraph saying what the numbers and marks mean (test and alpha included)."""
    used = {mk.test for mk in comparison.marks.values() if mk.test}
    tests = []
    if "paired" in used or not used:
        tests.append(PAIRED)
    if "welch" in used:
        tests.append(WELCH + " where strategies share fewer than 2 seeds")
    direction = "lower" if lower_is_better(comparison.metric) else "higher"
    return (
        f"Ranked by {comparison.metric} ({direction} is better). Cells: mean ± sample std "
        f"(ddof=1) over seeds of the final value. ★ best in its column; ≈ within seed noise "
        f"of the best: two-sided {' / '.join(tests)}, p >= alpha = {comparison.alpha:g}. "
        f"forgetting/avg is Chaudhry et al.'s max-based average forgetting."
    )


def _fmt(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "—"


def cell_text(comparison: Comparison, row: StrategySummary, metric: str) -> str:
    """``mean ± std`` followed by ★ (best) or ≈ (within seed noise of the best)."""
    mean = row.mean.get(metric, float("nan"))
    if not math.isfinite(mean):
        return "—"
    text = f"{_fmt(mean)} ± {_fmt(row.std.get(metric, float('nan')))}"
    mark = comparison.marks.get((row.label, metric), Mark())
    if mark.best:
        text += " ★"
    elif mark.within_noise:
        text += " ≈"
    return text


def seeds_text(row: StrategySummary) -> str:
    """``3``, ``2 (1 failed)``, ``2 (+4 repeats)`` or ``2 (1 failed, +1 repeat)``."""
    extra = [f"{len(row.failed)} failed"] if row.failed else []
    if row.n_repeats:
        extra.append(f"+{row.n_repeats} repeat" + ("s" if row.n_repeats > 1 else ""))
    return f"{row.n_finished}" + (f" ({', '.join(extra)})" if extra else "")


def p_text(comparison: Comparison, row: StrategySummary, *, short: bool = False) -> str:
    """The row's p-value against the best of the ranking metric and its test (or ``best``).

    ``short``: two digits and no test name (the terminal table names it in its caption).
    """
    mark = comparison.marks.get((row.label, comparison.metric))
    if mark is None:
        return "—"
    if mark.best:
        return "best"
    if mark.p is None:
        return "n/a"
    return f"{mark.p:.2g}" if short else f"{mark.p:.3g} ({mark.test})"


def render_markdown(comparison: Comparison, title: str = "") -> str:
    """The comparison as a Markdown table with the method note below it."""
    head = ["#", "strategy", "seeds", *comparison.columns, f"p vs best ({comparison.metric})"]
    lines = [f"## {title}", ""] if title else []
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---:" if h != "strategy" else "---" for h in head) + "|")
    for i, r in enumerate(comparison.rows, 1):
        cells = [cell_text(comparison, r, m) for m in comparison.columns]
        row = [str(i), r.label.replace("|", "\\|"), seeds_text(r), *cells]
        lines.append("| " + " | ".join([*row, p_text(comparison, r)]) + " |")
    lines += ["", method_note(comparison), ""]
    return "\n".join(lines)


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def to_records(comparison: Comparison) -> list[dict[str, Any]]:
    """One plain dict per strategy (rank order): numbers, marks and per-seed values.

    ``config_digest`` names the row's configuration (empty when unknown);
    ``repeats`` counts the uncounted runs of an already counted (configuration,
    seed), and ``repeat_runs`` lists their run ids per seed.
    """
    out = []
    for i, r in enumerate(comparison.rows, 1):
        cols: dict[str, Any] = {}
        for m in comparison.columns:
            mark = comparison.marks.get((r.label, m), Mark())
            cols[m] = {
                "mean": _num(r.mean.get(m)),
                "std": _num(r.std.get(m)),
                "n": len([v for v in r.values.get(m, {}).values() if math.isfinite(v)]),
                "best": mark.best,
                "p_vs_best": mark.p,
                "test": mark.test,
                "within_noise": mark.within_noise,
                "values": {str(s): _num(v) for s, v in sorted(r.values.get(m, {}).items())},
            }
        out.append(
            {
                "rank": i,
                "strategy": r.label,
                "n_finished": r.n_finished,
                "seeds": list(r.seeds),
                "failed": list(r.failed),
                "config_digest": r.config_digest,
                "repeats": r.n_repeats,
                "repeat_runs": {str(s): list(ids) for s, ids in sorted(r.repeats.items())},
                "metrics": cols,
            }
        )
    return out


def render_json(
    comparison: Comparison, sources: Sequence[str] = (), differing_keys: Sequence[str] = ()
) -> str:
    """The comparison as JSON: ranking metric, test, alpha, sources and one entry per row.

    ``differing_keys``: the configuration keys the rows differ in (``lifelong compare``).
    """
    doc = {
        "metric": comparison.metric,
        "lower_is_better": lower_is_better(comparison.metric),
        "alpha": comparison.alpha,
        "test": {"paired": PAIRED, "welch": WELCH},
        "note": method_note(comparison),
        "sources": list(sources),
        "differing_keys": list(differing_keys),
        "columns": comparison.columns,
        "strategies": to_records(comparison),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render_csv(comparison: Comparison) -> str:
    """The comparison as CSV: one row per strategy; per metric its mean, std, n, marks, p."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    head = ["rank", "strategy", "n_finished", "n_failed"]
    for m in comparison.columns:
        head += [f"{m}:mean", f"{m}:std", f"{m}:n", f"{m}:best", f"{m}:within_noise"]
        head += [f"{m}:p_vs_best"]
    writer.writerow(head)
    for rec, r in zip(to_records(comparison), comparison.rows, strict=True):
        line: list[Any] = [rec["rank"], r.label, r.n_finished, len(r.failed)]
        for m in comparison.columns:
            c = rec["metrics"][m]
            line += [
                "" if c["mean"] is None else repr(c["mean"]),
                "" if c["std"] is None else repr(c["std"]),
                c["n"],
                c["best"],
                "" if c["within_noise"] is None else c["within_noise"],
                "" if c["p_vs_best"] is None else repr(c["p_vs_best"]),
            ]
        writer.writerow(line)
    return buf.getvalue()


def table_data(comparison: Comparison) -> dict[str, list[Any]]:
    """Column-oriented numbers for :meth:`MlflowClient.log_table` (one row per strategy)."""
    data: dict[str, list[Any]] = {
        "rank": list(range(1, len(comparison.rows) + 1)),
        "strategy": [r.label for r in comparison.rows],
        "seeds": [r.n_finished for r in comparison.rows],
    }
    for m in comparison.columns:
        data[f"{m} mean"] = [_num(r.mean.get(m)) for r in comparison.rows]
        data[f"{m} std"] = [_num(r.std.get(m)) for r in comparison.rows]
    return data


# ------------------------------------------------------------ the parent run
def write_summary(
    records: Sequence[TrialRecord],
    out_dir: str | Path,
    *,
    title: str = "",
    metric: str = "acc/avg",
    alpha: float = ALPHA,
) -> tuple[Comparison, list[Path]]:
    """Write ``summary.csv``, ``summary.md`` and the figures under ``out_dir``."""
    from lifelong.platform.figures import write_figures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparison = compare_rows(summarize(records), metric, alpha)
    (out / ARTIFACT_CSV).write_text(render_csv(comparison), encoding="utf-8")
    (out / ARTIFACT_MD).write_text(render_markdown(comparison, title), encoding="utf-8")
    figures = write_figures(records, out / ARTIFACT_FIGURES, title=title)
    return comparison, [out / ARTIFACT_CSV, out / ARTIFACT_MD, *figures]


def log_sweep_summary(
    client: MlflowClient,
    run_id: str,
    records: Sequence[TrialRecord | TrialOutcome],
    *,
    title: str = "",
) -> Comparison | None:
    """Log the sweep's summary to its parent run ``run_id``; ``None`` if no trial finished.

    Artifacts: ``summary.csv``, ``summary.md``, ``figures/*.png`` and the MLflow
    table ``summary_table.json`` (:meth:`MlflowClient.log_table`). Logging it
    again (a resumed sweep) replaces the files instead of appending rows.
    ``title`` defaults to ``"<experiment> sweep <sweep id>"``. A failure to
    write the summary is logged as a warning and as the parent run's tag
    ``lifelong.summary_error``; it never stops the sweep from being closed.
    """
    recs = _as_records(records)
    if not any(r.status == "FINISHED" for r in recs):
        return None
    try:
        if not title:
            parent = client.get_run(run_id)
            name = client.get_experiment(parent.info.experiment_id).name
            title = f"{name} sweep {parent.data.tags.get('sweep', run_id)}"
        return _log_summary(client, run_id, recs, title)
    except Exception as e:  # the sweep's own results are logged already; keep them usable
        logging.getLogger(__name__).warning("could not log the sweep summary: %s", e)
        with contextlib.suppress(Exception):  # the store itself may be what failed
            client.set_tag(run_id, "lifelong.summary_error", f"{type(e).__name__}: {e}"[:5000])
        return None


def _log_summary(
    client: MlflowClient, run_id: str, recs: Sequence[TrialRecord], title: str
) -> Comparison:
    with tempfile.TemporaryDirectory() as d:
        comparison, _ = write_summary(recs, d, title=title)
        client.log_artifacts(run_id, d)
        # The run's description (MLflow shows it first on the run's page): the ranked table.
        note = (Path(d) / ARTIFACT_MD).read_text(encoding="utf-8")
        client.set_tag(run_id, MLFLOW_RUN_NOTE, note + DESCRIPTION_FOOTER)
        data = table_data(comparison)
        existing = {a.path for a in client.list_artifacts(run_id)}
        if ARTIFACT_TABLE in existing:  # log_table would append: write the same format
            import pandas as pd

            path = Path(d) / ARTIFACT_TABLE
            pd.DataFrame(data).to_json(path, orient="split", index=False)
            client.log_artifact(run_id, str(path))
        else:
            client.log_table(run_id, data=data, artifact_file=ARTIFACT_TABLE)
    return comparison
