"""``lifelong sweeps FILE``: the sweeps of an experiment file, and what became of them.

A sweep whose driver was killed (SIGKILL, a lost terminal) leaves its state
``running`` and its unfinished MLflow runs RUNNING although nothing runs them;
this table shows such a sweep as ``stale`` and those runs as stale, with the
command that continues it.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from mlflow.tracking import MlflowClient
from rich.table import Table

from .state import SweepState, sweep_states


def child_statuses(state: SweepState) -> Counter[str]:
    """How many of the sweep's MLflow child runs are in each status (empty if unreachable)."""
    try:
        client = MlflowClient(tracking_uri=state.tracking_uri)
        parent = client.get_run(state.parent_run_id)
        runs = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{state.parent_run_id}'",
            max_results=50000,
        )
    except Exception:  # noqa: BLE001 - a store that is gone shows as "?"
        return Counter()
    return Counter(r.info.status for r in runs)


def sweeps_table(folder: Path, experiment_file: Path) -> Table:
    """One row per sweep of ``experiment_file``: id, condition, driver, MLflow runs, next step."""
    table = Table(
        "sweep",
        "state",
        "started",
        "driver",
        "MLflow child runs",
        "next",
        box=None,
        header_style="bold",
    )
    for state in sweep_states(folder).values():
        condition = state.condition
        counts = child_statuses(state)
        runs = (
            ", ".join(
                f"{n} {status}"
                + (" (stale: driver gone)" if status == "RUNNING" and condition == "stale" else "")
                for status, n in sorted(counts.items())
            )
            or "?"
        )
        nxt = (
            f"lifelong run {experiment_file} --resume --sweep {state.sweep_id}"
            if condition in ("stale", "interrupted") and state.sweep_id
            else ""
        )
        driver = f"pid {state.driver_pid}" + ("" if condition == "running" else " (gone)")
        table.add_row(
            state.sweep_id or "(unnamed)",
            condition,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.started_at)),
            driver if state.driver_pid else "",
            runs,
            nxt,
        )
    return table
