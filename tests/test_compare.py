"""``lifelong compare`` and the sweep's parent-run summary, against a real MLflow store.

The expected numbers are recomputed here from the child runs' metrics read with
:class:`MlflowClient` (numpy, scipy), independently of lifelong's summary code.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats
from typer.testing import CliRunner

from lifelong.platform import metrics
from lifelong.platform.cli import app
from lifelong.platform.figures import FIGURES, strategy_colours
from lifelong.platform.summary import StrategySummary, compare_rows

from conftest import ROOT
from test_compare_kit import tiny_sweep

PNG = b"\x89PNG\r\n\x1a\n"
METRICS = ("acc/avg", "forgetting/avg", "bwt", "fwt", "plasticity/avg")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two experiments: ``cmp`` (naive, l2, ewc x 3 seeds; ewc seed 2 fails) and ``other``."""
    tmp = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    a = tiny_sweep(
        uri, tmp / "art", name="cmp", strategies=["naive", {"l2": {"lambda": 1.0}}, "ewc"],
        fail=("ewc-seed2",),
    )  # fmt: skip
    b = tiny_sweep(uri, tmp / "art", name="other", strategies=["si"], seeds=2, n_experiences=2)
    return {"uri": uri, "tmp": tmp, "a": a, "b": b, "client": MlflowClient(uri)}


def invoke(store: dict, *args: str):
    return CliRunner().invoke(app, ["compare", *args, "--tracking-uri", store["uri"]])


def child_values(client: MlflowClient, experiment: str) -> dict[str, dict[str, list[float]]]:
    """strategy -> metric -> final values of its FINISHED child runs (seed order)."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`lifelong.role` = 'trial'")
    out: dict[str, dict[str, list[float]]] = {}
    for run in sorted(runs, key=lambda r: int(r.data.tags["seed"])):
        if run.info.status != "FINISHED":
            continue
        for m in METRICS:
            # the final value: the metric's history at its last step
            hist = client.get_metric_history(run.info.run_id, m)
            last = max(hist, key=lambda h: h.step).value
            out.setdefault(run.data.tags["strategy"], {}).setdefault(m, []).append(last)
    return out


def test_parent_run_holds_the_summary_table_and_figures(store: dict) -> None:
    client, tracker = store["client"], store["a"]
    parent = tracker.parent_run_id
    top = {a.path for a in client.list_artifacts(parent)}
    assert {"summary.csv", "summary.md", "summary_table.json", "figures"} <= top
    figs = {Path(a.path).name for a in client.list_artifacts(parent, "figures")}
    assert figs == set(FIGURES)
    assert client.get_run(parent).info.status == "FAILED"  # one trial failed; summary still there
    logged = json.loads(client.get_run(parent).data.tags["mlflow.loggedArtifacts"])
    assert {"path": "summary_table.json", "type": "table"} in logged

    path = client.download_artifacts(parent, "summary_table.json", str(store["tmp"]))
    table = json.loads(Path(path).read_text())
    rows = {
        r[table["columns"].index("strategy")]: dict(zip(table["columns"], r, strict=True))
        for r in table["data"]
    }
    expected = child_values(client, "cmp")
    assert set(rows) == {"naive", "l2", "ewc"}
    assert rows["ewc"]["seeds"] == 2 and rows["naive"]["seeds"] == 3  # only finished trials
    for label, per_metric in expected.items():
        for m, values in per_metric.items():
            assert rows[label][f"{m} mean"] == pytest.approx(np.mean(values), abs=1e-9)
            assert rows[label][f"{m} std"] == pytest.approx(np.std(values, ddof=1), abs=1e-9)
    md = Path(client.download_artifacts(parent, "summary.md", str(store["tmp"]))).read_text()
    assert "| ewc | 2 (1 failed) |" in md and "paired t-test" in md
    description = client.get_run(parent).data.tags["mlflow.note.content"]  # the run's page top
    assert description.startswith(md) and "lifelong compare" in description


def test_compare_json_equals_statistics_of_the_child_runs(store: dict) -> None:
    result = invoke(store, "cmp", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["metric"] == "acc/avg" and doc["alpha"] == 0.05
    assert "ttest_rel" in doc["note"]
    expected = child_values(store["client"], "cmp")
    got = {s["strategy"]: s for s in doc["strategies"]}
    assert set(got) == set(expected)
    for label, per_metric in expected.items():
        for m, values in per_metric.items():
            cell = got[label]["metrics"][m]
            assert cell["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert cell["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
            assert cell["n"] == len(values)
    # ranked by acc/avg, best marked, p-values from a paired t-test over shared seeds
    means = {k: np.mean(v["acc/avg"]) for k, v in expected.items()}
    order = sorted(means, key=lambda k: -means[k])
    assert [s["strategy"] for s in doc["strategies"]] == order
    assert [s["rank"] for s in doc["strategies"]] == [1, 2, 3]
    best = order[0]
    assert got[best]["metrics"]["acc/avg"]["best"] is True
    assert got[best]["metrics"]["acc/avg"]["p_vs_best"] is None
    for other in order[1:]:
        cell = got[other]["metrics"]["acc/avg"]
        n = min(len(expected[other]["acc/avg"]), len(expected[best]["acc/avg"]))
        p = stats.ttest_rel(expected[other]["acc/avg"][:n], expected[best]["acc/avg"][:n]).pvalue
        assert cell["test"] == "paired" and cell["p_vs_best"] == pytest.approx(p)
        assert cell["within_noise"] == (p >= 0.05)
    low = min(expected, key=lambda k: np.mean(expected[k]["forgetting/avg"]))
    assert got[low]["metrics"]["forgetting/avg"]["best"] is True  # lower is better there


def test_markdown_csv_and_table_agree_with_json(store: dict) -> None:
    doc = json.loads(invoke(store, "cmp", "--format", "json").stdout)
    by_label = {s["strategy"]: s for s in doc["strategies"]}

    md = invoke(store, "cmp", "--format", "md")
    assert md.exit_code == 0, md.output
    lines = [ln for ln in md.stdout.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["#", "strategy", "seeds"] and "acc/avg" in header
    body = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    assert len(body) == 3 and all(len(r) == len(header) for r in body)
    for row in body:
        mean = by_label[row[1]]["metrics"]["acc/avg"]["mean"]
        assert row[header.index("acc/avg")].startswith(f"{mean:.3f} ± ")

    out = invoke(store, "cmp", "--format", "csv")
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["strategy"] for r in rows] == [s["strategy"] for s in doc["strategies"]]
    for r in rows:
        for m in METRICS:
            cell = by_label[r["strategy"]]["metrics"][m]
            assert float(r[f"{m}:mean"]) == pytest.approx(cell["mean"])
            assert float(r[f"{m}:std"]) == pytest.approx(cell["std"])

    table = invoke(store, "cmp")
    assert table.exit_code == 0, table.output
    assert (
        "★" in table.stdout and "paired t-test" in table.stdout and "alpha = 0.05" in table.stdout
    )
    assert "not counted: ewc seed 2" in table.stderr
    for label in by_label:
        assert label in table.stdout


def test_sweep_id_run_id_and_several_sources(store: dict) -> None:
    a, b = store["a"], store["b"]
    by_exp = json.loads(invoke(store, "cmp", "--format", "json").stdout)["strategies"]
    for arg in (a.sweep_id, a.parent_run_id, a.experiment_id):
        doc = json.loads(invoke(store, arg, "--format", "json").stdout)
        assert doc["strategies"] == by_exp, arg
    both = invoke(store, "cmp", "other", "--format", "json", "--metric", "forgetting/avg")
    assert both.exit_code == 0, both.output
    doc = json.loads(both.stdout)
    # the two experiments differ in their number of experiences: every label says so
    assert doc["differing_keys"] == ["scenario.n_experiences"]
    assert {s["strategy"] for s in doc["strategies"]} == {
        "naive [scenario.n_experiences=3]",
        "l2 [scenario.n_experiences=3]",
        "ewc [scenario.n_experiences=3]",
        "si [scenario.n_experiences=2]",
    }
    assert "note: rows differ in scenario.n_experiences;" in both.stderr
    assert doc["metric"] == "forgetting/avg" and doc["lower_is_better"] is True
    means = [s["metrics"]["forgetting/avg"]["mean"] for s in doc["strategies"]]
    assert means == sorted(means)
    si = next(s for s in doc["strategies"] if s["strategy"].startswith("si "))
    assert si["n_finished"] == 2 and b.sweep_id


def test_plots_are_valid_pngs(store: dict, tmp_path: Path) -> None:
    result = invoke(store, "cmp", "--plots", str(tmp_path / "figs"))
    assert result.exit_code == 0, result.output
    for name in FIGURES:
        path = tmp_path / "figs" / name
        assert path.read_bytes()[:8] == PNG
        h, w, _ = mpimg.imread(path).shape
        assert 400 <= w <= 3000 and 300 <= h <= 3000, (name, w, h)
        assert path.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-thing"], "'no-such-thing' is no MLflow experiment name or id"),
        (["cmp", "--metric", "acc/nope"], "no trial logged 'acc/nope'"),
        (["cmp", "--format", "xml"], "unknown format 'xml'"),
        (["99999"], "is no MLflow experiment"),
    ],
)
def test_unknown_names_exit_2(store: dict, args: list[str], message: str) -> None:
    result = invoke(store, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_a_trial_run_id_is_refused(store: dict) -> None:
    run_id = store["a"].outcomes["naive-seed0"].run_id
    result = invoke(store, run_id)
    assert result.exit_code == 2 and "is a trial (child) run" in result.stderr


def _row(label: str, values: dict[int, float]) -> StrategySummary:
    v = np.array(list(values.values()))
    std = float(v.std(ddof=1)) if len(v) > 1 else math.nan
    return StrategySummary(
        label, len(v), (), {"acc/avg": v.mean()}, {"acc/avg": std}, {"acc/avg": values}
    )


def test_paired_test_on_shared_seeds_welch_otherwise() -> None:
    best = _row("a", {0: 0.9, 1: 0.8, 2: 0.85})
    paired = _row("b", {0: 0.88, 1: 0.79, 2: 0.86})
    welch = _row("c", {5: 0.5, 6: 0.55, 7: 0.45})
    single = _row("d", {9: 0.1})
    comp = compare_rows([welch, single, paired, best], columns=["acc/avg"])
    assert [r.label for r in comp.rows] == ["a", "b", "c", "d"]
    mb, mc, md = (comp.marks[(k, "acc/avg")] for k in "bcd")
    assert mb.test == "paired" and mb.p == pytest.approx(
        stats.ttest_rel([0.88, 0.79, 0.86], [0.9, 0.8, 0.85]).pvalue
    )
    assert mb.within_noise is True
    assert mc.test == "welch" and mc.p == pytest.approx(
        stats.ttest_ind([0.5, 0.55, 0.45], [0.9, 0.8, 0.85], equal_var=False).pvalue
    )
    assert mc.within_noise is False
    assert md.p is None and md.within_noise is None  # one seed: nothing to test


def test_colours_are_stable_and_distinct() -> None:
    labels = ["naive", "l2", "ewc", "si", "l2+center_loss", "ewc(lambda=10)"]
    colours = strategy_colours(labels)
    assert len(set(colours.values())) == len(labels)
    assert strategy_colours(reversed(labels)) == colours
    assert strategy_colours(["naive", "l2"])["naive"] == strategy_colours(["naive", "si"])["naive"]


def test_logging_the_summary_again_replaces_it(store: dict) -> None:
    tracker, client = store["a"], store["client"]
    tracker.finish("FAILED")  # e.g. a resumed sweep finishing: the table is not appended to
    path = client.download_artifacts(tracker.parent_run_id, "summary_table.json", str(store["tmp"]))
    assert len(json.loads(Path(path).read_text())["data"]) == 3


def test_ranking_by_another_metric_adds_its_column(store: dict) -> None:
    m = "forgetting/first_minus_last"  # Avalanche's definition, logged as a final metric
    result = invoke(store, "cmp", "--metric", m, "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert m in doc["columns"] and doc["lower_is_better"] is True
    client = store["client"]
    exp = client.get_experiment_by_name("cmp")
    for s in doc["strategies"]:
        runs = client.search_runs(
            [exp.experiment_id],
            f"tags.strategy = '{s['strategy']}' and attributes.status = 'FINISHED'",
        )
        values = [r.data.metrics[m] for r in runs]
        assert s["metrics"][m]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert s["metrics"][m]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    means = [s["metrics"][m]["mean"] for s in doc["strategies"]]
    assert means == sorted(means)


def test_docs_name_every_metric_and_their_pictures_exist() -> None:
    R = np.array([[0.9, 0.1, 0.1], [0.7, 0.8, 0.2], [0.6, 0.5, 0.9]])
    names = set(metrics.step_metrics(R, 2)) | set(metrics.summary(R, [0.1] * 3))
    names = {re.sub(r"exp_\d+", "exp_<j>", n) for n in names}
    page = (ROOT / "docs" / "metrics.md").read_text()
    assert not {n for n in names if f"`{n}`" not in page}
    compare = (ROOT / "docs" / "compare.md").read_text()
    pictures = re.findall(r"\]\((img/[^)]+\.png)\)", compare)
    assert len(pictures) >= 7
    for rel in pictures:
        data = (ROOT / "docs" / rel).read_bytes()
        assert data[:8] == PNG and len(data) < 150_000, rel
