"""Command-line overrides of an experiment file: ``training.lr=0.1 'strategies=[naive,ewc]'``.

Each override is ``KEY=VALUE``: ``KEY`` a dotted path into the file's data
(integers index lists: ``strategies.1.ewc.lambda``), ``VALUE`` read as YAML
(``0.1`` a number, ``[naive, ewc]`` a list, ``{grid: [0.01, 0.1]}`` a search
space). Overrides are applied in order before validation, so the result is
checked exactly like the file; a problem they cause names the override.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

Path = tuple[str | int, ...]


def parse_override(text: str) -> tuple[Path, Any]:
    """``(path, value)`` of one ``KEY=VALUE`` override.

    Raises:
        ValueError: no ``=``, an empty key part, or a value that is not YAML.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError("an override is KEY=VALUE, e.g. training.lr=0.1")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ValueError(f"empty part in the key {key!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        first = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ValueError(f"the value is not valid YAML: {first}") from None
    return tuple(int(p) if p.isdigit() else p for p in parts), parsed


def apply_overrides(
    raw: dict[str, Any], overrides: Sequence[str]
) -> tuple[dict[str, Any], list[tuple[Path, str]], list[tuple[Path, str, str]]]:
    """``raw`` with every override applied.

    Returns the new data, the (path, override text) of each override applied
    (to locate later problems), and the problems (path, override text, message)
    of overrides that could not be applied.
    """
    applied: list[tuple[Path, str]] = []
    problems: list[tuple[Path, str, str]] = []
    for text in overrides:
        try:
            path, value = parse_override(text)
            raw = _set(raw, path, value)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            problems.append(((), text, str(e.args[0]) if e.args else type(e).__name__))
            continue
        applied.append((path, text))
    return raw, applied, problems


def _set(tree: Any, path: Path, value: Any) -> Any:
    """A copy of ``tree`` with ``value`` at ``path`` (mappings gain keys; lists must hold it)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, list):
        if not isinstance(head, int) or not 0 <= head < len(tree):
            raise IndexError(f"{head!r} is no index of a list of {len(tree)} entries")
        out = list(tree)
        out[head] = _set(out[head], rest, value)
        return out
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise TypeError(f"cannot set {head!r} inside the value {tree!r}")
    key = str(head) if isinstance(head, int) and head not in tree else head  # YAML keys: text
    out = dict(tree)
    out[key] = _set(out.get(key), rest, value)
    return out
