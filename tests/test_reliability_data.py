"""Bad data is a clear error before training, naming the experience.

Empty experiences, a single class, NaN or infinite inputs, labels outside the
declared classes and mismatched train/test shapes, through
``stream_from_arrays``, the ``arrays`` (.npz) source, and the CLI (exit 2).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.scenarios import ScenarioError, Stream, stream_from_arrays, validate_stream


def arrays(n_classes: int = 4, per_class: int = 6, features: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_train = np.repeat(np.arange(n_classes), per_class)
    y_test = np.repeat(np.arange(n_classes), 3)
    x_train = rng.normal(size=(len(y_train), features)).astype(np.float32)
    x_test = rng.normal(size=(len(y_test), features)).astype(np.float32)
    return x_train, y_train, x_test, y_test


def experience_of(label: int, **kw) -> int:
    """Index of the experience holding ``label`` in the clean stream."""
    stream = stream_from_arrays(*arrays(), n_experiences=2, **kw)
    return next(e.index for e in stream if label in e.classes)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_train_input_names_its_experience(value: float) -> None:
    x_train, y_train, x_test, y_test = arrays()
    x_train[np.flatnonzero(y_train == 3)[0], 2] = value
    k = experience_of(3)
    with pytest.raises(ScenarioError, match=rf"experience {k} \(train\) has 1 non-finite"):
        stream_from_arrays(x_train, y_train, x_test, y_test, n_experiences=2)


def test_non_finite_test_input_names_its_experience() -> None:
    x_train, y_train, x_test, y_test = arrays()
    x_test[np.flatnonzero(y_test == 0)] = np.nan
    k = experience_of(0)
    with pytest.raises(ScenarioError, match=rf"experience {k} \(test\) has 15 non-finite"):
        stream_from_arrays(x_train, y_train, x_test, y_test, n_experiences=2)


def test_nan_in_a_later_domain_experience_is_named() -> None:
    x_train, y_train, x_test, y_test = arrays()
    x_train[0, 0] = np.nan  # every experience of a domain stream sees every sample
    with pytest.raises(ScenarioError, match=r"experience 0 \(train\)"):
        stream_from_arrays(
            x_train, y_train, x_test, y_test, protocol="domain_incremental", n_experiences=3
        )


@pytest.mark.parametrize("protocol", ["class_incremental", "domain_incremental"])
def test_one_class_only_is_an_error(protocol: str) -> None:
    x_train, _, x_test, _ = arrays()
    y_train, y_test = np.zeros(len(x_train), int), np.zeros(len(x_test), int)
    with pytest.raises(ScenarioError, match=r"experience 0 \(train\) holds one class only"):
        stream_from_arrays(x_train, y_train, x_test, y_test, protocol=protocol, n_experiences=1)


def test_empty_experience_is_named() -> None:
    x_train, y_train, x_test, y_test = arrays()
    stream = stream_from_arrays(x_train, y_train, x_test, y_test, n_experiences=2)
    gone = stream[1].classes  # no test sample of experience 1's classes
    keep = ~np.isin(y_test, gone)
    with pytest.raises(ScenarioError, match=r"experience 1 \(test\) has no samples"):
        stream_from_arrays(x_train, y_train, x_test[keep], y_test[keep], n_experiences=2)


def test_test_label_outside_the_training_classes() -> None:
    x_train, y_train, x_test, y_test = arrays()
    y_test[0] = 9
    with pytest.raises(ScenarioError, match=r"y_test: label 9 is not a class of y_train"):
        stream_from_arrays(x_train, y_train, x_test, y_test, n_experiences=2)


def test_mismatched_train_test_shapes() -> None:
    x_train, y_train, x_test, y_test = arrays()
    with pytest.raises(ScenarioError, match=r"x_test: per-sample shape \(6,\) differs .* \(5,\)"):
        stream_from_arrays(x_train, y_train, np.zeros((len(y_test), 6)), y_test, n_experiences=2)
    with pytest.raises(ScenarioError, match=r"y_train: has 23 labels but x_train has 24"):
        stream_from_arrays(x_train, y_train[:-1], x_test, y_test, n_experiences=2)


def replace_experience(stream: Stream, i: int, **changes: torch.Tensor) -> Stream:
    exps = list(stream.experiences)
    exps[i] = dataclasses.replace(exps[i], **changes)
    return dataclasses.replace(stream, experiences=tuple(exps))


def test_validate_stream_names_the_experience_for_hand_built_streams() -> None:
    stream = stream_from_arrays(*arrays(), n_experiences=2)
    e1 = stream[1]
    other = stream[0].classes[0]
    cases = {
        r"experience 1 \(train\) has labels \[\d\] outside its declared classes": {
            "y_train": torch.where(e1.y_train == e1.classes[0], other, e1.y_train)
        },
        r"experience 1 \(test\) has inputs shaped \(7,\), expected \(5,\)": {
            "x_test": torch.zeros(e1.n_test, 7)
        },
        r"experience 1 \(train\) has no samples": {
            "x_train": e1.x_train[:0],
            "y_train": e1.y_train[:0],
        },
        r"experience 1 \(train\) has 12 inputs but 11 labels": {"y_train": e1.y_train[:-1]},
    }
    for pattern, change in cases.items():
        with pytest.raises(ScenarioError, match=pattern):
            validate_stream(replace_experience(stream, 1, **change))


def write_case(tmp: Path, **changes: np.ndarray) -> Path:
    data = dict(zip(["x_train", "y_train", "x_test", "y_test"], arrays(), strict=True))
    data.update(changes)
    np.savez(tmp / "data.npz", **data)
    spec = {
        "name": "bad-data",
        "scenario": {"source": "arrays", "n_experiences": 2, "options": {"path": "data.npz"}},
        "training": {"epochs": 1},
        "strategies": ["naive"],
    }
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def nan_train() -> dict[str, np.ndarray]:
    x = arrays()[0]
    x[-1, 0] = np.nan  # the last sample is of class 3
    return {"x_train": x}


CLI_CASES = {
    "nan input": (
        nan_train,
        r":\d+: scenario.source: experience {k3} \(train\) has 1 non-finite",
    ),
    "one class": (
        lambda: {"y_train": np.zeros(24, int), "y_test": np.zeros(12, int)},
        r"scenario.n_experiences: scenario has 1 classes, cannot make 2 experiences",
    ),
    "test label outside": (
        lambda: {"y_test": np.full(12, 7)},
        r":\d+: scenario.options.path: .*y_test: label 7 is not a class of y_train",
    ),
    "shape mismatch": (
        lambda: {"x_test": np.zeros((12, 3, 2), np.float32)},
        r"scenario.options.path: .*x_test: per-sample shape \(3, 2\) differs",
    ),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_data_through_the_cli_exits_2_before_anything_starts(case: str, in_tmp: Path) -> None:
    make, pattern = CLI_CASES[case]
    path = write_case(in_tmp, **make())
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.stderr.replace("\n", " ")
    assert re.search(pattern.replace("{k3}", str(experience_of(3))), message), message
    assert message.startswith(f"error: {path}:")
    assert not (in_tmp / "mlflow.db").exists() and not (in_tmp / ".lifelong").exists()


def test_one_class_arrays_source_with_one_experience_is_named(in_tmp: Path) -> None:
    path = write_case(in_tmp, y_train=np.zeros(24, int), y_test=np.zeros(12, int))
    text = path.read_text().replace("n_experiences: 2", "n_experiences: 1")
    path.write_text(text)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert re.search(r"scenario.source: experience 0 \(train\) holds one class only", result.stderr)
