"""Experiences derived on demand from one base data set: streams of a thousand tasks.

A domain-incremental stream shows the same data in every experience, each time
through its own transform (a permutation of the input features, a rotation, a
re-labelling). Building every experience up front costs ``T`` copies of the
data; a loss-of-plasticity study runs ``T = 800`` permuted-MNIST tasks (Dohare
et al., Nature 2024). :class:`DerivedExperiences` keeps the base data once plus
each experience's transform parameters (a few bytes to a few kilobytes each),
and builds an experience's training or test tensors only when they are read,
so memory does not grow with the number of experiences.

The parameters are drawn exactly as :func:`lifelong.scenarios.protocols.domain_incremental`
always drew them, so a stream built lazily holds the same tensors as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lifelong.scenarios.stream import Experience, LazyExperiences

Kind = Literal["permuted", "rotated", "shuffled_labels"]
_BASE = ("x_train", "y_train", "x_test", "y_test")


def _permuted(x: Tensor, perm: Tensor) -> Tensor:
    """Permute the flattened features of every sample of ``x`` with ``perm``."""
    return x.reshape(len(x), -1)[:, perm].reshape(x.shape)


def _rotated(x: Tensor, angle: float) -> Tensor:
    """Rotate a batch of ``(C, H, W)`` images by ``angle`` degrees (bilinear, zero fill)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import rotate

    return rotate(x, angle, interpolation=InterpolationMode.BILINEAR).contiguous()


class DerivedExperience(Experience):
    """An experience whose tensors are computed when first read, training and test apart.

    Reading ``x_test`` builds the test part only; evaluation never pays for the
    training part. The tensors are cached on the object, which the learner drops
    once it has trained or evaluated the experience.
    """

    def __init__(
        self,
        index: int,
        task_id: int,
        classes: tuple[int, ...],
        build: Callable[[int, str], tuple[Tensor, Tensor]],
    ) -> None:
        # Experience is a frozen dataclass; these are its fields, set once.
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "task_id", task_id)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "_build", build)
        object.__setattr__(self, "_parts", {})

    def _part(self, part: str) -> tuple[Tensor, Tensor]:
        parts: dict[str, tuple[Tensor, Tensor]] = self._parts  # type: ignore[attr-defined]
        if part not in parts:
            parts[part] = self._build(self.index, part)  # type: ignore[attr-defined]
        return parts[part]

    @property  # type: ignore[override]
    def x_train(self) -> Tensor:
        """Training inputs (built on first read)."""
        return self._part("train")[0]

    @property  # type: ignore[override]
    def y_train(self) -> Tensor:
        """Training labels (built on first read)."""
        return self._part("train")[1]

    @property  # type: ignore[override]
    def x_test(self) -> Tensor:
        """Test inputs (built on first read)."""
        return self._part("test")[0]

    @property  # type: ignore[override]
    def y_test(self) -> Tensor:
        """Test labels (built on first read)."""
        return self._part("test")[1]

    def __repr__(self) -> str:
        return f"DerivedExperience(index={self.index}, classes={self.classes})"


class DerivedExperiences(LazyExperiences):
    """The experiences of a domain-incremental stream, built on demand from one data set.

    Args:
        base: the base data, ``{"x_train", "y_train", "x_test", "y_test"}`` tensors.
        kind: ``permuted``, ``rotated`` or ``shuffled_labels``.
        params: one entry per experience: a feature permutation (int32 tensor),
            an angle in degrees, or a label map (int64 tensor); ``None`` for the
            identity (experience 0 of a permuted stream).
        classes: the classes each experience holds.
    """

    def __init__(
        self,
        base: dict[str, Tensor],
        kind: Kind,
        params: Sequence[Any],
        classes: Sequence[tuple[int, ...]],
    ) -> None:
        self.base = base
        self.kind = kind
        self.params = list(params)
        self.classes = [tuple(c) for c in classes]

    def __len__(self) -> int:
        return len(self.params)

    def item(self, i: int) -> Experience:
        """Experience ``i``; its tensors are built when read."""
        return DerivedExperience(i, 0, self.classes[i], self._build)

    def _build(self, i: int, part: str) -> tuple[Tensor, Tensor]:
        x, y = self.base[f"x_{part}"], self.base[f"y_{part}"]
        p = self.params[i]
        if self.kind == "permuted" and p is not None:
            x = _permuted(x, p.to(device=x.device, dtype=torch.int64))
        elif self.kind == "rotated" and p:
            x = _rotated(x, float(p))
        elif self.kind == "shuffled_labels" and p is not None:
            y = p.to(y.device)[y]
        return x, y

    def to(self, device: torch.device | str) -> DerivedExperiences:
        """The same experiences with the base data moved to ``device`` once."""
        base = {k: v.to(device) for k, v in self.base.items()}
        return DerivedExperiences(base, self.kind, self.params, self.classes)

    def representatives(self) -> list[Experience]:
        """Experiences 0 and 1: the transforms keep shapes, finiteness and the label range."""
        return [self.item(i) for i in range(min(2, len(self)))]

    @functools.cached_property
    def nbytes(self) -> int:
        """Bytes held: the base data plus every experience's parameters."""
        held = sum(t.numel() * t.element_size() for t in self.base.values())
        return held + sum(
            p.numel() * p.element_size() for p in self.params if isinstance(p, Tensor)
        )

    # ------------------------------------------------------------------ transport
    def to_numpy(self) -> dict[str, Any]:
        """Everything as numpy arrays, read zero-copy from Ray's object store."""
        tensors = [isinstance(p, Tensor) for p in self.params]
        stacked = [p.numpy() for p in self.params if isinstance(p, Tensor)]
        return {
            **{k: self.base[k].detach().cpu().numpy() for k in _BASE},
            "kind": self.kind,
            "params": np.stack(stacked) if stacked else None,
            "scalars": [None if t else p for t, p in zip(tensors, self.params, strict=True)],
            "is_tensor": tensors,
            "classes": self.classes,
        }

    @classmethod
    def from_numpy(cls, packed: dict[str, Any]) -> DerivedExperiences:
        """Rebuild from :meth:`to_numpy` (the tensors view the arrays, no copy)."""
        rows = iter(packed["params"] if packed["params"] is not None else [])
        params = [
            torch.from_numpy(np.asarray(next(rows))) if t else s
            for t, s in zip(packed["is_tensor"], packed["scalars"], strict=True)
        ]
        base = {k: torch.from_numpy(np.asarray(packed[k])) for k in _BASE}
        return cls(base, packed["kind"], params, packed["classes"])
