"""The :class:`Strategy` base class: hooks named after the moment they run.

A strategy never mutates a shared loss. It returns named loss terms from
:meth:`Strategy.loss_terms`; the learner adds them to the task loss and logs
each as ``loss/<name>``. Every hook is a documented no-op here, so a strategy
overrides only the moments it cares about. Checked when the class is created:
every public method is a hook, a documented method (:data:`METHODS`) or one of
the class's declared ``formulas``, with the base class's signature, so a
misspelled hook (``on_experience_ends``) or ``state_dicts`` is an error naming
the closest name, not a method that silently never runs.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from lifelong.scenarios.stream import Experience, Stream

HOOKS: tuple[str, ...] = (
    "on_experience_start",
    "on_epoch_start",
    "transform_batch",
    "task_loss",
    "loss_terms",
    "on_task_gradient",
    "on_after_backward",
    "on_after_step",
    "on_epoch_end",
    "on_experience_end",
    "on_eval_start",
    "eval_logits",
)
"""The hook names a strategy may override, in the order the loop calls them."""

METHODS: tuple[str, ...] = ("metrics", "state_dict", "load_state_dict")
"""The other public methods a strategy may override (diagnostics and checkpoint state)."""


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
        step: global optimizer step count so far (in ``on_after_step``: the index of
            the step just taken).
        total_steps: optimizer steps this experience will take (epochs x batches),
            e.g. for schedules that decay over the experience.
        epoch: the current epoch of the experience (0-based).
        seed: the trial's seed (``seeds:`` in the experiment file).
        fresh_model: ``fresh_model(seed=None)`` builds a new copy of the model as the
            trial built it (random weights drawn with ``seed``, default one derived
            from the trial's seed and ``step``; a pre-trained body's weights again),
            on ``device``, without touching the learner's random streams.
        trials: 0 for one trial; S when S trials train as one program and ``model``'s
            parameters are the stacked ones, each with a leading dimension of S
            (a strategy with ``vectorize = "stacked"``; see ``Strategy.vectorize``).
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
    epoch: int = 0
    seed: int = 0
    fresh_model: Callable[..., nn.Module] | None = None
    trials: int = 0

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
    vectorize: ClassVar[Literal["stacked", "members", "per_trial"] | str] = (
        "it has not been checked to train several seeds as one program"
    )
    """How the strategy trains when trials that differ only in seed run as one
    program (:mod:`lifelong.platform.vectorized`): ``"stacked"``, every hook runs
    once on the stacked model, whose parameters have a leading trial dimension
    (the hooks are elementwise in the parameters and a loss term is a sum, so the
    stacked value is the sum of the trials' values); ``"members"``, the experience
    and epoch hooks run once per trial on that trial's own model (e.g. a Fisher
    from forward passes) and the per-step hooks once on the stacked state (all the
    state they read is in :meth:`state_dict`); ``"per_trial"``, as ``"members"``,
    but ``loss_terms`` also runs once per trial, on the trial's slice of the batch
    with live (differentiable) features and logits (e.g. a distillation term; the
    step then backpropagates through one vmapped forward pass, and it may not
    override ``on_after_backward`` or ``on_after_step``); else the reason it cannot."""
    formulas: ClassVar[tuple[str, ...]] = ()
    """Public methods beyond the hooks that compute the paper's named quantities (e.g.
    ``("distance",)``), called by the hooks and by tests. Any other public method is
    an error at class creation; a helper's name starts with ``_``."""

    def __init__(self, config: StrategyConfig | None = None) -> None:
        config = config if config is not None else self.Config()
        if not isinstance(config, self.Config):
            raise TypeError(
                f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.config = config

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_methods(cls)
        if "on_task_gradient" in vars(cls) and "data_parallel" not in vars(cls):
            cls.data_parallel = (
                "it reads the task loss's gradient alone (on_task_gradient), which "
                "data-parallel training does not give"
            )

    # ----------------------------------------------------------------- hooks
    def on_experience_start(self, ctx: Context) -> None:
        """Called when training on ``ctx.experience`` is about to begin."""

    def on_epoch_start(self, ctx: Context) -> None:
        """Called at the start of every epoch over the experience (``ctx.epoch``)."""

    def transform_batch(self, ctx: Context, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return the training batch the model sees, e.g. augmented or mixed (training only).

        Called before the forward pass. ``y`` may come back as class probabilities
        ``(N, C)`` (mixup) where the task loss is cross-entropy. Default: unchanged.
        """
        return x, y

    def task_loss(self, ctx: Context, batch: Batch, loss: Tensor) -> Tensor:
        """Return the task loss to optimise in place of ``loss`` (0-dim).

        E.g. a cross-entropy over a subset of the logits (the labels trick) or a
        reweighted loss. MLflow logs the returned value as ``loss/ce`` (``loss/bce``),
        so the logged task loss is the optimised one. Default: ``loss``.
        """
        return loss

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Called after the forward pass of every training batch.

        Returns named 0-dim loss tensors; the learner adds them to the task
        loss and logs each as ``loss/<name>``. The default adds nothing.
        """
        return {}

    def on_task_gradient(self, ctx: Context) -> None:
        """Called with each parameter's ``.grad`` holding the task loss's gradient alone.

        The loop runs the task loss's backward pass, calls this hook, then adds the
        loss terms' gradients (one more backward pass through the terms only), so a
        method that needs the task gradient (EWC++'s Fisher, RWalk) needs no second
        ``autograd.grad``. Only a strategy that overrides it changes the loop.
        """

    def on_after_backward(self, ctx: Context) -> None:
        """Called after gradients are computed and before the optimizer steps."""

    def on_after_step(self, ctx: Context) -> None:
        """Called after every optimizer step (``ctx.step``: the step just taken).

        The weights are the updated ones: e.g. SI's and RWalk's path integral uses
        each step's change of the parameters.
        """

    def on_epoch_end(self, ctx: Context) -> None:
        """Called at the end of every epoch over the experience (``ctx.epoch``)."""

    def on_experience_end(self, ctx: Context) -> None:
        """Called when training on ``ctx.experience`` has finished (consolidation)."""

    def on_eval_start(self, ctx: Context) -> None:
        """Called before the model is evaluated on ``ctx.experience``'s test set.

        Also called for the untrained model's evaluation before experience 0 (the row
        forward transfer is measured from). A hook may change the weights here (e.g.
        apply the experience's task mask): the learner restores them after
        evaluating, so evaluation never changes the model that training continues from.
        """

    def eval_logits(self, ctx: Context, features: Tensor, logits: Tensor) -> Tensor:
        """Return the logits predictions are taken from at evaluation (argmax).

        ``features``: the penultimate features of the test batch; ``logits``: the
        model's (already masked to the task in a multi-head model). E.g. a
        task-aware mask, or a nearest-class-mean classifier over ``features``.
        Default: ``logits``.
        """
        return logits

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


_SCALARS = (bool, int, float, str, type(None), torch.Size, torch.dtype)


def check_state(strategy: Strategy, state: Any, key: str = "") -> None:
    """Fail if ``torch.load(weights_only=True)`` could not read ``strategy``'s state.

    Raises:
        TypeError: naming the strategy, the offending key and its type (a numpy
            array, a module, any other object: tensors, numbers, strings and
            dicts, lists and tuples of them only).
    """
    if isinstance(state, Tensor) or type(state) in _SCALARS:  # np.float64 is no float here
        return
    if isinstance(state, dict):
        for k, v in state.items():
            if not isinstance(k, (str, int)):
                raise TypeError(
                    f"strategy {strategy.name!r}: state_dict() key {key}[{k!r}] is a "
                    f"{type(k).__name__}; keys are strings or integers"
                )
            check_state(strategy, v, f"{key}[{k!r}]")
        return
    if isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            check_state(strategy, v, f"{key}[{i}]")
        return
    kind = f"{type(state).__module__}.{type(state).__qualname__}"
    raise TypeError(
        f"strategy {strategy.name!r}: state_dict(){key or ''} is a {kind}, which a "
        f"checkpoint read with torch.load(weights_only=True) cannot hold; keep tensors, "
        f"numbers, strings and dicts/lists of them (e.g. torch.from_numpy(...), or a "
        f"module's state_dict())"
    )


def _check_methods(cls: type[Strategy]) -> None:
    """Reject a public method that is no hook, documented method or declared formula.

    Hooks and documented methods must also take the base class's parameters.
    """
    known = (*HOOKS, *METHODS)
    for attr, value in vars(cls).items():
        fn = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if attr.startswith("_") or isinstance(value, type) or not callable(fn):
            continue
        if attr in known:
            _check_signature(cls, attr, fn)
        elif attr not in cls.formulas:
            close = difflib.get_close_matches(attr, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{cls.__qualname__}.{attr}{_where(fn)} is not a strategy hook or method"
                f"{hint} (hooks: {', '.join(HOOKS)}; methods: {', '.join(METHODS)}; a "
                f"helper's name starts with '_', a formula of the paper is listed in "
                f"{cls.__qualname__}.formulas)"
            )


def _positional(fn: Any) -> tuple[int, float]:
    """How many positional arguments ``fn`` needs at least and takes at most (self included)."""
    params = inspect.signature(fn).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in params if p.kind in kinds]
    required = sum(p.default is inspect.Parameter.empty for p in positional)
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    return required, float("inf") if varargs else len(positional)


def _check_signature(cls: type, attr: str, fn: Any) -> None:
    """Reject a hook or method that cannot be called as the loop calls it."""
    base = getattr(Strategy, attr)
    wanted = inspect.signature(base)
    n = len(wanted.parameters)
    try:
        low, high = _positional(fn)
    except (TypeError, ValueError):  # no signature to read (a C function): trust it
        return
    if not low <= n <= high:
        raise TypeError(
            f"{cls.__qualname__}.{attr}{_where(fn)} takes {_plural(low, high)}, but the "
            f"loop calls it as {attr}{wanted}"
        )


def _plural(low: int, high: float) -> str:
    if low == high:
        return f"{low} positional argument{'s' if low != 1 else ''} (self included)"
    top = "any number" if high == float("inf") else str(int(high))
    return f"{low} to {top} positional arguments (self included)"


def _where(fn: Any) -> str:
    try:
        file = inspect.getsourcefile(fn)
        line = inspect.getsourcelines(fn)[1]
    except (TypeError, OSError):
        return ""
    return f" (defined at {file}:{line})"
