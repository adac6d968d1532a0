"""Accuracy-matrix artifacts: PNG heatmap and CSV round trip."""

import sys
import threading

import numpy as np
import pytest

from lifelong.platform.plots import (
    accuracy_matrix_csv,
    accuracy_matrix_heatmap,
    read_accuracy_matrix_csv,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
R3 = np.array([[0.57, 0.0, 0.0], [0.11, 0.45, 0.0], [0.08, 0.10, 0.42]])


@pytest.mark.parametrize("untrained", [None, [0.1, 0.1, 0.1]])
def test_heatmap_png(tmp_path, untrained):
    out = accuracy_matrix_heatmap(R3, tmp_path / "sub" / "R.png", untrained=untrained, title="t")
    assert out == tmp_path / "sub" / "R.png"
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5_000


def test_heatmap_partial_and_large(tmp_path):
    R = np.full((4, 4), np.nan)
    R[:2] = 0.5
    assert accuracy_matrix_heatmap(R, tmp_path / "p.png").read_bytes().startswith(PNG_MAGIC)
    big = np.random.default_rng(0).random((40, 40))
    assert accuracy_matrix_heatmap(big, tmp_path / "b.png").read_bytes().startswith(PNG_MAGIC)


def test_heatmap_does_not_touch_pyplot(tmp_path):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    accuracy_matrix_heatmap(R3, tmp_path / "R.png")
    if not had_pyplot:
        assert "matplotlib.pyplot" not in sys.modules


def test_heatmap_threads(tmp_path):
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            accuracy_matrix_heatmap(R3 * (k + 1) / 4, tmp_path / f"{k}.png")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all((tmp_path / f"{k}.png").read_bytes().startswith(PNG_MAGIC) for k in range(4))


def test_heatmap_bad_untrained(tmp_path):
    with pytest.raises(ValueError, match="length T=3"):
        accuracy_matrix_heatmap(R3, tmp_path / "R.png", untrained=[0.1])


def test_csv_layout(tmp_path):
    path = accuracy_matrix_csv(R3, tmp_path / "R.csv", untrained=[0.1, 0.2, 0.3])
    lines = path.read_text().splitlines()
    assert lines[0] == "row,exp_0,exp_1,exp_2"
    assert lines[1] == "untrained,0.100000,0.200000,0.300000"
    assert lines[2] == "after_exp_0,0.570000,0.000000,0.000000"
    assert lines[4] == "after_exp_2,0.080000,0.100000,0.420000"
    assert len(lines) == 5


@pytest.mark.parametrize("with_untrained", [False, True])
def test_csv_round_trip(tmp_path, with_untrained):
    rng = np.random.default_rng(1)
    R = rng.random((5, 5))
    b = rng.random(5) if with_untrained else None
    path = accuracy_matrix_csv(R, tmp_path / "R.csv", untrained=b)
    R2, b2 = read_accuracy_matrix_csv(path)
    assert R2.shape == (5, 5)
    # exact to 6 decimals: every value equals the 6-decimal rendering of the original
    expected = np.vectorize(lambda v: float(f"{v:.6f}"))(R)
    np.testing.assert_array_equal(R2, expected)
    np.testing.assert_allclose(R2, R, atol=5e-7, rtol=0)
    if with_untrained:
        np.testing.assert_array_equal(b2, [float(f"{v:.6f}") for v in b])
    else:
        assert b2 is None
    # writing what was read reproduces the file byte for byte
    again = accuracy_matrix_csv(R2, tmp_path / "again.csv", untrained=b2)
    assert again.read_bytes() == path.read_bytes()


def test_csv_round_trip_exact_values_and_nan(tmp_path):
    R = R3.copy()
    R[2] = np.nan
    R2, b2 = read_accuracy_matrix_csv(accuracy_matrix_csv(R, tmp_path / "R.csv"))
    np.testing.assert_array_equal(R2, R)  # nan == nan for assert_array_equal
    assert b2 is None


def test_read_csv_rejects_bad_files(tmp_path):
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("name,a,b\nafter_exp_0,1,2\nafter_exp_1,1,2\n")
    with pytest.raises(ValueError, match="header"):
        read_accuracy_matrix_csv(bad_header)
    bad_rows = tmp_path / "r.csv"
    bad_rows.write_text("row,exp_0,exp_1\nafter_exp_0,1,2\n")
    with pytest.raises(ValueError, match="expected rows"):
        read_accuracy_matrix_csv(bad_rows)
    short = tmp_path / "s.csv"
    short.write_text("row,exp_0,exp_1\nafter_exp_0,1\nafter_exp_1,1,2\n")
    with pytest.raises(ValueError, match="values"):
        read_accuracy_matrix_csv(short)


@pytest.mark.parametrize("untrained", [None, [0.1, 0.2, 0.3]])
def test_heatmap_refilled_figure_draws_like_a_new_one(tmp_path, untrained):
    """A figure kept for a shape and refilled draws the same pixels as a new figure."""
    import matplotlib.image

    from lifelong.platform import plots

    partial = np.full((3, 3), np.nan)
    partial[0] = [0.9, 0.2, 0.3]
    accuracy_matrix_heatmap(R3, tmp_path / "first.png", untrained=untrained, title="first")
    accuracy_matrix_heatmap(partial, tmp_path / "refilled.png", untrained=untrained, title="2nd")
    plots._templates.cache.clear()
    accuracy_matrix_heatmap(partial, tmp_path / "new.png", untrained=untrained, title="2nd")
    refilled = matplotlib.image.imread(tmp_path / "refilled.png")
    assert np.array_equal(refilled, matplotlib.image.imread(tmp_path / "new.png"))
    assert not np.array_equal(refilled, matplotlib.image.imread(tmp_path / "first.png"))
