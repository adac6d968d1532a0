"""torchvision's on-disk formats: which files each dataset needs, and reading them.

MNIST, FashionMNIST and KMNIST are read by torchvision's own classes
(``download=False``; they check that the files exist, not their md5 sums).
SVHN is read by a subclass of torchvision's ``SVHN`` that skips only the md5
check, CIFAR10/100 batches with the pickle calls torchvision uses (md5
unchecked): tiny or re-packed files work, and lifelong checks shapes and
labels itself (:mod:`lifelong.scenarios.disk`).
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["TORCHVISION_DATASETS", "TvDataset", "download_hint", "read_split", "tv_files"]


@dataclass(frozen=True)
class TvDataset:
    """One torchvision dataset class that lifelong reads: its format and label space."""

    name: str
    kind: Literal["mnist", "cifar", "svhn"]
    n_classes: int


#: Lower-case name (``-`` and ``_`` dropped) -> dataset, for ``options.dataset``.
TORCHVISION_DATASETS = {
    d.name.lower(): d
    for d in (
        TvDataset("MNIST", "mnist", 10),
        TvDataset("FashionMNIST", "mnist", 10),
        TvDataset("KMNIST", "mnist", 10),
        TvDataset("CIFAR10", "cifar", 10),
        TvDataset("CIFAR100", "cifar", 100),
        TvDataset("SVHN", "svhn", 10),
    )
}


def tv_files(d: TvDataset, root: Path, split: str) -> list[Path]:
    """The files torchvision reads for ``split`` of ``d`` under ``root``."""
    from torchvision import datasets

    cls = getattr(datasets, d.name)
    if d.kind == "mnist":
        prefix = "train" if split == "train" else "t10k"
        raw = root / d.name / "raw"
        return [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
    if d.kind == "cifar":
        base = root / cls.base_folder
        batches = cls.train_list if split == "train" else cls.test_list
        return [base / name for name, _ in batches] + [base / cls.meta["filename"]]
    return [root / cls.split_list[split][1]]


def download_hint(d: TvDataset, root: Path) -> str:
    """The command that fetches ``d`` into ``root`` with torchvision (the user runs it)."""
    if d.kind == "svhn":
        splits = "for s in ('train', 'test')"
        call = f"[tv.datasets.SVHN({str(root)!r}, split=s, download=True) {splits}]"
    else:
        call = f"tv.datasets.{d.name}({str(root)!r}, download=True)"
    return f'python -c "import torchvision as tv; {call}"'


def _svhn_class() -> type:
    from torchvision.datasets import SVHN

    class _LocalSVHN(SVHN):
        """torchvision's SVHN without its md5 check (lifelong checks shape and labels itself)."""

        def _check_integrity(self) -> bool:
            return (Path(self.root) / self.filename).is_file()

    return _LocalSVHN


def _cifar_entry(path: Path) -> dict[str, Any]:
    """One CIFAR pickle, loaded as torchvision does; ``bytes`` keys become ``str``."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")  # as torchvision: trusted files only
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{str(path)!r} is not a CIFAR pickle: {exc}") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{str(path)!r} holds a {type(entry).__name__}, not a CIFAR dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_cifar(d: TvDataset, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR batches read like torchvision's ``CIFAR10``/``CIFAR100`` (pickles), md5 unchecked."""
    *batches, meta_path = tv_files(d, root, split)
    key = "fine_label_names" if d.n_classes == 100 else "label_names"
    names = _cifar_entry(meta_path).get(key)
    if names is None or len(names) != d.n_classes:
        found = "no" if names is None else len(names)
        raise ValueError(f"{str(meta_path)!r} has {found} {key}, expected {d.n_classes}")
    xs, ys = [], []
    for path in batches:
        entry = _cifar_entry(path)
        labels = entry.get("labels", entry.get("fine_labels"))
        if "data" not in entry or labels is None:
            raise ValueError(f"{str(path)!r} lacks 'data' or 'labels'/'fine_labels'")
        xs.append(np.asarray(entry["data"], dtype=np.uint8))
        ys.append(np.asarray(labels, dtype=np.int64))
    return np.vstack(xs).reshape(-1, 3, 32, 32), np.concatenate(ys)


@functools.lru_cache(maxsize=4)
def read_split(
    name: str, root: str, split: str, stamp: tuple[tuple[int, int], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``split`` of dataset ``name`` as uint8 ``(N, C, H, W)`` and int64 labels.

    ``stamp`` (modification times and sizes of the files) invalidates stale
    entries; the arrays are read-only.
    """
    d = TORCHVISION_DATASETS[name.lower()]
    if d.kind == "cifar":
        x, y = _read_cifar(d, Path(root), split)
    elif d.kind == "svhn":
        ds = _svhn_class()(root, split=split, download=False)
        x, y = ds.data, ds.labels  # torchvision maps label 10 to digit 0
    else:
        from torchvision import datasets

        ds = getattr(datasets, d.name)(root, train=split == "train", download=False)
        x, y = ds.data.numpy()[:, None], ds.targets.numpy()
    x, y = np.ascontiguousarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64).reshape(-1)
    x.flags.writeable = y.flags.writeable = False
    return x, y
