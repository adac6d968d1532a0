"""A stream packed for Ray's object store, so that trials on a node share one copy.

Ray stores numpy arrays out of band and a worker reads them zero-copy from the
node's shared-memory object store; torch tensors are pickled instead, and every
worker that reads them holds its own copy. :class:`SharedStream` keeps the
experiences' tensors as numpy arrays for the trip and :meth:`SharedStream.unpack`
wraps them back with ``torch.from_numpy`` (no copy), so N trials on a node hold
the stream once (``benchmarks/object_store_memory.py`` measures it).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import torch

from lifelong.scenarios.derived import DerivedExperiences
from lifelong.scenarios.stream import Experience, LazyExperiences, Stream

_TENSORS = ("x_train", "y_train", "x_test", "y_test")


class SharedStream:
    """A :class:`Stream` whose tensors travel as numpy arrays (zero-copy reads on a node).

    Args:
        stream: the stream to pack; its tensors must be on the CPU.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = dataclasses.replace(stream, experiences=())
        self.derived: dict[str, Any] | None = None
        self.experiences: list[dict[str, Any]] = []
        xs = stream.experiences
        if isinstance(xs, DerivedExperiences):  # the base data once, plus the transforms
            self.derived = xs.to_numpy()
            self.n = len(xs)
            return
        if isinstance(xs, LazyExperiences):
            raise TypeError(f"cannot ship {type(xs).__name__} through the object store")
        self.experiences = [
            {
                "index": e.index,
                "task_id": e.task_id,
                "classes": e.classes,
                **{k: getattr(e, k).detach().cpu().numpy() for k in _TENSORS},
            }
            for e in xs
        ]
        self.n = len(self.experiences)

    def __len__(self) -> int:
        return self.n

    def unpack(self) -> Stream:
        """The stream again; its tensors view the (read-only) shared arrays."""
        with warnings.catch_warnings():
            # The arrays are read-only views of the object store: nothing writes to a
            # stream's tensors (the learner copies batches), so sharing them is safe.
            warnings.filterwarnings("ignore", message=".*not writable.*")
            if self.derived is not None:
                return dataclasses.replace(
                    self.stream, experiences=DerivedExperiences.from_numpy(self.derived)
                )
            experiences = tuple(
                Experience(
                    d["index"],
                    d["task_id"],
                    tuple(d["classes"]),
                    *(torch.from_numpy(np.asarray(d[k])) for k in _TENSORS),
                )
                for d in self.experiences
            )
        return dataclasses.replace(self.stream, experiences=experiences)


def unpack(stream: Stream | SharedStream) -> Stream:
    """``stream`` itself, or the :class:`Stream` a :class:`SharedStream` holds."""
    return stream.unpack() if isinstance(stream, SharedStream) else stream
