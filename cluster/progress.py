"""Live progress of a sweep: trials done, running and failed, and each trial's experience.

On a terminal this is a :class:`rich.progress.Progress` view that moves from the
first second: a bar for the whole sweep (trial-experiences done, elapsed time,
ETA) and one per running trial (its experience, ETA); each ended trial leaves a
line above the bars with its ``acc/avg`` or its error, so results stay on
screen. Before the sweep, :func:`stage` shows what the driver is doing
("starting Ray") with a ticking clock. Elsewhere (CI logs, pipes) it prints one
line per event, so a log still shows the sweep advancing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

ENDED = ("finished", "failed", "stopped")


@contextmanager
def stage(console: Console | None, text: str, *, log: bool = True) -> Iterator[None]:
    """Show ``text`` while the block runs: a spinner and a ticking clock on a terminal.

    ``log``: once the block is done, one line with the seconds it took (on a
    terminal and in a log). Nothing is printed before the block, so an error it
    raises is the first line the user reads.
    """
    if console is None or not (log or console.is_terminal):
        yield
        return
    t0 = time.monotonic()
    if console.is_terminal:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as view:
            view.add_task(text, total=None)
            yield
    else:
        yield
    if log:
        seconds = time.monotonic() - t0
        console.print(f"lifelong: {text}: done in {seconds:.1f} s", highlight=False, markup=False)


class SweepProgress:
    """Tracks and shows the state of every trial of a sweep."""

    def __init__(
        self,
        trial_ids: list[str],
        console: Console | None = None,
        n_experiences: int = 1,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.state: dict[str, str] = dict.fromkeys(trial_ids, "pending")
        self.experience: dict[str, str] = dict.fromkeys(trial_ids, "")
        self.n_experiences = dict.fromkeys(trial_ids, max(1, n_experiences))
        self.done_experiences = dict.fromkeys(trial_ids, 0)
        self.t0 = time.monotonic()
        self._view: Progress | None = None
        self._sweep: TaskID | None = None
        self._bars: dict[str, TaskID] = {}

    # ------------------------------------------------------------------ view
    def __enter__(self) -> SweepProgress:
        if self.console.is_terminal:
            self._view = Progress(
                SpinnerColumn(finished_text=" "),
                TextColumn("{task.description}", markup=False),
                BarColumn(bar_width=None),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                expand=True,
                refresh_per_second=4,
            )
            self._view.__enter__()
            self._sweep = self._view.add_task(self._sweep_text(), total=self._total())
            self._view.update(self._sweep, completed=self._completed())
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._view is not None:
            self._refresh()
            self._view.__exit__(et, ev, tb)
            self._view = None

    def _total(self) -> int:
        return sum(self.n_experiences.values())

    def _completed(self) -> int:
        return sum(
            self.n_experiences[t] if s in ENDED else self.done_experiences[t]
            for t, s in self.state.items()
        )

    def _sweep_text(self) -> str:
        c = self.counts()
        done = c["finished"] + c["failed"] + c["stopped"]
        failed = f", {c['failed']} failed" if c["failed"] else ""
        if not done and not c["running"]:  # Tune and its workers are starting
            return f"sweep: 0/{len(self.state)} trials, Ray Tune starting the first"
        return f"sweep: {done}/{len(self.state)} trials, {c['running']} running{failed}"

    def _refresh(self) -> None:
        assert self._view is not None and self._sweep is not None
        self._view.update(
            self._sweep,
            description=self._sweep_text(),
            total=self._total(),
            completed=self._completed(),
        )

    def counts(self) -> dict[str, int]:
        """Number of trials per state (pending, running, finished, failed, stopped)."""
        out = dict.fromkeys(("pending", "running", *ENDED), 0)
        for s in self.state.values():
            out[s] += 1
        return out

    def summary_line(self) -> str:
        """``trials: 3/9 done, 2 running, 1 failed [12s]``."""
        c = self.counts()
        done = c["finished"] + c["failed"] + c["stopped"]
        stopped = f", {c['stopped']} stopped early" if c["stopped"] else ""
        return (
            f"trials: {done}/{len(self.state)} done, {c['running']} running, "
            f"{c['failed']} failed{stopped} [{time.monotonic() - self.t0:.0f}s]"
        )

    def _event(self, trial_id: str, message: str, *, ended: bool = False) -> None:
        if self._view is None:
            self.console.print(
                Text(f"{self.summary_line()}  {trial_id}: {message}"),
                highlight=False,
                soft_wrap=True,
            )
            return
        bar = self._bars.get(trial_id)
        if ended:
            if bar is not None:
                self._view.remove_task(self._bars.pop(trial_id))
            mark = {"finished": "✓", "failed": "✗"}.get(self.state[trial_id], "·")
            self._view.console.print(
                Text(f"{mark} {trial_id}: {message}"), highlight=False, soft_wrap=True
            )
        elif self.state[trial_id] == "running":
            if bar is None:
                bar = self._bars[trial_id] = self._view.add_task(
                    f"  {trial_id}", total=self.n_experiences[trial_id]
                )
            self._view.update(
                bar,
                total=self.n_experiences[trial_id],
                completed=self.done_experiences[trial_id],
            )
        self._refresh()

    # ---------------------------------------------------------------- events
    def started(self, trial_id: str) -> None:
        """A trial started (or restarted)."""
        self.state[trial_id] = "running"
        self._event(trial_id, "started")

    def result(self, trial_id: str, step: int, total: int) -> None:
        """A trial finished experience ``step`` of ``total``."""
        self.experience[trial_id] = f"{step + 1}/{total}"
        self.n_experiences[trial_id] = total
        self.done_experiences[trial_id] = step + 1
        self._event(trial_id, f"experience {step + 1}/{total} done")

    def finished(self, trial_id: str, final: dict[str, float]) -> None:
        """A trial finished; ``final`` holds its final metrics."""
        self.state[trial_id] = "finished"
        acc = final.get("acc/avg", float("nan"))
        self._event(trial_id, f"finished, acc/avg {acc:.3f}", ended=True)

    def stopped(self, trial_id: str, reason: str) -> None:
        """A scheduler (ASHA, median stopping) or the time budget stopped a trial early."""
        self.state[trial_id] = "stopped"
        self._event(trial_id, f"stopped early: {reason}", ended=True)

    def restarted(self, trial_id: str, reason: str, n: int, limit: int) -> None:
        """A trial failed and is restarted from its last checkpoint (``max_failures``)."""
        self.state[trial_id] = "running"
        if self._view is not None:
            self._view.console.print(
                Text(f"↻ {trial_id}: restarted ({n} of at most {limit}) after: {reason}"),
                highlight=False,
                soft_wrap=True,
            )
        self._event(trial_id, f"restarted ({n} of at most {limit}) after: {reason}")

    def failed(self, trial_id: str, reason: str) -> None:
        """A trial failed with ``reason``."""
        self.state[trial_id] = "failed"
        self._event(trial_id, f"FAILED: {reason}", ended=True)
