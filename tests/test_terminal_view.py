"""The terminal view: stages and bars that move, results kept on screen, tables that fit."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from lifelong.cluster.progress import SweepProgress, stage
from lifelong.platform.summary import TrialRecord, compare_rows, summarize
from lifelong.platform.terminal_table import choose_layout, render_table

METRICS = ("acc/avg", "forgetting/avg", "bwt", "fwt", "plasticity/avg")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def terminal(width: int = 120) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=width, color_system=None), buf


def plain(buf: io.StringIO) -> str:
    return ANSI.sub("", buf.getvalue())


def test_a_stage_ticks_on_a_terminal_and_is_one_line_in_a_log() -> None:
    console, buf = terminal()
    with stage(console, "starting Ray"):
        time.sleep(1.3)  # the spinner's clock passes a second while the block runs
    text = plain(buf)
    assert "starting Ray 0:00:01" in text  # the live clock, redrawn while waiting
    assert re.search(r"lifelong: starting Ray: done in 1\.\d s", text)

    log = Console(file=io.StringIO(), force_terminal=False, width=120)
    with stage(log, "starting Ray"):
        pass
    lines = log.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("lifelong: starting Ray: done in")

    quiet = Console(file=io.StringIO(), force_terminal=False)
    with stage(quiet, "reading exp.yaml", log=False):
        pass
    assert quiet.file.getvalue() == ""  # type: ignore[attr-defined]


def test_a_stage_that_fails_leaves_only_the_error() -> None:
    console, buf = terminal()
    with pytest.raises(ValueError), stage(console, "reading exp.yaml", log=False):
        raise ValueError("bad file")
    assert "done in" not in plain(buf)


def test_the_sweep_bar_counts_trial_experiences_and_ended_trials_stay_on_screen() -> None:
    console, buf = terminal()
    progress = SweepProgress(["naive-seed0", "ewc-seed0", "l2-seed0"], console, n_experiences=5)
    with progress:
        progress.started("naive-seed0")
        progress.started("ewc-seed0")
        for step in range(5):
            progress.result("naive-seed0", step, 5)
        progress.result("ewc-seed0", 0, 5)
        assert progress._completed() == 6 and progress._total() == 15
        bars = {t.description.strip(): t for t in progress._view.tasks}  # type: ignore[union-attr]
        assert bars["ewc-seed0"].completed == 1 and bars["ewc-seed0"].total == 5
        progress.finished("naive-seed0", {"acc/avg": 0.5})
        progress.failed("ewc-seed0", "ValueError: boom")
        assert progress._completed() == 10  # an ended trial counts whole
        assert "naive-seed0" not in {t.description.strip() for t in progress._view.tasks}  # type: ignore[union-attr]
    text = plain(buf)
    assert "✓ naive-seed0: finished, acc/avg 0.500" in text
    assert "✗ ewc-seed0: FAILED: ValueError: boom" in text
    assert "sweep: 2/3 trials, 0 running, 1 failed" in text
    assert "10/15" in text  # the sweep bar's count of trial-experiences


def test_off_a_terminal_each_event_is_a_line() -> None:
    log = Console(file=io.StringIO(), force_terminal=False, width=200)
    progress = SweepProgress(["a", "b"], log, n_experiences=2)
    with progress:
        progress.started("a")
        progress.result("a", 1, 2)
        progress.finished("a", {"acc/avg": 0.25})
    lines = log.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[-1].startswith("trials: 1/2 done, 0 running, 0 failed [")
    assert lines[-1].endswith("a: finished, acc/avg 0.250")


def _comparison(labels: list[str]):
    records = [
        TrialRecord(
            label,
            seed,
            "FINISHED",
            {m: (-1 if m == "bwt" else 1) * (0.1 * k + 0.01 * seed + 0.05) for m in METRICS},
        )
        for k, label in enumerate(labels)
        for seed in range(3)
    ]
    return compare_rows(summarize(records, list(METRICS)), "acc/avg", columns=list(METRICS))


@pytest.mark.parametrize(("width", "layout"), [(120, "wide"), (80, "narrow"), (50, "vertical")])
def test_the_final_table_fits_the_terminal(width: int, layout: str) -> None:
    comparison = _comparison(["naive", "ewc", "center_loss"])
    assert choose_layout(comparison, width) == layout
    console, buf = terminal(width)
    console.print(render_table(comparison, "quickstart: final metrics", width))
    text = plain(buf)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text  # no header or label cut short
    for label in ("naive", "ewc", "center_loss"):
        assert re.search(rf"(^|\s){label}(\s|$)", text, re.M), label
    if layout == "wide":
        assert "0.260 ± 0.010 ★" in text and "forgetting/avg" in text
    if layout == "narrow":
        assert "0.260 ★" in text and "±" not in text.split("Ranked by")[0]
        assert "forg = forgetting/avg" in " ".join(text.split())
    if layout == "vertical":
        assert "   acc/avg: 0.260 ± 0.010 ★" in text
