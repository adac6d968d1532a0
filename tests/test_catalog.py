"""`lifelong list` and `lifelong show` on the built-ins (plugins: test_plugin_package.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.strategies import STRATEGIES

BUILT_IN = {
    "naive",
    "l2",
    "ewc",
    "si",
    "mas",
    "lwf",
    "center_loss",
    "spectral",
    "wasserstein_init",
    "dst",
    "hft",
}


def run(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=200)


def test_list_strategies_shows_every_builtin_with_origin_and_summary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Other tests load plugins into this process; a long plugin path would wrap the summaries.
    built_in = {n: e for n, e in STRATEGIES._entries.items() if e.origin == "built-in"}
    monkeypatch.setattr(STRATEGIES, "_entries", built_in)
    result = run("list", "strategies")
    assert result.exit_code == 0, result.output
    assert BUILT_IN <= set(STRATEGIES.names())
    rows = {
        line.split("│")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.count("│") >= 3
    }
    for name in BUILT_IN:
        assert "built-in" in rows[name]
    assert (
        "Anchor each weight with a stiffness given by its diagonal empirical Fisher" in rows["ewc"]
    )


@pytest.mark.parametrize(
    "kind,names",
    [
        ("scenarios", {"digits", "gaussian", "mnist1d", "arrays"}),
        ("models", {"mlp", "cnn", "transformer"}),
    ],
)
def test_list_scenarios_and_models(kind: str, names: set[str]) -> None:
    result = run("list", kind)
    assert result.exit_code == 0
    assert all(f"│ {n} " in result.stdout for n in names)


def test_show_strategy_prints_hyperparameters() -> None:
    result = run("show", "strategy", "ewc")
    assert result.exit_code == 0
    line = next(ln for ln in result.stdout.splitlines() if "│ mode" in ln)
    assert "'separate' | 'online'" in line and "Kirkpatrick" in line
    lam = next(ln for ln in result.stdout.splitlines() if "│ lambda" in ln)
    assert "float" in lam and "10.0" in lam


def test_show_scenario_source_options() -> None:
    result = run("show", "scenario", "gaussian")
    assert result.exit_code == 0
    assert "n_classes" in result.stdout and "separation" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (("show", "strategy", "nope"), "unknown strategy 'nope'"),
        (("list", "widgets"), "unknown kind 'widgets'"),
        (("show", "widget", "x"), "unknown kind 'widget'"),
    ],
)
def test_bad_names_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr
