"""Lightning Fabric's ``Fabric``, imported without importing torchmetrics.

At import time ``lightning_fabric`` 2.6.6 sets ``_TORCHMETRICS_GREATER_EQUAL_1_0_0``
with ``lightning_utilities``' ``compare_version``, which imports the package to
read its ``__version__``. Importing torchmetrics imports torchvision and
``scipy.signal`` with it: about 2 s of CPU in every process that imports the
learner, paid by each Ray worker of a sweep before its first trial (measured in
``docs/performance.md``). Fabric reads that flag only in ``SpikeDetection``,
which lifelong does not use.

While ``lightning_fabric`` is imported, this module has ``compare_version`` read
torchmetrics' version from its installed distribution's metadata instead (the
same version, without the import); every other package, and torchmetrics when
it is already imported, goes through ``compare_version`` unchanged, and the
original function is put back as soon as the import ends. ``Fabric`` is
Lightning's own class.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lightning_utilities.core.imports as _lightning_imports
from packaging.version import Version

__all__ = ["Fabric"]

# Packages whose version Fabric's import only compares: read from metadata.
VERSION_FROM_METADATA = frozenset({"torchmetrics"})


def compare_version_from_metadata(
    original: Callable[..., bool],
) -> Callable[..., bool]:
    """Wrap ``compare_version`` to read some packages' versions from metadata.

    The packages in :data:`VERSION_FROM_METADATA` are not imported; their
    installed distribution's version is compared instead. A package that is not
    installed compares ``False``, as ``compare_version`` does.
    """

    def compare_version(
        package: str, op: Callable[[Any, Any], bool], version: str, use_base_version: bool = False
    ) -> bool:
        if package not in VERSION_FROM_METADATA or package in sys.modules:
            return original(package, op, version, use_base_version)
        try:
            installed = Version(importlib.metadata.version(package))
        except importlib.metadata.PackageNotFoundError:
            return False
        if use_base_version:
            installed = Version(installed.base_version)
        return op(installed, Version(version))

    return compare_version


def _import_fabric() -> type:
    if "lightning_fabric" in sys.modules:  # imported already (by Lightning itself, say)
        return sys.modules["lightning_fabric"].Fabric  # type: ignore[no-any-return]
    original = _lightning_imports.compare_version
    _lightning_imports.compare_version = compare_version_from_metadata(original)
    try:
        from lightning_fabric import Fabric
    finally:
        _lightning_imports.compare_version = original
    return Fabric


if TYPE_CHECKING:
    from lightning_fabric import Fabric
else:
    Fabric = _import_fabric()
