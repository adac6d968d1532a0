"""What code produced a run: each plugin file's source and sha256, each plugin package's version.

Every trial's MLflow run gets, for each plugin file of the experiment, its source
as the artifact ``plugins/<file name>`` and its hash as the tag
``lifelong.plugin.<file name>.sha256``, and for each installed distribution that
brings plugins (a module named under ``plugins:``, or an entry point in a
``lifelong.*`` group) the tag ``lifelong.plugin_package.<distribution>`` =
its version. A sweep remembers the hashes it started with, so ``--resume`` can
refuse plugin files that changed since (:func:`changed_files`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
from collections.abc import Iterable
from pathlib import Path

from lifelong.platform.plugins import PluginRef, registries

TAG_SHA = "lifelong.plugin.{}.sha256"
TAG_PACKAGE = "lifelong.plugin_package.{}"
TAG_CHANGED = "lifelong.plugins_changed"


def sha256(path: str | Path) -> str:
    """The hex sha256 of the file's bytes (``"missing"`` when it is gone)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return "missing"


def file_hashes(refs: Iterable[PluginRef]) -> dict[str, str]:
    """``{file on the driver: sha256}`` for the plugin files among ``refs``."""
    return {r.file: sha256(r.file) for r in refs if r.file}


def changed_files(before: dict[str, str], refs: Iterable[PluginRef]) -> dict[str, tuple[str, str]]:
    """``{file: (sha256 then, sha256 now)}`` for plugin files that differ from ``before``.

    A file the experiment no longer names, or names anew, counts as changed too
    (its missing side reads ``"none"``). An empty ``before`` (a sweep started
    before hashes were recorded, or without plugin files) has nothing to compare.
    """
    if not before:
        return {}
    now = file_hashes(refs)
    return {
        f: (before.get(f, "none"), now.get(f, "none"))
        for f in sorted(set(before) | set(now))
        if before.get(f) != now.get(f)
    }


def package_versions(refs: Iterable[PluginRef]) -> dict[str, str]:
    """``{distribution: version}`` of every installed package that provides a plugin."""
    top = md.packages_distributions()
    names = {d for r in refs if not r.file for d in top.get(r.module.split(".")[0], [])}
    groups = set(registries())
    for dist in md.distributions():
        if any(ep.group in groups for ep in dist.entry_points):
            names.add(dist.metadata["Name"])
    names.discard("lifelong")  # the platform's own entry points (built-ins)
    return {n: md.version(n) for n in sorted(names)}


def tags(refs: Iterable[PluginRef]) -> dict[str, str]:
    """The provenance tags of a trial's run (see the module's docstring)."""
    refs = list(refs)
    out = {TAG_SHA.format(Path(f).name): h for f, h in file_hashes(refs).items()}
    out |= {TAG_PACKAGE.format(n): v for n, v in package_versions(refs).items()}
    return out


def sources(refs: Iterable[PluginRef]) -> dict[str, str]:
    """``{artifact path: source text}`` of the plugin files (``plugins/<file name>``)."""
    return {
        f"plugins/{Path(r.file).name}": Path(r.file).read_text(encoding="utf-8")
        for r in refs
        if r.file and Path(r.file).is_file()
    }


def describe_changes(changed: dict[str, tuple[str, str]]) -> str:
    """One line per changed file: ``FILE: sha256 OLD -> NEW`` (12 hex digits each)."""
    return "; ".join(f"{f}: sha256 {a[:12]} -> {b[:12]}" for f, (a, b) in changed.items())
