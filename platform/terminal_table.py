"""The comparison as a terminal table that fits the terminal's width.

Three layouts, the first that fits wins (measured with rich, not guessed):

1. ``wide``: one ``mean ± std ★`` column per metric (120 columns hold the five
   default metrics);
2. ``narrow``: the mean and its mark only, short headers (``acc``, ``forg``,
   ``plast``), the std left to ``--format md``/``json`` (80 columns);
3. ``vertical``: a block per strategy, one line per metric (any width).

The p-value column holds the number only; the caption names the test, alpha and
the short headers, as :func:`~lifelong.platform.summary.method_note` says them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from lifelong.platform.summary import (
    Comparison,
    Mark,
    StrategySummary,
    cell_text,
    compare_rows,
    method_note,
    p_text,
    seeds_text,
)

Layout = Literal["wide", "narrow", "vertical"]
SHORT = {"acc/avg": "acc", "forgetting/avg": "forg", "plasticity/avg": "plast"}
"""Headers of the narrow layout (the caption spells them out)."""


def _mean_text(comparison: Comparison, row: StrategySummary, metric: str) -> str:
    """``0.194 ★``: the mean and its mark, without the std."""
    mean = row.mean.get(metric, math.nan)
    if not math.isfinite(mean):
        return "—"
    mark = comparison.marks.get((row.label, metric), Mark())
    return f"{mean:.3f}" + (" ★" if mark.best else " ≈" if mark.within_noise else "")


def _styled(comparison: Comparison, row: StrategySummary, metric: str, text: str) -> Text:
    mark = comparison.marks.get((row.label, metric), Mark())
    style = "bold green" if mark.best else ("green" if mark.within_noise else "")
    return Text(text, style=style)


def _grid(comparison: Comparison, title: str, layout: Layout) -> Table:
    narrow = layout == "narrow"
    table = Table(
        title=title or None,
        title_justify="left",
        box=box.SIMPLE_HEAD,  # no vertical rules: the space between columns is the rule
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
    )
    table.add_column("#", justify="right")
    table.add_column("strategy", style="bold")
    table.add_column("seeds", justify="right")
    for m in comparison.columns:
        table.add_column(SHORT.get(m, m) if narrow else m, justify="right")
    table.add_column("p", justify="right")
    for i, r in enumerate(comparison.rows, 1):
        cells = [
            _styled(
                comparison,
                r,
                m,
                _mean_text(comparison, r, m) if narrow else cell_text(comparison, r, m),
            )
            for m in comparison.columns
        ]
        label = Text(r.label)  # `naive [training.lr=0.1]` is no markup tag
        table.add_row(str(i), label, seeds_text(r), *cells, p_text(comparison, r, short=True))
    return table


def _vertical(comparison: Comparison, title: str) -> Group:
    parts: list[RenderableType] = [Text(title, style="bold")] if title else []
    for i, r in enumerate(comparison.rows, 1):
        p = p_text(comparison, r, short=True)
        head = f"{i}. [bold]{escape(r.label)}[/] ({seeds_text(r)} seeds, p {p})"
        parts.append(Text.from_markup(head))
        for m in comparison.columns:
            line = Text(f"   {m}: ")
            line.append_text(_styled(comparison, r, m, cell_text(comparison, r, m)))
            parts.append(line)
    return Group(*parts)


def _caption(comparison: Comparison, layout: Layout) -> Text:
    note = method_note(comparison)
    note += f" p: against the best {comparison.metric}."
    if layout == "narrow":
        short = [f"{SHORT[m]} = {m}" for m in comparison.columns if m in SHORT]
        note += " Means only (std: a wider terminal or --format md); " + ", ".join(short) + "."
    return Text(note, style="dim")


def fits(renderable: RenderableType, width: int) -> bool:
    """Whether ``renderable`` prints in ``width`` columns without wrapping a cell."""
    console = Console(width=10_000)  # unbounded: the width it would take unwrapped
    return Measurement.get(console, console.options, renderable).maximum <= width


def choose_layout(comparison: Comparison, width: int) -> Layout:
    """The first of wide, narrow, vertical whose table fits ``width`` columns."""
    for layout in ("wide", "narrow"):
        if fits(_grid(comparison, "", layout), width):  # type: ignore[arg-type]
            return layout  # type: ignore[return-value]
    return "vertical"


def render_table(
    comparison: Comparison, title: str = "", width: int = 120, layout: Layout | None = None
) -> Group:
    """The comparison for a terminal of ``width`` columns: the table and its caption."""
    layout = layout or choose_layout(comparison, width)
    if layout == "vertical":
        return Group(_vertical(comparison, title), _caption(comparison, layout))
    return Group(_grid(comparison, title, layout), _caption(comparison, layout))


def summary_table(rows: Sequence[StrategySummary], title: str = "", width: int = 120) -> Group:
    """The end-of-``run`` table: the rows ranked by ``acc/avg`` (see :func:`render_table`)."""
    return render_table(compare_rows(rows), title, width)
