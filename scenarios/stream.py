"""The two concepts a scenario produces: an :class:`Experience` and a :class:`Stream`."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

import torch
from torch import Tensor

Protocol = Literal["class_incremental", "task_incremental", "domain_incremental"]


@dataclass(frozen=True, eq=False)
class Experience:
    """One step of a continual-learning stream.

    Attributes:
        index: position in the stream, from 0.
        task_id: task label the model receives (0 everywhere except in
            task-incremental streams, where it equals ``index``).
        classes: the class labels that occur in this experience.
        x_train, y_train, x_test, y_test: in-memory tensors; inputs are float32,
            labels int64, in the stream's global label space.
    """

    index: int
    task_id: int
    classes: tuple[int, ...]
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.y_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.y_test.shape[0])

    def to(self, device: torch.device | str) -> Experience:
        """Return a copy whose tensors live on ``device``."""
        return Experience(
            self.index,
            self.task_id,
            self.classes,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
        )


class LazyExperiences(Sequence[Experience], abc.ABC):
    """Experiences built on demand, so that memory does not grow with their number.

    Indexing returns an :class:`Experience` whose tensors are computed when read;
    a slice returns a tuple of them.
    """

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def item(self, i: int) -> Experience:
        """Experience ``i`` (``0 <= i < len(self)``)."""

    @abc.abstractmethod
    def to(self, device: torch.device | str) -> LazyExperiences:
        """The same experiences, built on ``device``."""

    @abc.abstractmethod
    def representatives(self) -> list[Experience]:
        """The experiences whose checks stand for all (see ``validate_stream``)."""

    @overload
    def __getitem__(self, i: int) -> Experience: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[Experience, ...]: ...

    def __getitem__(self, i: int | slice) -> Experience | tuple[Experience, ...]:
        if isinstance(i, slice):
            return tuple(self.item(j) for j in range(*i.indices(len(self))))
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"experience {i} out of range for {n} experiences")
        return self.item(i % n)


def on_device(
    experiences: Sequence[Experience], device: torch.device | str
) -> Sequence[Experience]:
    """``experiences`` with their tensors on ``device`` (lazy ones stay lazy)."""
    if isinstance(experiences, LazyExperiences):
        return experiences.to(device)
    return [e.to(device) for e in experiences]


@dataclass(frozen=True, eq=False)
class Stream:
    """An ordered sequence of experiences, deterministic from its seed.

    Attributes:
        name: human-readable name, e.g. ``"split_digits"``.
        protocol: ``class_incremental``, ``task_incremental`` or ``domain_incremental``.
        experiences: the experiences in training order (a tuple, or
            :class:`LazyExperiences` built on demand).
        n_classes: size of the global label space.
        input_shape: shape of one input sample (without the batch dimension).
        seed: the seed the stream was built from.
    """

    name: str
    protocol: Protocol
    experiences: Sequence[Experience]
    n_classes: int
    input_shape: tuple[int, ...]
    seed: int
    info: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]

    @property
    def n_tasks(self) -> int:
        """Number of distinct task ids in the stream."""
        return len({e.task_id for e in self.experiences})

    @property
    def task_classes(self) -> list[tuple[int, ...]]:
        """For each task id, the classes it holds (the multi-head masks)."""
        out: dict[int, set[int]] = {}
        for e in self.experiences:
            out.setdefault(e.task_id, set()).update(e.classes)
        return [tuple(sorted(out[t])) for t in sorted(out)]
