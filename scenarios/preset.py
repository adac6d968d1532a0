"""Scenario presets: the usual benchmarks by their Avalanche-style names.

A preset is one short YAML file in ``scenarios/presets/`` holding fields of the
``scenario`` section; ``scenario: {preset: split_cifar100, options: {root: ~/data}}``
starts from them, and every field the experiment sets wins (``options`` merge
key by key). The preset's name is kept in the resolved scenario, so MLflow shows
which preset a run used::

    scenario:
      preset: permuted_mnist
      n_experiences: 1000        # overrides the preset's 10
      options: {root: ~/data}    # added to the preset's {dataset: MNIST}
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PRESETS_DIR", "apply_preset", "load_preset", "preset_names"]

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    """The names of the presets that ship with lifelong, sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


@functools.cache
def load_preset(name: str) -> dict[str, Any]:
    """The scenario fields of preset ``name``.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    path = PRESETS_DIR / f"{name}.yaml"
    if name not in preset_names():
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and "preset" not in data, f"malformed preset file {path}"
    return data


def apply_preset(scenario: dict[str, Any]) -> dict[str, Any]:
    """``scenario`` on top of its preset's fields (a scenario without ``preset`` is returned as is).

    Raises:
        ValueError: an unknown preset name.
    """
    name = scenario.get("preset")
    if name is None:
        return scenario
    base = load_preset(name)
    options = {**base.get("options", {}), **(scenario.get("options") or {})}
    return {**base, **scenario, "options": options}
