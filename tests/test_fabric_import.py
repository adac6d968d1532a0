"""Importing the learner imports Lightning Fabric, but not torchmetrics (see fabric_import)."""

import operator
import subprocess
import sys
import textwrap

import pytest

from lifelong.platform import fabric_import


def test_learner_imports_fabric_without_torchmetrics() -> None:
    code = textwrap.dedent(
        """
        import sys
        import lightning_utilities.core.imports as lu
        original = lu.compare_version
        import lifelong.cluster.trial
        from lifelong.platform.fabric_import import Fabric
        import lightning_fabric
        from lightning_fabric.utilities import imports
        assert Fabric is lightning_fabric.Fabric
        assert lu.compare_version is original, "compare_version was not put back"
        skipped = [m for m in ("torchmetrics", "torchvision", "scipy.signal") if m in sys.modules]
        assert not skipped, skipped
        flag = imports._TORCHMETRICS_GREATER_EQUAL_1_0_0
        import torchmetrics
        from packaging.version import Version
        assert flag == (Version(torchmetrics.__version__) >= Version("1.0.0")), flag
        print("ok", flag)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", "True"]


def test_compare_version_from_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def original(package: str, op: object, version: str, use_base_version: bool = False) -> bool:
        calls.append(package)
        return True

    compare = fabric_import.compare_version_from_metadata(original)
    assert compare("torch", operator.ge, "2.0") and calls == ["torch"]
    monkeypatch.setattr(fabric_import, "VERSION_FROM_METADATA", frozenset({"no_such_dist_x"}))
    assert compare("no_such_dist_x", operator.ge, "0.0") is False
    monkeypatch.setattr(fabric_import, "VERSION_FROM_METADATA", frozenset({"mnist1d"}))
    monkeypatch.delitem(sys.modules, "mnist1d", raising=False)
    assert compare("mnist1d", operator.ge, "0.0.1") is True
    assert compare("mnist1d", operator.lt, "0.0.1") is False
    assert compare("mnist1d", operator.eq, "0.0.2", use_base_version=True) is True
    assert calls == ["torch"]
