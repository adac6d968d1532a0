"""Metrics of a partially evaluated accuracy matrix (``training.eval_every`` / ``eval_on``).

On a long stream the full matrix ``R`` costs ``T * T`` test-set evaluations, so
the learner may evaluate only after every ``k``-th experience and only on the
seen or the last ``k`` seen experiences; the other cells stay ``nan``. The
definitions of :mod:`lifelong.platform.metrics` then read the cells that exist:

* ``acc/avg`` at row ``i``: the mean of ``R[i, j]`` over the **evaluated** seen
  experiences ``j <= i`` (all of them under ``eval_on: all | seen``; the last
  ``k`` under ``last_k``, where it is the accuracy over a window, not ACC);
* ``forgetting/avg`` (max-based, Chaudhry et al. 2018): over each ``j < i``
  evaluated at row ``i`` and at some earlier row ``l in [j, i-1]``, the best
  earlier ``R[l, j]`` minus ``R[i, j]``;
* ``bwt`` and ``forgetting/first_minus_last``: over each ``j < i`` whose
  diagonal cell ``R[j, j]`` and ``R[i, j]`` were both evaluated;
* ``plasticity/avg``: the mean of the evaluated diagonal cells;
* ``fwt``: over each ``j >= 1`` with ``R[j-1, j]`` evaluated (``eval_on: all``
  only; otherwise undefined, ``nan``).

Every summary carries ``eval/coverage``, the fraction of the seen cells
(``j <= i``) that were evaluated, and the tracker tags the run
``lifelong.partial_R`` with :func:`partial_description`: a number from a
partial matrix is never shown as if it came from a full one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from lifelong.platform.metrics import check_accuracy_matrix

if TYPE_CHECKING:  # the CLI imports this module; torch (under TrainingConfig) waits for a run
    from lifelong.platform.training import TrainingConfig

__all__ = [
    "PARTIAL_NOTE",
    "coverage",
    "partial_description",
    "partial_step_metrics",
    "partial_summary",
]


PARTIAL_NOTE = (
    "partial accuracy matrix (training.eval_every / eval_on): acc/avg, forgetting and bwt "
    "are over the evaluated cells only (eval/coverage; docs/metrics.md)"
)


def partial_description(training: TrainingConfig) -> str | None:
    """What the accuracy matrix holds under ``training``, or ``None`` for the full matrix."""
    if not training.partial_R:
        return None
    on = {"all": "every experience", "seen": "the seen experiences"}.get(
        training.eval_on, f"the last {training.eval_last_k} seen experiences"
    )
    every = "every experience" if training.eval_every == 1 else f"every {training.eval_every}"
    return f"partial R: evaluated after {every} (and the last) on {on}"


def coverage(R: NDArray[np.float64], step: int = -1) -> float:
    """Fraction of the seen cells ``R[l, j]``, ``j <= l <= step``, that were evaluated."""
    arr = check_accuracy_matrix(R)
    i = step % arr.shape[0]
    seen = np.tril(np.ones((i + 1, i + 1), dtype=bool))
    return float(np.isfinite(arr[: i + 1, : i + 1])[seen].mean())


def _mean(values: NDArray[np.float64]) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def _row_metrics(arr: NDArray[np.float64], i: int) -> dict[str, float]:
    row = arr[i, : i + 1]
    seen = row[np.isfinite(row)]
    diag = np.diagonal(arr)[: i + 1]
    # Max-based forgetting: the best evaluation of j at rows j..i-1, where one exists.
    past = np.where(np.tril(np.ones((i, i), dtype=bool)), arr[:i, :i], np.nan)
    with np.errstate(all="ignore"):
        has_past = np.isfinite(past).any(axis=0)
        best = np.nanmax(np.where(has_past, past, -np.inf), axis=0) if i else np.zeros(0)
    now = arr[i, :i]
    ok = has_past & np.isfinite(now) if i else np.zeros(0, dtype=bool)
    pairs = np.isfinite(now) & np.isfinite(diag[:i])
    return {
        "acc/avg": _mean(seen),
        "forgetting/avg": _mean(best[ok] - now[ok]) if i else 0.0,
        "forgetting/first_minus_last": _mean(diag[:i][pairs] - now[pairs]) if i else 0.0,
        "bwt": _mean(now[pairs] - diag[:i][pairs]) if i else 0.0,
        "plasticity/avg": _mean(diag[np.isfinite(diag)]),
    }


def partial_step_metrics(R: NDArray[np.float64], i: int) -> dict[str, float]:
    """The metrics to log after experience ``i``; empty when row ``i`` was not evaluated.

    Keys as :func:`lifelong.platform.metrics.step_metrics`, ``acc/exp_<j>`` only
    for the evaluated ``j``, plus ``eval/coverage``.
    """
    arr = check_accuracy_matrix(R)
    if not np.isfinite(arr[i]).any():
        return {}
    out = {f"acc/exp_{j}": float(v) for j, v in enumerate(arr[i]) if np.isfinite(v)}
    if np.isfinite(arr[i, i]):
        out["plasticity"] = float(arr[i, i])
    m = _row_metrics(arr, i)
    out.update({k: m[k] for k in ("acc/avg", "forgetting/avg", "bwt")})
    out["eval/coverage"] = coverage(arr, i)
    return out


def partial_summary(
    R: NDArray[np.float64], b: NDArray[np.float64] | None = None
) -> dict[str, float]:
    """The final metrics (keys of :func:`lifelong.platform.metrics.summary`) from the last row.

    Adds ``eval/coverage``; ``fwt`` is ``nan`` when no ``R[j-1, j]`` was evaluated.

    Raises:
        ValueError: when the last row was not evaluated (the learner always does).
    """
    arr = check_accuracy_matrix(R)
    n = arr.shape[0]
    if not np.isfinite(arr[-1]).any():
        raise ValueError(f"the last row of R (experience {n - 1}) was not evaluated")
    out = _row_metrics(arr, n - 1)
    if b is not None:
        j = np.arange(1, n)
        before = arr[j - 1, j] - np.asarray(b, dtype=np.float64)[j]
        out["fwt"] = _mean(before[np.isfinite(before)])
    out["eval/coverage"] = coverage(arr)
    return out
