"""``lifelong run --dry-run``: the resolved experiment and its trials, nothing started."""

from __future__ import annotations

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lifelong.platform.expand import resolved_sections, shown_name
from lifelong.platform.search import value_text
from lifelong.platform.spec import Experiment


def resolved_yaml(experiment: Experiment) -> str:
    """The experiment as it will run (defaults filled, overrides applied), spaces as written."""
    data = experiment.spec.model_dump(mode="json")
    data.update(resolved_sections(experiment))
    data["strategies"] = experiment.raw.get("strategies", data["strategies"])
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def trials_table(experiment: Experiment) -> Table:
    """One row per trial: its id (the MLflow run name), strategies, seed, varied values."""
    table = Table(title=f"{experiment.name}: trials", title_justify="left")
    for column in ("#", "trial", "seed", "varied values"):
        table.add_column(column, justify="right" if column in ("#", "seed") else "left")
    for i, t in enumerate(experiment.trials(), 1):
        varied = ", ".join(f"{shown_name(k)}={value_text(v)}" for k, v in t.varied) or "—"
        table.add_row(str(i), Text(t.trial_id), str(t.seed), Text(varied))  # "[...]": no markup
    return table


def print_dry_run(experiment: Experiment, console: Console) -> None:
    """Print :func:`resolved_yaml`, then :func:`trials_table` and a count line."""
    console.print(resolved_yaml(experiment), highlight=False, markup=False, soft_wrap=True)
    console.print(trials_table(experiment))
    trials = experiment.trials()
    configs = len({t.label for t in trials})
    console.print(
        f"{len(trials)} trials: {configs} configurations × {len(experiment.spec.seeds)} seeds"
        " (dry run: nothing was started)",
        highlight=False,
    )
