"""Paper-ready output of ``lifelong compare``: a LaTeX table and figures in PNG, PDF or SVG."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.figures import FIGURES, strategy_styles
from lifelong.platform.latex import escape

from test_compare_kit import tiny_sweep


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``paper``: naive, l2 and center_loss (a name with ``_``) x 2 seeds, all finished."""
    tmp = tmp_path_factory.mktemp("paper")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    strategies = ["naive", {"l2": {"lambda": 1.0}}, "center_loss"]
    tiny_sweep(uri, tmp / "art", name="paper", strategies=strategies, seeds=2)
    return uri


def compare(uri: str, *args: str):
    return CliRunner().invoke(app, ["compare", "paper", *args, "--tracking-uri", uri])


def test_latex_table_is_booktabs_with_the_rows_and_marks_of_the_json(store: str) -> None:
    import json

    doc = json.loads(compare(store, "--format", "json").stdout)
    result = compare(store, "--format", "latex")
    assert result.exit_code == 0, result.output
    tex = result.stdout
    assert tex.startswith("\\begin{table}") and tex.rstrip().endswith("\\end{table}")
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\caption{", "\\label{"):
        assert rule in tex
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    body = tex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
    assert [line.split(" & ")[1] for line in body] == [
        escape(s["strategy"]) for s in doc["strategies"]
    ]  # the JSON's rank order, labels escaped (center\_loss)
    assert any("center\\_loss" in line for line in body)
    first = body[0].split(" & ")
    best = doc["strategies"][0]["metrics"]["acc/avg"]
    assert first[3] == f"$\\mathbf{{{best['mean']:.3f} \\pm {best['std']:.3f}}}$"
    assert first[-1] == "best \\\\"
    n_columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1))
    assert all(line.count(" & ") == n_columns - 1 for line in body)
    assert "★" not in tex and "≈" not in tex and "±" not in tex  # typeset, not pasted


def test_latex_escapes_every_special_character() -> None:
    assert escape("a_b & 50% #1 $x ~^{}\\") == (
        "a\\_b \\& 50\\% \\#1 \\$x \\textasciitilde{}\\textasciicircum{}\\{\\}\\textbackslash{}"
    )


@pytest.mark.parametrize(("fmt", "magic"), [("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_figures_in_a_vector_format_are_reproducible(
    store: str, fmt: str, magic: bytes, tmp_path: Path
) -> None:
    written = []
    for k in range(2):
        folder = tmp_path / str(k)
        result = compare(store, "--plots", str(folder), "--fig-format", fmt)
        assert result.exit_code == 0, result.output
        written.append({p.name: p.read_bytes() for p in folder.iterdir()})
    assert set(written[0]) == {Path(n).with_suffix(f".{fmt}").name for n in FIGURES}
    assert all(data.startswith(magic) for data in written[0].values())
    assert written[0] == written[1]  # no creation date in the file


def test_no_title_drops_the_titles_and_keeps_the_text_editable(store: str, tmp_path: Path) -> None:
    for folder, extra in (("titled", []), ("bare", ["--no-title"])):
        result = compare(store, "--plots", str(tmp_path / folder), "--fig-format", "svg", *extra)
        assert result.exit_code == 0, result.output
    titled = (tmp_path / "titled" / "forgetting.svg").read_text()
    bare = (tmp_path / "bare" / "forgetting.svg").read_text()
    assert "dots = seeds" in titled  # SVG text is text (svg.fonttype none), so it is findable
    assert "dots = seeds" not in bare and "center_loss" in bare


def test_dpi_sets_the_png_size(store: str, tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    sizes = {}
    for dpi in (100, 200):
        folder = tmp_path / str(dpi)
        assert compare(store, "--plots", str(folder), "--dpi", str(dpi)).exit_code == 0
        sizes[dpi] = mpimg.imread(folder / "acc_avg_curve.png").shape[:2]
    assert sizes[200][1] == pytest.approx(2 * sizes[100][1], abs=2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fig-format", "jpg", "--plots", "x"], "--fig-format: unknown format 'jpg'"),
        (["--dpi", "300"], "--dpi: only for figures; add --plots DIR"),
        (["--no-title"], "--no-title: only for figures; add --plots DIR"),
        (["--format", "tex"], "unknown format 'tex'; use one of table, md, csv, json, latex"),
    ],
)
def test_figure_options_are_checked(store: str, args: list[str], message: str) -> None:
    result = compare(store, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_every_strategy_gets_its_own_marker_and_line_style() -> None:
    labels = [f"s{k}" for k in range(40)]
    looks = strategy_styles(labels)
    pairs = {(marker, line) for marker, line, _ in looks.values()}
    assert len(pairs) == 20  # 10 markers x 4 line styles share a cycle of lcm = 20 ...
    assert len(set(looks.values())) == 40  # ... and open/filled markers make all 40 differ
    assert strategy_styles(["b", "a"]) == strategy_styles(["a", "b"])
