"""The CLI's small manners: did-you-mean hints, shell completion, honest help and addresses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from lifelong.cluster.jobs import _where
from lifelong.platform.cli import app
from lifelong.platform.suggest import did_you_mean

LIFELONG = str(Path(sys.executable).with_name("lifelong"))
QUICKSTART = (Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml").read_text()


TYPOS = {  # what is right in the quickstart -> a typo or another framework's name, the hint
    "  - naive": ("  - nave", "strategies[0]: unknown strategy 'nave'", "naive"),
    "  lr: 0.05": ("  learning_rate: 0.05", "training.learning_rate: unknown field", "lr"),
    "  epochs: 5": ("  num_train_epochs: 5", "training.num_train_epochs: unknown field", "epochs"),
    "lambda: 1.0": ("lamda: 1.0", "strategies[1].l2.lamda: unknown field", "lambda"),
    "  cpu: 1": ("  num_gpus: 1", "resources.num_gpus: unknown field", "gpu"),
    "source: digits": ("source: digts", "unknown scenario source 'digts'", "digits"),
    "  n_experiences: 5": ("  n_tasks: 5", "scenario.n_tasks: unknown field", "n_experiences"),
}


@pytest.mark.parametrize("right", list(TYPOS))
def test_a_misspelled_or_foreign_name_exits_2_with_a_did_you_mean(
    right: str, tmp_path: Path
) -> None:
    wrong, where, hint = TYPOS[right]
    assert right in QUICKSTART
    path = tmp_path / "exp.yaml"
    path.write_text(QUICKSTART.replace(right, wrong, 1))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{where} (did you mean {hint!r}?)" in " ".join(result.output.split())
    assert not (tmp_path / "mlflow.db").exists()


def test_a_name_with_nothing_close_gets_no_hint() -> None:
    assert did_you_mean("zzzz", ["naive", "ewc"]) == ""
    assert did_you_mean(3, ["naive"]) == ""
    assert did_you_mean("EWC", ["naive", "ewc"]) == " (did you mean 'ewc'?)"


def test_show_of_a_misspelled_strategy_suggests_the_name() -> None:
    result = CliRunner().invoke(app, ["show", "strategy", "nave"])
    assert result.exit_code == 2
    assert "unknown strategy 'nave' (did you mean 'naive'?)" in result.output


def test_compare_of_a_store_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["compare", "nonexistent", "--tracking-uri", uri])
    assert result.exit_code == 2, result.output
    assert f"no tracking store at {tmp_path / 'mlflow.db'}" in " ".join(result.output.split())
    assert list(tmp_path.iterdir()) == []


def test_the_job_server_address_is_named_as_it_was_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    assert "$RAY_ADDRESS is not set" in _where(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")
    assert _where(None) == "at http://127.0.0.1:9 ($RAY_ADDRESS)"
    assert _where("http://h:8265") == "at http://h:8265"


def test_status_names_the_address_it_could_not_reach() -> None:
    env = {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:9"}
    result = CliRunner().invoke(app, ["status"], env=env)
    assert result.exit_code == 2
    assert "at http://127.0.0.1:9 ($RAY_ADDRESS)" in " ".join(result.output.split())
    assert "$RAY_ADDRESS:" not in result.output


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_every_help_text_is_whole_and_free_of_rst_markup() -> None:
    commands = sorted(get_command(app).commands)  # type: ignore[attr-defined]
    assert {"run", "compare", "submit", "status", "logs", "ui"} <= set(commands)
    for name in ["", *commands]:
        text = _help(*([name] if name else []))
        assert "``" not in text, name
    assert "'strategies=[naive,ewc]'" in _help("run")  # not eaten as console markup
    for command in ("run", "submit", "sweeps"):
        assert "default the file's name or its stem" in _help(command), command


def test_shell_completion_is_offered_and_completes_names() -> None:
    shown = subprocess.run(
        [LIFELONG, "--show-completion", "bash"], capture_output=True, text=True, check=True
    )
    assert "_lifelong_completion" in shown.stdout

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "_LIFELONG_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        done = subprocess.run([LIFELONG], env=env, capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert complete("lifelong show strategy e") == ["ewc"]
    assert complete("lifelong list pr") == ["presets"]
    assert "compare" in complete("lifelong co")
