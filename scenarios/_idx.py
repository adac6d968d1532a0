"""IDX files (the MNIST format) and MNIST-format directories, read with gzip and numpy.

An IDX file starts with a big-endian magic number ``0x0000TTNN`` (``TT`` the
element type, ``NN`` the number of dimensions), then ``NN`` big-endian
``uint32`` sizes, then the data in C order. MNIST-style image files have magic
2051 (unsigned bytes, 3 dimensions ``(N, rows, cols)``) and label files 2049
(unsigned bytes, 1 dimension ``(N,)``). Files may be gzip-compressed (``.gz``).

An MNIST-format directory holds ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, each plain or ``.gz`` (MNIST, Fashion-MNIST,
KMNIST as distributed). Parsed arrays are cached per (path, modification time,
size) and are read-only.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lifelong.scenarios.sources import ScenarioError

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "MNIST_FILES",
    "IdxHeader",
    "MnistDir",
    "find_idx",
    "idx_header",
    "mnist_dir",
    "read_idx",
]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)
#: (split, part) -> file name (without ``.gz``) in an MNIST-format directory.
MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


class _IdxError(ValueError):
    """A malformed IDX file (the message names the file)."""


@dataclass(frozen=True)
class IdxHeader:
    """The header of one IDX file.

    Attributes:
        path: the file.
        magic: the magic number (2051 for MNIST images, 2049 for labels).
        dtype: numpy dtype of the elements (big-endian as stored).
        shape: the sizes of the dimensions.
    """

    path: Path
    magic: int
    dtype: np.dtype
    shape: tuple[int, ...]


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _parse_header(path: Path, f: BinaryIO) -> IdxHeader:
    head = f.read(4)
    magic = int.from_bytes(head, "big") if len(head) == 4 else -1
    if len(head) < 4 or head[0] or head[1] or head[2] not in _DTYPES or not head[3]:
        raise _IdxError(
            f"{str(path)!r} is not an IDX file: bad magic number {magic} "
            f"(expected {IDX_IMAGES_MAGIC} for images or {IDX_LABELS_MAGIC} for labels)"
        )
    dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        raise _IdxError(f"{str(path)!r} is truncated inside its IDX header")
    shape = tuple(int.from_bytes(dims[i : i + 4], "big") for i in range(0, len(dims), 4))
    return IdxHeader(path, magic, np.dtype(_DTYPES[head[2]]), shape)


def idx_header(path: Path, field: str = "options.root") -> IdxHeader:
    """Read only the header of the IDX file ``path`` (cheap, also for ``.gz``).

    Raises:
        ScenarioError: (``field``) for an unreadable file or a bad magic number.
    """
    try:
        with _open(path) as f:
            return _parse_header(path, f)
    except _IdxError as e:
        raise ScenarioError(field, str(e)) from None
    except _READ_ERRORS as e:
        raise ScenarioError(field, f"cannot read IDX file {str(path)!r}: {e}") from None


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """Parse a whole IDX file (the key's mtime and size invalidate stale entries)."""
    with _open(Path(path)) as f:
        header = _parse_header(Path(path), f)
        data = f.read()
    count = int(np.prod(header.shape, dtype=np.int64))
    expected = count * header.dtype.itemsize
    if len(data) != expected:
        raise _IdxError(
            f"{path!r} holds {len(data)} bytes of data but its header "
            f"{header.shape} needs {expected}: the file is truncated or corrupt"
        )
    array = np.frombuffer(data, dtype=header.dtype).reshape(header.shape)
    if header.dtype.itemsize > 1:
        array = array.astype(header.dtype.newbyteorder("="))
    array.flags.writeable = False
    return array


def read_idx(path: Path, field: str = "options.root") -> np.ndarray:
    """Return the whole IDX file ``path`` as a read-only native-endian array (cached).

    Raises:
        ScenarioError: (``field``) for an unreadable, malformed or truncated file.
    """
    try:
        stat = path.stat()
        return _read_cached(str(path), stat.st_mtime_ns, stat.st_size)
    except _IdxError as e:
        raise ScenarioError(field, str(e)) from None
    except _READ_ERRORS as e:
        raise ScenarioError(field, f"cannot read IDX file {str(path)!r}: {e}") from None


def find_idx(directory: Path, name: str) -> Path | None:
    """``directory/name`` if it is a file, else ``directory/name.gz``, else ``None``."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class MnistDir:
    """An MNIST-format directory whose four headers were checked.

    Attributes:
        files: ``(split, part) -> path`` for the four files (see :data:`MNIST_FILES`).
        image_shape: ``(rows, cols)`` of one image.
        counts: ``split -> number of samples`` (``train``, ``test``).
    """

    files: dict[tuple[str, str], Path]
    image_shape: tuple[int, int]
    counts: dict[str, int]

    def arrays(self, split: str, field: str = "options.root") -> tuple[np.ndarray, np.ndarray]:
        """Return ``(images (N, rows, cols), labels (N,))`` of ``split``, read-only uint8."""
        return read_idx(self.files[split, "images"], field), read_idx(
            self.files[split, "labels"], field
        )


def mnist_dir(directory: Path, field: str = "options.root") -> MnistDir:
    """Find and check the four IDX files of an MNIST-format ``directory`` (headers only).

    Checks the magic numbers (2051 images, 2049 labels), that each label file
    counts as many samples as its image file, and that train and test images
    share one size.

    Raises:
        ScenarioError: (``field``) naming the missing or malformed file.
    """
    files: dict[tuple[str, str], Path] = {}
    for key, name in MNIST_FILES.items():
        path = find_idx(directory, name)
        if path is None:
            raise ScenarioError(
                field,
                f"{str(directory / name)!r} (or {name}.gz) not found; an MNIST-format "
                f"directory holds {', '.join(MNIST_FILES.values())} (plain or .gz)",
            )
        files[key] = path
    counts: dict[str, int] = {}
    shapes = set()
    for split in ("train", "test"):
        images = idx_header(files[split, "images"], field)
        labels = idx_header(files[split, "labels"], field)
        for header, magic, what in (
            (images, IDX_IMAGES_MAGIC, "unsigned-byte images (N, rows, cols)"),
            (labels, IDX_LABELS_MAGIC, "unsigned-byte labels (N,)"),
        ):
            if header.magic != magic:
                raise ScenarioError(
                    field,
                    f"{str(header.path)!r} has IDX magic number {header.magic}, "
                    f"expected {magic} ({what})",
                )
        if labels.shape[0] != images.shape[0]:
            raise ScenarioError(
                field,
                f"label file {str(labels.path)!r} holds {labels.shape[0]} labels but image file "
                f"{str(images.path)!r} holds {images.shape[0]} images",
            )
        counts[split] = images.shape[0]
        shapes.add(images.shape[1:])
    if len(shapes) != 1:
        raise ScenarioError(
            field, f"train and test images of {str(directory)!r} differ in size: {sorted(shapes)}"
        )
    rows, cols = shapes.pop()
    return MnistDir(files, (rows, cols), counts)
