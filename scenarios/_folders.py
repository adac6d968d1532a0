"""Image-folder trees: class folders of image files, listed with torchvision, read with PIL.

A *tree* is either ``root/<class>/...`` (every image file below a class folder,
at any depth, belongs to that class) or ``root/train/<class>/...`` plus
``root/test/<class>/...`` with the same class folders in both. Class names are
the sorted folder names (hidden folders, starting with ``.``, are skipped);
files are those with one of torchvision's image extensions
(``torchvision.datasets.folder.IMG_EXTENSIONS``), in torchvision's
``make_dataset`` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lifelong.scenarios.sources import ScenarioError

__all__ = ["Tree", "common_size", "decode_images", "scan_tree", "subfolders"]

Sample = tuple[str, int]  # (path, class index in the tree's classes)


def _extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(IMG_EXTENSIONS)


def subfolders(directory: Path) -> list[str]:
    """The sorted names of the non-hidden folders directly inside ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass(frozen=True)
class Tree:
    """The listed image files of one tree.

    Attributes:
        root: the tree's folder.
        classes: sorted class folder names; a sample's label indexes this.
        parts: ``{"all": samples}`` or ``{"train": ..., "test": ...}`` when the
            tree has ``train/`` and ``test/`` sub-trees (the split is then fixed).
    """

    root: Path
    classes: tuple[str, ...]
    parts: dict[str, list[Sample]]

    @property
    def split(self) -> bool:
        """Whether ``train/`` and ``test/`` sub-trees fix the split."""
        return "train" in self.parts

    def paths(self) -> list[str]:
        """Every listed image file of the tree."""
        return [p for samples in self.parts.values() for p, _ in samples]


def _scan_classes(directory: Path, field: str) -> tuple[list[str], list[Sample]]:
    from torchvision.datasets.folder import make_dataset

    classes = subfolders(directory)
    if not classes:
        raise ScenarioError(
            field,
            f"no class folders in {str(directory)!r} (expected "
            f"{str(directory / '<class>' / '<image files>')!r})",
        )
    extensions = _extensions()
    samples = make_dataset(
        str(directory),
        {c: i for i, c in enumerate(classes)},
        extensions=extensions,
        allow_empty=True,
    )
    present = {label for _, label in samples}
    for i, name in enumerate(classes):
        if i not in present:
            raise ScenarioError(
                field,
                f"class folder {str(directory / name)!r} holds no image files "
                f"(extensions: {' '.join(extensions)})",
            )
    return classes, samples


def scan_tree(root: Path, field: str) -> Tree:
    """List the classes and image files of the tree at ``root`` (no image is opened).

    Raises:
        ScenarioError: (``field``) for no class folders, an empty class folder,
            ``train/`` without ``test/`` (or the reverse), or class folders that
            differ between ``train/`` and ``test/``.
    """
    folders = subfolders(root)
    if "train" not in folders and "test" not in folders:
        classes, samples = _scan_classes(root, field)
        return Tree(root, tuple(classes), {"all": samples})
    if set(folders) != {"train", "test"}:
        others = [f for f in folders if f not in ("train", "test")]
        raise ScenarioError(
            field,
            f"{str(root)!r} must hold either class folders or exactly train/ and test/ "
            f"sub-trees; it has {', '.join(f + '/' for f in folders)}"
            + (f" ({', '.join(others)} beside them)" if others else ""),
        )
    train_classes, train = _scan_classes(root / "train", field)
    test_classes, test = _scan_classes(root / "test", field)
    for name in train_classes:
        if name not in test_classes:
            raise ScenarioError(
                field,
                f"class folder {str(root / 'test' / name)!r} is missing: train/ and test/ "
                "must hold the same class folders",
            )
    for name in test_classes:
        if name not in train_classes:
            raise ScenarioError(
                field,
                f"class folder {str(root / 'train' / name)!r} is missing: train/ and test/ "
                "must hold the same class folders",
            )
    return Tree(root, tuple(train_classes), {"train": train, "test": test})


def _unreadable(path: str, exc: Exception, field: str) -> ScenarioError:
    return ScenarioError(field, f"cannot read image file {path!r}: {exc}")


def common_size(paths: list[str], field: str) -> tuple[int, int]:
    """The ``(H, W)`` all images in ``paths`` share (reads headers only).

    Raises:
        ScenarioError: (``field``) for an unreadable file or differing sizes.
    """
    from PIL import Image

    first: tuple[str, tuple[int, int]] | None = None
    for path in paths:
        try:
            with Image.open(path) as img:
                w, h = img.size
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
            raise _unreadable(path, exc, field) from None
        if first is None:
            first = (path, (h, w))
        elif first[1] != (h, w):
            (h0, w0) = first[1]
            raise ScenarioError(
                "options.size",
                f"images differ in size: {first[0]!r} is {h0}x{w0} (HxW) but {path!r} is "
                f"{h}x{w}; set options.size: [H, W] to resize them",
            )
    if first is None:
        raise ScenarioError(field, "no image files")
    return first[1]


def decode_images(
    samples: list[Sample], mode: str, size: tuple[int, int], field: str
) -> np.ndarray:
    """Read ``samples`` as ``(N, C, H, W)`` uint8, converted to ``mode`` and resized to ``size``.

    Images of another size are resized with PIL's bilinear filter (antialiased
    when shrinking).

    Raises:
        ScenarioError: (``field``) naming an unreadable or corrupt file.
    """
    from PIL import Image

    h, w = size
    channels = 1 if mode == "L" else 3
    out = np.empty((len(samples), channels, h, w), dtype=np.uint8)
    for k, (path, _) in enumerate(samples):
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                if img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                array = np.asarray(img)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
            raise _unreadable(path, exc, field) from None
        out[k] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return out
