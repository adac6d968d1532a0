"""Data sources: where a scenario's samples come from.

A source is a :class:`Source` subclass registered in :data:`SOURCES` under its
public name. It has a nested pydantic ``Config`` (its options, given as
``scenario.options`` in an experiment), reports its label space and input shape
cheaply with :meth:`Source.info` (so a scenario can be checked before any heavy
data is built), and loads a :class:`Dataset` with :meth:`Source.load`,
deterministically from a seed.

Built-in sources: ``gaussian`` (synthetic Gaussian classes), ``digits``
(scikit-learn's bundled 8x8 digits), ``mnist1d`` (MNIST-1D generated locally)
and ``arrays`` (a user ``.npz`` file).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from lifelong.platform._registry import Registry

__all__ = [
    "SOURCES",
    "ArraysSource",
    "Dataset",
    "DigitsSource",
    "GaussianSource",
    "Mnist1dSource",
    "ScenarioError",
    "Source",
    "SourceInfo",
    "dataset_from_arrays",
]


class ScenarioError(ValueError):
    """A scenario that cannot be built, with the offending field.

    Attributes:
        field: dotted path of the offending setting relative to the scenario
            (``"n_experiences"``, ``"options.path"``, ``"transform"``...), or the
            name of the offending array/data (``"y_train"``, ``"source"``).
        message: what is wrong, naming the value.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A fully loaded classification dataset, before it is cut into experiences.

    Attributes:
        x_train, x_test: float32 inputs, shape ``(N, *input_shape)``.
        y_train, y_test: int64 labels in ``0..n_classes-1``.
        n_classes: size of the label space.
        input_shape: shape of one input sample.
        is_image: whether samples are images shaped ``(C, H, W)``.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    input_shape: tuple[int, ...]
    is_image: bool


@dataclass(frozen=True)
class SourceInfo:
    """What a source produces, known without loading the data.

    Attributes:
        n_classes: size of the label space.
        input_shape: shape of one input sample.
        is_image: whether samples are images shaped ``(C, H, W)``.
    """

    n_classes: int
    input_shape: tuple[int, ...]
    is_image: bool


class Source:
    """Base class of a data source; subclasses define ``Config``, ``info`` and ``load``.

    A source is built from its validated config: ``SOURCES.get(name)(config)``.
    """

    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel) -> None:
        self.config = config

    def info(self) -> SourceInfo:
        """Return the label-space size, input shape and image flag, cheaply."""
        raise NotImplementedError

    def load(self, seed: int) -> Dataset:
        """Return the dataset, deterministic from ``seed``."""
        raise NotImplementedError


SOURCES: Registry[type[Source]] = Registry("scenario source")

_OPTIONS = ConfigDict(extra="forbid", frozen=True)
_MAX_GENERATED_VALUES = 500_000_000  # 2 GB of float32: a bound on generated data


def _rng(seed: int, purpose: int) -> np.random.Generator:
    """Return an independent generator for one ``purpose`` of one ``seed``."""
    return np.random.default_rng([seed, purpose])


def _stratified_split(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that each class keeps ``test_fraction`` of its samples for testing.

    Every class with at least two samples keeps one or more in each part.
    """
    order = rng.permutation(len(y))
    ys = y[order]
    # Stable sort by label: within a class, the random order survives.
    order = order[np.argsort(ys, kind="stable")]
    labels, counts = np.unique(y, return_counts=True)
    n_test = np.rint(counts * test_fraction).astype(np.int64)
    n_test = np.where(counts >= 2, np.clip(n_test, 1, counts - 1), 0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(y)) - np.repeat(starts, counts)
    is_test = rank < np.repeat(n_test, counts)
    test_idx, train_idx = np.sort(order[is_test]), np.sort(order[~is_test])
    return train_idx, test_idx


def _tensors(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Convert to fresh contiguous float32 inputs and int64 labels."""
    return (
        torch.tensor(np.asarray(x_train), dtype=torch.float32).contiguous(),
        torch.tensor(np.asarray(y_train), dtype=torch.int64),
        torch.tensor(np.asarray(x_test), dtype=torch.float32).contiguous(),
        torch.tensor(np.asarray(y_test), dtype=torch.int64),
    )


# --------------------------------------------------------------------------- gaussian


@SOURCES.decorator("gaussian")
class GaussianSource(Source):
    """Synthetic Gaussian classes: class means drawn once from the seed, unit noise.

    The means are drawn from ``N(0, separation**2 / n_features * I)``, so the
    expected distance between two class means is about ``sqrt(2) * separation``
    noise standard deviations whatever ``n_features``.
    """

    class Config(BaseModel):
        """Options of the ``gaussian`` source."""

        model_config = _OPTIONS

        n_classes: int = Field(10, ge=2, le=100_000, description="Number of classes.")
        n_features: int = Field(
            20, ge=1, le=1_000_000, description="Dimension of one input vector."
        )
        n_train_per_class: int = Field(
            200, ge=1, le=10_000_000, description="Training samples per class."
        )
        n_test_per_class: int = Field(
            100, ge=1, le=10_000_000, description="Test samples per class."
        )
        separation: float = Field(
            3.0,
            gt=0,
            allow_inf_nan=False,
            description="Scale of the class means in units of the noise std (which is 1).",
        )

        @model_validator(mode="after")
        def _fits_in_memory(self) -> GaussianSource.Config:
            per_class = self.n_train_per_class + self.n_test_per_class
            values = self.n_classes * per_class * self.n_features
            if values > _MAX_GENERATED_VALUES:
                raise ValueError(
                    f"{self.n_classes} classes x {per_class} samples x {self.n_features} "
                    f"features = {values:,} values, more than the {_MAX_GENERATED_VALUES:,} "
                    "a generated source may hold"
                )
            return self

    config: Config

    def info(self) -> SourceInfo:
        """Return the configured class count and ``(n_features,)``."""
        return SourceInfo(self.config.n_classes, (self.config.n_features,), False)

    def load(self, seed: int) -> Dataset:
        """Draw the class means, then the train and test samples."""
        c = self.config
        rng = _rng(seed, 0)
        means = rng.normal(0.0, c.separation / np.sqrt(c.n_features), (c.n_classes, c.n_features))

        def draw(per_class: int) -> tuple[np.ndarray, np.ndarray]:
            y = rng.permutation(np.repeat(np.arange(c.n_classes), per_class))
            return means[y] + rng.normal(0.0, 1.0, (len(y), c.n_features)), y

        x_train, y_train = draw(c.n_train_per_class)
        x_test, y_test = draw(c.n_test_per_class)
        return Dataset(
            *_tensors(x_train, y_train, x_test, y_test),
            n_classes=c.n_classes,
            input_shape=(c.n_features,),
            is_image=False,
        )


# --------------------------------------------------------------------------- digits


@SOURCES.decorator("digits")
class DigitsSource(Source):
    """scikit-learn's bundled handwritten digits (1797 images, 8x8, 10 classes; no download).

    Images are shaped ``(1, 8, 8)`` and scaled to ``[0, 1]``; the train/test
    split is stratified and drawn from the seed.
    """

    class Config(BaseModel):
        """Options of the ``digits`` source."""

        model_config = _OPTIONS

        test_fraction: float = Field(
            0.25, gt=0, lt=1, description="Fraction of each class held out for testing."
        )

    config: Config

    def info(self) -> SourceInfo:
        """Return 10 classes of ``(1, 8, 8)`` images."""
        return SourceInfo(10, (1, 8, 8), True)

    def load(self, seed: int) -> Dataset:
        """Load the bundled digits and split them."""
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.data / 16.0).reshape(-1, 1, 8, 8)
        y = bunch.target.astype(np.int64)
        train, test = _stratified_split(y, self.config.test_fraction, _rng(seed, 0))
        return Dataset(
            *_tensors(x[train], y[train], x[test], y[test]),
            n_classes=10,
            input_shape=(1, 8, 8),
            is_image=True,
        )


# --------------------------------------------------------------------------- mnist1d


@functools.lru_cache(maxsize=4)
def _mnist1d(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate MNIST-1D (all samples, no split) with the ``mnist1d`` package.

    ``make_dataset`` seeds Python's and NumPy's global generators with
    ``args.seed``; their states are restored afterwards. The arrays are cached
    (read-only) because generation takes about 0.2 s per 1000 samples.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    args.train_split = 1.0  # we split ourselves (stratified)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.asarray(data["x"], dtype=np.float32)[:, None, :]
    y = np.asarray(data["y"], dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@SOURCES.decorator("mnist1d")
class Mnist1dSource(Source):
    """MNIST-1D (Greydanus 2020, arXiv:2011.14439), generated locally, never downloaded.

    Samples are shaped ``(1, 40)``; the generator is seeded with the scenario
    seed, so each seed gives its own draw of the dataset. The train/test split
    is stratified.
    """

    class Config(BaseModel):
        """Options of the ``mnist1d`` source."""

        model_config = _OPTIONS

        num_samples: int = Field(
            5000,
            ge=100,
            le=1_000_000,
            description="Total samples generated (train + test), split evenly across 10 classes.",
        )
        test_fraction: float = Field(
            0.2, gt=0, lt=1, description="Fraction of each class held out for testing."
        )

    config: Config

    def info(self) -> SourceInfo:
        """Return 10 classes of ``(1, 40)`` signals."""
        return SourceInfo(10, (1, 40), False)

    def load(self, seed: int) -> Dataset:
        """Generate (or reuse) the samples and split them."""
        x, y = _mnist1d(self.config.num_samples, seed)
        train, test = _stratified_split(y, self.config.test_fraction, _rng(seed, 0))
        return Dataset(
            *_tensors(x[train], y[train], x[test], y[test]),
            n_classes=10,
            input_shape=(1, 40),
            is_image=False,
        )


# --------------------------------------------------------------------------- arrays

_ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _labels(name: str, y: Any, n_samples: int) -> np.ndarray:
    """Validate one label array and return it as int64."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ScenarioError(name, f"labels must be 1-D, got shape {y.shape}")
    if len(y) != n_samples:
        x_name = "x" + name[1:]
        raise ScenarioError(name, f"has {len(y)} labels but {x_name} has {n_samples} samples")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.number):
        raise ScenarioError(name, f"labels must be integers, got dtype {y.dtype}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ScenarioError(
                name, f"labels must be integers, got non-integral values of dtype {y.dtype}"
            )
    if len(y) and y.min() < 0:
        raise ScenarioError(name, f"labels must be in 0..K-1, got {y.min()}")
    return y.astype(np.int64)


def _inputs(name: str, x: Any) -> np.ndarray:
    """Validate one input array: numeric, at least ``(N, features)``."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ScenarioError(name, f"inputs must be shaped (N, ...features), got shape {x.shape}")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
        raise ScenarioError(name, f"inputs must be numeric, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise ScenarioError(name, f"inputs must be real, got dtype {x.dtype}")
    return x


def dataset_from_arrays(x_train: Any, y_train: Any, x_test: Any, y_test: Any) -> Dataset:
    """Validate user arrays (numpy arrays or CPU tensors) and wrap them as a :class:`Dataset`.

    Labels must be integers ``0..K-1`` with every class present in ``y_train``;
    ``n_classes`` is ``K = max label + 1``. Samples shaped ``(C, H, W)`` count as
    images.

    Raises:
        ScenarioError: with ``field`` naming the offending array.
    """
    xs = {"x_train": _inputs("x_train", x_train), "x_test": _inputs("x_test", x_test)}
    ys = {
        "y_train": _labels("y_train", y_train, len(xs["x_train"])),
        "y_test": _labels("y_test", y_test, len(xs["x_test"])),
    }
    shape = tuple(int(s) for s in xs["x_train"].shape[1:])
    if tuple(xs["x_test"].shape[1:]) != shape:
        raise ScenarioError(
            "x_test",
            f"per-sample shape {tuple(xs['x_test'].shape[1:])} differs from x_train's {shape}",
        )
    if len(ys["y_train"]) == 0:
        raise ScenarioError("y_train", "no training samples")
    n_classes = int(ys["y_train"].max()) + 1
    missing = np.setdiff1d(np.arange(n_classes), ys["y_train"])
    if len(missing):
        raise ScenarioError(
            "y_train",
            f"labels must be 0..K-1 with every class present; classes {missing.tolist()} "
            f"of 0..{n_classes - 1} have no training sample",
        )
    if len(ys["y_test"]) and ys["y_test"].max() >= n_classes:
        raise ScenarioError(
            "y_test",
            f"label {int(ys['y_test'].max())} is not a class of y_train "
            f"(classes 0..{n_classes - 1})",
        )
    return Dataset(
        *_tensors(xs["x_train"], ys["y_train"], xs["x_test"], ys["y_test"]),
        n_classes=n_classes,
        input_shape=shape,
        is_image=len(shape) == 3,
    )


@SOURCES.decorator("arrays")
class ArraysSource(Source):
    """User arrays from a ``.npz`` file with keys ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    The file is read once per source object (``info`` then ``load`` reuse it);
    the seed plays no role in the data itself.
    """

    class Config(BaseModel):
        """Options of the ``arrays`` source."""

        model_config = _OPTIONS

        path: str = Field(
            description=(
                "Path to a .npz file with keys x_train, y_train, x_test, y_test; "
                "relative paths resolve against the current directory."
            ),
            min_length=1,
        )

    config: Config

    @functools.cached_property
    def _dataset(self) -> Dataset:
        path = Path(self.config.path).expanduser().resolve()
        if not path.is_file():
            raise ScenarioError("options.path", f"file not found: {str(path)!r}")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in _ARRAY_KEYS if k not in npz.files]
                if missing:
                    raise ScenarioError(
                        "options.path",
                        f"{str(path)!r} lacks key(s) {missing}; it has {sorted(npz.files)}",
                    )
                arrays = [npz[k] for k in _ARRAY_KEYS]
        except ScenarioError:
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
            raise ScenarioError(
                "options.path", f"cannot read {str(path)!r} as .npz: {exc}"
            ) from exc
        try:
            return dataset_from_arrays(*arrays)
        except ScenarioError as exc:
            raise ScenarioError("options.path", f"{str(path)!r}: {exc}") from exc

    def info(self) -> SourceInfo:
        """Read and validate the file, then report its label space and shape."""
        d = self._dataset
        return SourceInfo(d.n_classes, d.input_shape, d.is_image)

    def load(self, seed: int) -> Dataset:
        """Return the validated arrays (``seed`` is unused)."""
        return self._dataset
