"""Summary figures of a sweep or a comparison: one file each, one look per strategy.

* ``acc_avg_curve``: average accuracy (``acc/avg``) after each experience,
  per strategy: the mean over seeds as a line and a ±1 std band;
* ``final_accuracy``: accuracy on each experience after the last one (the
  last row of the accuracy matrix: how much of each old experience was kept),
  mean over seeds as a marker with ±1 std error bars (a 0 is a marker on the
  axis, never an empty bar);
* ``forgetting``: final average forgetting (``forgetting/avg``, Chaudhry
  max-based) per strategy: a marker at the mean, error bar ±1 std and one dot
  per seed.

A strategy keeps its colour in every figure (and, as far as the palette
allows, across comparisons): :func:`strategy_colours` maps a label to a colour
from a hash of the label, not from its position. It also gets its own marker
and line style (:func:`strategy_styles`), so curves that coincide stay visible
and the figures read in black and white. :class:`FigureStyle` chooses the file
format (PNG, PDF or SVG), the resolution and whether figures carry a title (a
paper's caption usually replaces it). Figures are drawn with
:class:`~matplotlib.figure.Figure` on the Agg canvas, never through ``pyplot``
(thread-safe, no global backend switch), like :mod:`lifelong.platform.plots`.
"""

from __future__ import annotations

import math
import textwrap
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lifelong.platform.summary import TrialRecord

__all__ = [
    "FIGURES",
    "FigureStyle",
    "acc_curve_figure",
    "final_accuracy_figure",
    "forgetting_figure",
    "strategy_colours",
    "strategy_styles",
    "write_figures",
]

FIGURES: tuple[str, ...] = ("acc_avg_curve.png", "final_accuracy.png", "forgetting.png")
"""File names :func:`write_figures` writes (when the records hold the data), as PNG."""

FigureFormat = Literal["png", "pdf", "svg"]
FIG_FORMATS: tuple[str, ...] = ("png", "pdf", "svg")


@dataclass(frozen=True)
class FigureStyle:
    """How figures are written: file format, resolution and whether they carry a title."""

    format: FigureFormat = "png"
    dpi: int = 110
    titles: bool = True

    def __post_init__(self) -> None:
        if self.format not in FIG_FORMATS:
            raise ValueError(f"figure format {self.format!r}: use one of {', '.join(FIG_FORMATS)}")
        if not 30 <= self.dpi <= 1200:
            raise ValueError(f"dpi {self.dpi}: use 30..1200")


_PALETTE = [colormaps["tab10"](i) for i in range(10)] + [
    colormaps["tab20"](i) for i in range(1, 20, 2)
]
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_LINES = ("-", "--", "-.", ":")


def strategy_colours(labels: Iterable[str]) -> dict[str, tuple[float, float, float, float]]:
    """A stable colour per strategy label.

    Each label prefers the palette slot ``crc32(label) % 20`` (the same in every
    figure and every comparison); labels taken in sorted order move to the next
    free slot on a collision, so up to 20 strategies always get distinct colours.
    """
    taken: dict[int, str] = {}
    out = {}
    for label in sorted(set(labels)):
        slot = zlib.crc32(label.encode()) % len(_PALETTE)
        for k in range(len(_PALETTE)):
            if (slot + k) % len(_PALETTE) not in taken:
                slot = (slot + k) % len(_PALETTE)
                break
        taken.setdefault(slot, label)
        out[label] = _PALETTE[slot]
    return out


def strategy_styles(labels: Iterable[str]) -> dict[str, tuple[str, str, bool]]:
    """A marker, a line style and whether the marker is filled, distinct per label.

    Labels in sorted order take the next (marker, line style) pair, 20 pairs in
    all; every other label has open markers, through which a curve drawn below
    shows, and the second round of 20 swaps open and filled: up to 40 strategies
    look different even where their colours are alike.
    """
    out = {}
    period = math.lcm(len(_MARKERS), len(_LINES))
    for k, label in enumerate(sorted(set(labels))):
        filled = (k % 2 == 0) != ((k // period) % 2 == 1)
        out[label] = (_MARKERS[k % len(_MARKERS)], _LINES[k % len(_LINES)], filled)
    return out


def _finished(records: Sequence[TrialRecord]) -> dict[str, list[TrialRecord]]:
    groups: dict[str, list[TrialRecord]] = {}
    for r in records:
        if r.status == "FINISHED":
            groups.setdefault(r.label, []).append(r)
    return groups


def _figure(width: float, height: float, style: FigureStyle) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=style.dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _stack(rows: list[tuple[float, ...]]) -> np.ndarray | None:
    """Rows of equal length as a 2-D array (the longest length wins; others dropped)."""
    rows = [r for r in rows if r]
    if not rows:
        return None
    n = max(len(r) for r in rows)
    return np.array([r for r in rows if len(r) == n], dtype=float)


def _height(n_labels: int) -> float:
    """Figure height in inches: room for a legend of ``n_labels`` entries."""
    return max(4.2, 1.4 + 0.2 * n_labels)


def _title(ax, text: str, style: FigureStyle) -> None:  # noqa: ANN001 - matplotlib Axes
    if style.titles:
        ax.set_title(textwrap.fill(text, 70), fontsize=10)


def _legend(ax) -> None:  # noqa: ANN001 - matplotlib Axes
    """The strategy legend, outside the axes on the right (never over the data)."""
    ax.legend(title="strategy", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


_NO_DATE = {"png": None, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
_EDITABLE_TEXT = {"svg.fonttype": "none", "pdf.fonttype": 42, "svg.hashsalt": "lifelong"}
"""Text stays text: SVG text elements, TrueType (not Type 3) fonts in PDF, as publishers ask."""


def _save(fig: Figure, path: Path, style: FigureStyle) -> Path:
    """Write ``fig`` as ``style.format`` (the same bytes for the same data: no date)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rc_context(_EDITABLE_TEXT):
        fig.savefig(path, format=style.format, dpi=style.dpi, metadata=_NO_DATE[style.format])
    return path


def _marker_kw(look: tuple[str, str, bool], colour: tuple[float, ...]) -> dict[str, object]:
    marker, _, filled = look
    face = colour if filled else "white"
    return {"marker": marker, "markerfacecolor": face, "markeredgecolor": colour}


def _std(a: np.ndarray) -> np.ndarray:
    return a.std(axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(a.shape[1])


def acc_curve_figure(
    records: Sequence[TrialRecord],
    path: str | Path,
    title: str = "",
    style: FigureStyle = FigureStyle(),
) -> Path:
    """Average accuracy after each experience per strategy: mean line, ±1 std band."""
    groups = _finished(records)
    colours, looks = strategy_colours(groups), strategy_styles(groups)
    fig, ax = _figure(8.5, _height(len(groups)), style)
    n_max = 1
    for label, recs in groups.items():
        a = _stack([r.curve for r in recs])
        if a is None:
            continue
        x = np.arange(a.shape[1])
        n_max = max(n_max, a.shape[1])
        mean, std = a.mean(axis=0), _std(a)
        ax.plot(
            x,
            mean,
            color=colours[label],
            linestyle=looks[label][1],
            label=f"{label} (n={a.shape[0]})",
            **_marker_kw(looks[label], colours[label]),
        )
        ax.fill_between(x, mean - std, mean + std, color=colours[label], alpha=0.2, lw=0)
    ax.set_xlabel("after training experience")
    ax.set_ylabel("average accuracy on seen experiences (acc/avg)")
    ax.set_xticks(range(n_max))
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    _title(ax, title or "Average accuracy per experience (mean ± std over seeds)", style)
    _legend(ax)
    return _save(fig, Path(path), style)


def final_accuracy_figure(
    records: Sequence[TrialRecord],
    path: str | Path,
    title: str = "",
    style: FigureStyle = FigureStyle(),
) -> Path:
    """Final accuracy on each experience per strategy: a marker at the mean, ±1 std bars."""
    groups = _finished(records)
    colours, looks = strategy_colours(groups), strategy_styles(groups)
    fig, ax = _figure(8.5, _height(len(groups)), style)
    labels = [lb for lb in groups if _stack([r.final_acc for r in groups[lb]]) is not None]
    width = 0.8 / max(1, len(labels))
    n_max = 1
    for k, label in enumerate(labels):
        a = _stack([r.final_acc for r in groups[label]])
        assert a is not None
        x = np.arange(a.shape[1]) + (k - (len(labels) - 1) / 2) * width
        n_max = max(n_max, a.shape[1])
        ax.errorbar(
            x,
            a.mean(axis=0),
            yerr=_std(a),
            capsize=2,
            linestyle="none",
            color=colours[label],
            label=f"{label} (n={a.shape[0]})",
            **_marker_kw(looks[label], colours[label]),
        )
    ax.set_xlabel("experience")
    ax.set_ylabel("accuracy after the last experience")
    ax.set_xticks(range(n_max), [f"exp {j}" for j in range(n_max)])
    for j in range(n_max - 1):  # the experiences apart
        ax.axvline(j + 0.5, color="grey", lw=0.5, alpha=0.5)
    ax.set_ylim(-0.03, 1.03)  # a 0 stays a visible marker
    ax.grid(axis="y", alpha=0.3)
    _title(ax, title or "Final accuracy on each experience (mean ± std over seeds)", style)
    _legend(ax)
    return _save(fig, Path(path), style)


def forgetting_figure(
    records: Sequence[TrialRecord],
    path: str | Path,
    title: str = "",
    metric: str = "forgetting/avg",
    style: FigureStyle = FigureStyle(),
) -> Path:
    """Final forgetting per strategy: a marker at the mean, ±1 std error bar, a dot per seed."""
    groups = _finished(records)
    colours, looks = strategy_colours(groups), strategy_styles(groups)
    labels = list(groups)
    fig, ax = _figure(max(6.5, 2.7 + 0.8 * len(labels)), _height(len(labels)), style)
    rng = np.random.default_rng(0)  # jitter of the seed dots only
    for k, label in enumerate(labels):
        v = np.array([float(r.final[metric]) for r in groups[label] if metric in r.final])
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        std = v.std(ddof=1) if len(v) > 1 else 0.0
        ax.errorbar(
            k,
            v.mean(),
            yerr=std,
            capsize=4,
            markersize=9,
            color=colours[label],
            label=label,
            **_marker_kw(looks[label], colours[label]),
        )
        ax.scatter(
            k + rng.uniform(-0.2, 0.2, len(v)), v, color="black", s=10, zorder=3, linewidths=0
        )
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0, ha="right")
    ax.set_xlabel("strategy")
    ax.set_ylabel(f"{metric} (lower is better)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.grid(axis="y", alpha=0.3)
    kind = "Chaudhry max-based" if metric == "forgetting/avg" else metric
    _title(ax, title or f"Average forgetting ({kind}): mean ± std, dots = seeds", style)
    if labels:
        _legend(ax)
    return _save(fig, Path(path), style)


def write_figures(
    records: Sequence[TrialRecord],
    out_dir: str | Path,
    title: str = "",
    style: FigureStyle = FigureStyle(),
) -> list[Path]:
    """Write the three summary figures into ``out_dir``; return their paths.

    A figure whose data no finished trial holds is skipped. ``title``, when
    given, prefixes each figure's own title. Files are named as :data:`FIGURES`
    with ``style.format``'s suffix.
    """
    out = Path(out_dir)
    done = [r for r in records if r.status == "FINISHED"]
    if not done:
        return []
    prefix = f"{title}: " if title else ""
    name = {n: out / Path(n).with_suffix(f".{style.format}") for n in FIGURES}
    paths = []
    if any(r.curve for r in done):
        head = prefix + "average accuracy per experience, mean ± std"
        paths.append(acc_curve_figure(done, name[FIGURES[0]], head, style))
    if any(r.final_acc for r in done):
        head = prefix + "final accuracy per experience, mean ± std"
        paths.append(final_accuracy_figure(done, name[FIGURES[1]], head, style))
    if any(math.isfinite(r.final.get("forgetting/avg", math.nan)) for r in done):
        head = prefix + "forgetting/avg (Chaudhry, max-based), dots = seeds"
        paths.append(forgetting_figure(done, name[FIGURES[2]], head, style=style))
    return paths
