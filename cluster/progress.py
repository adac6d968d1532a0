"""Live progress of a sweep: trials done, running and failed, and each trial's experience.

On a terminal this is a live table (rich); elsewhere (CI logs, pipes) it prints
one line per event so a log still shows the sweep advancing.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


class SweepProgress:
    """Tracks and shows the state of every trial of a sweep."""

    def __init__(self, trial_ids: list[str], console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.state: dict[str, str] = dict.fromkeys(trial_ids, "pending")
        self.experience: dict[str, str] = dict.fromkeys(trial_ids, "")
        self.t0 = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> SweepProgress:
        if self.console.is_terminal:
            self._live = Live(
                self.render(), console=self.console, refresh_per_second=4, transient=False
            )
            self._live.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(et, ev, tb)

    def counts(self) -> dict[str, int]:
        """Number of trials per state (pending, running, finished, failed)."""
        out = dict.fromkeys(("pending", "running", "finished", "failed", "stopped"), 0)
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

    def render(self) -> Group:
        """The live view: a summary line and a row per running trial."""
        running = [
            (t, self.experience.get(t, "")) for t, st in self.state.items() if st == "running"
        ]
        if not running:
            return Group(Text(self.summary_line(), style="bold"))
        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("trial")
        table.add_column("experience")
        for tid, exp in running:
            table.add_row(Text(tid), exp or "starting")  # Text: "[...]" in a label is no markup
        return Group(Text(self.summary_line(), style="bold"), table)

    def _event(self, trial_id: str, message: str) -> None:
        if self._live is not None:
            self._live.update(self.render())
        else:
            self.console.print(
                Text(f"{self.summary_line()}  {trial_id}: {message}"),
                highlight=False,
                soft_wrap=True,
            )

    def started(self, trial_id: str) -> None:
        """A trial started (or restarted)."""
        self.state[trial_id] = "running"
        self._event(trial_id, "started")

    def result(self, trial_id: str, step: int, total: int) -> None:
        """A trial finished experience ``step`` of ``total``."""
        self.experience[trial_id] = f"{step + 1}/{total}"
        self._event(trial_id, f"experience {step + 1}/{total} done")

    def finished(self, trial_id: str, final: dict[str, float]) -> None:
        """A trial finished; ``final`` holds its final metrics."""
        self.state[trial_id] = "finished"
        self._event(trial_id, f"finished, acc/avg {final.get('acc/avg', float('nan')):.3f}")

    def stopped(self, trial_id: str, reason: str) -> None:
        """A scheduler (ASHA, median stopping) or the time budget stopped a trial early."""
        self.state[trial_id] = "stopped"
        self._event(trial_id, f"stopped early: {reason}")

    def restarted(self, trial_id: str, reason: str, n: int, limit: int) -> None:
        """A trial failed and is restarted from its last checkpoint (``max_failures``)."""
        self.state[trial_id] = "running"
        self._event(trial_id, f"restarted ({n} of at most {limit}) after: {reason}")

    def failed(self, trial_id: str, reason: str) -> None:
        """A trial failed with ``reason``."""
        self.state[trial_id] = "failed"
        self._event(trial_id, f"FAILED: {reason}")
