"""Plugins: strategies, scenario sources and models from installed packages or files.

Two ways in, both ending in the same registries the built-ins use:

- **Entry points** of installed packages, in the groups ``lifelong.strategies``
  (a :class:`~lifelong.strategies.Strategy` subclass), ``lifelong.scenarios`` (a
  :class:`~lifelong.scenarios.sources.Source` subclass) and ``lifelong.models``
  (a body builder ``(input_shape, hidden) -> (module, out_features)``). The entry
  point's name is the public name.
- **Plugin files or modules** named in an experiment (``plugins: [my_strategy.py]``):
  imported on the driver, where they register themselves with the usual
  decorators, and shipped to every Ray worker in the job's runtime environment.

A plugin that fails to import, registers a duplicate name or defines a
misspelled hook is a :class:`PluginError` naming the file and line, raised
before any trial starts.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from lifelong.platform._registry import Registry

GROUPS = ("lifelong.strategies", "lifelong.scenarios", "lifelong.models")


class PluginError(ImportError):
    """A plugin could not be loaded; the message names the file (and line) at fault."""


def registries() -> dict[str, Registry[Any]]:
    """The registry each entry-point group fills."""
    from lifelong.platform.models import MODELS
    from lifelong.scenarios.sources import SOURCES
    from lifelong.strategies import STRATEGIES

    return {
        "lifelong.strategies": STRATEGIES,
        "lifelong.scenarios": SOURCES,
        "lifelong.models": MODELS,
    }


_LOADED: set[tuple[str, str, str]] = set()


def load_entry_points() -> None:
    """Register what installed packages declare in the lifelong groups.

    Entry points seen before are skipped, so it is cheap to call again; a
    long-lived process (a reused Ray worker) picks up packages installed since.
    """
    from lifelong.scenarios.sources import Source
    from lifelong.strategies import Strategy, register_strategy

    importlib.invalidate_caches()
    for group, registry in registries().items():
        for ep in importlib.metadata.entry_points(group=group):
            if (group, ep.name, ep.value) in _LOADED:
                continue
            package = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.module
            origin = f"package {package}"
            try:
                obj = ep.load()
            except Exception as e:  # noqa: BLE001 - any import failure is the plugin's
                raise PluginError(
                    f"entry point {ep.name!r} = {ep.value!r} of {origin} "
                    f"(group {group}) failed to import: {_where(e)}"
                ) from None
            kind = {"lifelong.strategies": Strategy, "lifelong.scenarios": Source}.get(group)
            if kind is not None and not (isinstance(obj, type) and issubclass(obj, kind)):
                raise PluginError(
                    f"entry point {ep.name!r} of {origin} (group {group}) must name a "
                    f"{kind.__name__} subclass, got {obj!r}"
                )
            try:
                if group == "lifelong.strategies":
                    register_strategy(ep.name, origin=origin)(obj)
                else:
                    registry.register(ep.name, obj, origin=origin)
            except (KeyError, TypeError) as e:
                raise PluginError(f"entry point {ep.name!r} of {origin}: {e}") from None
            _LOADED.add((group, ep.name, ep.value))


@dataclass(frozen=True)
class PluginRef:
    """How a worker imports a plugin: a module name, or a file shipped in a package."""

    module: str
    file: str | None = None  # the file on the driver (for messages); None: a module


def load_plugin(spec: str, base: Path) -> PluginRef:
    """Import plugin ``spec`` (a ``.py`` path relative to ``base``, or a module name)."""
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = (base / spec).resolve()
        if not path.is_file():
            raise PluginError(f"plugin file {spec!r} not found (looked at {path})")
        name = f"lifelong_plugin_{path.stem}_{_digest(path)}"
        _import(name, lambda: _exec_file(name, path), str(path))
        return PluginRef(name, str(path))
    _import(spec, lambda: importlib.import_module(spec), spec)
    return PluginRef(spec)


def _import(name: str, do: Any, label: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    try:
        return do()
    except PluginError:
        raise
    except ModuleNotFoundError as e:
        if e.name == name:
            raise PluginError(f"plugin module {name!r} not found") from None
        raise PluginError(f"plugin {label}: {_where(e)}") from None
    except Exception as e:  # noqa: BLE001 - any import failure is the plugin's
        where = _where(e)
        raise PluginError(
            where if where.startswith(label) else f"plugin {label}: {where}"
        ) from None


def _exec_file(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _where(e: BaseException) -> str:
    """``FILE:LINE: Type: message`` of the innermost frame outside lifelong and importlib."""
    if isinstance(e, SyntaxError):
        return f"{e.filename}:{e.lineno}: SyntaxError: {e.msg}"
    ours = _lifelong_dirs()
    frames = [
        f
        for f in traceback.extract_tb(e.__traceback__)
        if "importlib" not in f.filename and Path(f.filename).resolve().parent not in ours
    ]
    where = f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
    return f"{where}{type(e).__name__}: {e}"


@functools.cache
def _lifelong_dirs() -> frozenset[Path]:
    import lifelong.cluster
    import lifelong.scenarios
    import lifelong.strategies

    mods = (lifelong.cluster, lifelong.scenarios, lifelong.strategies)
    dirs = {Path(m.__file__).resolve().parent for m in mods if m.__file__}
    return frozenset(dirs | {Path(__file__).resolve().parent})


def _digest(path: Path) -> str:
    return hashlib.sha1(str(path).encode()).hexdigest()[:8]


# ------------------------------------------------------------------- shipping
SHIPPED_PREFIX = "lifelong_shipped_"


def shipped_package(modules: list[str]) -> str:
    """The shipped package among worker import names (``""`` when none is shipped)."""
    return next((m.split(".")[0] for m in modules if m.startswith(SHIPPED_PREFIX)), "")


def stage_for_workers(
    refs: list[PluginRef], package: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Copy plugin files into one package Ray can ship; return (runtime_env, modules).

    Workers import the returned module names; files travel in the job's
    runtime environment (``py_modules``), so nothing needs installing on them.
    ``package``: the package's name (a resumed sweep's trials name the one they
    started with); by default one derived from the files' contents.
    """
    files = [r for r in refs if r.file]
    modules = [r.module for r in refs if not r.file]
    if not files:
        return {}, modules
    package = package or (
        SHIPPED_PREFIX
        + hashlib.sha1("".join(Path(r.file).read_text() for r in files).encode()).hexdigest()[:10]
    )
    root = Path(tempfile.mkdtemp(prefix="lifelong-plugins-")) / package
    root.mkdir()
    # SOURCES: each file's path on the driver, for error messages (hook_errors).
    sources = {r.module: r.file for r in files}
    (root / "__init__.py").write_text(
        f'"""Plugin files shipped by lifelong."""\n\nSOURCES = {sources!r}\n'
    )
    for r in files:
        shutil.copy(r.file, root / f"{r.module}.py")
    return {"py_modules": [str(root)]}, modules + [f"{package}.{r.module}" for r in files]


def discard_staged(py_modules: list[str]) -> None:
    """Remove what :func:`stage_for_workers` copied, once Ray no longer needs it.

    ``py_modules``: the runtime env's ``py_modules`` as staged, read before
    ``ray.init``, which replaces them with the URIs of its uploaded copies.
    """
    for module in py_modules:
        staged = Path(module).parent
        if staged.name.startswith("lifelong-plugins-"):
            shutil.rmtree(staged, ignore_errors=True)


def import_on_worker(modules: list[str]) -> None:
    """Import the plugin modules a trial needs (no-op for those already imported)."""
    load_entry_points()
    for name in modules:
        if name not in sys.modules:
            importlib.import_module(name)
