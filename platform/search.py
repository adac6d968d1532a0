"""Search spaces in the experiment file, and the configurations they expand to.

Any field of ``scenario``, ``model`` or ``training`` and any strategy
hyperparameter may be a search space instead of a value: a mapping with one
key, as in Ray Tune:

=====================  ==========================================================
``grid: [v, ...]``     every value, each its own configuration (``tune.grid_search``)
``choice: [v, ...]``   one value drawn per sample (``tune.choice``)
``uniform: [a, b]``    a float drawn uniformly from [a, b] (``tune.uniform``)
``loguniform: [a, b]`` a float drawn log-uniformly from [a, b], 0 < a (``tune.loguniform``)
``randint: [a, b]``    an integer drawn from a..b-1 (``tune.randint``; b excluded, as in Ray)
=====================  ==========================================================

The experiment's ``num_samples`` draws the random spaces that many times for
every point of the grid (Ray Tune's meaning). The configurations are drawn on
the driver, with Ray Tune's own domains and variant generator, from a fixed
random state (``search_seed``), so the same file always gives the same trials
and ``lifelong run --dry-run`` lists them before anything starts. Every
configuration runs once per seed of ``seeds``: seeds are repeats of one
configuration, never part of the search.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
"""The search-space kinds an experiment file may use."""

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Space:
    """One search space: its kind and its arguments (values, or bounds ``[a, b]``)."""

    kind: str
    args: tuple[Any, ...]

    @property
    def random(self) -> bool:
        """Whether values are drawn (``choice``, ``uniform``, ...) rather than enumerated."""
        return self.kind != "grid"

    def candidates(self) -> list[tuple[str | int, Any]]:
        """Values to validate, each with where it sits: every listed value, or both bounds."""
        if self.kind in ("grid", "choice"):
            return list(enumerate(self.args))
        a, b = self.args
        return [(0, a), (1, b - 1 if self.kind == "randint" else b)]

    def fractional_probe(self) -> float | None:
        """A non-integral value a ``uniform``/``loguniform`` space can draw (else ``None``).

        Validating it finds a range put on an integer field, whose bounds alone pass.
        """
        if self.kind not in ("uniform", "loguniform"):
            return None
        a, b = self.args
        mid = (a + b) / 2 if self.kind == "uniform" else math.sqrt(a * b)
        half = math.floor(mid) + 0.5
        return half if a < half < b else mid

    def to_tune(self) -> Any:
        """The Ray Tune domain this space maps onto."""
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "uniform":
            return tune.uniform(*self.args)
        if self.kind == "loguniform":
            return tune.loguniform(*self.args)
        return tune.randint(*self.args)

    def to_json(self) -> dict[str, list[Any]]:
        """The space as written in the experiment file."""
        return {self.kind: list(self.args)}


class SpaceError(ValueError):
    """A malformed search space: where it is (a path) and what is wrong."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(message)


def is_space(value: Any) -> bool:
    """Whether ``value`` is written as a search space (a one-key mapping of a known kind)."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in KINDS


def parse_space(value: dict[str, Any], path: Path) -> Space:
    """The :class:`Space` ``value`` writes; raise :class:`SpaceError` when malformed."""
    kind, args = next(iter(value.items()))
    where = (*path, kind)
    if not isinstance(args, list) or not args:
        raise SpaceError(where, f"{kind} takes a non-empty list, got {_short(args)}")
    if kind in ("grid", "choice"):
        if len(args) > 10_000:
            raise SpaceError(where, f"at most 10000 values, got {len(args)}")
        keys = [json.dumps(a, sort_keys=True, default=str) for a in args]
        if len(set(keys)) != len(keys):
            raise SpaceError(where, f"a value is listed twice in {_short(args)}")
        return Space(kind, tuple(args))
    if len(args) != 2:
        raise SpaceError(where, f"{kind} takes two bounds [a, b], got {_short(args)}")
    a, b = args
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in args)
    if kind == "randint":
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in args):
            raise SpaceError(where, f"randint takes two integers [a, b], got {_short(args)}")
        if not a < b:
            raise SpaceError(where, f"randint [a, b] draws a..b-1 and needs a < b, got {args}")
        return Space(kind, (a, b))
    if not numeric or not all(math.isfinite(x) for x in args):
        raise SpaceError(where, f"{kind} takes two finite numbers [a, b], got {_short(args)}")
    if not a < b:
        raise SpaceError(where, f"{kind} needs a < b, got {args}")
    if kind == "loguniform" and a <= 0:
        raise SpaceError(where, f"loguniform needs 0 < a < b, got {args}")
    return Space(kind, (float(a), float(b)))


def find_spaces(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every search space written inside ``value`` (nested mappings), with its path."""
    if is_space(value):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from find_spaces(v, (*path, k))


def set_path(tree: Any, path: Path, value: Any) -> Any:
    """A copy of nested mappings/lists ``tree`` with ``value`` at ``path``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, list) and isinstance(head, int):
        out = list(tree)
        out[head] = set_path(out[head], rest, value)
        return out
    out = dict(tree)
    out[head] = set_path(out.get(head, {}), rest, value)
    return out


def expand(spaces: Mapping[str, Space], num_samples: int, seed: int) -> list[dict[str, Any]]:
    """The configurations ``spaces`` (key -> space) expand to, in a stable order.

    Each is a mapping key -> value. The grid is enumerated and the random
    spaces drawn ``num_samples`` times per grid point with Ray Tune's variant
    generator from ``numpy.random.RandomState(seed)``; a configuration drawn
    twice (``choice`` can repeat) is kept once.
    """
    if not spaces:
        return [{}]
    import numpy as np
    from ray.tune.search.variant_generator import generate_variants

    keys = sorted(spaces)
    unresolved = {f"p{i}": spaces[k].to_tune() for i, k in enumerate(keys)}
    state = np.random.RandomState(seed)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(num_samples):
        for _, resolved in generate_variants(unresolved, random_state=state):
            config = {k: _rounded(_plain(resolved[f"p{i}"]), spaces[k]) for i, k in enumerate(keys)}
            digest = json.dumps(config, sort_keys=True, default=str)
            if digest not in seen:
                seen.add(digest)
                out.append(config)
    return out


def _plain(value: Any) -> Any:
    """Turn numpy scalars (what Tune's samplers return) as Python numbers."""
    if hasattr(value, "item") and not isinstance(value, list | dict | str):
        return value.item()
    return value


def _rounded(value: Any, space: Space) -> Any:
    """A drawn float to 4 significant digits (kept in [a, b]): the label names what trains."""
    if space.kind not in ("uniform", "loguniform"):
        return value
    a, b = space.args
    return min(max(float(f"{value:.4g}"), a), b)


def value_text(value: Any) -> str:
    """A value as trial labels and MLflow params show it (lists as JSON)."""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------ in the experiment file
SECTIONS = ("scenario", "model", "training")
"""The sections whose fields may be searched (besides strategy hyperparameters)."""


@dataclass
class FoundSpaces:
    """The search spaces of an experiment file's data, and the data without them.

    ``plain`` is the data with each space replaced by its first candidate;
    ``located`` lists (path in the data, space); ``keys`` maps each path to its
    MLflow param key (``training.lr``, ``strategy.ewc.lambda``) and ``group``
    to the strategy entry it belongs to (``None``: every entry).
    """

    plain: dict[str, Any]
    located: list[tuple[Path, Space]]
    keys: dict[Path, str]
    group: dict[Path, int | None]
    problems: list[tuple[Path, str]]

    def locate(self, loc: Path) -> Path:
        """``loc`` pointed at the space's first candidate when it lies under a space."""
        for where, space in self.located:
            if loc[: len(where)] == where:
                return (*where, space.kind, 0, *loc[len(where) :])
        return loc

    def global_spaces(self) -> dict[str, Space]:
        """Spaces of ``scenario``/``model``/``training``, by param key."""
        return {self.keys[p]: s for p, s in self.located if self.group[p] is None}

    def group_spaces(self, i: int) -> dict[str, Space]:
        """Spaces of strategy entry ``i``'s hyperparameters, by param key."""
        return {self.keys[p]: s for p, s in self.located if self.group[p] == i}

    def has_random(self) -> bool:
        """Whether some space draws values (so ``num_samples`` > 1 means something)."""
        return any(s.random for _, s in self.located)


def extract_spaces(raw: dict[str, Any]) -> FoundSpaces:
    """Find the search spaces in experiment data ``raw`` (see the module docstring)."""
    found = FoundSpaces(raw, [], {}, {}, [])
    for section in SECTIONS:
        for path, value in find_spaces(raw.get(section), (section,)):
            if len(path) < 2:
                found.problems.append((path, "a search space goes on a field, not a section"))
                continue
            _add(found, path, value, ".".join(str(p) for p in path), None)
    entries = raw.get("strategies")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        items = entry if isinstance(entry, list) else [entry]
        for k, item in enumerate(items):
            if not (isinstance(item, dict) and len(item) == 1):
                continue
            name, params = next(iter(item.items()))
            if not isinstance(params, dict):
                continue
            base: Path = ("strategies", i, k) if isinstance(entry, list) else ("strategies", i)
            for key, value in params.items():
                if is_space(value):
                    _add(found, (*base, name, key), value, f"strategy.{name}.{key}", i)
    return found


def _add(found: FoundSpaces, path: Path, value: Any, key: str, group: int | None) -> None:
    try:
        space = parse_space(value, path)
    except SpaceError as e:
        found.problems.append((e.path, e.message))
        return
    found.located.append((path, space))
    found.keys[path] = key
    found.group[path] = group
    found.plain = set_path(found.plain, path, space.candidates()[0][1])
