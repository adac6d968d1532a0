"""Command-line overrides (``lifelong run FILE key=value``) and ``lifelong run --dry-run``.

Parsing and the CLI's error and dry-run paths only: no Ray instance, no MLflow run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.overrides import apply_overrides, parse_override
from lifelong.platform.search import Space
from lifelong.platform.spec import Experiment, SpecError, load_experiment, parse_experiment

BASE = """\
name: ov
seeds: 2
scenario:
  source: digits
  n_experiences: 5
training:
  epochs: 1
  lr: 0.01
strategies:
  - naive
  - ewc: {lambda: 1.0}
"""


def parse(*overrides: str, text: str = BASE) -> Experiment:
    return parse_experiment(text, file="exp.yaml", overrides=overrides)


def error_of(*overrides: str, text: str = BASE) -> str:
    with pytest.raises(SpecError) as info:
        parse(*overrides, text=text)
    return str(info.value)


# ----------------------------------------------------------- parse_override
@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("training.lr=0.1", ("training", "lr"), 0.1),
        ("seeds=3", ("seeds",), 3),
        ("strategies.1.ewc.lambda=5", ("strategies", 1, "ewc", "lambda"), 5),
        ("strategies=[naive, ewc]", ("strategies",), ["naive", "ewc"]),
        ("training.lr={grid: [0.01, 0.1]}", ("training", "lr"), {"grid": [0.01, 0.1]}),
        ("training.optimizer=adam", ("training", "optimizer"), "adam"),
        ("model.multi_head=true", ("model", "multi_head"), True),
        ("name=", ("name",), None),
        (" training.lr =0.5", ("training", "lr"), 0.5),
        ("scenario.options.path=a=b", ("scenario", "options", "path"), "a=b"),
        ("name='10'", ("name",), "10"),
    ],
)
def test_parse_override(text: str, path: tuple, value: object) -> None:
    assert parse_override(text) == (path, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training.lr", "an override is KEY=VALUE, e.g. training.lr=0.1"),
        ("=3", "an override is KEY=VALUE, e.g. training.lr=0.1"),
        (" =3", "an override is KEY=VALUE, e.g. training.lr=0.1"),
        ("training..lr=3", "empty part in the key 'training..lr'"),
        ("training.=3", "empty part in the key 'training.'"),
    ],
)
def test_parse_override_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_override(text)
    assert str(info.value) == message


def test_parse_override_rejects_invalid_yaml() -> None:
    with pytest.raises(ValueError) as info:
        parse_override("training.lr=[0.1, 0.2")
    assert str(info.value).startswith("the value is not valid YAML: ")
    assert "\n" not in str(info.value)


# ----------------------------------------------------------- apply_overrides
def test_apply_overrides_copies_and_reports() -> None:
    raw = {"training": {"lr": 0.01}, "strategies": ["naive", {"ewc": {"lambda": 1.0}}]}
    snapshot = yaml.safe_load(yaml.safe_dump(raw))
    out, applied, problems = apply_overrides(
        raw, ["training.lr=0.5", "strategies.1.ewc.lambda=3", "model.hidden=[8]"]
    )
    assert out == {
        "training": {"lr": 0.5},
        "strategies": ["naive", {"ewc": {"lambda": 3}}],
        "model": {"hidden": [8]},
    }
    assert raw == snapshot  # the input is not mutated
    assert applied == [
        (("training", "lr"), "training.lr=0.5"),
        (("strategies", 1, "ewc", "lambda"), "strategies.1.ewc.lambda=3"),
        (("model", "hidden"), "model.hidden=[8]"),
    ]
    assert problems == []


def test_apply_overrides_in_order_last_wins() -> None:
    out, applied, _ = apply_overrides({}, ["training.lr=0.1", "training.lr=0.2"])
    assert out == {"training": {"lr": 0.2}}
    assert [t for _, t in applied] == ["training.lr=0.1", "training.lr=0.2"]


def test_apply_overrides_collects_every_problem() -> None:
    raw = {"training": {"lr": 0.01}, "strategies": ["naive"]}
    out, applied, problems = apply_overrides(
        raw, ["strategies.3=ewc", "training.lr.x=1", "nothing", "training.epochs=2"]
    )
    assert out == {"training": {"lr": 0.01, "epochs": 2}, "strategies": ["naive"]}
    assert applied == [(("training", "epochs"), "training.epochs=2")]
    assert problems == [
        ((), "strategies.3=ewc", "3 is no index of a list of 1 entries"),
        ((), "training.lr.x=1", "cannot set 'x' inside the value 0.01"),
        ((), "nothing", "an override is KEY=VALUE, e.g. training.lr=0.1"),
    ]


def test_apply_overrides_digit_key_of_a_mapping_is_text() -> None:
    out, _, problems = apply_overrides({"scenario": {"options": {}}}, ["scenario.options.7=x"])
    assert problems == []
    assert out == {"scenario": {"options": {"7": "x"}}}


# ---------------------------------------------------- overrides in the experiment
def test_override_changes_a_value() -> None:
    assert parse().spec.training.lr == 0.01
    exp = parse("training.lr=0.1")
    assert exp.spec.training.lr == 0.1
    assert exp.raw["training"] == {"epochs": 1, "lr": 0.1}
    assert exp.overrides == ("training.lr=0.1",)
    assert {t.training["lr"] for t in exp.trials()} == {0.1}


def test_override_adds_a_missing_section() -> None:
    exp = parse("training.lr=0.3", text="strategies: [naive]\n")
    assert exp.spec.training.lr == 0.3
    assert exp.spec.training.epochs == 1


def test_override_replaces_the_strategy_list() -> None:
    exp = parse("strategies=[naive, l2]")
    assert exp.labels() == ["naive", "l2"]
    assert exp.raw["strategies"] == ["naive", "l2"]
    assert [t.trial_id for t in exp.trials()] == [
        "naive-seed0",
        "naive-seed1",
        "l2-seed0",
        "l2-seed1",
    ]


def test_override_indexes_a_list() -> None:
    exp = parse("strategies.1.ewc.lambda=5")
    ewc = exp.groups[1][0]
    assert ewc.name == "ewc"
    assert ewc.params["lambda"] == 5.0
    assert type(ewc.params["lambda"]) is float
    assert exp.groups[0][0].name == "naive"


def test_override_seeds_and_model() -> None:
    exp = parse("seeds=[4, 9]", "model.hidden=[16]")
    assert exp.spec.seeds == [4, 9]
    assert exp.spec.model.hidden == [16]
    assert [t.seed for t in exp.trials()] == [4, 9, 4, 9]


def test_override_adds_a_search_space() -> None:
    exp = parse("training.lr={grid: [0.01, 0.1]}")
    assert exp.spaces == {"training.lr": Space("grid", (0.01, 0.1))}
    assert [t.trial_id for t in exp.trials()] == [
        "naive [training.lr=0.01]-seed0",
        "naive [training.lr=0.01]-seed1",
        "naive [training.lr=0.1]-seed0",
        "naive [training.lr=0.1]-seed1",
        "ewc [training.lr=0.01]-seed0",
        "ewc [training.lr=0.01]-seed1",
        "ewc [training.lr=0.1]-seed0",
        "ewc [training.lr=0.1]-seed1",
    ]


def test_override_adds_a_strategy_search_space() -> None:
    exp = parse("strategies.1.ewc.lambda={grid: [1, 5]}", "seeds=1")
    assert [t.label for t in exp.trials()] == [
        "naive",
        "ewc [ewc.lambda=1.0]",
        "ewc [ewc.lambda=5.0]",
    ]


def test_override_replaces_a_search_space_with_a_value() -> None:
    text = BASE.replace("lr: 0.01", "lr: {grid: [0.01, 0.1]}")
    assert len(parse(text=text).trials()) == 8
    exp = parse("training.lr=0.2", text=text)
    assert exp.spaces == {}
    assert [t.label for t in exp.trials()] == ["naive", "naive", "ewc", "ewc"]


# --------------------------------------------------------------- errors
def test_value_that_is_not_yaml_is_an_error() -> None:
    msg = error_of("training.lr=[0.1")
    assert msg.startswith("command line (training.lr=[0.1): the value is not valid YAML: ")
    assert "\n" not in msg


def test_missing_equals_is_an_error() -> None:
    assert error_of("training.lr") == (
        "command line (training.lr): an override is KEY=VALUE, e.g. training.lr=0.1"
    )


def test_index_out_of_range_is_an_error() -> None:
    assert error_of("strategies.2.ewc.lambda=5") == (
        "command line (strategies.2.ewc.lambda=5): 2 is no index of a list of 2 entries"
    )


def test_setting_inside_a_scalar_is_an_error() -> None:
    assert error_of("training.lr.max=1") == (
        "command line (training.lr.max=1): cannot set 'max' inside the value 0.01"
    )


def test_invalid_value_is_located_at_the_override() -> None:
    msg = error_of("training.lr=abc")
    assert msg.startswith("command line (training.lr=abc): training.lr: ")
    assert "valid number" in msg
    assert "'abc'" in msg
    assert "exp.yaml" not in msg


def test_unknown_field_is_located_at_the_override() -> None:
    assert (
        error_of("training.lrr=0.1")
        == "command line (training.lrr=0.1): training.lrr: unknown field (did you mean 'lr'?)"
    )


def test_invalid_strategy_list_is_located_at_the_override() -> None:
    msg = error_of("strategies=[naiv]")
    assert msg.startswith(
        "command line (strategies=[naiv]): strategies[0]: unknown strategy 'naiv'"
    )


def test_invalid_candidate_of_an_overridden_space_is_located_at_the_override() -> None:
    assert error_of("training.lr={grid: [0.1, -1]}") == (
        "command line (training.lr={grid: [0.1, -1]}): training.lr.grid[1]: "
        "Input should be greater than 0 (got -1)"
    )
    assert error_of("strategies.1.ewc.lambda={uniform: [5, 1]}") == (
        "command line (strategies.1.ewc.lambda={uniform: [5, 1]}): "
        "strategies[1].ewc.lambda.uniform: uniform needs a < b, got [5, 1]"
    )


def test_num_samples_override_without_random_space_is_located_at_the_override() -> None:
    msg = error_of("num_samples=2")
    assert msg.startswith("command line (num_samples=2): num_samples: repeats random draws")


def test_file_problems_keep_their_line_beside_overrides() -> None:
    text = BASE.replace("epochs: 1", "epochs: 0")
    msg = error_of("training.lr=abc", text=text)
    assert msg.splitlines() == [
        "exp.yaml:7: training.epochs: Input should be greater than or equal to 1 (got 0)",
        "command line (training.lr=abc): training.lr: Input should be a valid number, "
        "unable to parse string as a number (got 'abc')",
    ]


def test_every_bad_override_is_reported() -> None:
    msg = error_of("training.lr", "strategies.9=x")
    assert msg.splitlines() == [
        "command line (training.lr): an override is KEY=VALUE, e.g. training.lr=0.1",
        "command line (strategies.9=x): 9 is no index of a list of 2 entries",
    ]


def test_override_messages_keep_their_closing_quote() -> None:
    assert error_of("training..lr=3") == (
        "command line (training..lr=3): empty part in the key 'training..lr'"
    )


# --------------------------------------------------------------- digest
def test_overrides_change_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(BASE)
    plain = load_experiment(path)
    lr = load_experiment(path, ["training.lr=0.1"])
    lr_again = load_experiment(path, ["training.lr=0.1"])
    lr2 = load_experiment(path, ["training.lr=0.2"])
    two = load_experiment(path, ["training.lr=0.1", "seeds=1"])
    assert re.fullmatch(r"[0-9a-f]{64}", plain.digest)
    assert lr.digest == lr_again.digest
    assert len({plain.digest, lr.digest, lr2.digest, two.digest}) == 4
    assert load_experiment(path).digest == plain.digest
    # the file's text is part of it too
    before, before_lr = plain.digest, lr.digest  # (read now: digest hashes the file as it is)
    path.write_text(BASE.replace("lr: 0.01", "lr: 0.02"))
    assert load_experiment(path).digest != before
    assert load_experiment(path, ["training.lr=0.1"]).digest != before_lr


def test_digest_without_a_file_is_of_the_text_and_the_overrides() -> None:
    assert parse().digest == parse().digest
    assert parse().digest != parse_experiment("strategies: [naive]\n").digest
    assert parse("training.lr=0.1").digest == parse("training.lr=0.1").digest
    assert parse("training.lr=0.1").digest != parse("training.lr=0.2").digest


def test_digest_is_of_the_text_that_was_parsed(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(BASE)
    exp = load_experiment(path)
    before = exp.digest
    path.write_text(BASE.replace("lr: 0.01", "lr: 0.02"))
    assert exp.digest == before


def test_override_order_changes_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(BASE)
    a = load_experiment(path, ["training.lr=0.1", "seeds=1"])
    b = load_experiment(path, ["seeds=1", "training.lr=0.1"])
    assert a.spec == b.spec
    assert a.digest != b.digest


# ------------------------------------------------------------------ the CLI
def write(in_tmp: Path, text: str = BASE) -> Path:
    path = in_tmp / "exp.yaml"
    path.write_text(text)
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["run", *args])


def assert_nothing_started(in_tmp: Path) -> None:
    assert not (in_tmp / "mlflow.db").exists()
    assert not (in_tmp / ".lifelong").exists()
    assert not (in_tmp / "mlruns").exists()
    assert sorted(p.name for p in in_tmp.iterdir()) == ["exp.yaml"]


def test_cli_bad_override_exits_2_with_the_message(in_tmp: Path) -> None:
    path = write(in_tmp)
    result = invoke(str(path), "training.lr=abc")
    assert result.exit_code == 2, result.output
    assert "command line (training.lr=abc): training.lr: Input should be a valid number" in (
        result.stderr
    )
    assert result.stdout == ""
    assert "Traceback" not in result.output
    assert_nothing_started(in_tmp)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.lr", "command line (training.lr): an override is KEY=VALUE"),
        ("strategies.5.ewc.lambda=1", "5 is no index of a list of 2 entries"),
        ("training.lr=[1", "command line (training.lr=[1): the value is not valid YAML"),
        ("training.lr={grid: [0.1, -1]}", "training.lr.grid[1]: Input should be greater than 0"),
    ],
)
def test_cli_override_errors_exit_2(in_tmp: Path, override: str, message: str) -> None:
    result = invoke(str(write(in_tmp)), override, "--dry-run")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert_nothing_started(in_tmp)


def test_cli_bad_space_in_file_exits_2_with_file_and_line(in_tmp: Path) -> None:
    path = write(in_tmp, BASE.replace("lr: 0.01", "lr: {uniform: [0.5, 0.1]}"))
    result = invoke(str(path), "--dry-run")
    assert result.exit_code == 2, result.output
    assert f"{path}:8: training.lr.uniform: uniform needs a < b, got [0.5, 0.1]" in result.stderr


DRY = BASE.replace("lr: 0.01", "lr: {grid: [0.01, 0.1]}").replace(
    "ewc: {lambda: 1.0}", "ewc: {lambda: {grid: [1, 10]}}"
)


def dry_run_rows(output: str) -> list[list[str]]:
    """The body rows of the trials table: the cells of each line that starts with a number."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 4 and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_cli_dry_run_prints_the_experiment_and_its_trials(in_tmp: Path) -> None:
    path = write(in_tmp, DRY)
    result = invoke(str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    trials = load_experiment(path).trials()
    assert len(trials) == 12
    # the resolved experiment: YAML, defaults filled in, spaces shown as written
    resolved = yaml.safe_load(out[: out.index("ov: trials")])
    assert resolved["name"] == "ov"
    assert resolved["seeds"] == [0, 1]
    assert resolved["training"]["lr"] == {"grid": [0.01, 0.1]}
    assert resolved["training"]["batch_size"] == 32
    assert resolved["training"]["epochs"] == 1
    assert resolved["model"] == {"name": "mlp", "hidden": [256, 256], "multi_head": None}
    assert resolved["strategies"] == ["naive", {"ewc": {"lambda": {"grid": [1, 10]}}}]
    assert resolved["num_samples"] == 1
    # one row per trial, numbered, with its seed and varied values
    rows = dry_run_rows(out)
    assert [r[0] for r in rows] == [str(i) for i in range(1, 13)]
    assert [r[2] for r in rows] == [str(t.seed) for t in trials]
    assert rows[0][3] == "training.lr=0.01"
    assert rows[4][3] == "ewc.lambda=1.0, training.lr=0.01"  # as labels show them
    shown = [", ".join(f"{k.removeprefix('strategy.')}={v}" for k, v in t.varied) for t in trials]
    assert [r[3] for r in rows] == shown
    assert "12 trials: 6 configurations × 2 seeds" in out
    assert "Traceback" not in result.output
    assert_nothing_started(in_tmp)


def test_cli_dry_run_table_shows_each_trial_id(in_tmp: Path) -> None:
    path = write(in_tmp, DRY)
    result = invoke(str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    ids = [t.trial_id for t in load_experiment(path).trials()]
    assert [r[1] for r in dry_run_rows(result.stdout)] == ids


def test_cli_dry_run_plain_experiment(in_tmp: Path) -> None:
    path = write(in_tmp)
    result = invoke(str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    rows = dry_run_rows(result.stdout)
    assert [r[1] for r in rows] == ["naive-seed0", "naive-seed1", "ewc-seed0", "ewc-seed1"]
    assert [r[3] for r in rows] == ["—"] * 4
    assert "4 trials: 2 configurations × 2 seeds" in result.stdout
    resolved = yaml.safe_load(result.stdout[: result.stdout.index("ov: trials")])
    assert resolved["training"]["lr"] == 0.01
    assert resolved["strategies"] == ["naive", {"ewc": {"lambda": 1.0}}]
    assert_nothing_started(in_tmp)


def test_cli_dry_run_with_overrides(in_tmp: Path) -> None:
    path = write(in_tmp)
    result = invoke(str(path), "training.lr={grid: [0.01, 0.1]}", "seeds=3", "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    resolved = yaml.safe_load(out[: out.index("ov: trials")])
    assert resolved["training"]["lr"] == {"grid": [0.01, 0.1]}
    assert resolved["seeds"] == [0, 1, 2]
    rows = dry_run_rows(out)
    assert len(rows) == 12
    assert [r[2] for r in rows] == ["0", "1", "2"] * 4
    assert "12 trials: 4 configurations × 3 seeds" in out
    assert_nothing_started(in_tmp)


def test_cli_dry_run_strategy_list_override(in_tmp: Path) -> None:
    path = write(in_tmp)
    result = invoke(str(path), "strategies=[l2, naive]", "--dry-run")
    assert result.exit_code == 0, result.output
    rows = dry_run_rows(result.stdout)
    assert [r[1] for r in rows] == ["l2-seed0", "l2-seed1", "naive-seed0", "naive-seed1"]
    resolved = yaml.safe_load(result.stdout[: result.stdout.index("ov: trials")])
    assert resolved["strategies"] == ["l2", "naive"]
    assert_nothing_started(in_tmp)


def test_cli_dry_run_random_space_is_shown_as_written(in_tmp: Path) -> None:
    text = BASE.replace("lr: 0.01", "lr: {loguniform: [0.001, 0.1]}").replace(
        "seeds: 2", "seeds: 1\nnum_samples: 3"
    )
    path = write(in_tmp, text)
    result = invoke(str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout[: result.stdout.index("ov: trials")])
    assert resolved["training"]["lr"] == {"loguniform": [0.001, 0.1]}
    assert resolved["num_samples"] == 3
    rows = dry_run_rows(result.stdout)
    assert len(rows) == 6
    trials = load_experiment(path).trials()
    assert [r[3] for r in rows] == [f"training.lr={dict(t.varied)['training.lr']}" for t in trials]
    assert "6 trials: 6 configurations × 1 seeds" in result.stdout
