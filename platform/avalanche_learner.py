"""Avalanche strategies as lifelong baselines: ``strategies: [avalanche.EWC: {ewc_lambda: 100}]``.

An :class:`AvalancheLearner` is a :class:`~lifelong.platform.learner.Learner`
whose training step is Avalanche's own: each experience is trained by the
Avalanche strategy's ``train()`` (its DataLoader, plugins and loop) on the same
stream, model, optimizer, learning rate, batch size and epochs as the
experiment, and is then evaluated by lifelong's :meth:`Learner.evaluate`, so
``R``, the logged metrics and ``compare`` treat it exactly like a native
strategy.

The name is ``avalanche.<Class>`` for any supervised strategy of
``avalanche.training`` (a ``SupervisedTemplate`` subclass); its keyword
arguments are checked against the class signature when the experiment is
parsed. lifelong supplies ``model``, ``optimizer``, ``criterion`` (cross-entropy),
``train_mb_size``, ``train_epochs``, ``eval_mb_size``, ``device``, ``plugins``,
``evaluator`` and ``eval_every``; they cannot be set.

Checkpoints hold the model, the optimizer, the RNGs and ``R`` (as a native
learner's). Avalanche plugin state (EWC's importances and anchors, LwF's
teacher, SI's importances, replay buffers) cannot be saved with
``weights_only=True`` and is not restored: a resumed Avalanche trial continues
from the checkpointed weights with that state empty, and a warning says so.
"""

from __future__ import annotations

import functools
import inspect
import typing
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import ConfigDict, ValidationError, create_model
from torch import Tensor, nn

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios.avalanche import to_avalanche_benchmark
from lifelong.scenarios.stream import Stream

PREFIX = "avalanche."
"""Strategy names starting with this run Avalanche's strategy of that class name."""

RESERVED = frozenset(
    {
        "model",
        "optimizer",
        "criterion",
        "train_mb_size",
        "train_epochs",
        "eval_mb_size",
        "device",
        "plugins",
        "evaluator",
        "eval_every",
    }
)
"""Arguments lifelong sets from the experiment; an experiment may not set them."""

Problem = tuple[tuple[str, ...], str]


def is_avalanche(name: str) -> bool:
    """Whether strategy ``name`` names an Avalanche strategy (``avalanche.X``)."""
    return isinstance(name, str) and name.startswith(PREFIX)


@functools.cache
def supervised_strategies() -> dict[str, type]:
    """Avalanche's supervised strategy classes by name (imports Avalanche: seconds)."""
    import avalanche.training as at
    from avalanche.training.templates import SupervisedTemplate

    out = {}
    for n in dir(at):
        obj = getattr(at, n)
        if isinstance(obj, type) and issubclass(obj, SupervisedTemplate):
            out[n] = obj
    return out


def _signature_params(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``cls``, plus the base template's when it takes ``**kwargs``."""
    from avalanche.training.templates import SupervisedTemplate

    params: dict[str, inspect.Parameter] = {}
    for c in (cls, SupervisedTemplate):
        sig = inspect.signature(c.__init__)
        variadic = False
        for p in list(sig.parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                variadic = True
            elif p.kind is not p.VAR_POSITIONAL:
                params.setdefault(p.name, p)
        if not variadic:
            break
    return params


@functools.cache
def _params_model(name: str) -> type:
    """A pydantic model of the settable arguments of Avalanche strategy ``name``."""
    cls = supervised_strategies()[name]
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable forward references: fall back to Any
        hints = {}
    fields: dict[str, Any] = {}
    for pname, p in _signature_params(cls).items():
        if pname in RESERVED:
            continue
        ann = hints.get(pname, Any)
        default = ... if p.default is p.empty else p.default
        fields[pname] = (ann, default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    try:
        return create_model(f"Avalanche{name}Args", __config__=config, **fields)
    except Exception:  # an annotation pydantic cannot handle: names only
        loose = {k: (Any, d) for k, (_, d) in fields.items()}
        return create_model(f"Avalanche{name}Args", __config__=config, **loose)


def check_params(name: str, params: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Validate ``avalanche.<Class>`` and its keyword arguments against the class signature.

    Returns the arguments as given (validated) and a list of problems, each a
    location relative to the strategy entry and a message.
    """
    short = name[len(PREFIX) :]
    known = supervised_strategies()
    if short not in known:
        listed = ", ".join(PREFIX + k for k in sorted(known))
        return {}, [((), f"unknown Avalanche strategy {name!r}; known: {listed}")]
    reserved = sorted(set(params) & RESERVED)
    if reserved:
        return {}, [
            ((name, k), "set by lifelong from the experiment (model/training); remove it")
            for k in reserved
        ]
    try:
        _params_model(short).model_validate(params)
    except ValidationError as e:
        problems: list[Problem] = []
        for err in e.errors(include_url=False):
            loc = tuple(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                allowed = sorted(k for k in _signature_params(known[short]) if k not in RESERVED)
                msg = f"not an argument of {short}; its arguments: {', '.join(allowed)}"
            elif err["type"] == "missing":
                msg = f"required by {short} (no default)"
            else:
                msg = f"{err['msg']} (got {err.get('input')!r})"
            problems.append(((name, *loc), msg))
        return {}, problems
    return dict(params), []


def defaults(name: str) -> dict[str, Any]:
    """The default value of each settable argument of ``avalanche.<Class>``."""
    cls = supervised_strategies()[name[len(PREFIX) :]]
    return {
        k: p.default
        for k, p in _signature_params(cls).items()
        if k not in RESERVED and p.default is not p.empty
    }


@functools.cache
def _task_aware_class() -> type:
    """An Avalanche ``MultiTaskModule`` passing each sample's task id to a lifelong model."""
    from avalanche.models import MultiTaskModule

    class TaskAware(MultiTaskModule):
        """Route Avalanche's per-sample task labels to ``model(x, task_id)``."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def adaptation(self, experience: Any = None) -> None:
            """The heads are fixed; only remember the task labels trained on."""
            if self.training and experience is not None:
                self.known_train_tasks_labels |= set(experience.task_labels)

        def forward(self, x: Tensor, task_labels: Any) -> Any:
            """Logits of each sample under its own task's head (None: every known task)."""
            if task_labels is None:
                return self.forward_all_tasks(x)
            if isinstance(task_labels, int):
                return self.model(x, task_labels)
            tasks = task_labels.unique().tolist()
            if len(tasks) == 1:
                return self.model(x, int(tasks[0]))
            out = None
            for t in tasks:
                mask = task_labels == t
                o = self.model(x[mask], int(t))
                if out is None:
                    out = o.new_empty(x.shape[0], o.shape[1])
                out[mask] = o
            assert out is not None
            return out

        def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
            """Logits under task ``task_label``'s head."""
            return self.model(x, int(task_label))

    return TaskAware


def _loss_recorder() -> Any:
    """A plugin summing the task loss and the total loss per step on the device."""
    from avalanche.core import SupervisedPlugin

    class LossRecorder(SupervisedPlugin):
        """First in the plugin list: sees the task loss before strategies add theirs."""

        def __init__(self) -> None:
            super().__init__()
            self.ce: Tensor | None = None
            self.total: Tensor | None = None
            self.steps = 0

        def reset(self) -> None:
            """Start a new experience."""
            self.ce, self.total, self.steps = None, None, 0

        def before_backward(self, strategy: Any, **kw: Any) -> None:
            """Record the task loss (plugins after this one add their terms)."""
            v = strategy.loss.detach().double()
            self.ce = v if self.ce is None else self.ce + v

        def after_backward(self, strategy: Any, **kw: Any) -> None:
            """Record the total loss the step minimised."""
            v = strategy.loss.detach().double()
            self.total = v if self.total is None else self.total + v
            self.steps += 1

    return LossRecorder()


class AvalancheLearner(Learner):
    """A learner whose experiences are trained by Avalanche strategy ``avalanche.<Class>``.

    Args:
        stream: the task sequence.
        model_config: the built-in model (built and seeded as for a native learner).
        name: ``avalanche.<Class>``.
        params: the strategy's keyword arguments (validated by :func:`check_params`).
        training: optimizer, lr, batch size, epochs, device (shared with native trials).
        seed: seeds the model initialisation and Avalanche's batch order.
        evaluator: Avalanche ``EvaluationPlugin`` for :attr:`template`'s own ``eval()``
            (default: none, no loggers); lifelong's evaluation fills ``R`` either way.
    """

    def __init__(
        self,
        stream: Stream,
        model_config: ModelConfig,
        name: str,
        params: dict[str, Any],
        training: TrainingConfig,
        seed: int,
        evaluator: Any = None,
    ) -> None:
        super().__init__(stream, model_config, [], training, seed)
        _, problems = check_params(name, params)
        if problems:
            raise ValueError("; ".join(f"{'.'.join(loc)}: {msg}" for loc, msg in problems))
        self.name = name
        self.params = dict(params)
        self.benchmark = to_avalanche_benchmark(stream)
        self._recorder = _loss_recorder()
        self._template: Any = None
        self._evaluator = evaluator

    @property
    def template(self) -> Any:
        """The Avalanche strategy object (built on first use)."""
        if self._template is None:
            from avalanche.training.plugins import EvaluationPlugin

            cls = supervised_strategies()[self.name[len(PREFIX) :]]
            model: nn.Module = self.model
            if self.stream.protocol == "task_incremental":
                model = _task_aware_class()(self.model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._template = cls(
                    model=model,
                    optimizer=self.optimizer,
                    criterion=nn.CrossEntropyLoss(),
                    train_mb_size=self.training.batch_size,
                    train_epochs=self.training.epochs,
                    eval_mb_size=self.training.eval_batch_size,
                    device=self.device,
                    plugins=[self._recorder],
                    evaluator=self._evaluator or EvaluationPlugin(loggers=[]),
                    eval_every=-1,
                    **self.params,
                )
        return self._template

    def train_experience(self, i: int) -> dict[str, float]:
        """Train experience ``i`` with Avalanche's ``train()``; return mean loss terms."""
        template = self.template
        self._recorder.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            template.train(
                self.benchmark.train_stream[i],
                reset_optimizer_state=self.training.reset_optimizer,
                num_workers=0,
            )
        self.optimizer = template.optimizer
        self.model.train()
        rec = self._recorder
        if not rec.steps:
            return {}
        ce, total = torch.stack([rec.ce.sum(), rec.total.sum()]).tolist()
        out = {"ce": ce / rec.steps}
        if total != ce:
            out[self.name[len(PREFIX) :].lower()] = (total - ce) / rec.steps
        return out

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, RNGs and ``R``; Avalanche plugin state is not included."""
        state = super().state_dict()
        state["avalanche"] = {"strategy": self.name}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; warns that Avalanche plugin state starts empty."""
        state = dict(state)
        saved = state.pop("avalanche", {}).get("strategy", self.name)
        if saved != self.name:
            raise ValueError(f"checkpoint is of {saved!r}, not {self.name!r}")
        super().load_state_dict(state)
        if self.next_experience > 0 and self.name != PREFIX + "Naive":
            warnings.warn(
                f"{self.name}: resumed after experience {self.next_experience - 1} with the "
                "checkpointed weights; Avalanche plugin state (importances, teacher, buffers) "
                "is not checkpointed and starts empty",
                stacklevel=2,
            )


def build_avalanche_learner(
    stream: Stream,
    model_config: ModelConfig,
    strategies: Sequence[tuple[str, dict[str, Any]]],
    training: TrainingConfig,
    seed: int,
) -> AvalancheLearner:
    """Build the learner of a trial whose single strategy is ``avalanche.<Class>``."""
    if len(strategies) != 1:
        names = [n for n, _ in strategies]
        raise ValueError(f"an Avalanche strategy cannot be composed with others: {names}")
    name, params = strategies[0]
    return AvalancheLearner(stream, model_config, name, params, training, seed)
