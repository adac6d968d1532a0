"""Say where in a strategy an exception was raised: strategy, hook, experience, step, line.

An exception that escapes a strategy's hook keeps its own type (so ``pdb``'s
post-mortem and ``except ValueError`` still work) and gains one note,
``lifelong: raised in strategy 'x' (Class), hook loss_terms, experience 1, step 37,
at /path/plugin.py:42``, found from the traceback's frames: the outermost frame
whose ``self`` is a :class:`~lifelong.strategies.Strategy` is the hook the learner
called, the innermost frame in that strategy's own file is the line. A plugin file
that Ray shipped to a worker is named by its path on the driver
(:data:`SOURCES` of the shipped package). :func:`reason` turns a formatted
traceback into the one line MLflow's ``lifelong.error`` tag holds.
"""

from __future__ import annotations

import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from lifelong.strategies.base import Strategy

#: The start of the note an annotated exception carries.
NOTE = "lifelong: raised in "
_SHIPPED = re.compile(r"(?:[^\s\"']*[/\\])?(lifelong_shipped_[0-9a-f]+)[/\\](\w+)\.py")


@dataclass(frozen=True)
class HookSite:
    """Where an exception left a strategy: which one, which hook, which file and line."""

    strategy: str
    cls: str
    hook: str
    file: str
    line: int

    def describe(self, experience: int | None, step: int) -> str:
        """The note's text after :data:`NOTE`."""
        moment = (
            "the untrained evaluation (before experience 0)"
            if experience is None
            else f"experience {experience}"
        )
        return (
            f"strategy {self.strategy!r} ({self.cls}), hook {self.hook}, {moment}, "
            f"step {step}, at {self.file}:{self.line}"
        )


def locate(tb: TracebackType | None) -> HookSite | None:
    """The strategy hook a traceback passed through, or ``None`` (the platform's own error)."""
    frames = list(traceback.walk_tb(tb))
    outer = next((f for f in frames if isinstance(f[0].f_locals.get("self"), Strategy)), None)
    if outer is None:
        return None
    strategy: Strategy = outer[0].f_locals["self"]
    own = _source_file(type(strategy))
    inner = [f for f in frames if own is not None and _same(f[0].f_code.co_filename, own)]
    frame, line = inner[-1] if inner else outer
    return HookSite(
        strategy=strategy.name,
        cls=type(strategy).__qualname__,
        hook=outer[0].f_code.co_name,
        file=original_file(frame.f_code.co_filename),
        line=line,
    )


def annotate(error: BaseException, experience: int | None, step: int) -> None:
    """Add the hook's note to ``error`` if a strategy raised it (once, innermost wins)."""
    if any(str(n).startswith(NOTE) for n in getattr(error, "__notes__", ())):
        return
    site = locate(error.__traceback__)
    if site is not None:
        error.add_note(NOTE + site.describe(experience, step))


def reason(text: str) -> str:
    """One line for ``lifelong.error`` from a formatted traceback (Ray's ``error.txt``).

    ``Type: message`` of the last exception, followed by ``(raised in ...)`` when a
    strategy raised it; the driver's paths replace shipped copies'.
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith(" ")]
    note = next((ln for ln in reversed(lines) if ln.startswith(NOTE)), None)
    rest = [ln for ln in lines if not ln.startswith(NOTE)]
    head = rest[-1].strip() if rest else "the trial failed without an error message"
    if note is None:
        return head
    return driver_paths(f"{head} ({note[len('lifelong: ') :]})")


def original_file(filename: str) -> str:
    """The driver's path of a plugin file Ray shipped (``filename`` itself otherwise)."""
    match = _SHIPPED.search(filename)
    if match is None:
        return filename
    package = sys.modules.get(match.group(1))
    return str(getattr(package, "SOURCES", {}).get(match.group(2), filename))


def driver_paths(text: str) -> str:
    """``text`` (a traceback) with each shipped plugin file's path replaced by the driver's.

    The driver imported each plugin file as a module of the same name as its
    shipped copy, so ``sys.modules`` knows the original path.
    """

    def original(match: re.Match[str]) -> str:
        module = sys.modules.get(match.group(2))
        return str(getattr(module, "__file__", None) or match.group(0))

    return _SHIPPED.sub(original, text)


def _source_file(cls: type) -> str | None:
    module = sys.modules.get(cls.__module__)
    return getattr(module, "__file__", None)


def _same(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()
