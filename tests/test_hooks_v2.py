"""Hook API, second edition: new moments, the task-loss gradient, checks that catch mistakes."""

from __future__ import annotations

import io
import re

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import Batch, Context, Strategy
from lifelong.strategies.base import HOOKS, check_state

TRAINING = TrainingConfig(epochs=2, lr=0.05, batch_size=64)


@pytest.fixture(scope="module")
def stream():
    return build_stream(ScenarioConfig(source="digits", n_experiences=2, seed=0))


def learner(stream, *strategies: Strategy, seed: int = 0) -> Learner:
    return Learner(stream, ModelConfig(hidden=[32]), list(strategies), TRAINING, seed=seed)


def _recording(hook: str):
    base = getattr(Strategy, hook)

    def record(self, *args):
        self.calls.append(hook)
        return base(self, *args)

    return record


Recorder = type(
    "Recorder",
    (Strategy,),
    {
        "__doc__": "Records the order of every hook call.",
        "name": "recorder",
        **{hook: _recording(hook) for hook in HOOKS},
    },
)


def _recorder() -> Strategy:
    rec = Recorder()
    rec.calls = []
    return rec


def test_the_loop_calls_every_hook_in_the_documented_order(stream) -> None:
    rec = _recorder()
    lrn = learner(stream, rec)
    lrn.evaluate_untrained()
    assert rec.calls[0] == "on_eval_start" and rec.calls.count("on_eval_start") == len(stream)
    assert set(rec.calls) == {"on_eval_start", "eval_logits"}  # the untrained model's row
    rec.calls.clear()
    lrn.run_experience(0)
    steps = -(-stream[0].n_train // TRAINING.batch_size)
    per_step = [
        "transform_batch",
        "task_loss",
        "loss_terms",
        "on_task_gradient",
        "on_after_backward",
        "on_after_step",
    ]
    epoch = ["on_epoch_start", *per_step * steps, "on_epoch_end"]
    training = ["on_experience_start", *epoch * TRAINING.epochs, "on_experience_end"]
    assert rec.calls[: len(training)] == training
    evaluation = rec.calls[len(training) :]
    assert evaluation.count("on_eval_start") == len(stream)
    assert set(evaluation) == {"on_eval_start", "eval_logits"}


class AfterStep(Strategy):
    """Sees each step's change of the weights (the quantity SI and RWalk integrate)."""

    name = "after_step"

    def __init__(self) -> None:
        super().__init__()
        self.before: list[Tensor] = []
        self.deltas: list[float] = []
        self.steps: list[int] = []

    def on_after_backward(self, ctx: Context) -> None:
        self.before = [p.detach().clone() for p in ctx.model.parameters()]

    def on_after_step(self, ctx: Context) -> None:
        pairs = zip(ctx.model.parameters(), self.before, strict=True)
        moved = sum(float((p.detach() - b).abs().sum()) for p, b in pairs)
        self.deltas.append(moved)
        self.steps.append(ctx.step)


def test_after_step_sees_the_updated_weights_and_the_step_just_taken(stream) -> None:
    s = AfterStep()
    learner(stream, s).run_experience(0)
    assert all(d > 0 for d in s.deltas)
    assert s.steps == list(range(len(s.deltas)))


class TaskGradient(Strategy):
    """Keeps the task loss's gradient alone and adds a penalty whose gradient differs."""

    name = "task_gradient"

    def __init__(self) -> None:
        super().__init__()
        self.task_grads: list[Tensor] = []
        self.full_grads: list[Tensor] = []

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        return {"sq": 0.5 * sum((p**2).sum() for p in ctx.model.parameters())}

    def on_task_gradient(self, ctx: Context) -> None:
        self.task_grads = [p.grad.clone() for p in ctx.model.parameters()]

    def on_after_backward(self, ctx: Context) -> None:
        self.full_grads = [p.grad.clone() for p in ctx.model.parameters()]
        self.weights = [p.detach().clone() for p in ctx.model.parameters()]


def test_on_task_gradient_sees_the_task_gradient_then_the_terms_are_added(stream) -> None:
    s = TaskGradient()
    lrn = learner(stream, s)
    x, y = stream[0].x_train[:64], stream[0].y_train[:64]
    ctx = lrn.context(lrn.experiences[0])
    lrn._named = dict(lrn.model.named_parameters())
    lrn._params = list(lrn._named.values())
    lrn._loss_hooks = [s]
    lrn._backward_hooks = [s]
    lrn._hooks = {h: [] for h in ("transform_batch", "task_loss", "on_after_step")}
    lrn._hooks["on_task_gradient"] = [s]
    weights = [p.detach().clone() for p in lrn.model.parameters()]
    lrn._step(ctx, x, y, 0, None)
    model = lrn.model
    with torch.no_grad():
        torch._foreach_copy_(list(model.parameters()), weights)
    ce = F.cross_entropy(model(x, 0), y)
    expected = torch.autograd.grad(ce, list(model.parameters()))
    for got, want, full, w in zip(s.task_grads, expected, s.full_grads, weights, strict=True):
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(full, want + w)  # d/dw of 0.5 w^2 is w


class MaskedCE(Strategy):
    """The labels trick: cross-entropy over the current experience's classes only."""

    name = "masked_ce"

    def task_loss(self, ctx: Context, batch: Batch, loss: Tensor) -> Tensor:
        classes = torch.tensor(ctx.experience.classes, device=batch.logits.device)
        mask = torch.full_like(batch.logits, float("-inf"))
        mask[:, classes] = 0.0
        self.last = F.cross_entropy(batch.logits + mask, batch.y)
        return self.last


def test_task_loss_replaces_the_loss_and_is_what_is_logged(stream) -> None:
    s = MaskedCE()
    losses = learner(stream, s).train_experience(0)
    plain = learner(stream).train_experience(0)
    assert set(losses) == {"ce"} and losses["ce"] < plain["ce"]  # fewer classes compete
    assert s.last.item() >= 0


class FlipLabels(Strategy):
    """A batch transform the model trains on (here: every label made 0)."""

    name = "flip"

    def transform_batch(self, ctx: Context, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return x, torch.zeros_like(y)


class PredictZero(Strategy):
    """Evaluation predicts from replaced logits: always class 0."""

    name = "predict_zero"

    def eval_logits(self, ctx: Context, features: Tensor, logits: Tensor) -> Tensor:
        out = torch.zeros_like(logits)
        out[:, 0] = 1.0
        return out


def test_transform_batch_changes_what_trains_and_eval_logits_what_is_scored(stream) -> None:
    lrn = learner(stream, FlipLabels())
    lrn.run_experience(0)
    preds = lrn.model(stream[0].x_test, 0).argmax(1)
    assert (preds == 0).float().mean() > 0.9
    zero = learner(stream, PredictZero())
    row = zero.evaluate()
    for j, exp in enumerate(stream):
        assert row[j] == pytest.approx(float((exp.y_test == 0).float().mean()))


def test_fresh_model_is_deterministic_and_leaves_the_trial_rng_alone(stream) -> None:
    lrn = learner(stream)
    ctx = lrn.context(lrn.experiences[0])
    assert ctx.seed == 0 and ctx.fresh_model is not None
    state = torch.get_rng_state()
    a, b = ctx.fresh_model(), ctx.fresh_model()
    assert torch.equal(state, torch.get_rng_state())
    for pa, pb, pm in zip(a.parameters(), b.parameters(), lrn.model.parameters(), strict=True):
        assert torch.equal(pa, pb) and pa.shape == pm.shape
    c = ctx.fresh_model(seed=123)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


class BadTerm(Strategy):
    """Returns a non-scalar loss term."""

    name = "bad_term"

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        return {"vec": batch.logits.mean(0)}


class FloatTerm(Strategy):
    """Returns a Python float as a loss term."""

    name = "float_term"

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        return {"half": 0.5}  # type: ignore[dict-item]


@pytest.mark.parametrize(("strategy", "what"), [(BadTerm(), "shape (10,)"), (FloatTerm(), "0.5")])
def test_a_loss_term_that_is_not_a_0_dim_tensor_names_strategy_and_term(
    stream, strategy, what
) -> None:
    pattern = rf"strategy '{strategy.name}'.*term '.*'.*{re.escape(what)}.*0-dim"
    with pytest.raises(TypeError, match=pattern):
        learner(stream, strategy).train_experience(0)


@pytest.mark.parametrize(
    ("method", "hint"),
    [
        ("state_dicts", "did you mean 'state_dict'"),
        ("load_state", "did you mean 'load_state_dict'"),
        ("metric", "did you mean 'metrics'"),
        ("on_epoch_ends", "did you mean 'on_epoch_end'"),
        ("helper", "a helper's name starts with '_'"),
    ],
)
def test_a_public_method_that_is_no_hook_is_an_error_with_did_you_mean(method, hint) -> None:
    with pytest.raises(TypeError, match=rf"Wrong\.{method} .*is not a strategy hook.*{hint}"):
        type("Wrong", (Strategy,), {method: lambda self: {}})


def test_formulas_and_private_helpers_are_allowed() -> None:
    cls = type(
        "Fine",
        (Strategy,),
        {"formulas": ("distance",), "distance": lambda self: 0.0, "_helper": lambda self: 1},
    )
    assert cls().distance() == 0.0


def test_a_hook_with_the_wrong_signature_is_an_error() -> None:
    def loss_terms(self, ctx):  # the batch is missing
        return {}

    with pytest.raises(TypeError, match=r"Wrong\.loss_terms .*takes 2 positional.*loss_terms\("):
        type("Wrong", (Strategy,), {"loss_terms": loss_terms})


class NumpyState(Strategy):
    """Holds a numpy array in its state (torch.load(weights_only=True) refuses it)."""

    name = "numpy_state"

    def state_dict(self) -> dict:
        import numpy as np

        return {"fisher": {"w": np.zeros(3)}, "n": 1}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_a_state_torch_load_cannot_read_is_an_error_at_the_checkpoint(stream) -> None:
    lrn = learner(stream, NumpyState())
    with pytest.raises(TypeError, match=r"'numpy_state'.*\['fisher'\]\['w'\].*numpy\.ndarray"):
        lrn.state_dict()


def test_a_state_check_passes_exactly_what_weights_only_loads() -> None:
    good = {"a": torch.zeros(2), "b": [1, 2.0, "x", None, True], "c": {0: (torch.ones(1),)}}
    check_state(NumpyState(), good)
    buf = io.BytesIO()
    torch.save(good, buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)
    with pytest.raises(TypeError, match=r"\['m'\] is a torch\.nn\.modules\.linear\.Linear"):
        check_state(NumpyState(), {"m": torch.nn.Linear(1, 1)})
