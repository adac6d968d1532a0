r"""``lifelong compare --format latex``: the comparison as a booktabs table for a paper.

The table is what ``--format md`` shows, typeset: rank, strategy, seeds, one
``mean ± std`` column per metric, the p-value against the best. The best cell
of each column is bold; a cell within seed noise of the best is underlined. The
method note (test, alpha, what the marks mean) is the caption, so the table can
be pasted into a paper as it is; it needs ``\usepackage{booktabs}``.
"""

from __future__ import annotations

import math

from lifelong.platform.summary import Comparison, Mark, method_note, p_text, seeds_text

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


TYPESET_NOTE = (("★", "Bold:"), ("≈", "underlined:"), ("±", r"$\pm$"), (">=", r"$\geq$"))
"""The method note's marks as the LaTeX table shows them."""


def escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (labels, metric names)."""
    return "".join(_SPECIAL.get(c, c) for c in text)


def _cell(mean: float, std: float, mark: Mark) -> str:
    r"""``$0.523 \pm 0.010$``, bold when best, underlined within seed noise; -- when none."""
    if not math.isfinite(mean):
        return "--"
    spread = f"{std:.3f}" if math.isfinite(std) else "--"
    body = f"{mean:.3f} \\pm {spread}"
    if mark.best:
        return f"$\\mathbf{{{body}}}$"
    if mark.within_noise:
        return f"$\\underline{{{body}}}$"
    return f"${body}$"


def render_latex(comparison: Comparison, title: str = "") -> str:
    """The comparison as a LaTeX ``table`` (booktabs), the method note as its caption."""
    head = ["\\#", "strategy", "seeds", *(escape(m) for m in comparison.columns)]
    head.append(f"$p$ vs best ({escape(comparison.metric)})")
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\begin{tabular}{rlr" + "r" * len(comparison.columns) + "r}",
        "\\toprule",
        " & ".join(head) + " \\\\",
        "\\midrule",
    ]
    for i, r in enumerate(comparison.rows, 1):
        cells = [
            _cell(
                r.mean.get(m, math.nan),
                r.std.get(m, math.nan),
                comparison.marks.get((r.label, m), Mark()),
            )
            for m in comparison.columns
        ]
        row = [str(i), escape(r.label), escape(seeds_text(r)), *cells]
        lines.append(" & ".join([*row, escape(p_text(comparison, r))]) + " \\\\")
    note = escape(method_note(comparison))
    for plain, typeset in TYPESET_NOTE:
        note = note.replace(plain, typeset)
    caption = f"{escape(title)}. {note}" if title else note
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{caption}}}",
        "\\label{tab:lifelong-compare}",
        "\\end{table}",
        "",
    ]
    return "\n".join(lines)
