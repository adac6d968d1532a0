"""The :class:`Strategy` base class: hooks named after the moment they run.

A strategy never mutates a shared loss. It returns named loss terms from
:meth:`Strategy.loss_terms`; the learner adds them to the task loss and logs
each as ``loss/<name>``. Every hook is a documented no-op here, so a strategy
overrides only the moments it cares about. A method whose name looks like a
hook but is not one (``on_experience_ends``) is an error at class creation,
not a hook that silently never runs.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from lifelong.scenarios.stream import Experience, Stream

HOOKS: tuple[str, ...] = (
    "on_experience_start",
    "loss_terms",
    "on_after_backward",
    "on_experience_end",
    "on_eval_start",
)
"""The hook names a strategy may override, in the order the loop calls them."""


class StrategyConfig(BaseModel):
    """Base of every strategy's hyperparameters: typed, validated, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


@dataclass
class Context:
    """What a hook may look at and change: the learner's live objects.

    Attributes:
        model: the model being trained (already on ``device``).
        optimizer: the optimizer stepping ``model``'s parameters.
        stream: the stream being learned (experiences on the host).
        experience: the current experience, its tensors on ``device``.
        device: where the model and the current batches live.
        step: global optimizer step count so far.
        total_steps: optimizer steps this experience will take (epochs x batches),
            e.g. for schedules that decay over the experience.
        protected: parameter name -> bool mask of entries that must not change in
            the current optimizer step (``None``: the whole tensor); filled through
            :meth:`protect` in ``on_after_backward`` and cleared after every step.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    stream: Stream
    experience: Experience
    device: torch.device
    step: int = 0
    total_steps: int | None = None
    protected: dict[str, Tensor | None] = field(default_factory=dict)

    def protect(self, name: str, mask: Tensor | None = None) -> None:
        """Keep parameter ``name`` (where ``mask`` is True; everywhere if None) unchanged.

        Call it from ``on_after_backward``. The learner zeroes those gradient entries
        and restores the entries after the optimizer step, so momentum, weight decay
        and Adam's moments cannot move them either. Masks from several strategies
        combine: an entry changes only if no strategy protects it.
        """
        if mask is None or self.protected.get(name, False) is None:
            self.protected[name] = None
        elif name in self.protected:
            self.protected[name] = self.protected[name] | mask  # type: ignore[operator]
        else:
            self.protected[name] = mask


@dataclass
class Batch:
    """One training batch and the model's outputs on it.

    Attributes:
        x: inputs, ``y``: labels, ``task_id``: the experience's task id.
        features: penultimate-layer features ``h(x)``.
        logits: classifier outputs (masked to the task's classes in multi-head models).
            On a text stream (a language model): ``x`` are token ids ``(N, L)``, ``y``
            next-token labels ``(N, L)`` with ``-100`` where nothing is scored,
            ``features`` the hidden states ``(N, L, H)`` and ``logits`` the next-token
            logits of the scored positions only, ``(n_scored, V)``.
        index: positions of the batch's samples in the experience's training set
            (``x == ctx.experience.x_train[index]``), or None when the caller does
            not batch from an experience; lets a strategy look up per-sample values
            it computed once for the whole experience.
    """

    x: Tensor
    y: Tensor
    task_id: int
    features: Tensor
    logits: Tensor
    index: Tensor | None = None


class Strategy:
    """Base class of continual-learning strategies.

    Subclasses set ``name`` (the registry ID) and ``Config`` (a
    :class:`StrategyConfig` subclass) and override hooks from :data:`HOOKS`.
    State that must survive a checkpoint goes through :meth:`state_dict` and
    :meth:`load_state_dict` as plain tensors and numbers.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    language_models: ClassVar[bool | str] = True
    """Whether the strategy applies to a language model on a text stream: ``True``, or
    the reason it does not (it needs class labels or class-shaped logits), which is
    the error a file pairing them gets when it is read."""
    data_parallel: ClassVar[bool | str] = True
    """Whether the strategy trains one model over several workers (``resources.workers``:
    each worker sees a slice of every batch, gradients are summed): ``True``, or the
    reason it cannot (state updated from each batch's data would differ per worker)."""

    def __init__(self, config: StrategyConfig | None = None) -> None:
        config = config if config is not None else self.Config()
        if not isinstance(config, self.Config):
            raise TypeError(
                f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.config = config

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_hook_names(cls)

    # ----------------------------------------------------------------- hooks
    def on_experience_start(self, ctx: Context) -> None:
        """Called when training on ``ctx.experience`` is about to begin."""

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Called after the forward pass of every training batch.

        Returns named scalar loss tensors; the learner adds them to the task
        loss and logs each as ``loss/<name>``. The default adds nothing.
        """
        return {}

    def on_after_backward(self, ctx: Context) -> None:
        """Called after gradients are computed and before the optimizer steps."""

    def on_experience_end(self, ctx: Context) -> None:
        """Called when training on ``ctx.experience`` has finished (consolidation)."""

    def on_eval_start(self, ctx: Context) -> None:
        """Called before the model is evaluated on ``ctx.experience``'s test set.

        A hook may change the weights here (e.g. apply the experience's task mask):
        the learner restores them after evaluating, so evaluation never changes the
        model that training continues from.
        """

    # ------------------------------------------------------------ diagnostics
    def metrics(self) -> dict[str, float]:
        """Diagnostics logged to MLflow after each experience as ``<name>/<key>``.

        E.g. the spectral norm per layer or a mask's density. Default: none.
        """
        return {}

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Return the strategy's state as plain tensors, numbers and containers of them."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`."""
        if state:
            raise ValueError(f"strategy {self.name!r} holds no state but got keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


_OWN = set(dir(object)) | {"state_dict", "load_state_dict", "metrics", "Config", "name", "config"}


def _check_hook_names(cls: type) -> None:
    """Reject methods that look like hooks but are not (``on_experience_ends``)."""
    for attr, value in vars(cls).items():
        if not callable(value) or attr.startswith("_") or attr in HOOKS or attr in _OWN:
            continue
        close = difflib.get_close_matches(attr, HOOKS, n=1, cutoff=0.8)
        if attr.startswith("on_") or close:
            where = _where(value)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{cls.__qualname__}.{attr}{where} is not a strategy hook{hint} "
                f"(hooks: {', '.join(HOOKS)})"
            )


def _where(fn: Any) -> str:
    try:
        file = inspect.getsourcefile(fn)
        line = inspect.getsourcelines(fn)[1]
    except (TypeError, OSError):
        return ""
    return f" (defined at {file}:{line})"
