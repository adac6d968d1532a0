"""What is registered: the rows of ``lifelong list`` and ``lifelong show``."""

from __future__ import annotations

import inspect
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from rich.table import Table

from lifelong.platform._registry import Registry
from lifelong.platform.plugins import load_entry_points, registries

Kind = Literal["strategies", "scenarios", "models"]
GROUP = {
    "strategies": "lifelong.strategies",
    "scenarios": "lifelong.scenarios",
    "models": "lifelong.models",
}


def registry(kind: Kind) -> Registry[Any]:
    """The registry of ``kind``, entry points of installed packages included."""
    load_entry_points()
    return registries()[GROUP[kind]]


def summary(obj: object) -> str:
    """The first line of ``obj``'s docstring."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def list_table(kind: Kind) -> Table:
    """Every registered name of ``kind`` with its origin and summary."""
    table = Table(title=f"{kind} ({GROUP[kind]})", title_justify="left")
    for column in ("name", "origin", "summary"):
        table.add_column(column)
    for entry in registry(kind).entries():
        table.add_row(entry.name, entry.origin, summary(entry.obj))
    return table


def presets_table() -> Table:
    """Every scenario preset with its source, protocol and the first line of its comment."""
    from lifelong.scenarios.preset import PRESETS_DIR, load_preset, preset_names

    table = Table(title="presets (scenario.preset)", title_justify="left")
    for column in ("name", "source", "protocol", "summary"):
        table.add_column(column)
    for name in preset_names():
        fields = load_preset(name)
        lines = (PRESETS_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
        comment = []
        for line in lines:
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("# ").strip())
        first = " ".join(comment).split(". ")[0].rstrip(".") + "."
        table.add_row(name, fields["source"], fields.get("protocol", "inferred"), first)
    return table


def config_table(config: type[BaseModel], title: str) -> Table:
    """A config model's fields: name (as written in YAML), type, default, help."""
    table = Table(title=title, title_justify="left")
    for column in ("field", "type", "default", "help"):
        table.add_column(column)
    for name, field in config.model_fields.items():
        default = "required" if field.default is PydanticUndefined else repr(field.default)
        if field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        table.add_row(
            field.alias or name, type_name(field.annotation), default, field.description or ""
        )
    return table


def type_name(annotation: Any) -> str:
    """``float``, ``int | None``, or the choices of a ``Literal``: ``'sgd' | 'adam'``."""
    if get_origin(annotation) is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    name = getattr(annotation, "__name__", None)
    return name if name and not get_args(annotation) else str(annotation).replace("typing.", "")


def show_table(kind: Kind, name: str) -> tuple[str, Table | None]:
    """The docstring and (for strategies and scenario sources) the hyperparameters of ``name``."""
    entry = registry(kind).entry(name)
    doc = inspect.getdoc(entry.obj) or ""
    config = getattr(entry.obj, "Config", None)
    header = f"{name} ({entry.origin})\n\n{doc}"
    if isinstance(config, type) and issubclass(config, BaseModel):
        return header, config_table(config, f"{name}: hyperparameters")
    return header, None
