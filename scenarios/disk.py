"""Data sets read from a local folder, never downloaded.

- ``torchvision``: torchvision's own on-disk formats (MNIST, FashionMNIST,
  KMNIST, CIFAR10, CIFAR100, SVHN), always with ``download=False``.
- ``fashion_mnist``: the real Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747)
  from Debian's ``dataset-fashion-mnist`` package, or any MNIST-format folder.
- ``image_folder``: ``root/<class>/<images>`` trees (optionally with
  ``train/`` and ``test/`` sub-trees), or one domain per experience
  (``options.domains``, the DomainNet/PACS layout ``root/<domain>/<class>/...``).

Images become float32 ``(C, H, W)`` tensors scaled to ``[0, 1]`` with int64
labels. ``train_per_class`` / ``test_per_class`` keep that many samples of each
class (all of a smaller class), drawn from the scenario seed. Every problem
with the files is a :class:`ScenarioError` naming the path, raised by ``info``
or ``check`` where that is cheap (so ``lifelong run --dry-run`` reports it),
else by ``load`` or ``stream``: always before any trial starts. See
``docs/datasets.md`` for layouts, how to get the data, and licences.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lifelong.scenarios import _folders
from lifelong.scenarios._idx import MnistDir, mnist_dir
from lifelong.scenarios._torchvision import (
    TORCHVISION_DATASETS,
    TvDataset,
    download_hint,
    read_split,
    tv_files,
)
from lifelong.scenarios.sources import (
    SOURCES,
    Dataset,
    ScenarioError,
    Source,
    SourceInfo,
    _stratified_split,
)
from lifelong.scenarios.stream import Experience, Stream

__all__ = ["TORCHVISION_DATASETS", "FashionMnistSource", "ImageFolderSource", "TorchvisionSource"]

_OPTIONS = ConfigDict(extra="forbid", frozen=True)
_SPLIT, _TRAIN_SUBSET, _TEST_SUBSET = 0, 8, 9  # generator purposes (protocols use 1-3)
_PerClass = Annotated[int | None, Field(ge=1)]
_PER_CLASS = "{} samples kept per class, drawn from the seed (all of a smaller class); null: all."


def _gen(seed: int, purpose: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, index])


def _directory(root: str, field: str = "options.root") -> Path:
    """``root`` resolved, checked to be an existing directory."""
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise ScenarioError(field, f"directory not found: {str(path)!r}")
    if not path.is_dir():
        raise ScenarioError(field, f"{str(path)!r} is a file, not a directory")
    return path


def _per_class(y: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices keeping at most ``limit`` random samples of each class of ``y``."""
    if limit is None:
        return np.arange(len(y))
    order = rng.permutation(len(y))
    order = order[np.argsort(y[order], kind="stable")]  # by class, random within a class
    _, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    rank = np.arange(len(y)) - np.repeat(starts, counts)
    return np.sort(order[rank < limit])


def _scaled(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(255.0)


def _image_dataset(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    seed: int,
    limits: tuple[int | None, int | None],
    where: str,
) -> Dataset:
    """Subsample uint8 ``(N, C, H, W)`` images per class, scale them and check the labels."""
    parts = []
    for (x, y), limit, purpose, split in (
        (train, limits[0], _TRAIN_SUBSET, "train"),
        (test, limits[1], _TEST_SUBSET, "test"),
    ):
        y = np.asarray(y, dtype=np.int64)
        if len(y) != len(x):
            raise ScenarioError(
                "options.root", f"{where}: {split} has {len(x)} images but {len(y)} labels"
            )
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise ScenarioError(
                "options.root",
                f"{where}: {split} labels must be in 0..{n_classes - 1}, found "
                f"{int(y.min())}..{int(y.max())}",
            )
        keep = _per_class(y, limit, _gen(seed, purpose))
        parts += [_scaled(x[keep]), torch.from_numpy(y[keep].copy())]
    shape = tuple(int(s) for s in parts[0].shape[1:])
    return Dataset(*parts, n_classes=n_classes, input_shape=shape, is_image=True)


# --------------------------------------------------------------------------- torchvision


@SOURCES.decorator("torchvision")
class TorchvisionSource(Source):
    """A torchvision dataset read from its on-disk format in ``root`` (never downloaded).

    MNIST, FashionMNIST and KMNIST (``root/<Name>/raw/*-ubyte``) are read by
    torchvision's own classes; SVHN (``root/{train,test}_32x32.mat``) by a
    torchvision subclass that skips only the md5 check; CIFAR10/100 batches
    (``root/cifar-10-batches-py``, ``root/cifar-100-python``) with the pickle
    calls torchvision uses, without the md5 check. lifelong validates shape
    and labels itself. The split is the official train/test split.
    """

    class Config(BaseModel):
        """Options of the ``torchvision`` source."""

        model_config = _OPTIONS

        dataset: str = Field(
            description="MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100 or SVHN (any case)."
        )
        root: str = Field(
            min_length=1, description="The root folder torchvision's dataset class gets."
        )
        train_per_class: _PerClass = Field(None, description=_PER_CLASS.format("Training"))
        test_per_class: _PerClass = Field(None, description=_PER_CLASS.format("Test"))

        @field_validator("dataset")
        @classmethod
        def _known(cls, name: str) -> str:
            key = name.lower().replace("-", "").replace("_", "")
            if key not in TORCHVISION_DATASETS:
                known = ", ".join(d.name for d in TORCHVISION_DATASETS.values())
                raise ValueError(f"unknown torchvision dataset {name!r}; known: {known}")
            return TORCHVISION_DATASETS[key].name

    config: Config

    @property
    def _dataset(self) -> TvDataset:
        return TORCHVISION_DATASETS[self.config.dataset.lower()]

    @functools.cached_property
    def _checked(self) -> tuple[Path, tuple[int, ...]]:
        """The root and the image shape, once every expected file is there."""
        d, root = self._dataset, _directory(self.config.root)
        files = tv_files(d, root, "train") + tv_files(d, root, "test")
        missing = [p for p in files if not p.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more of its files)" if len(missing) > 1 else ""
            gz = " (only its .gz is there: gunzip it)" if Path(f"{missing[0]}.gz").is_file() else ""
            raise ScenarioError(
                "options.root",
                f"torchvision's {d.name} looks for {str(missing[0])!r}{gz}{more}, which is not "
                f"there, and lifelong never downloads: put the data there yourself, e.g. "
                f"{download_hint(d, root)} (see docs/datasets.md)",
            )
        if d.kind == "mnist":  # cheap header checks: magic numbers, label counts
            rows, cols = mnist_dir(files[0].parent).image_shape
            return root, (1, rows, cols)
        return root, (3, 32, 32)

    def info(self) -> SourceInfo:
        """Check the dataset's files are under ``root``; return its classes and image shape."""
        return SourceInfo(self._dataset.n_classes, self._checked[1], True)

    def load(self, seed: int) -> Dataset:
        """Read (or reuse) the official train and test splits and subsample them per class."""
        d, (root, shape) = self._dataset, self._checked
        splits = []
        for split in ("train", "test"):
            files = tv_files(d, root, split)
            stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in files)
            try:
                splits.append(read_split(d.name, str(root), split, stamp))
            except ScenarioError:
                raise
            except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
                names = ", ".join(repr(str(p)) for p in files)
                where = f"in {str(files[0].parent)!r}" if d.kind == "cifar" else f"from {names}"
                raise ScenarioError(
                    "options.root", f"cannot read {d.name} {split} data {where}: {exc}"
                ) from None
        where = f"torchvision {d.name} in {str(root)!r}"
        data = _image_dataset(*splits, d.n_classes, seed, self._limits, where)
        if data.input_shape != shape:
            raise ScenarioError(
                "options.root", f"{where}: images are shaped {data.input_shape}, not {shape}"
            )
        return data

    @property
    def _limits(self) -> tuple[int | None, int | None]:
        return self.config.train_per_class, self.config.test_per_class


# --------------------------------------------------------------------------- fashion_mnist

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


@SOURCES.decorator("fashion_mnist")
class FashionMnistSource(Source):
    """Fashion-MNIST (70,000 28x28 images, 10 classes; MIT) from local IDX files, never downloaded.

    The default root is where Debian's ``dataset-fashion-mnist`` package puts
    the four ``*-ubyte.gz`` files; any MNIST-format folder (plain or ``.gz``
    IDX files) works. The split is the official 60,000/10,000 one.
    """

    class Config(BaseModel):
        """Options of the ``fashion_mnist`` source."""

        model_config = _OPTIONS

        root: str = Field(
            FASHION_MNIST_ROOT,
            min_length=1,
            description="Folder with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz].",
        )
        train_per_class: _PerClass = Field(None, description=_PER_CLASS.format("Training"))
        test_per_class: _PerClass = Field(None, description=_PER_CLASS.format("Test"))

    config: Config

    @functools.cached_property
    def _files(self) -> MnistDir:
        root = Path(self.config.root).expanduser()
        if self.config.root == FASHION_MNIST_ROOT and not root.exists():
            raise ScenarioError(
                "options.root",
                f"directory not found: {str(root)!r}; install Debian's dataset-fashion-mnist "
                "(make datasets, or apt-get install dataset-fashion-mnist); "
                "lifelong never downloads",
            )
        return mnist_dir(_directory(self.config.root))

    def info(self) -> SourceInfo:
        """Check the four IDX headers (magic, counts); return 10 classes of ``(1, H, W)``."""
        return SourceInfo(10, (1, *self._files.image_shape), True)

    def load(self, seed: int) -> Dataset:
        """Read (or reuse) the IDX arrays and subsample them per class."""
        files = self._files
        (xtr, ytr), (xte, yte) = files.arrays("train"), files.arrays("test")
        where = f"Fashion-MNIST in {str(files.files['train', 'images'].parent)!r}"
        limits = (self.config.train_per_class, self.config.test_per_class)
        return _image_dataset((xtr[:, None], ytr), (xte[:, None], yte), 10, seed, limits, where)


# --------------------------------------------------------------------------- image_folder


@SOURCES.decorator("image_folder")
class ImageFolderSource(Source):
    """Image files in class folders (``root/<class>/...``), or one domain per experience.

    Labels are the sorted class folder names, ``0..K-1`` (see
    :attr:`class_names`). Without ``train/`` and ``test/`` sub-trees the split
    is stratified, ``test_fraction`` of each class, drawn from the seed. With
    ``domains`` (``root/<domain>/<class>/...``, each domain optionally with
    ``train/`` and ``test/``) every domain is one experience of a
    ``domain_incremental`` stream over the sorted union of the class names.
    """

    class Config(BaseModel):
        """Options of the ``image_folder`` source."""

        model_config = _OPTIONS

        root: str = Field(min_length=1, description="The folder holding the class folders.")
        size: int | tuple[int, int] | None = Field(
            None,
            description="Resize every image to [H, W] (an int: square); required unless all "
            "images share one size.",
        )
        mode: Literal["RGB", "L"] = Field(
            "RGB", description="RGB (3 channels) or L (1 channel, greyscale)."
        )
        test_fraction: float = Field(
            0.2,
            gt=0,
            lt=1,
            description="Fraction of each class held out for testing, when there are no "
            "train/ and test/ sub-trees.",
        )
        domains: list[str] | None = Field(
            None,
            min_length=1,
            description="Domain folders under root, one experience each (DomainNet/PACS layout).",
        )
        train_per_class: _PerClass = Field(None, description=_PER_CLASS.format("Training"))
        test_per_class: _PerClass = Field(None, description=_PER_CLASS.format("Test"))

        @field_validator("size")
        @classmethod
        def _positive(cls, size: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
            sides = (size,) if isinstance(size, int) else size or ()
            if any(not 1 <= side <= 16384 for side in sides):
                raise ValueError(f"sizes must be in 1..16384 pixels, got {size}")
            return size

        @field_validator("domains")
        @classmethod
        def _distinct(cls, domains: list[str] | None) -> list[str] | None:
            if domains is not None and (len(set(domains)) != len(domains) or "" in domains):
                raise ValueError(f"domains must be distinct folder names, got {domains}")
            return domains

    config: Config

    @property
    def stream_source(self) -> bool:
        """True in domain mode: the source then builds its own experiences."""
        return self.config.domains is not None

    @functools.cached_property
    def _trees(self) -> list[_folders.Tree]:
        """One tree (the root) or one per domain, listed and checked."""
        root, c = _directory(self.config.root), self.config
        if c.domains is None:
            trees = [_folders.scan_tree(root, "options.root")]
        else:
            folders = _folders.subfolders(root)
            for name in c.domains:
                if name not in folders:
                    raise ScenarioError(
                        "options.domains",
                        f"unknown domain {name!r}: no folder {str(root / name)!r}; "
                        f"the domain folders under the root are {folders}",
                    )
            trees = [_folders.scan_tree(root / name, "options.root") for name in c.domains]
        default = type(c).model_fields["test_fraction"].default
        if c.test_fraction != default and all(t.split for t in trees):
            raise ScenarioError(
                "options.test_fraction",
                f"train/ and test/ sub-trees under {str(root)!r} fix the split; "
                "leave test_fraction out",
            )
        return trees

    @functools.cached_property
    def class_names(self) -> list[str]:
        """The class folder names; label ``i`` is ``class_names[i]``."""
        return sorted({name for tree in self._trees for name in tree.classes})

    @functools.cached_property
    def _size(self) -> tuple[int, int]:
        size = self.config.size
        if size is None:
            return _folders.common_size([p for t in self._trees for p in t.paths()], "options.root")
        return (size, size) if isinstance(size, int) else size

    def info(self) -> SourceInfo:
        """List the files (and read image headers when ``size`` is unset); no image is decoded."""
        channels = 1 if self.config.mode == "L" else 3
        return SourceInfo(len(self.class_names), (channels, *self._size), True)

    def _tree_data(
        self, tree: _folders.Tree, seed: int, index: int
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Split (if needed), subsample and decode one tree; labels in the global space."""
        c, relabel = self.config, [self.class_names.index(n) for n in tree.classes]
        if tree.split:
            parts = [tree.parts["train"], tree.parts["test"]]
        else:
            samples = tree.parts["all"]
            y = np.array([label for _, label in samples], dtype=np.int64)
            idx = _stratified_split(y, c.test_fraction, _gen(seed, _SPLIT, index))
            parts = [[samples[i] for i in part] for part in idx]
        out = []
        for samples, limit, purpose in zip(
            parts, (c.train_per_class, c.test_per_class), (_TRAIN_SUBSET, _TEST_SUBSET), strict=True
        ):
            y = np.array([relabel[label] for _, label in samples], dtype=np.int64)
            keep = _per_class(y, limit, _gen(seed, purpose, index))
            kept = [samples[i] for i in keep]
            out.append((_folders.decode_images(kept, c.mode, self._size, "options.root"), y[keep]))
        return out[0], out[1]

    def load(self, seed: int) -> Dataset:
        """Decode the chosen images and scale them to ``[0, 1]``."""
        self.info()
        train, test = self._tree_data(self._trees[0], seed, 0)
        where = f"image folder {str(self._trees[0].root)!r}"
        return _image_dataset(train, test, len(self.class_names), seed, (None, None), where)

    def check(self, scenario: Any) -> None:
        """Domain mode: check the scenario fields and list the domains, decoding nothing.

        ``n_experiences``, when set, must equal the number of domains and
        ``protocol`` be ``domain_incremental`` (trials carry them only when the
        file sets them, see ``lifelong.platform.expand``); ``transform`` and
        ``max_angle`` must keep their defaults (the domains are the shift).
        """
        fields, n = type(scenario).model_fields, len(self.config.domains or ())
        given = scenario.model_fields_set

        def changed(name: str) -> bool:
            if name in ("protocol", "n_experiences"):
                return name in given
            return getattr(scenario, name) != fields[name].default

        if changed("protocol") and scenario.protocol != "domain_incremental":
            raise ScenarioError(
                "protocol",
                f"options.domains makes a domain_incremental stream (one experience per "
                f"domain), not {scenario.protocol}; leave protocol out",
            )
        if changed("n_experiences") and scenario.n_experiences != n:
            raise ScenarioError(
                "n_experiences",
                f"options.domains lists {n} domains, one experience each, not "
                f"{scenario.n_experiences} (leave n_experiences out)",
            )
        for name in ("transform", "max_angle"):
            if changed(name):
                raise ScenarioError(
                    name, "does not apply with options.domains: each domain is its own experience"
                )
        self.info()

    def stream(self, scenario: Any) -> Stream:
        """Domain mode: experience ``i`` holds domain ``i``'s images (task id 0)."""
        from lifelong.scenarios.builder import validate_stream

        self.check(scenario)
        experiences = []
        for i, tree in enumerate(self._trees):
            (xtr, ytr), (xte, yte) = self._tree_data(tree, scenario.seed, i)
            classes = tuple(sorted(set(ytr.tolist()) | set(yte.tolist())))
            x_train, x_test = _scaled(xtr), _scaled(xte)
            y_train, y_test = torch.from_numpy(ytr), torch.from_numpy(yte)
            experiences.append(
                Experience(
                    index=i,
                    task_id=0,
                    classes=classes,
                    x_train=x_train,
                    y_train=y_train,
                    x_test=x_test,
                    y_test=y_test,
                )
            )
        stream = Stream(
            name="domains_image_folder",
            protocol="domain_incremental",
            experiences=tuple(experiences),
            n_classes=len(self.class_names),
            input_shape=(1 if self.config.mode == "L" else 3, *self._size),
            seed=scenario.seed,
            info={
                "source": "image_folder",
                "domains": list(self.config.domains or ()),
                "class_names": self.class_names,
            },
        )
        validate_stream(stream)
        return stream
