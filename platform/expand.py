"""An experiment's trials: every configuration its search spaces give, times every seed.

A trial's configuration is fully resolved here, on the driver: its own
``scenario``, ``model`` and ``training`` sections and its strategies'
hyperparameters, with the values the search spaces chose (see
:mod:`lifelong.platform.search`). Its label is the strategy label followed by
every varied value, sorted as shown, ``ewc [ewc.lambda=10, training.lr=0.1]``
(the MLflow param keys are ``strategy.ewc.lambda`` and ``training.lr``); ``lifelong
compare`` labels rows the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from lifelong.platform.search import Space, expand, set_path, value_text
from lifelong.strategies import get_strategy

if TYPE_CHECKING:
    from lifelong.platform.spec import Experiment, StrategySpec, TrialSpec

_SECTIONS = ("scenario", "model", "training")


def expand_trials(experiment: Experiment) -> list[TrialSpec]:
    """Every (configuration, seed) trial of ``experiment``, in file order.

    Configurations of one strategy entry come in the order of
    :func:`lifelong.platform.search.expand`; each runs once per seed.
    """
    if experiment.fixed_trials:
        return list(experiment.fixed_trials)
    spec = experiment.spec
    trials = []
    for i in range(len(experiment.groups)):
        base_trial, spaces = group_base(experiment, i)
        configs = expand(spaces, spec.num_samples, spec.search_seed)
        varying = [k for k in spaces if len({value_text(c[k]) for c in configs}) > 1]
        shown = sorted(varying, key=shown_name)
        seen: set[str] = set()
        for config in configs:
            trial = apply_values(base_trial, config, shown)
            if trial.label in seen:  # equal once validated (grid [1, 1.0] on a float field)
                continue
            seen.add(trial.label)
            trials += [dataclasses.replace(trial, seed=seed) for seed in spec.seeds]
    return trials


def shown_name(key: str) -> str:
    """A param key as a label shows it: ``strategy.ewc.lambda`` as ``ewc.lambda``."""
    return key.removeprefix("strategy.")


def group_base(experiment: Experiment, i: int) -> tuple[TrialSpec, dict[str, Space]]:
    """Strategy entry ``i``'s trial before any search value (first seed) and its spaces."""
    from lifelong.platform.spec import TrialSpec

    spec = experiment.spec
    sections = [_dump(getattr(spec, s)) for s in _SECTIONS]
    label = experiment.labels()[i]
    own = experiment.group_spaces[i] if experiment.group_spaces else {}
    base = TrialSpec(experiment.groups[i], spec.seeds[0], label, *sections, (), label)
    return base, {**experiment.spaces, **own}


def apply_values(trial: TrialSpec, values: dict[str, Any], shown: list[str]) -> TrialSpec:
    """``trial`` with the search values ``values`` (param key -> value) filled in.

    ``shown``: the keys its label names (those that vary between configurations).
    """
    sections = {"scenario": trial.scenario, "model": trial.model, "training": trial.training}
    for key, value in values.items():
        if not key.startswith("strategy."):
            path = tuple(key.split("."))
            sections[path[0]] = set_path(sections[path[0]], path[1:], value)
    sections = _validated(sections) if values else sections
    strategies = tuple(_with_values(s, values) for s in trial.strategies)
    varied = tuple((k, _lookup(k, sections, strategies)) for k in shown)
    text = ", ".join(f"{shown_name(k)}={value_text(v)}" for k, v in varied)
    label = f"{trial.base_label} [{text}]" if varied else trial.base_label
    return dataclasses.replace(
        trial,
        strategies=strategies,
        label=label,
        varied=varied,
        **sections,
    )


def trial_from_config(config: dict[str, Any]) -> TrialSpec:
    """The trial a Ray Tune trial's ``config`` describes.

    ``config["trial"]`` is a :meth:`TrialSpec.to_dict`; under a search algorithm
    (Optuna) ``config["values"]`` holds the values it proposed, by param key.
    """
    from lifelong.platform.spec import TrialSpec

    trial = TrialSpec.from_dict(config["trial"])
    values = config.get("values") or {}
    return apply_values(trial, values, sorted(values, key=shown_name)) if values else trial


def _validated(sections: dict[str, Any]) -> dict[str, Any]:
    """The sections validated again, so values read as their field's type (``1`` -> ``1.0``)."""
    from lifelong.platform.models import ModelConfig
    from lifelong.platform.training import TrainingConfig
    from lifelong.scenarios import ScenarioConfig

    kinds = {"scenario": ScenarioConfig, "model": ModelConfig, "training": TrainingConfig}
    return {k: _dump(kinds[k].model_validate(v)) for k, v in sections.items()}


def _dump(section: BaseModel) -> dict[str, Any]:
    """A section with every field resolved, as trials carry it and MLflow logs it.

    A source that brings its own experiences (``avalanche``, image folders by
    domain) infers the protocol and the number of experiences unless the file
    sets them: those fields stay out when unset, never logged with a default
    that the stream does not have.
    """
    from lifelong.scenarios import SOURCES, ScenarioConfig, source_config

    data = section.model_dump(mode="json")
    if not isinstance(section, ScenarioConfig):
        return data
    source = SOURCES.get(section.source)(source_config(section))
    if getattr(source, "stream_source", False):
        for name in ("protocol", "n_experiences"):
            if name not in section.model_fields_set:
                data.pop(name)
    return data


def _lookup(key: str, sections: dict[str, Any], strategies: tuple[StrategySpec, ...]) -> Any:
    """The value a trial has for the param key ``key`` (as MLflow logs it)."""
    if key.startswith("strategy."):
        for s in strategies:
            prefix = f"strategy.{s.name}."
            if key.startswith(prefix):
                return s.params[key[len(prefix) :]]
    path = key.split(".")
    value: Any = sections
    for part in path:
        value = value[part]
    return value


def _with_values(s: StrategySpec, config: dict[str, Any]) -> StrategySpec:
    """``s`` with the hyperparameter values ``config`` chose for it, validated again."""
    from lifelong.platform.spec import StrategySpec

    prefix = f"strategy.{s.name}."
    chosen = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    if not chosen:
        return s
    params = {**s.params, **chosen}
    if not s.name.startswith("avalanche."):
        params = get_strategy(s.name).Config.model_validate(params).model_dump(by_alias=True)
    return StrategySpec(name=s.name, params=params)


def scenario_key(scenario: dict[str, Any]) -> str:
    """A short stable key of a resolved ``scenario`` section (which stream a trial learns)."""
    text = json.dumps(scenario, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def resolved_sections(experiment: Experiment) -> dict[str, dict[str, Any]]:
    """The experiment's sections as data, with each searched field shown as its space."""
    out = {s: _dump(getattr(experiment.spec, s)) for s in _SECTIONS}
    for key, space in experiment.spaces.items():
        path = tuple(key.split("."))
        out[path[0]] = set_path(out[path[0]], path[1:], space.to_json())
    return out
