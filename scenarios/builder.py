"""Build a validated :class:`Stream` from a :class:`ScenarioConfig` or from user arrays.

Checks run in three layers, cheapest first:

1. :class:`ScenarioConfig` validates field types and ranges and the source name;
2. :func:`check_scenario` validates the source options and cross-field
   constraints (experiences vs. classes, ``rotated`` on images only, a
   readable ``arrays`` file) without building the data;
3. :func:`validate_stream` checks the built data (no empty experience, finite
   inputs, labels in range) and names the offending experience.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lifelong.platform.suggest import did_you_mean
from lifelong.scenarios import avalanche as _avalanche  # noqa: F401  (registers 'avalanche')
from lifelong.scenarios import disk as _disk  # noqa: F401  (registers torchvision, image_folder, fashion_mnist)
from lifelong.scenarios import text as _text  # noqa: F401  (registers text_tasks)
from lifelong.scenarios.augment import AugmentStep, build_augment
from lifelong.scenarios.boundaries import Boundaries, boundary_stream_name, make_boundary_stream
from lifelong.scenarios.preset import apply_preset, preset_names
from lifelong.scenarios.protocols import Transform, make_stream, stream_name
from lifelong.scenarios.sources import (
    SOURCES,
    ScenarioError,
    Source,
    dataset_from_arrays,
)
from lifelong.scenarios.stream import LazyExperiences, Protocol, Stream

__all__ = [
    "ScenarioConfig",
    "ScenarioError",
    "build_stream",
    "check_scenario",
    "source_config",
    "stream_from_arrays",
    "validate_stream",
]


class ScenarioConfig(BaseModel):
    """Which data, cut how: the ``scenario`` section of an experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str | None = Field(
        None,
        description="A benchmark by name (split_mnist, permuted_mnist, split_cifar100, ...; "
        "scenarios/presets/): its fields are the defaults, the experiment's own fields win.",
    )
    source: str = Field(
        "digits", description="Registered data source name (see `lifelong.scenarios.SOURCES`)."
    )
    protocol: Protocol = Field(
        "class_incremental",
        description="class_incremental, task_incremental (task ids reach the model) or "
        "domain_incremental (same labels, transformed inputs).",
    )
    n_experiences: int = Field(5, ge=1, description="Number of experiences in the stream.")
    seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="Fixes the class order, train/test splits, permutations and generated data.",
    )
    transform: Transform = Field(
        "permuted",
        description="Domain-incremental only: 'permuted' (input features), 'rotated' (images) "
        "or 'shuffled_labels' (same inputs, labels re-shuffled: the plasticity stream).",
    )
    max_angle: float = Field(
        180.0,
        gt=0,
        le=360,
        description="Rotated only: angles are evenly spaced in [0, max_angle) degrees.",
    )
    boundaries: Boundaries = Field(
        "sharp",
        description="Class_incremental only: 'sharp' (disjoint class groups), 'blurry' "
        "(blurry-M: blurry_m% of each experience's training samples come from the other "
        "groups, Bang et al. 2021) or 'gaussian' (task-free: each group fades in and out on "
        "a Gaussian schedule, Shanahan et al. 2021). Test sets stay the nominal groups'.",
    )
    blurry_m: float = Field(
        10.0,
        gt=0,
        lt=100,
        allow_inf_nan=False,
        description="Blurry only: M, the percentage of each experience's training samples "
        "drawn from the other experiences' classes (blurry10, blurry30).",
    )
    gaussian_width: float = Field(
        0.5,
        gt=0,
        allow_inf_nan=False,
        description="Gaussian only: the standard deviation, in experiences, of the Gaussian "
        "over time of each class group (centred at its own experience).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the source, validated by its Config."
    )
    augment: list[AugmentStep] = Field(
        default_factory=list,
        description="Train-time augmentation of image inputs, per sample in the loader "
        "workers (never the test data): names or {name: {parameter: value}}, e.g. "
        "[horizontal_flip, {random_crop: {padding: 4}}]; see lifelong.scenarios.augment.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in preset_names():
            return apply_preset(data)
        return data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str | None) -> str | None:
        if name is not None and name not in preset_names():
            hint = did_you_mean(name, preset_names())
            raise ValueError(f"unknown preset {name!r}{hint}; known: {', '.join(preset_names())}")
        return name

    @field_validator("source")
    @classmethod
    def _known_source(cls, name: str) -> str:
        if name not in SOURCES:
            hint = did_you_mean(name, SOURCES)
            raise ValueError(f"unknown scenario source {name!r}{hint}; known: {', '.join(SOURCES)}")
        return name


def source_config(cfg: ScenarioConfig) -> BaseModel:
    """Validate ``cfg.options`` against the source's ``Config`` and return it.

    Raises:
        pydantic.ValidationError: locations are relative to ``options``.
    """
    return SOURCES.get(cfg.source).Config.model_validate(cfg.options)


def _check_boundaries(cfg: ScenarioConfig) -> None:
    """Check ``boundaries`` against the protocol and its own options' fields.

    ``blurry_m`` and ``gaussian_width`` count as set when they differ from their
    defaults: a resolved config (``model_dump``, as trials and MLflow carry it)
    names every field, so ``model_fields_set`` alone would reject every sharp one.
    """
    for name, used_by in (("blurry_m", "blurry"), ("gaussian_width", "gaussian")):
        default = ScenarioConfig.model_fields[name].default
        if cfg.boundaries != used_by and getattr(cfg, name) != default:
            raise ScenarioError(
                name,
                f"is used by boundaries: {used_by} only; this scenario's boundaries are "
                f"{cfg.boundaries!r} (remove {name} or set boundaries: {used_by})",
            )
    if cfg.boundaries != "sharp" and cfg.protocol != "class_incremental":
        why = (
            "task ids could not tell the classes apart when experiences share them"
            if cfg.protocol == "task_incremental"
            else "every experience already holds every class"
        )
        raise ScenarioError(
            "boundaries",
            f"{cfg.boundaries!r} needs protocol class_incremental, got {cfg.protocol} ({why})",
        )
    if cfg.boundaries != "sharp" and cfg.n_experiences < 2:
        raise ScenarioError(
            "n_experiences",
            f"boundaries {cfg.boundaries!r} need at least 2 experiences, got {cfg.n_experiences}",
        )


def _checked_source(cfg: ScenarioConfig) -> Source:
    """Run :func:`check_scenario`'s checks and return the ready source object."""
    source = SOURCES.get(cfg.source)(source_config(cfg))
    _check_boundaries(cfg)
    if getattr(source, "stream_source", False):  # brings its own experiences (avalanche)
        if cfg.boundaries != "sharp":
            raise ScenarioError(
                "boundaries",
                f"source {cfg.source!r} brings its own experiences; only 'sharp' applies",
            )
        source.check(cfg)  # type: ignore[attr-defined]
        return source
    info = source.info()
    _check_augment(cfg, info.input_shape)
    split = cfg.protocol in ("class_incremental", "task_incremental")
    if split and cfg.n_experiences > info.n_classes:
        raise ScenarioError(
            "n_experiences",
            f"scenario has {info.n_classes} classes, cannot make {cfg.n_experiences} experiences",
        )
    if cfg.protocol == "domain_incremental" and cfg.transform == "rotated" and not info.is_image:
        raise ScenarioError(
            "transform",
            f"'rotated' needs image inputs shaped (C, H, W); source {cfg.source!r} has inputs "
            f"shaped {info.input_shape}",
        )
    return source


def check_scenario(cfg: ScenarioConfig) -> None:
    """Check ``cfg`` across fields without building the stream (an ``arrays`` file is read).

    Raises:
        pydantic.ValidationError: the source options are invalid (locations
            relative to ``options``).
        ScenarioError: a cross-field constraint fails; ``field`` is the dotted
            path relative to the scenario (``n_experiences``, ``transform``,
            ``options.path``).
    """
    _checked_source(cfg)


def validate_stream(stream: Stream) -> None:
    """Check the built data before training.

    Every experience must have training and test samples, finite inputs of the
    stream's input shape, labels in ``0..n_classes-1`` and among the classes it
    declares; the stream needs two classes or more (and so does each experience
    of a domain-incremental stream, which shows every class each time). Of a
    stream built on demand (:class:`LazyExperiences`) only its representatives
    are built and checked: its transforms keep shapes, finite values and labels.

    Raises:
        ScenarioError: (field ``source``) naming the experience index.
    """
    lazy = isinstance(stream.experiences, LazyExperiences)
    checked = stream.experiences.representatives() if lazy else stream.experiences
    for e in checked:
        for part, x, y in (("train", e.x_train, e.y_train), ("test", e.x_test, e.y_test)):
            where = f"experience {e.index} ({part})"
            if len(y) == 0:
                raise ScenarioError("source", f"{where} has no samples (classes {e.classes})")
            if len(x) != len(y):
                raise ScenarioError("source", f"{where} has {len(x)} inputs but {len(y)} labels")
            if tuple(x.shape[1:]) != stream.input_shape:
                raise ScenarioError(
                    "source",
                    f"{where} has inputs shaped {tuple(x.shape[1:])}, "
                    f"expected {stream.input_shape}",
                )
            n_bad = int((~torch.isfinite(x)).sum())
            if n_bad:
                raise ScenarioError(
                    "source", f"{where} has {n_bad} non-finite input values (NaN or inf)"
                )
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= stream.n_classes:
                raise ScenarioError(
                    "source",
                    f"{where} has labels in {lo}..{hi}, outside 0..{stream.n_classes - 1}",
                )
            present = torch.unique(y).tolist()
            foreign = sorted(set(present) - set(e.classes))
            if foreign:
                raise ScenarioError(
                    "source",
                    f"{where} has labels {foreign[:10]} outside its declared classes "
                    f"{list(e.classes)[:20]}",
                )
            one_class = stream.n_classes < 2 or stream.protocol == "domain_incremental"
            if part == "train" and len(present) < 2 and one_class:
                raise ScenarioError(
                    "source",
                    f"{where} holds one class only ({present[0]}): nothing to tell apart "
                    f"(the stream has {stream.n_classes} class(es); protocol {stream.protocol})",
                )


def build_stream(cfg: ScenarioConfig) -> Stream:
    """Check ``cfg``, load its source, cut the stream and validate it.

    Raises:
        pydantic.ValidationError: invalid source options.
        ScenarioError: see :func:`check_scenario` and :func:`validate_stream`.
    """
    source = _checked_source(cfg)
    if getattr(source, "stream_source", False):
        stream = source.stream(cfg)  # type: ignore[attr-defined]  (validated there)
        _check_augment(cfg, stream.input_shape)
        return _with_augment(stream, cfg)
    if cfg.boundaries != "sharp":
        stream = make_boundary_stream(
            source.load(cfg.seed),
            boundaries=cfg.boundaries,
            n_experiences=cfg.n_experiences,
            seed=cfg.seed,
            name=boundary_stream_name(cfg.source, cfg.boundaries, m=cfg.blurry_m),
            m=cfg.blurry_m,
            width=cfg.gaussian_width,
        )
    else:
        stream = make_stream(
            source.load(cfg.seed),
            protocol=cfg.protocol,
            n_experiences=cfg.n_experiences,
            seed=cfg.seed,
            name=stream_name(cfg.source, cfg.protocol, cfg.transform),
            transform=cfg.transform,
            max_angle=cfg.max_angle,
        )
    stream.info["source"] = cfg.source
    validate_stream(stream)
    return _with_augment(stream, cfg)


def _check_augment(cfg: ScenarioConfig, input_shape: tuple[int, ...]) -> None:
    """Check ``augment`` against the source's inputs (images, and each step runs on one)."""
    if not cfg.augment:
        return
    if len(input_shape) != 3:
        raise ScenarioError(
            "augment",
            f"needs image inputs shaped (C, H, W); source {cfg.source!r} has inputs "
            f"shaped {input_shape} (remove augment)",
        )
    try:
        build_augment(cfg.augment, input_shape)
    except ValueError as e:
        raise ScenarioError("augment", str(e)) from None


def _with_augment(stream: Stream, cfg: ScenarioConfig) -> Stream:
    """``stream``, carrying ``cfg.augment`` in ``info["augment"]`` when it has steps.

    The learner reads it there (plain data, it travels with the stream to Ray
    workers) and streams the training data through its loader, augmented per sample.
    """
    if cfg.augment:
        stream.info["augment"] = [dict(step) for step in cfg.augment]
    return stream


def stream_from_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    protocol: Protocol = "class_incremental",
    n_experiences: int = 5,
    seed: int = 0,
    transform: Transform = "permuted",
    max_angle: float = 180.0,
    name: str = "arrays",
) -> Stream:
    """Build a stream from in-memory arrays (numpy arrays or CPU tensors).

    Args:
        x_train: training inputs shaped ``(N, *input_shape)``; ``(C, H, W)``
            samples count as images (needed for ``rotated``).
        y_train: integer labels ``0..K-1``, every class present.
        x_test: test inputs, same per-sample shape as ``x_train``.
        y_test: integer labels within those of ``y_train``.
        protocol: how to cut the data (see :mod:`lifelong.scenarios.protocols`).
        n_experiences: number of experiences.
        seed: fixes the class order and permutations.
        transform: domain-incremental only, ``permuted``, ``rotated`` or ``shuffled_labels``.
        max_angle: rotated only, angles evenly spaced in ``[0, max_angle)``.
        name: source name used in the stream name (``split_<name>``...).

    Raises:
        ScenarioError: ``field`` names the offending array or argument.
    """
    data = dataset_from_arrays(x_train, y_train, x_test, y_test)
    stream = make_stream(
        data,
        protocol=protocol,
        n_experiences=n_experiences,
        seed=seed,
        name=stream_name(name, protocol, transform),
        transform=transform,
        max_angle=max_angle,
    )
    stream.info["source"] = name
    validate_stream(stream)
    return stream
