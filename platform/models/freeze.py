"""``model.freeze``: which of a backbone model's parameters train.

``none`` trains everything; ``backbone`` freezes the whole body (only the head
trains, and the body runs in eval mode: see
:meth:`~lifelong.platform.models.core.ContinualModel.train`); a list of
``fnmatch`` patterns freezes the parameters whose names match any of them
(``body.net.conv_stem.*``, ``*.bn*``). Frozen parameters get
``requires_grad = False``: no gradient, no optimizer update, and strategies,
which act on trainable parameters, leave them alone.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn


def frozen_names(model: nn.Module, freeze: str | Sequence[str]) -> list[str]:
    """The names of ``model``'s parameters that ``freeze`` selects.

    Raises:
        ValueError: a pattern matches no parameter (a typo would freeze nothing).
    """
    names = [n for n, _ in model.named_parameters()]
    if freeze == "none":
        return []
    if freeze == "backbone":
        return [n for n in names if n.startswith("body.")]
    out: set[str] = set()
    for pattern in freeze:
        hits = fnmatch.filter(names, pattern)
        if not hits:
            some = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ValueError(f"model.freeze: {pattern!r} matches no parameter (they are: {some})")
        out.update(hits)
    return [n for n in names if n in out]


def apply_freeze(model: nn.Module, freeze: str | Sequence[str]) -> list[str]:
    """Set ``requires_grad = False`` on the parameters ``freeze`` selects; return their names."""
    names = frozen_names(model, freeze)
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(False)
    return names
