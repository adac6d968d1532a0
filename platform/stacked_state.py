"""Trials stacked along a first dimension: placing stacked tensors, and moving state.

A vectorised run (:mod:`lifelong.platform.vectorized`) keeps every trial's tensors
stacked: the models' parameters, and the stacked strategies' state. These helpers
move between that and one trial's view: a trial's slice of a
:meth:`~lifelong.strategies.Strategy.state_dict`, the trials' states stacked back,
a slice zeroed (a trial that failed), and a stacked tensor put into a module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def place(module: nn.Module, name: str, value: Tensor) -> None:
    """Put ``value`` at dotted ``name`` of ``module`` (as a parameter or a buffer)."""
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    if isinstance(value, nn.Parameter):
        module._parameters[leaf] = value
    else:
        module._buffers[leaf] = value


def unstack_state(state: Any, s: int) -> Any:
    """Trial ``s``'s slice of a stacked :meth:`Strategy.state_dict` (tensors cloned)."""
    if isinstance(state, Tensor):
        return state[s].clone()
    if isinstance(state, dict):
        return {k: unstack_state(v, s) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(unstack_state(v, s) for v in state)
    return state


def stack_states(states: Sequence[Any], who: str) -> Any:
    """The trials' :meth:`Strategy.state_dict` values stacked along a new first dimension."""
    first = states[0]
    if isinstance(first, Tensor):
        return torch.stack(list(states))
    if isinstance(first, dict):
        if any(set(d) != set(first) for d in states):
            raise ValueError(f"strategy {who!r}: the trials' states hold different keys")
        return {k: stack_states([d[k] for d in states], who) for k in first}
    if isinstance(first, list | tuple):
        if any(len(v) != len(first) for v in states):
            raise ValueError(f"strategy {who!r}: the trials' state lists differ in length")
        return type(first)(stack_states(list(col), who) for col in zip(*states, strict=True))
    if any(v != first for v in states):
        raise ValueError(f"strategy {who!r}: the trials' states differ in a non-tensor value")
    return first


def zero_slice(state: Any, s: int) -> Any:
    """``state`` with slice ``s`` of every stacked tensor set to zero (a copy)."""
    if isinstance(state, Tensor):
        out = state.clone()
        if out.dim() > 0:
            out[s] = 0
        return out
    if isinstance(state, dict):
        return {k: zero_slice(v, s) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(zero_slice(v, s) for v in state)
    return state
