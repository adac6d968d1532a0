"""The experiment file: schema, validation and the trials it expands to.

An experiment file is YAML. It is validated completely before anything starts
(no Ray instance, no MLflow run); every problem is reported as
``FILE:LINE: field.path: message``. See the README for the reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lifelong.platform.models import MODELS, ModelConfig
from lifelong.platform.overrides import apply_overrides
from lifelong.platform.plugins import PluginError, PluginRef, load_entry_points, load_plugin
from lifelong.platform.search import FoundSpaces, Space, extract_spaces, set_path
from lifelong.platform.suggest import did_you_mean, field_names, model_at
from lifelong.platform.training import TrainingConfig
from lifelong.platform.tuning import TuneSection
from lifelong.platform.tuning import problems as tune_problems
from lifelong.scenarios import (
    SOURCES,
    ScenarioConfig,
    ScenarioError,
    Stream,
    build_stream,
    check_scenario,
)
from lifelong.scenarios.builder import source_config
from lifelong.strategies import STRATEGIES, get_strategy

Loc = tuple[str | int, ...]
MAX_SEEDS = 10_000
MAX_SEED = 2**32 - 1  # what numpy and Lightning accept as a seed
MAX_WIDTH = 1_000_000  # a hidden layer wider than this is a typo, not a model


class SpecError(ValueError):
    """An invalid experiment file: a list of ``(location, line, message)`` problems."""

    def __init__(self, file: str, problems: Sequence[tuple[Loc, int | str | None, str]]) -> None:
        self.file = file
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        """Return one line per problem: ``FILE:LINE: field: message``."""
        lines = []
        for loc, line, msg in self.problems:
            if isinstance(line, str):  # e.g. "command line (training.lr=x)"
                where = line
            else:
                where = f"{self.file}:{line}" if line else self.file
            field = format_loc(loc)
            lines.append(f"{where}: {field + ': ' if field else ''}{msg}")
        return "\n".join(lines)


def format_loc(loc: Loc) -> str:
    """Render a location as ``strategies[1].l2.lambda``."""
    out = ""
    for part in loc:
        if not isinstance(part, int):
            part = str(part)
            if not part.isprintable():  # a control character must not break the line
                part = repr(part)[1:-1]
            part = _clip(part)
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _clip(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (a huge key or value must not flood the message)."""
    return text if len(text) <= limit else text[:limit] + "..."


class ResourcesConfig(BaseModel):
    """Ray resources each trial asks for (fractions allowed, e.g. ``gpu: 0.25``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: float = Field(1.0, gt=0, le=1024, description="CPUs per trial (per worker)")
    gpu: float = Field(
        0.0, ge=0, le=64, description="GPUs per trial (per worker; fractions share one)"
    )
    workers: int = Field(
        1,
        ge=1,
        le=1024,
        description="Ray Train workers that train each trial's model data-parallel "
        "(DDP: each batch split over them, gradients summed; docs/cluster.md)",
    )
    vectorize: int | Literal["auto"] = Field(
        1,
        description="trials that differ only in seed and training.lr trained together as one "
        "program, up to this many (stacked parameters, one vmapped step; docs/performance.md); "
        "auto: up to 64 when trials ask for a GPU, else 1",
    )

    @field_validator("vectorize")
    @classmethod
    def _vectorize_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 1024:
            raise ValueError(f"vectorize is auto or a number of trials from 1 to 1024, got {v}")
        return v

    @property
    def vector_size(self) -> int:
        """The most trials trained together (``vectorize``, ``auto`` resolved)."""
        if self.vectorize == "auto":
            return 64 if self.gpu > 0 else 1
        return int(self.vectorize)


class StrategySpec(BaseModel):
    """One strategy with its validated hyperparameters."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ExperimentSpec(BaseModel):
    """The whole experiment file (see the README's reference)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None,
        min_length=1,
        max_length=250,
        description="MLflow experiment name (default: the file's stem)",
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="plugin files (relative to the experiment file) or module names",
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_SEEDS)
    scenario: ScenarioConfig = Field(default_factory=ScenarioConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    strategies: list[Any] = Field(min_length=1, max_length=10_000)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    max_failures: int = Field(0, ge=0, le=100, description="retries of a failed trial")
    max_concurrent_trials: int | None = Field(None, ge=1)
    num_samples: int = Field(
        1, ge=1, le=10_000, description="draws of the random search spaces per grid point"
    )
    tune: TuneSection | None = Field(
        None, description="choose hyperparameters on a validation stream first (docs/tuning.md)"
    )
    search_seed: int = Field(
        0, ge=0, le=MAX_SEED, description="random state of the search-space draws"
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(ord(c) < 32 or ord(c) == 127 for c in v)):
            raise ValueError(f"must be printable text, not blank (got {_clip(repr(v))})")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _count_to_list(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            if not 1 <= v <= MAX_SEEDS:  # checked before building the list
                raise ValueError(
                    f"seeds must be a count in 1..{MAX_SEEDS} or a list of seeds, "
                    f"got {_clip(str(v))}"
                )
            return list(range(v))
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0 or max(v) > MAX_SEED:
            raise ValueError(
                f"seeds must be distinct integers in 0..{MAX_SEED}, got {_clip(str(v))}"
            )
        return v


@dataclass(frozen=True)
class TrialSpec:
    """One trial: a composition of strategies, a seed and the resolved configuration.

    ``scenario``, ``model`` and ``training`` are the trial's own sections (plain
    data, search-space values filled in; empty for a trial built by hand, which
    then uses the experiment's). ``varied`` holds the values a search space chose,
    as (MLflow param key, value) pairs; ``base_label`` is the strategy label
    without them.
    """

    strategies: tuple[StrategySpec, ...]
    seed: int
    label: str
    scenario: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    varied: tuple[tuple[str, Any], ...] = ()
    base_label: str = ""

    @property
    def trial_id(self) -> str:
        """A readable unique ID within a sweep, e.g. ``ewc-seed1``."""
        return f"{self.label}-seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for Ray's param space."""
        return {
            "seed": self.seed,
            "label": self.label,
            "strategies": [{"name": s.name, "params": dict(s.params)} for s in self.strategies],
            "scenario": self.scenario,
            "model": self.model,
            "training": self.training,
            "varied": [list(kv) for kv in self.varied],
            "base_label": self.base_label,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(StrategySpec(**s) for s in d["strategies"]),
            int(d["seed"]),
            d["label"],
            dict(d.get("scenario") or {}),
            dict(d.get("model") or {}),
            dict(d.get("training") or {}),
            tuple((str(k), v) for k, v in d.get("varied", [])),
            d.get("base_label") or d["label"],
        )


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: the spec, its strategy groups and where it came from.

    ``spaces`` holds the search spaces of ``scenario``/``model``/``training``
    (MLflow param key, e.g. ``training.lr`` -> space) and ``group_spaces`` those
    of each strategy group's hyperparameters (``strategy.ewc.lambda`` -> space);
    ``spec`` holds each searched field's first candidate. ``overrides`` are the
    command line's ``key=value`` pairs, already applied. ``fixed_trials``, when
    given, are the trials instead of the expansion (a tuned sweep's test phase).
    """

    spec: ExperimentSpec
    groups: tuple[tuple[StrategySpec, ...], ...]
    path: Path | None
    raw: dict[str, Any]
    plugins: tuple[PluginRef, ...] = ()
    spaces: dict[str, Space] = field(default_factory=dict)
    group_spaces: tuple[dict[str, Space], ...] = ()
    overrides: tuple[str, ...] = ()
    fixed_trials: tuple[TrialSpec, ...] = ()
    source_sha256: str = ""

    @property
    def name(self) -> str:
        """MLflow experiment name: ``name`` from the file, else the file's stem."""
        return self.spec.name or (self.path.stem if self.path else "lifelong")

    @property
    def digest(self) -> str:
        """What ``--resume`` must match: the parsed file's SHA-256, and the overrides.

        Without overrides it is the file's own SHA-256 (as sweep states recorded it
        before overrides existed).
        """
        if not self.overrides:
            return self.source_sha256
        parts = [self.source_sha256, *self.overrides]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def trials(self) -> list[TrialSpec]:
        """Every (configuration, seed) pair, in file order (see :mod:`.search`)."""
        from lifelong.platform.expand import expand_trials

        return expand_trials(self)

    def labels(self) -> list[str]:
        """Composed strategy names (``l2+center_loss``), unique within the experiment.

        Groups that would share a name are told apart by the hyperparameters
        that differ from the strategy's defaults: ``ewc(lambda=10)``. Searched
        hyperparameters are left out here; trial labels name their values.
        """
        plain = ["+".join(s.name for s in g) for g in self.groups]
        searched = [set(g) for g in self.group_spaces] or [set() for _ in self.groups]
        return [
            p if plain.count(p) == 1 else "+".join(_with_params(s, keys) for s in g)
            for p, g, keys in zip(plain, self.groups, searched, strict=True)
        ]


def _with_params(s: StrategySpec, searched: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    if s.name.startswith("avalanche."):
        from lifelong.platform.avalanche_learner import defaults as avalanche_defaults

        defaults = avalanche_defaults(s.name)
    else:
        defaults = get_strategy(s.name).Config().model_dump(by_alias=True)
    changed = [
        f"{k}={v}"
        for k, v in s.params.items()
        if defaults.get(k) != v and f"strategy.{s.name}.{k}" not in searched
    ]
    return f"{s.name}({','.join(changed)})" if changed else s.name


# --------------------------------------------------------------------- loading
def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
    """Read and validate an experiment file; raise :class:`SpecError` on any problem.

    ``overrides``: ``dotted.key=YAML`` pairs (``training.lr=0.1``) applied first.
    """
    path = Path(path)
    file = str(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(file, [((), None, f"cannot read the file: {e}")]) from None
    experiment = parse_experiment(text, file=file, path=path, overrides=overrides)
    return dataclasses.replace(experiment, source_sha256=hashlib.sha256(data).hexdigest())


def build_checked_stream(experiment: Experiment) -> Stream:
    """Build and check the stream ``experiment`` describes, as ``lifelong run`` does first.

    Problems of the data itself (an empty experience, NaN inputs, labels
    outside the classes, an unreadable ``arrays`` file) become a
    :class:`SpecError` located at the ``scenario`` section, naming the experience.
    For an experiment that searches ``scenario`` fields this is the first
    candidate's stream; :func:`build_checked_streams` builds every one.
    """
    return _checked(experiment, experiment.spec.scenario, "")


def build_checked_streams(experiment: Experiment) -> dict[str, Stream]:
    """Every distinct stream the experiment's trials learn, by :func:`scenario_key`."""
    from lifelong.platform.expand import scenario_key

    wanted: dict[str, dict[str, Any]] = {}
    for trial in experiment.trials():
        wanted.setdefault(scenario_key(trial.scenario), trial.scenario)
    out = {}
    for key, data in wanted.items():
        config = ScenarioConfig.model_validate(data)
        note = f" (scenario {key})" if len(wanted) > 1 else ""
        out[key] = _checked(experiment, config, note)
    return out


def _checked(experiment: Experiment, config: ScenarioConfig, note: str) -> Stream:
    from lifelong.platform.models.pretrained import input_problem

    file = str(experiment.path) if experiment.path else "<experiment>"
    loc: Loc
    try:
        stream = build_stream(for_model(config, experiment.spec.model))
        problem = input_problem(experiment.spec.model, stream.input_shape)
        if problem is None:
            return stream
        loc, message = ("model", "name"), problem + note
    except ScenarioError as e:
        loc = ("scenario", *_field_loc(e.field))
        message = e.message + note
    except (ValueError, MemoryError) as e:
        loc, message = ("scenario",), f"cannot build the stream{note}: {_clip(str(e), 300)}"
    node = None
    if experiment.path is not None:
        try:
            node = yaml.compose(experiment.path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            node = None
    raise SpecError(file, [(loc, _line(node, loc), message)])


def for_model(config: ScenarioConfig, model: ModelConfig) -> ScenarioConfig:
    """``config`` with a text stream's tokenizer set to the language model's own."""
    if config.source != "text_tasks" or not model.language:
        return config
    options = {**config.options, "tokenizer": {"name": model.name, "path": model.path}}
    return config.model_copy(update={"options": options})


def _language_problems(
    spec: ExperimentSpec, groups: Sequence[tuple[StrategySpec, ...]]
) -> list[tuple[Loc, str]]:
    """A language model and a text stream go together, with strategies that apply to them."""
    from lifelong.platform.models.language import source_problem

    text = spec.scenario.source == "text_tasks"
    model = spec.model
    if model.language and not text:
        return [
            (
                ("model", "name"),
                f"the language model {model.name!r} needs a text stream "
                f"(scenario.source: text_tasks), not {spec.scenario.source!r}",
            )
        ]
    if not text:
        return []
    if not model.language:
        return [
            (
                ("scenario", "source"),
                "text_tasks needs a language model (model.name: smollm2_135m, or "
                f"hf_causal_lm with a path), not {model.name!r}",
            )
        ]
    problems: list[tuple[Loc, str]] = []
    if (where := source_problem(model.name, model.path)) is not None:
        problems.append((("model", where[0]), where[1]))
    if "tokenizer" in spec.scenario.options:
        msg = "the tokenizer is the model's own; leave options.tokenizer out"
        problems.append((("scenario", "options", "tokenizer"), msg))
    if spec.training.task_loss != "cross_entropy":
        msg = "a text stream's loss is the causal-LM cross-entropy; use cross_entropy"
        problems.append((("training", "task_loss"), msg))
    avalanche = sorted({s.name for g in groups for s in g if s.name.startswith("avalanche.")})
    if avalanche:
        msg = f"{', '.join(avalanche)} run Avalanche's classification loop, not a language model's"
        problems.append((("strategies",), msg))
    refused = {s.name for g in groups for s in g if _refuses_text(s.name)}
    for name in sorted(refused):
        reason = STRATEGIES.get(name).language_models
        problems.append((("strategies",), f"{name!r} does not apply to a language model: {reason}"))
    return problems


def _data_parallel_problems(
    spec: ExperimentSpec, groups: Sequence[tuple[StrategySpec, ...]]
) -> list[tuple[Loc, str]]:
    """Strategies that cannot train one model over several workers (``resources.workers``)."""
    n = spec.resources.workers
    if n == 1:
        return []
    problems: list[tuple[Loc, str]] = []
    if spec.resources.vector_size > 1:
        msg = (
            f"workers: {n} trains one trial over several workers; vectorize: "
            f"{spec.resources.vectorize} trains several trials in one; choose one"
        )
        problems.append((("resources", "vectorize"), msg))
    if spec.resources.gpu not in (0, 1):
        msg = (
            f"with workers: {n}, each worker trains on one whole GPU (NCCL puts one rank "
            f"on each GPU); use gpu: 1 or gpu: 0, got {spec.resources.gpu:g}"
        )
        problems.append((("resources", "gpu"), msg))
    accelerator = spec.training.accelerator
    if (accelerator == "cpu" and spec.resources.gpu) or (
        accelerator == "cuda" and not spec.resources.gpu
    ):
        msg = (
            f"training.accelerator {accelerator} with resources.gpu {spec.resources.gpu:g}: "
            "the workers' collectives run on the GPU (NCCL) exactly when each has one"
        )
        problems.append((("training", "accelerator"), msg))
    avalanche = sorted({s.name for g in groups for s in g if s.name.startswith("avalanche.")})
    if avalanche:
        msg = f"{', '.join(avalanche)} train in Avalanche's own loop, on one worker; set workers: 1"
        problems.append((("resources", "workers"), msg))
    for name in sorted({s.name for g in groups for s in g if s.name in STRATEGIES}):
        reason = STRATEGIES.get(name).data_parallel
        if reason is not True:
            msg = f"{name!r} cannot train over {n} workers: {reason}; set workers: 1"
            problems.append((("resources", "workers"), msg))
    return problems


LANGUAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    # HFT from the first stage on, as in the paper (true stands in for the
    # pre-training a model from random weights lacks).
    "hft": {"first_experience_full": False},
    # EWC's Fisher on text is the squared gradient of each batch of this many
    # examples (a per-sample Fisher of a 100M-parameter model is too costly).
    "ewc": {"fisher_batch_size": 8},
}
"""Strategy settings that change when the model is a pre-trained language model (unless given)."""


def _language_defaults(entry: Any) -> Any:
    """A ``strategies`` entry with :data:`LANGUAGE_DEFAULTS` added where it sets nothing.

    ``entry`` is as written in the file: a name, ``{name: {params}}`` or a list of
    those (a composition); anything malformed is returned as is (reported later).
    """
    if isinstance(entry, list):
        return [_language_defaults(item) for item in entry]
    if isinstance(entry, str):
        name, params = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        name, params = next(iter(entry.items()))
        if params is None:
            params = {}
        if not isinstance(name, str) or not isinstance(params, dict):
            return entry
    else:
        return entry
    extra = {k: v for k, v in LANGUAGE_DEFAULTS.get(name, {}).items() if k not in params}
    return {name: {**params, **extra}} if extra else entry


def _refuses_text(name: str) -> bool:
    if name not in STRATEGIES:
        return False
    return STRATEGIES.get(name).language_models is not True


def parse_experiment(
    text: str,
    *,
    file: str = "<experiment>",
    path: Path | None = None,
    overrides: Sequence[str] = (),
) -> Experiment:
    """Validate experiment YAML ``text``; ``file`` names it in error messages.

    ``overrides`` are ``dotted.key=YAML`` pairs from the command line, applied
    before validation; a problem they cause is located at the override.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(e, "problem", None) or str(e)
        if isinstance(e, yaml.reader.ReaderError):  # a control character such as NUL
            line = text[: e.position].count("\n") + 1
            problem = f"character {e.character!r} is not allowed in YAML"
        problem = " ".join(problem.split())  # one line
        if "constructor" in problem:  # e.g. !!python/object: the safe loader refuses it
            problem += "; only plain YAML data is allowed (no Python objects)"
        raise SpecError(file, [((), line, f"invalid YAML: {problem}")]) from None
    except RecursionError:
        raise SpecError(file, [((), None, "invalid YAML: nested too deeply")]) from None
    duplicates = _duplicate_keys(node, ())
    if duplicates:
        raise SpecError(file, duplicates)
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else type(raw).__name__
        raise SpecError(file, [((), 1, f"the file must be a YAML mapping, got {kind}")])
    overridden: list[tuple[Loc, str]] = []
    if overrides:
        raw, overridden, override_problems = apply_overrides(raw, overrides)
        if override_problems:
            raise SpecError(
                file, [(loc, f"command line ({o})", m) for loc, o, m in override_problems]
            )

    def where(loc: Loc) -> int | str | None:
        for prefix, text in overridden:
            if loc[: len(prefix)] == prefix:
                return f"command line ({text})"
        return _line(node, loc)

    refs, problems = _load_plugins(raw.get("plugins", []), path)
    if problems:  # unknown names would follow from a plugin that did not load
        raise SpecError(file, [(loc, where(loc), msg) for loc, msg in problems])
    found = extract_spaces(raw)
    problems += found.problems
    plain_problems: list[tuple[Loc, str]] = []
    spec, groups = _validate(found.plain, plain_problems)
    bad = [where for where, _ in found.problems]  # malformed spaces: said once, above
    problems += [
        (found.locate(loc), msg)
        for loc, msg in plain_problems
        if not any(loc[: len(b)] == b[: len(loc)] for b in bad)
    ]
    if spec is not None and not problems:
        problems += _candidate_problems(found)
    if spec is not None and spec.scenario.source == "text_tasks":
        for where_, _ in found.located:
            if where_[:1] == ("model",):  # the stream is tokenized once, by that model's tokenizer
                msg = "a text stream is tokenized by the model's tokenizer: search no model field"
                problems.append((where_, msg))
    if spec is not None and spec.tune is not None and spec.tune.search == "optuna":
        for where_, space in found.located:
            if space.kind == "grid":
                msg = "optuna draws configurations and does not enumerate a grid; use choice"
                problems.append(((*where_, "grid"), msg))
    if spec is not None and not problems:
        if spec.num_samples > 1 and not found.has_random():
            msg = "repeats random draws (choice, uniform, ...); with no such space it must be 1"
            problems.append((("num_samples",), msg))
    if problems:
        raise SpecError(file, [(loc, where(loc), msg) for loc, msg in problems])
    assert spec is not None
    group_spaces = tuple(found.group_spaces(i) for i in range(len(groups)))
    return Experiment(
        spec,
        tuple(groups),
        path,
        raw,
        tuple(refs),
        spaces=found.global_spaces(),
        group_spaces=group_spaces,
        overrides=tuple(overrides),
        source_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def _validate(
    raw: dict[str, Any], problems: list[tuple[Loc, str]]
) -> tuple[ExperimentSpec | None, list[tuple[StrategySpec, ...]]]:
    """Validate plain experiment data (no search spaces), appending to ``problems``."""
    spec = None
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as e:
        problems += _pydantic_problems(e, (), ExperimentSpec)
    groups: list[tuple[StrategySpec, ...]] = []
    if spec is not None:
        entries = spec.strategies
        if spec.model.language:
            entries = [_language_defaults(e) for e in entries]
        groups = _parse_strategies(entries, problems)
        problems += _scenario_problems(spec)
        if spec.model.name not in MODELS:
            problems.append((("model", "name"), _unknown("model", spec.model.name, MODELS)))
        from lifelong.platform.models.pretrained import config_problems

        for field_name, msg in config_problems(spec.model):
            problems.append((("model", field_name), msg))
        problems += _language_problems(spec, groups)
        problems += _data_parallel_problems(spec, groups)
        if len(spec.model.hidden) > 1000 or max(spec.model.hidden) > MAX_WIDTH:
            shown = _clip(str(spec.model.hidden))
            msg = f"at most 1000 layers of at most {MAX_WIDTH:,} units, got {shown}"
            problems.append((("model", "hidden"), msg))
        if spec.tune is not None:
            problems += tune_problems(spec.tune, spec.seeds, spec.scenario.n_experiences)
        avalanche = sorted({s.name for g in groups for s in g if s.name.startswith("avalanche.")})
        if avalanche and spec.scenario.augment:
            msg = (
                f"{', '.join(avalanche)} train with Avalanche's own loader, which would not "
                "apply scenario.augment; remove augment or the Avalanche strategies"
            )
            problems.append((("scenario", "augment"), msg))
        for i, g in enumerate(groups):
            if g in groups[:i]:
                label = "+".join(s.name for s in g)
                msg = f"{label!r} is listed twice with the same settings"
                problems.append((("strategies",), msg))
    return spec, groups


def _candidate_problems(found: FoundSpaces) -> list[tuple[Loc, str]]:
    """Validate every value a search space can take, located at the value itself.

    Each candidate (every listed value; both bounds of a range) replaces the
    first candidate in otherwise valid data, which is validated again.
    """
    problems: list[tuple[Loc, str]] = []
    for where, space in found.located:
        for index, value in space.candidates()[1:]:  # the first is in ``found.plain``
            trial_problems: list[tuple[Loc, str]] = []
            _validate(set_path(found.plain, where, value), trial_problems)
            for loc, msg in trial_problems:
                if loc[: len(where)] == where:
                    loc = (*where, space.kind, index, *loc[len(where) :])
                problems.append((loc, msg))
            if trial_problems:
                break  # one bad value per space is enough to say
        probe = space.fractional_probe()
        if probe is not None and not problems:
            trial_problems = []
            _validate(set_path(found.plain, where, probe), trial_problems)
            if trial_problems:
                first = trial_problems[0][1]
                msg = (
                    f"{space.kind} draws fractional numbers such as {probe}, which this field "
                    f"refuses ({first}); use randint [a, b] for integers"
                )
                problems.append(((*where, space.kind), msg))
    return problems


def _load_plugins(plugins: Any, path: Path | None) -> tuple[list[PluginRef], list[tuple[Loc, str]]]:
    """Load installed entry points and the experiment's plugins, collecting problems."""
    try:
        load_entry_points()
    except PluginError as e:
        return [], [((), str(e))]
    if not isinstance(plugins, list) or not all(isinstance(p, str) and p for p in plugins):
        return [], [(("plugins",), "must be a list of plugin file paths or module names")]
    base = path.resolve().parent if path else Path.cwd()
    refs, problems = [], []
    for i, spec in enumerate(plugins):
        try:
            refs.append(load_plugin(spec, base))
        except PluginError as e:
            problems.append((("plugins", i), str(e)))
    return refs, problems


def _parse_strategies(
    entries: list[Any], problems: list[tuple[Loc, str]]
) -> list[tuple[StrategySpec, ...]]:
    """Each entry: ``name``, ``{name: {params}}``, or a list of those (composed)."""
    groups = []
    for i, entry in enumerate(entries):
        items = entry if isinstance(entry, list) else [entry]
        if not items:
            problems.append((("strategies", i), "an empty composition; name a strategy"))
            continue
        group = []
        for k, item in enumerate(items):
            loc: Loc = ("strategies", i, k) if isinstance(entry, list) else ("strategies", i)
            spec = _parse_one_strategy(item, loc, problems)
            if spec is not None:
                group.append(spec)
        names = [s.name for s in group]
        if len(names) > 1 and any(n.startswith("avalanche.") for n in names):
            msg = f"an Avalanche strategy runs its own loop and cannot be composed: {names}"
            problems.append((("strategies", i), msg))
        elif len(set(names)) != len(names):
            problems.append((("strategies", i), f"a strategy appears twice in {names}"))
        elif len(group) == len(items):
            groups.append(tuple(group))
    return groups


def _parse_one_strategy(
    item: Any, loc: Loc, problems: list[tuple[Loc, str]]
) -> StrategySpec | None:
    if isinstance(item, str):
        name, params = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        name, params = next(iter(item.items()))
        params = {} if params is None else params
        if not isinstance(name, str):
            problems.append((loc, f"a strategy name must be a string, got {name!r}"))
            return None
        if not isinstance(params, dict):
            problems.append(((*loc, name), f"hyperparameters must be a mapping, got {params!r}"))
            return None
    else:
        problems.append(
            (
                loc,
                "expected a strategy name, {name: {hyperparameters}}, "
                f"or a list of those; got {item!r}",
            )
        )
        return None
    if name.startswith("avalanche."):  # Avalanche's own strategy (platform/avalanche_learner.py)
        from lifelong.platform.avalanche_learner import check_params

        checked, found = check_params(name, params)
        problems.extend(((*loc, *sub), msg) for sub, msg in found)
        return None if found else StrategySpec(name=name, params=checked)
    if name not in STRATEGIES:
        problems.append((loc, _unknown("strategy", name, STRATEGIES)))
        return None
    try:
        config = get_strategy(name).Config.model_validate(params)
    except ValidationError as e:
        problems.extend(_pydantic_problems(e, (*loc, name), get_strategy(name).Config))
        return None
    params = config.model_dump(by_alias=True)
    bad = [(k, v) for k, v in params.items() if not _plain_number(v)]
    for k, v in bad:
        problems.append(((*loc, name, k), f"must be a finite number of sane size, got {v!r}"))
    return None if bad else StrategySpec(name=name, params=params)


def _plain_number(value: Any) -> bool:
    """False for NaN, infinities and integers beyond 64 bits (other values: True)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    return True


def _scenario_problems(spec: ExperimentSpec) -> list[tuple[Loc, str]]:
    try:
        source_config(spec.scenario)
    except ValidationError as e:
        options = SOURCES.get(spec.scenario.source).Config
        return _pydantic_problems(e, ("scenario", "options"), options)
    except (ValueError, KeyError) as e:
        return [(("scenario", "source"), str(e).strip("'\""))]
    try:
        check_scenario(spec.scenario)
    except ScenarioError as e:
        return [(("scenario", *_field_loc(e.field)), e.message)]
    return []


def _field_loc(field: str) -> Loc:
    """A dotted field path as a location: ``options.tasks.0`` renders ``options.tasks[0]``."""
    return tuple(int(p) if p.isdigit() else p for p in field.split("."))


def _unknown(kind: str, name: object, known: Iterable[str]) -> str:
    known = list(known)
    hint = did_you_mean(name, known)
    return f"unknown {kind} {_clip(repr(name))}{hint}; known: {', '.join(known)}"


def _pydantic_problems(
    e: ValidationError, prefix: Loc, model: type[BaseModel] | None = None
) -> list[tuple[Loc, str]]:
    """One problem per error of ``e``; an unknown field of ``model`` gets a did-you-mean."""
    out = []
    for err in e.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        msg = err["msg"]
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            shown = repr(err["input"])
            msg += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
        if err["type"] == "extra_forbidden":
            holder = model_at(model, err["loc"][:-1]) if model is not None else None
            hint = did_you_mean(err["loc"][-1], field_names(holder)) if holder else ""
            msg = f"unknown field{hint}"
        out.append((loc, msg))
    return out


def _duplicate_keys(node: yaml.Node | None, loc: Loc) -> list[tuple[Loc, int | None, str]]:
    """A key given twice in one mapping (YAML keeps the last one silently): one problem each."""
    out: list[tuple[Loc, int | None, str]] = []
    stack: list[tuple[yaml.Node | None, Loc]] = [(node, loc)]
    while stack:  # iterative: deep nesting must not exhaust the call stack
        current, where = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key, value in current.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                line = key.start_mark.line + 1
                if name is not None and name in seen and key.tag != "tag:yaml.org,2002:merge":
                    msg = f"duplicate key (first given at line {seen[name]})"
                    out.append(((*where, name), line, msg))
                elif name is not None:
                    seen[name] = line
                stack.append((value, (*where, name if name is not None else "?")))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((v, (*where, i)) for i, v in enumerate(current.value))
    return out


def _line(node: yaml.Node | None, loc: Loc) -> int | None:
    """Line (1-based) of the deepest YAML node ``loc`` reaches."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
