"""``lifelong compare`` never merges different settings, reports repeats, breaks ties alike.

Real trials logged through the real SweepTracker into a real MLflow SQLite store
(``tiny_sweep``); the CLI is driven with typer's CliRunner. The expected values
are read back from the child runs with :class:`MlflowClient`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.compare import (
    MISSING,
    RowConfig,
    config_digest,
    config_of,
    differing_keys,
    row_labels,
)
from lifelong.platform.summary import (
    StrategySummary,
    TrialRecord,
    compare_rows,
    summarize,
)
from lifelong.platform.terminal_table import summary_table

from test_compare_kit import tiny_sweep

PARAMS = {
    "scenario.source": "gaussian",
    "scenario.n_experiences": "3",
    "model.name": "mlp",
    "model.hidden": "[16]",
    "training.lr": "0.1",
    "training.epochs": "1",
    "strategies": '["ewc"]',
    "strategy": "ewc",
    "strategy.ewc.mode": "online",
    "strategy.ewc.lambda": "10.0",
    "seed": "3",
    "resources.cpu": "1.0",
    "resources.gpu": "0.0",
    "tune.search": "grid",
    "phase": "test",
    "seeds": "[0, 1, 2]",
}


def invoke(uri: str, *args: str):
    return CliRunner().invoke(app, ["compare", *args, "--tracking-uri", uri])


def trial_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`lifelong.role` = 'trial'")


def final_acc(client: MlflowClient, experiments: list[str], strategy: str) -> dict[int, float]:
    """seed -> final acc/avg of the FINISHED runs of ``strategy`` (one run per seed expected)."""
    out: dict[int, float] = {}
    for name in experiments:
        for run in trial_runs(client, name):
            if run.data.tags["strategy"] == strategy and run.info.status == "FINISHED":
                seed = int(run.data.tags["seed"])
                assert seed not in out, "use newest_runs() where seeds repeat"
                out[seed] = run.data.metrics["acc/avg"]
    return out


# ------------------------------------------------------- pure configuration
def test_config_of_keeps_every_setting_but_seed_label_and_resources() -> None:
    config = config_of(PARAMS)
    assert config == {
        "model.hidden": "[16]",
        "model.name": "mlp",
        "phase": "test",
        "scenario.n_experiences": "3",
        "scenario.source": "gaussian",
        "strategies": '["ewc"]',
        "strategy.ewc.lambda": "10.0",
        "strategy.ewc.mode": "online",
        "training.epochs": "1",
        "training.lr": "0.1",
        "tune.search": "grid",
    }
    assert list(config) == sorted(config)


def test_config_digest_is_stable_and_sees_every_difference() -> None:
    config = config_of(PARAMS)
    digest = config_digest(config)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert config_digest(dict(reversed(list(config.items())))) == digest
    # what is not configuration does not move it
    assert config_digest(config_of({**PARAMS, "seed": "7", "resources.cpu": "4.0"})) == digest
    assert config_digest(config_of({**PARAMS, "strategy": "ewc(mode=online)"})) == digest
    # every setting does, a missing one included
    assert config_digest(config_of({**PARAMS, "training.lr": "0.001"})) != digest
    assert config_digest(config_of({**PARAMS, "tune.search": "random"})) != digest
    without = {k: v for k, v in PARAMS.items() if k != "phase"}
    assert config_digest(config_of(without)) != digest


def test_labels_show_the_values_that_differ() -> None:
    base = config_of(PARAMS)
    naive = {k: v for k, v in base.items() if not k.startswith("strategy")}
    naive["strategies"] = '["naive"]'
    rows = [
        RowConfig("ewc", base),
        RowConfig("ewc", {**base, "strategy.ewc.mode": "separate"}),
        RowConfig("ewc", {**base, "training.lr": "0.001"}),
        RowConfig("naive", naive),
        RowConfig("naive", {k: v for k, v in naive.items() if k != "phase"}),
    ]
    labels = row_labels(rows)
    assert [labels[r.digest] for r in rows] == [
        "ewc [ewc.mode=online, phase=test, training.lr=0.1]",
        "ewc [ewc.mode=separate, phase=test, training.lr=0.1]",
        "ewc [ewc.mode=online, phase=test, training.lr=0.001]",
        "naive [phase=test, training.lr=0.1]",
        f"naive [phase={MISSING}, training.lr=0.1]",
    ]
    assert differing_keys(rows) == ["phase", "strategy.ewc.mode", "training.lr"]
    # a strategy key is compared only among the rows of its label
    one_ewc = [rows[0], rows[3]]
    assert [row_labels(one_ewc)[r.digest] for r in one_ewc] == ["ewc", "naive"]
    assert differing_keys(one_ewc) == []


def test_configurations_a_label_cannot_tell_apart_get_a_digest_suffix() -> None:
    a = RowConfig("x", {"strategies": '["x"]', "training.lr": "0.1"})
    b = RowConfig("x", {"strategies": '["x", "y"]', "training.lr": "0.1"})
    labels = row_labels([a, b])
    assert labels == {a.digest: f"x #{a.digest[:8]}", b.digest: f"x #{b.digest[:8]}"}
    assert differing_keys([a, b]) == ["strategies"]


# ------------------------------------------------------------ real sweeps
@pytest.fixture(scope="module")
def lr_store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two experiment files that differ only in ``training.lr`` (0.001 and 0.1)."""
    tmp = tmp_path_factory.mktemp("lr")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    for name, lr in (("lr_small", 0.001), ("lr_big", 0.1)):
        tiny_sweep(uri, tmp / "art", name=name, strategies=["naive"], seeds=2, training={"lr": lr})
    return {"uri": uri, "client": MlflowClient(uri)}


def test_two_learning_rates_are_two_rows_labelled_with_training_lr(lr_store: dict) -> None:
    result = invoke(lr_store["uri"], "lr_small", "lr_big", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["differing_keys"] == ["training.lr"]
    got = {s["strategy"]: s for s in doc["strategies"]}
    assert set(got) == {"naive [training.lr=0.001]", "naive [training.lr=0.1]"}
    assert (
        "note: rows differ in training.lr; rows are never merged across different settings"
        in result.stderr
    )
    client = lr_store["client"]
    for name, lr in (("lr_small", "0.001"), ("lr_big", "0.1")):
        row = got[f"naive [training.lr={lr}]"]
        expected = final_acc(client, [name], "naive")
        assert row["n_finished"] == 2 and row["repeats"] == 0
        cell = row["metrics"]["acc/avg"]
        assert cell["values"] == {str(s): pytest.approx(v) for s, v in expected.items()}
        assert cell["mean"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
        params = trial_runs(client, name)[0].data.params
        assert params["training.lr"] == lr
        assert row["config_digest"] == config_digest(config_of(params))
    md = invoke(lr_store["uri"], "lr_small", "lr_big", "--format", "md")
    assert "| naive [training.lr=0.001] | 2 |" in md.stdout
    assert "| naive [training.lr=0.1] | 2 |" in md.stdout
    table = invoke(lr_store["uri"], "lr_small", "lr_big")  # rich: the brackets are no markup
    assert table.exit_code == 0, table.output
    assert "[training.lr=0.001]" in table.stdout and "[training.lr=0.1]" in table.stdout


@pytest.fixture(scope="module")
def ewc_store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three files: naive + ewc online in one, naive + ewc separate in two identical others."""
    tmp = tmp_path_factory.mktemp("ewc")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    for name, mode in (
        ("ewc_online", "online"),
        ("ewc_sep_a", "separate"),
        ("ewc_sep_b", "separate"),
    ):
        tiny_sweep(
            uri, tmp / "art", name=name, strategies=["naive", {"ewc": {"mode": mode}}], seeds=2
        )
    names = ["ewc_online", "ewc_sep_a", "ewc_sep_b"]
    return {"uri": uri, "client": MlflowClient(uri), "names": names}


def test_ewc_online_and_separate_are_two_rows(ewc_store: dict) -> None:
    result = invoke(ewc_store["uri"], *ewc_store["names"], "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["differing_keys"] == ["strategy.ewc.mode"]
    got = {s["strategy"]: s for s in doc["strategies"]}
    assert set(got) == {"naive", "ewc [ewc.mode=online]", "ewc [ewc.mode=separate]"}
    assert "note: rows differ in strategy.ewc.mode;" in result.stderr
    online = got["ewc [ewc.mode=online]"]
    assert online["n_finished"] == 2 and online["repeats"] == 0
    expected = final_acc(ewc_store["client"], ["ewc_online"], "ewc")
    assert online["metrics"]["acc/avg"]["values"] == {
        str(s): pytest.approx(v) for s, v in expected.items()
    }
    separate = got["ewc [ewc.mode=separate]"]  # two identical files: one row, seeds repeated
    assert separate["n_finished"] == 2 and separate["repeats"] == 2
    assert (
        len({online["config_digest"], separate["config_digest"], got["naive"]["config_digest"]})
        == 3
    )


def newest_runs(client: MlflowClient, names: list[str], strategy: str) -> dict[int, list]:
    """seed -> the runs of ``strategy`` with that seed, newest first."""
    out: dict[int, list] = {}
    for name in names:
        for run in trial_runs(client, name):
            if run.data.tags["strategy"] == strategy:
                out.setdefault(int(run.data.tags["seed"]), []).append(run)
    return {s: sorted(rs, key=lambda r: -r.info.start_time) for s, rs in out.items()}


def test_one_configuration_run_in_three_sweeps_is_one_row_with_repeats(ewc_store: dict) -> None:
    uri, client, names = ewc_store["uri"], ewc_store["client"], ewc_store["names"]
    result = invoke(uri, *names, "--format", "json")
    assert result.exit_code == 0, result.output
    naive = next(s for s in json.loads(result.stdout)["strategies"] if s["strategy"] == "naive")
    runs = newest_runs(client, names, "naive")
    assert sorted(runs) == [0, 1] and all(len(rs) == 3 for rs in runs.values())
    assert naive["n_finished"] == 2 and naive["seeds"] == [0, 1]
    assert naive["repeats"] == 4
    assert naive["repeat_runs"] == {
        str(s): [r.info.run_id for r in rs[1:]] for s, rs in sorted(runs.items())
    }
    # one value per seed: the newest finished run's
    values = naive["metrics"]["acc/avg"]["values"]
    assert values == {
        str(s): pytest.approx(rs[0].data.metrics["acc/avg"]) for s, rs in runs.items()
    }
    for seed, rs in runs.items():
        ids = ", ".join(r.info.run_id[:8] for r in rs)
        line = (
            f"note: naive seed {seed} ran 3 times (runs {ids}); "
            f"the newest finished run ({rs[0].info.run_id[:8]}) counts"
        )
        assert line in result.stderr
    md = invoke(uri, *names, "--format", "md")
    assert "| naive | 2 (+4 repeats) |" in md.stdout
    assert "| ewc [ewc.mode=separate] | 2 (+2 repeats) |" in md.stdout
    assert "| ewc [ewc.mode=online] | 2 |" in md.stdout


def test_resources_alone_do_not_split_a_row(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name, cpu in (("one_cpu", 1), ("two_cpus", 2)):
        tiny_sweep(
            uri, tmp_path / "art", name=name, strategies=["naive"], seeds=1, resources={"cpu": cpu}
        )
    result = invoke(uri, "one_cpu", "two_cpus", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["differing_keys"] == []
    assert [(s["strategy"], s["n_finished"], s["repeats"]) for s in doc["strategies"]] == [
        ("naive", 1, 1)
    ]
    assert "rows differ" not in result.stderr


# ------------------------------------------------------------------- ties
def _row(label: str, acc: dict[int, float], forgetting: dict[int, float]) -> StrategySummary:
    mean = {"acc/avg": float(np.mean(list(acc.values())))}
    mean["forgetting/avg"] = float(np.mean(list(forgetting.values())))
    std = {"acc/avg": float(np.std(list(acc.values()), ddof=1))}
    std["forgetting/avg"] = float(np.std(list(forgetting.values()), ddof=1))
    return StrategySummary(
        label, len(acc), (), mean, std, {"acc/avg": acc, "forgetting/avg": forgetting}
    )


def test_compare_rows_breaks_ties_the_same_for_every_input_order() -> None:
    tied = {0: 0.5, 1: 0.7}
    rows = [
        _row("naive", tied, {0: 0.2, 1: 0.1}),
        _row("l2", tied, {0: 0.2, 1: 0.1}),
        _row("ewc", tied, {0: 0.2, 1: 0.1}),
        _row("si", {0: 0.9, 1: 0.8}, {0: 0.3, 1: 0.3}),
        _row("lwf", {0: math.nan, 1: math.nan}, {0: 0.2, 1: 0.1}),
    ]
    cols = ["acc/avg", "forgetting/avg"]
    for perm in itertools.permutations(rows):
        comp = compare_rows(list(perm), "acc/avg", columns=cols)
        assert [r.label for r in comp.rows] == ["si", "ewc", "l2", "naive", "lwf"]
        best = {m: [lb for (lb, mm), mk in comp.marks.items() if mm == m and mk.best] for m in cols}
        assert best == {"acc/avg": ["si"], "forgetting/avg": ["ewc"]}
        by_forgetting = compare_rows(list(perm), "forgetting/avg", columns=cols)
        assert [r.label for r in by_forgetting.rows] == ["ewc", "l2", "lwf", "naive", "si"]


def test_summarize_does_not_depend_on_the_order_of_trials() -> None:
    values = [0.1, 0.2, 0.7, 1e-17, 0.3]  # a sum whose last bit depends on the order
    records = [TrialRecord("a", seed, "FINISHED", {"acc/avg": v}) for seed, v in enumerate(values)]
    forward = summarize(records, ["acc/avg"])[0]
    for perm in itertools.permutations(records):
        assert summarize(list(perm), ["acc/avg"])[0].mean == forward.mean


def _table_labels(rows: list[StrategySummary]) -> list[str]:
    """The strategy column of the end-of-``run`` table, top to bottom."""
    console = Console(record=True, width=250)
    console.print(summary_table(rows))
    text = console.export_text()
    return [m.group(1) for m in re.finditer(r"^\s*\d+\s+(\S+)\s+\d+\s", text, re.MULTILINE)]


def test_run_summary_and_compare_rank_an_exact_tie_identically(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # lambda = 0: l2 and ewc train exactly like naive (the same numbers, to the last bit)
    strategies = ["naive", {"l2": {"lambda": 0.0}}, {"ewc": {"lambda": 0.0}}]
    tracker = tiny_sweep(uri, tmp_path / "art", name="tie", strategies=strategies, seeds=2)
    outcomes = list(tracker.outcomes.values())  # experiment order: naive, l2, ewc
    accs = {o.trial.label: [] for o in outcomes}
    for o in outcomes:
        accs[o.trial.label].append(o.final["acc/avg"])
    assert accs["naive"] == accs["l2"] == accs["ewc"]  # the tie is real

    run_rows = summarize(outcomes)  # what `lifelong run` prints at its end
    run_comp = compare_rows(run_rows)
    assert [r.label for r in run_comp.rows] == ["ewc", "l2", "naive"]
    assert _table_labels(run_rows) == ["ewc", "l2", "naive"]
    assert _table_labels(summarize(reversed(outcomes))) == ["ewc", "l2", "naive"]

    result = invoke(uri, "tie", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [s["strategy"] for s in doc["strategies"]] == ["ewc", "l2", "naive"]
    assert doc["differing_keys"] == [] and "rows differ" not in result.stderr
    for m in doc["columns"]:
        stars = [s["strategy"] for s in doc["strategies"] if s["metrics"][m]["best"]]
        assert stars == [lb for (lb, mm), mk in run_comp.marks.items() if mm == m and mk.best], m
    assert [s["strategy"] for s in doc["strategies"] if s["metrics"]["acc/avg"]["best"]] == ["ewc"]
