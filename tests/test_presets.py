"""Scenario presets: the usual benchmarks by name, the experiment's fields winning."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.scenarios import ScenarioConfig, build_stream, source_config
from lifelong.scenarios.preset import load_preset, preset_names

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
AVALANCHE_NAMES = {
    "split_mnist",
    "permuted_mnist",
    "rotated_mnist",
    "split_fmnist",
    "split_cifar10",
    "split_cifar100",
    "split_tiny_imagenet",
    "core50",
}


def test_the_usual_benchmarks_ship_as_presets() -> None:
    assert AVALANCHE_NAMES <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_a_valid_scenario(name: str, tmp_path: Path) -> None:
    needs_root = load_preset(name)["source"] in ("torchvision", "image_folder")
    options = {"root": str(tmp_path)} if needs_root else {}
    cfg = ScenarioConfig(preset=name, options=options)
    assert cfg.preset == name and cfg.source == load_preset(name)["source"]
    source_config(cfg)  # the preset's options are the source's own
    # a resolved config (as trials and MLflow carry it) validates to itself
    assert ScenarioConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_the_experiment_fields_win_and_options_merge(tmp_path: Path) -> None:
    cfg = ScenarioConfig(
        preset="permuted_mnist", n_experiences=1000, options={"root": str(tmp_path)}
    )
    assert cfg.n_experiences == 1000 and cfg.transform == "permuted"
    assert cfg.options == {"dataset": "MNIST", "root": str(tmp_path)}
    assert "n_experiences" in cfg.model_fields_set and "protocol" in cfg.model_fields_set


def test_an_unknown_preset_lists_the_known_ones() -> None:
    hint = r"\(did you mean 'split_fmnist'\?\)"
    with pytest.raises(ValidationError, match=rf"preset 'split_fnist' {hint}; known: core50"):
        ScenarioConfig(preset="split_fnist")


@pytest.mark.skipif(not FMNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_split_fmnist_builds_from_the_real_fashion_mnist() -> None:
    cfg = ScenarioConfig(preset="split_fmnist", options={"train_per_class": 5, "test_per_class": 3})
    stream = build_stream(cfg)
    assert stream.name == "split_fashion_mnist" and len(stream) == 5
    assert stream.input_shape == (1, 28, 28)
    assert [len(e.classes) for e in stream] == [2] * 5
    assert sum(e.n_train for e in stream) == 50 and sum(e.n_test for e in stream) == 30


def test_a_preset_without_its_root_is_an_error_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    spec = {"name": "p", "scenario": {"preset": "split_cifar10"}, "strategies": ["naive"]}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert f"{path}:" in result.output and "scenario.options.root: Field required" in result.output


def test_list_presets_names_each_with_its_source() -> None:
    result = CliRunner().invoke(app, ["list", "presets"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in AVALANCHE_NAMES:
        assert name in result.output
    assert "Split CIFAR-100 (Avalanche SplitCIFAR100): 100 classes in 10" in result.output
