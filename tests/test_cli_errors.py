"""Bad input through the real CLI: one clear message naming file and field, exit 2, no run."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.spec import SpecError, parse_experiment

GOOD = """\
name: t
seeds: 2
scenario:
  source: digits
  n_experiences: 5
training:
  epochs: 1
strategies:
  - naive
  - l2: {lambda: 1.0}
"""

CASES = {
    "malformed yaml": ("strategies: [naive\nseeds: 2\n", r"invalid YAML", None),
    "unknown strategy": (
        GOOD.replace("- naive", "- naiv"),
        r"strategies\[0\]: unknown strategy 'naiv' \(did you mean 'naive'\?\); known: .*ewc.*naive",
        9,
    ),
    "unknown scenario source": (
        GOOD.replace("source: digits", "source: digitz"),
        r"scenario.source: .*digitz",
        4,
    ),
    "missing field": (
        GOOD.replace("strategies:\n  - naive\n  - l2: {lambda: 1.0}\n", ""),
        r"strategies: Field required",
        None,
    ),
    "wrong type": (
        GOOD.replace("epochs: 1", "epochs: many"),
        r":7: training.epochs: .*integer.*'many'",
        7,
    ),
    "negative lambda": (
        GOOD.replace("lambda: 1.0", "lambda: -1"),
        r":10: strategies\[1\].l2.lambda: .*greater than or equal to 0",
        10,
    ),
    "zero experiences": (
        GOOD.replace("n_experiences: 5", "n_experiences: 0"),
        r":5: scenario.n_experiences: .*greater than or equal to 1",
        5,
    ),
    "more experiences than classes": (
        GOOD.replace("n_experiences: 5", "n_experiences: 11"),
        r":5: scenario.n_experiences: .*10 classes, cannot make 11 experiences",
        5,
    ),
    "unknown hyperparameter": (
        GOOD.replace("lambda: 1.0", "lamda: 1.0"),
        r"strategies\[1\].l2.lamda: unknown field",
        10,
    ),
    "unknown top-level field": (GOOD + "epochs: 3\n", r":11: epochs: unknown field", 11),
    "not a mapping": ("- naive\n", r"must be a YAML mapping", 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_clear_message(case: str, in_tmp: Path) -> None:
    text, pattern, line = CASES[case]
    path = in_tmp / "exp.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr
    assert "Traceback" not in result.output
    import re

    assert re.search(pattern, result.stderr.replace("\n", " ")), result.stderr
    assert not (in_tmp / "mlflow.db").exists()  # nothing logged, no run left behind
    assert not (in_tmp / ".lifelong").exists()  # no Ray run was started
    if line is not None:
        with pytest.raises(SpecError) as info:
            parse_experiment(text, file="x.yaml")
        assert any(ln == line for _, ln, _ in info.value.problems)


def test_missing_file_exits_2(in_tmp: Path) -> None:
    result = CliRunner().invoke(app, ["run", "nope.yaml"])
    assert result.exit_code == 2
    assert "nope.yaml" in result.stderr and "cannot read" in result.stderr


def test_good_file_parses_into_trials() -> None:
    exp = parse_experiment(GOOD, file="x.yaml")
    trials = exp.trials()
    assert [t.trial_id for t in trials] == ["naive-seed0", "naive-seed1", "l2-seed0", "l2-seed1"]
    assert trials[2].strategies[0].params["lambda"] == 1.0


def test_same_strategy_twice_gets_distinct_labels() -> None:
    text = GOOD.replace("  - naive\n", "  - l2: {lambda: 0.1}\n")
    exp = parse_experiment(text, file="x.yaml")
    assert exp.labels() == ["l2(lambda=0.1)", "l2"]


def test_composition_label() -> None:
    text = GOOD.replace("  - naive\n", "  - [l2, {ewc: {lambda: 5}}]\n")
    assert parse_experiment(text).labels()[0] == "l2+ewc"
