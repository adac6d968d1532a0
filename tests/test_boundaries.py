"""Streams without sharp boundaries: blurry-M and Gaussian-scheduled task-free streams."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, ScenarioError, Stream, build_stream, check_scenario
from lifelong.scenarios.boundaries import (
    blurry_stream,
    boundary_stream_name,
    gaussian_stream,
    make_boundary_stream,
)
from lifelong.scenarios.builder import _checked_source
from lifelong.strategies import build_strategy


def _build(**kw: object) -> Stream:
    return build_stream(ScenarioConfig(**kw))


def _rows(s: Stream) -> np.ndarray:
    """All training samples of ``s`` as rows (flattened input, label), sorted: a multiset."""
    x = torch.cat([e.x_train.reshape(e.n_train, -1) for e in s])
    y = torch.cat([e.y_train for e in s])
    rows = np.concatenate([x.numpy(), y[:, None].numpy()], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def _group_of(s: Stream) -> dict[int, int]:
    return {c: g for g, group in enumerate(s.info["class_groups"]) for c in group}


@pytest.fixture(scope="module")
def sharp() -> Stream:
    return _build(source="digits", n_experiences=5, seed=0)


@pytest.fixture(scope="module")
def blurry() -> Stream:
    return _build(source="digits", n_experiences=5, seed=0, boundaries="blurry")


@pytest.fixture(scope="module")
def gaussian() -> Stream:
    return _build(source="digits", n_experiences=5, seed=0, boundaries="gaussian")


# --------------------------------------------------------------------------- blurry


def test_blurry_uses_every_training_sample_once(sharp: Stream, blurry: Stream) -> None:
    assert blurry.name == "blurry10_split_digits"
    assert np.array_equal(_rows(blurry), _rows(sharp))


def test_blurry_keeps_the_sharp_groups_and_test_sets(sharp: Stream, blurry: Stream) -> None:
    assert blurry.protocol == "class_incremental" and len(blurry) == len(sharp)
    assert blurry.info["class_groups"] == sharp.info["class_groups"]
    for b, s in zip(blurry, sharp, strict=True):
        assert b.task_id == 0
        assert torch.equal(b.x_test, s.x_test) and torch.equal(b.y_test, s.y_test)
        assert set(s.classes) <= set(b.classes)
        assert set(torch.unique(b.y_train).tolist()) <= set(b.classes)
        assert b.x_train.is_contiguous() and b.x_train.dtype == torch.float32


def test_blurry_foreign_share_is_m_percent(sharp: Stream, blurry: Stream) -> None:
    info = blurry.info
    assert info["boundaries"] == "blurry" and info["blurry_m"] == 10.0
    group_of, counts = _group_of(blurry), np.array(info["group_counts"])
    for i, (b, s) in enumerate(zip(blurry, sharp, strict=True)):
        own = sum(group_of[c] == i for c in b.y_train.tolist())
        foreign = b.n_train - own
        assert foreign == info["foreign_per_experience"][i] == counts[i].sum() - counts[i, i]
        assert own == s.n_train - round(0.10 * s.n_train)  # (100 - M)% of its group stays
        assert round(100 * foreign / b.n_train) == 10  # near-equal groups: M% within rounding
    for g in range(len(blurry)):  # what leaves group g is spread evenly over the others
        away = np.delete(counts[:, g], g)
        assert away.max() - away.min() <= 1


def test_blurry_on_equal_groups_is_exactly_m_percent() -> None:
    s = _build(source="gaussian", n_experiences=5, seed=2, boundaries="blurry", blurry_m=30)
    assert s.name == "blurry30_split_gaussian"
    assert s.info["foreign_per_experience"] == [0.3 * e.n_train for e in s]


def test_blurry_is_deterministic_from_the_seed(blurry: Stream) -> None:
    again = _build(source="digits", n_experiences=5, seed=0, boundaries="blurry")
    for a, b in zip(blurry, again, strict=True):
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    other = _build(source="digits", n_experiences=5, seed=1, boundaries="blurry")
    assert any(not torch.equal(a.y_train, b.y_train) for a, b in zip(blurry, other, strict=True))
    m30 = _build(source="digits", n_experiences=5, seed=0, boundaries="blurry", blurry_m=30)
    assert m30.info["class_groups"] == blurry.info["class_groups"]
    assert sum(m30.info["foreign_per_experience"]) > sum(blurry.info["foreign_per_experience"])


# --------------------------------------------------------------------------- gaussian


def test_gaussian_uses_every_sample_once_in_near_equal_chunks(
    sharp: Stream, gaussian: Stream
) -> None:
    assert gaussian.name == "gaussian_split_digits"
    assert np.array_equal(_rows(gaussian), _rows(sharp))
    sizes = [e.n_train for e in gaussian]
    assert max(sizes) - min(sizes) <= 1
    for g, s in zip(gaussian, sharp, strict=True):
        assert torch.equal(g.x_test, s.x_test) and torch.equal(g.y_test, s.y_test)
        assert set(torch.unique(g.y_train).tolist()) <= set(g.classes)


def test_gaussian_classes_fade_in_and_out(gaussian: Stream) -> None:
    info = gaussian.info
    assert info["boundaries"] == "gaussian" and info["task_free"] is True
    assert info["gaussian_width"] == 0.5
    assert info["boundary_times"] == sorted(info["boundary_times"])
    group_of = _group_of(gaussian)
    means = [np.mean([group_of[c] for c in e.y_train.tolist()]) for e in gaussian]
    assert np.all(np.diff(means) > 0)  # the stream drifts through the groups
    counts = np.array(info["group_counts"])
    assert (counts.argmax(axis=1) == np.arange(5)).all()  # group i dominates experience i
    assert (counts.argmax(axis=0) == np.arange(5)).all()  # group g peaks in experience g
    assert 0 < counts[0, 1] and counts[0, 4] == 0  # neighbours overlap, distant groups do not


def test_gaussian_width_sets_the_overlap_and_the_seed_the_times(gaussian: Stream) -> None:
    def own_share(s: Stream) -> float:
        c = np.array(s.info["group_counts"])
        return float(np.trace(c) / c.sum())

    wide = _build(source="digits", n_experiences=5, seed=0, boundaries="gaussian", gaussian_width=2)
    assert own_share(wide) < own_share(gaussian) < 1
    again = _build(source="digits", n_experiences=5, seed=0, boundaries="gaussian")
    for a, b in zip(gaussian, again, strict=True):
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    other = _build(source="digits", n_experiences=5, seed=3, boundaries="gaussian")
    assert any(not torch.equal(a.y_train, b.y_train) for a, b in zip(gaussian, other, strict=True))


# --------------------------------------------------------------------------- function API


def test_function_api_and_names() -> None:
    data = _checked_source(ScenarioConfig(source="gaussian")).load(0)
    a = blurry_stream(data, 4, 0, m=12.5, name=boundary_stream_name("x", "blurry", m=12.5))
    b = make_boundary_stream(data, boundaries="blurry", n_experiences=4, seed=0, name="y", m=12.5)
    assert a.name == "blurry12.5_split_x"
    assert all(torch.equal(p.y_train, q.y_train) for p, q in zip(a, b, strict=True))
    g = gaussian_stream(data, 4, 0, width=0.3, name="g")
    assert g.info["gaussian_width"] == 0.3 and len(g) == 4
    assert boundary_stream_name("digits", "sharp") == "split_digits"
    for call, field in [
        (lambda: blurry_stream(data, 4, 0, m=100, name="z"), "blurry_m"),
        (lambda: gaussian_stream(data, 4, 0, width=float("inf"), name="z"), "gaussian_width"),
        (lambda: gaussian_stream(data, 1, 0, width=0.5, name="z"), "n_experiences"),
        (lambda: blurry_stream(data, 11, 0, m=10, name="z"), "n_experiences"),
        (lambda: make_boundary_stream(data, boundaries="sharp", n_experiences=4, seed=0, name="z"),
         "boundaries"),
    ]:  # fmt: skip
        with pytest.raises(ScenarioError) as info:
            call()
        assert info.value.field == field


# --------------------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    "kw, field, pattern",
    [
        ({"boundaries": "blurry", "protocol": "task_incremental"}, "boundaries", "task_incr"),
        ({"boundaries": "gaussian", "protocol": "domain_incremental"}, "boundaries", "domain"),
        ({"blurry_m": 20}, "blurry_m", "boundaries: blurry only.*'sharp'"),
        ({"boundaries": "blurry", "gaussian_width": 1.0}, "gaussian_width", "'blurry'"),
        ({"boundaries": "gaussian", "n_experiences": 1}, "n_experiences", "at least 2"),
        ({"boundaries": "blurry", "n_experiences": 11}, "n_experiences", "cannot make 11"),
        (
            {"source": "avalanche", "boundaries": "blurry", "options": {"factory": "os:getcwd"}},
            "boundaries",
            "brings its own experiences",
        ),
    ],
)
def test_bad_combination_names_the_field(kw: dict, field: str, pattern: str) -> None:
    with pytest.raises(ScenarioError, match=pattern) as info:
        check_scenario(ScenarioConfig(**kw))
    assert info.value.field == field


@pytest.mark.parametrize(
    "kw",
    [
        {"blurry_m": 0},
        {"blurry_m": 100},
        {"blurry_m": float("nan")},
        {"gaussian_width": 0},
        {"gaussian_width": float("inf")},
        {"boundaries": "online"},
    ],
)
def test_bad_value_is_a_validation_error(kw: dict) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        ScenarioConfig(**kw)
    assert info.value.errors()[0]["loc"] == (next(iter(kw)),)


def test_a_resolved_sharp_config_still_checks() -> None:
    """Trials carry ``model_dump`` copies, which name every field at its default."""
    for cfg in (ScenarioConfig(), ScenarioConfig(boundaries="blurry", blurry_m=30)):
        again = ScenarioConfig.model_validate(cfg.model_dump(mode="json"))
        assert "blurry_m" in again.model_fields_set
        check_scenario(again)


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("boundaries", ["blurry", "gaussian"])
def test_a_learner_runs_over_the_stream(boundaries: str, blurry: Stream, gaussian: Stream) -> None:
    stream = blurry if boundaries == "blurry" else gaussian
    training = TrainingConfig(epochs=1, batch_size=32, accelerator="cpu")
    R = Learner(stream, ModelConfig(hidden=[8]), [build_strategy("naive")], training, 0).fit()
    assert R.shape == (5, 5) and np.isfinite(R).all()


EXPERIMENT = """\
name: t
seeds: 1
scenario:
  source: digits
  n_experiences: 5
  boundaries: blurry
  blurry_m: 150
training:
  epochs: 1
strategies:
  - naive
"""


@pytest.mark.parametrize(
    "text, pattern",
    [
        (EXPERIMENT, r":7: scenario\.blurry_m: .*less than 100"),
        (
            EXPERIMENT.replace("  blurry_m: 150\n", "  protocol: task_incremental\n"),
            r":6: scenario\.boundaries: 'blurry' needs protocol class_incremental",
        ),
    ],
)
def test_cli_reports_file_line_and_field(text: str, pattern: str, in_tmp: Path) -> None:
    path = in_tmp / "exp.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(str(path) + pattern, result.stderr.replace("\n", " ")), result.stderr


def test_cli_dry_run_accepts_a_blurry_experiment(in_tmp: Path) -> None:
    path = in_tmp / "exp.yaml"
    path.write_text(EXPERIMENT.replace("blurry_m: 150", "blurry_m: 30"))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "blurry_m: 30.0" in result.stdout
