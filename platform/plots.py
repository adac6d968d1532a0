"""Artifacts of the accuracy matrix: a PNG heatmap and a CSV file (and its reader).

``R[i, j]`` is the accuracy on experience ``j`` after training through
experience ``i`` (see :mod:`lifelong.platform.metrics`); the optional
``untrained`` vector holds the accuracies of the model before any training.

The heatmap is drawn with :class:`matplotlib.figure.Figure` and
:class:`matplotlib.backends.backend_agg.FigureCanvasAgg` directly, never through
``pyplot``: no global backend is switched, no figure is registered with
pyplot's state machine, and several threads (Ray actors in one process) can
write plots at the same time. Each thread keeps the figures of the last few
matrix shapes it drew and refills them, which is about 40 % faster than
building a new figure for every matrix (a sweep draws one per trial).

CSV layout (floats with 6 decimals, ``nan`` for rows not yet filled)::

    row,exp_0,exp_1,exp_2
    untrained,0.100000,0.100000,0.100000      <- only when untrained is given
    after_exp_0,0.570000,0.000000,0.000000
    after_exp_1,...
"""

from __future__ import annotations

import csv
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, MaxNLocator
from numpy.typing import ArrayLike, NDArray

from lifelong.platform.metrics import check_accuracy_matrix

__all__ = ["accuracy_matrix_csv", "accuracy_matrix_heatmap", "read_accuracy_matrix_csv"]

_ROW_HEADER = "row"
_UNTRAINED = "untrained"
_MAX_INCHES = 20.0  # the figure grows with T up to this size (inches, each side)
_MAX_ANNOTATED = 25  # above this many experiences the cells are too small for text


def _check_untrained(untrained: ArrayLike | None, n: int) -> NDArray[np.float64] | None:
    """Return ``untrained`` as a float vector of length ``n`` (or ``None``)."""
    if untrained is None:
        return None
    vec = np.asarray(untrained, dtype=np.float64)
    if vec.shape != (n,):
        raise ValueError(
            f"untrained accuracies must be a vector of length T={n}; got shape {vec.shape}"
        )
    return vec


@dataclass
class _Template:
    """A drawn heatmap figure for one shape, refilled for each matrix of that shape."""

    fig: Figure
    image: AxesImage
    cells: list[list[Text]]  # rows x n annotations (empty above _MAX_ANNOTATED)


# Building the figure (axes, colorbar, ticks, one Text per cell) is about 40 % of the
# rendering time, so each thread keeps the last few shapes it drew and only refills
# their image data and cell texts; figures are never shared between threads.
_templates = threading.local()
_TEMPLATES_PER_THREAD = 4


def _build_template(n: int, labels: list[str], titled: bool) -> _Template:
    rows = len(labels)
    # Fixed margins (inches) instead of matplotlib's constrained layout, which
    # draws the figure an extra time to measure it: half the rendering time.
    left, right, top, bottom, bar = 1.25, 0.95, 1.0 if titled else 0.75, 0.15, 0.18
    width = min(_MAX_INCHES, left + right + 0.7 * max(n, 3))
    height = min(_MAX_INCHES, top + bottom + 0.55 * max(rows, 3))
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_axes(
        (left / width, bottom / height, 1 - (left + right) / width, 1 - (top + bottom) / height)
    )
    cax = fig.add_axes(
        (1 - (right - 0.15) / width, bottom / height, bar / width, 1 - (top + bottom) / height)
    )
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(
        np.ma.masked_invalid(np.full((rows, n), np.nan)),
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        aspect="auto",
        interpolation="nearest",
    )
    fig.colorbar(image, cax=cax, label="accuracy")

    if n <= _MAX_ANNOTATED:
        ax.set_xticks(range(n), [f"exp {j}" for j in range(n)])
        ax.set_yticks(range(rows), labels)
    else:  # a long stream: a dozen integer ticks, not one label per experience
        ax.xaxis.set_major_locator(MaxNLocator(12, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(12, integer=True))
        ax.yaxis.set_major_formatter(
            FuncFormatter(lambda v, _: labels[int(v)] if 0 <= int(v) < rows else "")
        )
    ax.set_xlabel("evaluated on experience")
    ax.set_ylabel("trained through experience")
    ax.xaxis.set_ticks_position("top")
    ax.xaxis.set_label_position("top")

    fontsize = 9 if n <= 10 else max(5, 9 - (n - 10) // 3)
    cells = [
        [
            ax.text(c, r, "", ha="center", va="center", fontsize=fontsize, visible=False)
            for c in range(n)
        ]
        for r in range(rows if n <= _MAX_ANNOTATED else 0)
    ]
    return _Template(fig, image, cells)


def _template(n: int, labels: list[str], titled: bool) -> _Template:
    cache: OrderedDict[tuple[int, int, bool], _Template] | None = getattr(_templates, "cache", None)
    if cache is None:
        cache = _templates.cache = OrderedDict()
    key = (n, len(labels), titled)
    if key in cache:
        cache.move_to_end(key)
    else:
        cache[key] = _build_template(n, labels, titled)
        if len(cache) > _TEMPLATES_PER_THREAD:
            cache.popitem(last=False)
    return cache[key]


def accuracy_matrix_heatmap(
    R: ArrayLike,
    path: str | Path,
    *,
    untrained: ArrayLike | None = None,
    title: str | None = None,
) -> Path:
    """Write the accuracy matrix as a PNG heatmap and return its path.

    Rows are labelled ``"after exp i"`` (preceded by an ``"untrained"`` row when
    ``untrained`` is given), columns ``"exp j"``; every finite cell is annotated
    with its value to 2 decimals (up to 25 experiences; larger matrices are
    drawn without text), the colour scale is fixed to 0..1 with a
    colorbar, and ``nan`` cells (rows not yet evaluated) are left grey and blank.
    Parent directories of ``path`` are created.
    """
    mat = check_accuracy_matrix(R)
    n = mat.shape[0]
    base = _check_untrained(untrained, n)
    labels = [f"after exp {i}" for i in range(n)]
    if base is not None:
        mat = np.vstack([base[None, :], mat])
        labels = [_UNTRAINED, *labels]

    t = _template(n, labels, bool(title))
    t.image.set_data(np.ma.masked_invalid(mat))
    t.image.axes.set_title(title or "")
    for r, row in enumerate(t.cells):
        for c, cell in enumerate(row):
            value = float(mat[r, c])
            cell.set_visible(math.isfinite(value))
            if math.isfinite(value):
                cell.set_text(f"{value:.2f}")
                cell.set_color("black" if value > 0.6 else "white")

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    t.fig.savefig(out, format="png")
    return out


def accuracy_matrix_csv(
    R: ArrayLike, path: str | Path, *, untrained: ArrayLike | None = None
) -> Path:
    """Write the accuracy matrix as CSV and return its path.

    The header is ``row,exp_0,...,exp_{T-1}``; each following line starts with
    the row's name (``"untrained"`` first when ``untrained`` is given, then
    ``"after_exp_0"``, ...) and holds the accuracies with 6 decimals (``nan`` for
    cells not yet filled). Parent directories of ``path`` are created. Read it
    back with :func:`read_accuracy_matrix_csv`.
    """
    mat = check_accuracy_matrix(R)
    n = mat.shape[0]
    base = _check_untrained(untrained, n)
    lines: list[tuple[str, NDArray[np.float64]]] = []
    if base is not None:
        lines.append((_UNTRAINED, base))
    lines.extend((f"after_exp_{i}", mat[i]) for i in range(n))

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([_ROW_HEADER, *(f"exp_{j}" for j in range(n))])
        for name, values in lines:
            writer.writerow([name, *(f"{float(v):.6f}" for v in values)])
    return out


def read_accuracy_matrix_csv(
    path: str | Path,
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Read a CSV written by :func:`accuracy_matrix_csv`.

    Returns ``(R, untrained)``: the ``(T, T)`` matrix and the untrained
    accuracies (``None`` when the file has no ``untrained`` row).

    Raises:
        ValueError: if the header or the row names are not the expected ones.
    """
    with Path(path).open(newline="", encoding="utf-8") as fh:
        table = [row for row in csv.reader(fh) if row]
    if not table:
        raise ValueError(f"{path}: empty accuracy-matrix CSV")
    header, body = table[0], table[1:]
    n = len(header) - 1
    expected_header = [_ROW_HEADER, *(f"exp_{j}" for j in range(n))]
    if n < 1 or header != expected_header:
        raise ValueError(
            f"{path}: header must be {','.join(expected_header[:3])},...; got {','.join(header)}"
        )
    untrained: NDArray[np.float64] | None = None
    if body and body[0][0] == _UNTRAINED:
        untrained = _parse_values(path, body[0], n)
        body = body[1:]
    names = [row[0] for row in body]
    expected_names = [f"after_exp_{i}" for i in range(n)]
    if names != expected_names:
        raise ValueError(
            f"{path}: expected rows {expected_names} (optionally after 'untrained'); got {names}"
        )
    R = np.array([_parse_values(path, row, n) for row in body], dtype=np.float64)
    return R, untrained


def _parse_values(path: str | Path, row: list[str], n: int) -> NDArray[np.float64]:
    """Parse the ``n`` float cells after the row name of one CSV line."""
    if len(row) != n + 1:
        raise ValueError(f"{path}: row {row[0]!r} has {len(row) - 1} values, expected {n}")
    try:
        return np.array([float(cell) for cell in row[1:]], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: row {row[0]!r} holds a non-numeric value: {exc}") from None
