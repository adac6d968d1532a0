"""Protocols: how a :class:`~lifelong.scenarios.sources.Dataset` is cut into a :class:`Stream`.

- ``class_incremental``: a random class order from the seed, split into
  ``n_experiences`` groups as evenly as possible; each experience holds the
  samples of its classes; task id 0 everywhere.
- ``task_incremental``: the same split, with task id = experience index (a
  multi-head model masks its logits with ``Stream.task_classes``).
- ``domain_incremental``: every experience holds all classes and all the data,
  transformed per experience (``permuted``: a fixed random permutation of the
  flattened input features, identity for experience 0; ``rotated``: images
  rotated by angles evenly spaced in ``[0, max_angle)``; ``shuffled_labels``:
  the same inputs with the labels re-mapped by a fixed random permutation of
  the classes per experience, identity for experience 0 — the loss-of-plasticity
  stream of Lyle et al. 2023 and Lewandowski et al. 2025); task id 0.

Everything is deterministic from the seed; no per-sample Python loop.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lifelong.scenarios.derived import DerivedExperiences
from lifelong.scenarios.sources import Dataset, ScenarioError
from lifelong.scenarios.stream import Experience, Protocol, Stream

__all__ = [
    "PROTOCOLS",
    "Transform",
    "class_incremental",
    "domain_incremental",
    "make_stream",
    "split_classes",
    "stream_name",
    "task_incremental",
]

Transform = Literal["permuted", "rotated", "shuffled_labels"]
PROTOCOLS: tuple[Protocol, ...] = ("class_incremental", "task_incremental", "domain_incremental")

# Purposes for independent generators drawn from one seed (0 is the source's data).
_CLASS_ORDER, _PERMUTATIONS, _LABEL_SHUFFLES = 1, 2, 3


def stream_name(source: str, protocol: Protocol, transform: Transform = "permuted") -> str:
    """Return a stream's name.

    ``split_<source>`` (class-incremental), ``split_<source>_tasks``
    (task-incremental) or ``<transform>_<source>`` (domain-incremental).
    """
    if protocol == "class_incremental":
        return f"split_{source}"
    if protocol == "task_incremental":
        return f"split_{source}_tasks"
    return f"{transform}_{source}"


def split_classes(n_classes: int, n_experiences: int, seed: int) -> list[list[int]]:
    """Return a random class order from ``seed`` cut into ``n_experiences`` near-equal groups.

    Groups differ in size by at most one (the first ones are larger).

    Raises:
        ScenarioError: (field ``n_experiences``) if ``n_experiences`` is not in ``1..n_classes``.
    """
    if n_experiences < 1:
        raise ScenarioError("n_experiences", f"must be at least 1, got {n_experiences}")
    if n_experiences > n_classes:
        raise ScenarioError(
            "n_experiences",
            f"scenario has {n_classes} classes, cannot make {n_experiences} experiences",
        )
    order = np.random.default_rng([seed, _CLASS_ORDER]).permutation(n_classes)
    return [g.tolist() for g in np.array_split(order, n_experiences)]


def _select(x: Tensor, y: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """Return the samples whose label is in ``classes``, in dataset order."""
    mask = torch.isin(y, classes)
    return x[mask].contiguous(), y[mask].contiguous()


def _split_stream(
    data: Dataset, n_experiences: int, seed: int, *, name: str, protocol: Protocol
) -> Stream:
    groups = split_classes(data.n_classes, n_experiences, seed)
    experiences = []
    for i, group in enumerate(groups):
        classes = torch.tensor(group, dtype=torch.int64)
        x_train, y_train = _select(data.x_train, data.y_train, classes)
        x_test, y_test = _select(data.x_test, data.y_test, classes)
        experiences.append(
            Experience(
                index=i,
                task_id=i if protocol == "task_incremental" else 0,
                classes=tuple(sorted(group)),
                x_train=x_train,
                y_train=y_train,
                x_test=x_test,
                y_test=y_test,
            )
        )
    return Stream(
        name=name,
        protocol=protocol,
        experiences=tuple(experiences),
        n_classes=data.n_classes,
        input_shape=data.input_shape,
        seed=seed,
        info={"class_order": [c for g in groups for c in g], "class_groups": groups},
    )


def class_incremental(data: Dataset, n_experiences: int, seed: int, *, name: str) -> Stream:
    """Cut ``data`` into experiences with disjoint class sets; task id 0 everywhere."""
    return _split_stream(data, n_experiences, seed, name=name, protocol="class_incremental")


def task_incremental(data: Dataset, n_experiences: int, seed: int, *, name: str) -> Stream:
    """Cut ``data`` like :func:`class_incremental`, with task id = experience index."""
    return _split_stream(data, n_experiences, seed, name=name, protocol="task_incremental")


def domain_incremental(
    data: Dataset,
    n_experiences: int,
    seed: int,
    *,
    name: str,
    transform: Transform = "permuted",
    max_angle: float = 180.0,
) -> Stream:
    """Repeat all of ``data`` in every experience, transformed per experience; task id 0.

    The experiences are built on demand (:class:`DerivedExperiences`): the stream
    holds ``data`` once plus each experience's permutation, angle or label map.

    Raises:
        ScenarioError: (field ``transform``) for ``rotated`` on non-image inputs,
            (field ``n_experiences``) if ``n_experiences < 1``.
    """
    if n_experiences < 1:
        raise ScenarioError("n_experiences", f"must be at least 1, got {n_experiences}")
    info: dict[str, object] = {"transform": transform}
    params: list[object]
    if transform == "permuted":
        n_features = int(np.prod(data.input_shape))
        rng = np.random.default_rng([seed, _PERMUTATIONS])
        index_dtype = np.int16 if n_features <= np.iinfo(np.int16).max else np.int32
        params = [None] + [
            torch.from_numpy(rng.permutation(n_features).astype(index_dtype))
            for _ in range(n_experiences - 1)
        ]
    elif transform == "rotated":
        if not data.is_image:
            raise ScenarioError(
                "transform",
                f"'rotated' needs image inputs shaped (C, H, W); this source's inputs "
                f"are shaped {data.input_shape}",
            )
        params = np.linspace(0.0, max_angle, n_experiences, endpoint=False).tolist()
        info["angles"] = params
    elif transform == "shuffled_labels":
        rng = np.random.default_rng([seed, _LABEL_SHUFFLES])
        params = [None] + [
            torch.from_numpy(rng.permutation(data.n_classes)) for _ in range(n_experiences - 1)
        ]
        info["label_maps"] = [
            list(range(data.n_classes)) if m is None else m.tolist() for m in params
        ]
    else:
        raise ScenarioError("transform", f"unknown transform {transform!r}")

    present = torch.unique(torch.cat([data.y_train, data.y_test]))
    classes = [
        tuple(sorted((present if m is None else m[present]).tolist()))
        if transform == "shuffled_labels"
        else tuple(present.tolist())
        for m in params
    ]
    base = {
        "x_train": data.x_train,
        "y_train": data.y_train,
        "x_test": data.x_test,
        "y_test": data.y_test,
    }
    return Stream(
        name=name,
        protocol="domain_incremental",
        experiences=DerivedExperiences(base, transform, params, classes),
        n_classes=data.n_classes,
        input_shape=data.input_shape,
        seed=seed,
        info=info,
    )


def make_stream(
    data: Dataset,
    *,
    protocol: Protocol,
    n_experiences: int,
    seed: int,
    name: str,
    transform: Transform = "permuted",
    max_angle: float = 180.0,
) -> Stream:
    """Dispatch to the protocol named ``protocol``."""
    if protocol == "class_incremental":
        return class_incremental(data, n_experiences, seed, name=name)
    if protocol == "task_incremental":
        return task_incremental(data, n_experiences, seed, name=name)
    if protocol == "domain_incremental":
        return domain_incremental(
            data, n_experiences, seed, name=name, transform=transform, max_angle=max_angle
        )
    raise ScenarioError("protocol", f"unknown protocol {protocol!r}; known: {list(PROTOCOLS)}")
