"""Three published methods written as a new user would, each checked against its paper.

Each method is one plugin-style class using the hook API's newer moments:

- Shrink & Perturb (Ash & Adams 2020): ``on_experience_start`` + ``ctx.fresh_model()``;
- EWC++ (Chaudhry et al. 2018): ``on_task_gradient`` (the task loss's gradient alone);
- the labels trick (Zeno et al. 2018): ``task_loss`` (what ``loss/ce`` logs).

The classes are the ones ``docs/writing-a-strategy.md`` shows ("Three published
methods, each one file"); a test checks that the page holds them verbatim. They
are registered for this module only (the registry is restored afterwards), so
other modules that enumerate the registry never see them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig, build_model
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, Stream, build_stream
from lifelong.strategies import (
    STRATEGIES,
    Batch,
    Context,
    Strategy,
    StrategyConfig,
    register_strategy,
)

from conftest import ROOT

TUTORIAL = ROOT / "docs" / "writing-a-strategy.md"


# ------------------------------------------------------------ Shrink & Perturb
class ShrinkPerturbConfig(StrategyConfig):
    """Hyperparameters of shrink_perturb."""

    shrink: float = Field(0.4, ge=0, le=1, description="lambda: factor the weights shrink by.")
    perturb: float = Field(0.1, ge=0, description="sigma: weight of a fresh init added.")


class ShrinkPerturb(Strategy):
    """Shrink the weights and add a fresh initialisation's before each new experience."""

    Config = ShrinkPerturbConfig

    def on_experience_start(self, ctx: Context) -> None:
        """theta <- lambda * theta + sigma * theta_fresh (not before the first experience)."""
        if ctx.experience.index == 0:
            return
        fresh = ctx.fresh_model()  # its own RNG: the trial's data order is unchanged
        lam, sigma = self.config.shrink, self.config.perturb
        with torch.no_grad():
            for p, q in zip(ctx.model.parameters(), fresh.parameters(), strict=True):
                p.mul_(lam).add_(sigma * q)


# ---------------------------------------------------------------------- EWC++
class EWCPlusPlusConfig(StrategyConfig):
    """Hyperparameters of ewcpp."""

    lambda_: float = Field(100.0, ge=0, alias="lambda", description="Penalty weight lambda.")
    alpha: float = Field(0.1, gt=0, le=1, description="Weight of each step's g*g in F.")


class EWCPlusPlus(Strategy):
    """EWC with an online Fisher: a moving average of the task loss's squared gradient."""

    Config = EWCPlusPlusConfig

    def __init__(self, config: EWCPlusPlusConfig | None = None) -> None:
        super().__init__(config)
        self.fisher: dict[str, Tensor] = {}  # F, updated every step
        self.importance: dict[str, Tensor] = {}  # F at the last experience end
        self.anchor: dict[str, Tensor] = {}  # theta* at the last experience end

    def on_task_gradient(self, ctx: Context) -> None:
        """F <- alpha * g*g + (1 - alpha) * F, g: the task loss's gradient (no penalty)."""
        a = self.config.alpha
        for n, p in ctx.model.named_parameters():
            g = p.grad
            if g is None:
                continue
            f = self.fisher.get(n)
            if f is None:
                self.fisher[n] = a * g.square()
            else:
                f.mul_(1 - a).addcmul_(g, g, value=a)  # in place: one pass over F

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Return {"ewcpp": lambda/2 * sum F (theta - theta*)^2}; nothing before an anchor."""
        if not self.anchor:
            return {}
        params = dict(ctx.model.named_parameters())
        total = sum(
            (f * (params[n] - self.anchor[n]).square()).sum() for n, f in self.importance.items()
        )
        return {"ewcpp": self.config.lambda_ / 2 * total}

    def on_experience_end(self, ctx: Context) -> None:
        """Anchor theta* and freeze the Fisher that weighs the penalty until the next end."""
        self.anchor = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
        self.importance = {n: f.clone() for n, f in self.fisher.items()}

    def state_dict(self) -> dict:
        """F, the penalty's Fisher and theta*, as plain tensors."""
        return {"fisher": self.fisher, "importance": self.importance, "anchor": self.anchor}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict saved."""
        self.fisher = dict(state["fisher"])
        self.importance = dict(state["importance"])
        self.anchor = dict(state["anchor"])


# ---------------------------------------------------------------- labels trick
class LabelsTrick(Strategy):
    """Cross-entropy over the current experience's classes only (the labels trick)."""

    def task_loss(self, ctx: Context, batch: Batch, loss: Tensor) -> Tensor:
        """CE of the logits with every class absent from the experience masked out."""
        present = torch.zeros(batch.logits.shape[1], dtype=torch.bool, device=ctx.device)
        present[list(ctx.experience.classes)] = True
        return F.cross_entropy(batch.logits.masked_fill(~present, float("-inf")), batch.y)


METHODS = {
    "shrink_perturb": ShrinkPerturb,
    "ewcpp": EWCPlusPlus,
    "labels_trick": LabelsTrick,
}
DOC_FILES = {
    "shrink_perturb.py": (ShrinkPerturbConfig, ShrinkPerturb),
    "ewcpp.py": (EWCPlusPlusConfig, EWCPlusPlus),
    "labels_trick.py": (LabelsTrick,),
}


@pytest.fixture(scope="module", autouse=True)
def _registered() -> Iterator[None]:
    """Register the three methods as a plugin file would; restore the registry after."""
    entries = dict(STRATEGIES._entries)
    for name, cls in METHODS.items():
        register_strategy(name)(cls)
    yield
    STRATEGIES._entries.clear()
    STRATEGIES._entries.update(entries)


# ------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def digits() -> Stream:
    """Split-Digits in 2 class-incremental experiences of 5 classes."""
    return build_stream(ScenarioConfig(source="digits", n_experiences=2, seed=0))


def learner(
    stream: Stream,
    *strategies: Strategy,
    model: ModelConfig | None = None,
    epochs: int = 1,
    batch_size: int = 64,
) -> Learner:
    training = TrainingConfig(epochs=epochs, lr=0.05, batch_size=batch_size)
    return Learner(stream, model or ModelConfig(hidden=[16]), list(strategies), training, seed=0)


class Spy(Strategy):
    """Records each step's batch, pre-step weights and task-loss gradient (comes last)."""

    name = "spy"

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[Tensor, Tensor, dict[str, Tensor]]] = []
        self.task_grads: list[dict[str, Tensor]] = []
        self.order: list[Tensor] = []

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        weights = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
        self.steps.append((batch.x.clone(), batch.y.clone(), weights))
        if batch.index is not None:
            self.order.append(batch.index.clone())
        return {}

    def on_task_gradient(self, ctx: Context) -> None:
        self.task_grads.append({n: p.grad.clone() for n, p in ctx.model.named_parameters()})


def load(model: torch.nn.Module, weights: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(weights[n])


def start_experience(lrn: Learner, i: int) -> tuple[Context, dict[str, Tensor]]:
    """The context the learner gives ``on_experience_start`` of ``i``, and the weights then."""
    ctx = lrn.context(lrn.experiences[i])
    return ctx, {n: p.detach().clone() for n, p in lrn.model.named_parameters()}


# ------------------------------------------------------------ Shrink & Perturb
@pytest.mark.parametrize(
    "model",
    [ModelConfig(hidden=[16]), ModelConfig(name="transformer", hidden=[16, 16])],
    ids=["mlp", "transformer"],
)
def test_shrink_perturb_is_lambda_theta_plus_sigma_fresh_exactly(digits, model) -> None:
    sp = ShrinkPerturb(ShrinkPerturbConfig(shrink=0.4, perturb=0.1))
    lrn = learner(digits, sp, model=model)
    ctx, before = start_experience(lrn, 0)
    sp.on_experience_start(ctx)  # experience 0: nothing to shrink
    for n, p in lrn.model.named_parameters():
        assert torch.equal(p, before[n]), n
    lrn.run_experience(0)
    ctx, old = start_experience(lrn, 1)
    sp.on_experience_start(ctx)
    fresh = dict(ctx.fresh_model().named_parameters())  # the same seed: ctx.step is unchanged
    names = [n for n, _ in lrn.model.named_parameters()]
    if model.name == "transformer":
        assert "body.pos_embed" in names
    for n, p in lrn.model.named_parameters():
        assert torch.equal(p, 0.4 * old[n] + 0.1 * fresh[n]), n
        assert not torch.equal(fresh[n], old[n]), n  # a new initialisation


def test_shrink_perturb_leaves_the_trials_random_stream_alone(digits) -> None:
    runs = []
    for strategies in ([Spy()], [ShrinkPerturb(), Spy()]):
        lrn = learner(digits, *strategies, epochs=2)
        lrn.fit()
        spy = strategies[-1]
        runs.append((spy.order, torch.get_rng_state(), lrn.model))
    (naive_order, naive_rng, naive_model), (sp_order, sp_rng, sp_model) = runs
    assert len(naive_order) == len(sp_order) > 0
    assert all(torch.equal(a, b) for a, b in zip(naive_order, sp_order, strict=True))
    assert torch.equal(naive_rng, sp_rng)
    moved = [
        not torch.equal(p, q)
        for p, q in zip(naive_model.parameters(), sp_model.parameters(), strict=True)
    ]
    assert all(moved)  # the method did change the weights, only not the batches


# ---------------------------------------------------------------------- EWC++
def test_ewcpp_fisher_is_the_moving_average_of_task_gradients_without_the_penalty(
    digits,
) -> None:
    alpha, lam = 0.3, 1000.0
    ewc = EWCPlusPlus(EWCPlusPlusConfig(alpha=alpha, lambda_=lam))
    spy = Spy()
    lrn = learner(digits, ewc, spy, epochs=2)
    lrn.run_experience(0)
    n_first = lrn.step  # the steps of experience 0
    importance, anchor = dict(ewc.importance), dict(ewc.anchor)  # what experience 1 uses
    assert anchor and importance
    losses = lrn.train_experience(1)
    assert losses["ewcpp"] > 0  # the penalty trained in experience 1
    model = build_model(ModelConfig(hidden=[16]), digits.input_shape, digits.n_classes)
    params = dict(model.named_parameters())
    by_hand = {n: torch.zeros_like(p) for n, p in params.items()}
    with_penalty = {n: torch.zeros_like(p) for n, p in params.items()}
    for k, (x, y, weights) in enumerate(spy.steps):
        load(model, weights)
        ce = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(ce, list(params.values()), retain_graph=True)
        total = ce
        if k >= n_first:  # experience 1: what the gradient would be with the penalty
            penalty = sum((importance[n] * (params[n] - anchor[n]).square()).sum() for n in params)
            total = ce + lam / 2 * penalty
        full = torch.autograd.grad(total, list(params.values()))
        for (n, _), g, gf in zip(params.items(), grads, full, strict=True):
            by_hand[n] = alpha * g.square() + (1 - alpha) * by_hand[n]
            with_penalty[n] = alpha * gf.square() + (1 - alpha) * with_penalty[n]
        if k == n_first - 1:  # the penalty's Fisher is F at the end of experience 0
            for n in params:
                torch.testing.assert_close(importance[n], by_hand[n], rtol=1e-4, atol=1e-10)
    assert len(spy.steps) == lrn.step > n_first > 0
    for n in params:
        torch.testing.assert_close(ewc.fisher[n], by_hand[n], rtol=1e-4, atol=1e-10)
    # The penalty's gradient is not in F: with it, F would be far from what the strategy has.
    gap = sum(float((with_penalty[n] - ewc.fisher[n]).abs().sum()) for n in params)
    size = sum(float(ewc.fisher[n].abs().sum()) for n in params)
    assert gap > 0.1 * size
    # p.grad in on_task_gradient is the task loss's gradient, before the penalty's is added.
    load(model, spy.steps[-1][2])
    x, y, _ = spy.steps[-1]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))
    for (n, _), g in zip(params.items(), grads, strict=True):
        torch.testing.assert_close(spy.task_grads[-1][n], g, rtol=1e-4, atol=1e-8)


def test_ewcpp_state_round_trips_and_resumes_identically(digits) -> None:
    first = learner(digits, EWCPlusPlus())
    first.run_experience(0)
    state = first.state_dict()
    second = learner(digits, EWCPlusPlus())
    second.load_state_dict(state)
    a, b = first.run_experience(1)[1], second.run_experience(1)[1]
    assert a == b and a["ewcpp"] > 0
    for p, q in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(p, q)


# ---------------------------------------------------------------- labels trick
def masked_ce_by_hand(logits: Tensor, y: Tensor, classes: tuple[int, ...]) -> Tensor:
    """-log softmax over the experience's classes, at the label, averaged over the batch."""
    kept = logits[:, list(classes)]
    log_z = kept.exp().sum(1).log()
    return (log_z - logits.gather(1, y[:, None]).squeeze(1)).mean()


def test_labels_trick_logs_the_masked_ce_and_leaves_absent_rows_without_gradient(
    digits,
) -> None:
    spy = Spy()
    lrn = learner(digits, LabelsTrick(), spy, batch_size=128)
    lrn.run_experience(0)
    spy.steps.clear()
    spy.task_grads.clear()
    losses = lrn.train_experience(1)
    classes = digits[1].classes
    assert set(classes).isdisjoint(digits[0].classes)
    model = build_model(ModelConfig(hidden=[16]), digits.input_shape, digits.n_classes)
    by_hand, plain = [], []
    for x, y, weights in spy.steps:
        load(model, weights)
        logits = model(x).detach()
        by_hand.append(masked_ce_by_hand(logits, y, classes))
        plain.append(F.cross_entropy(logits, y))
    assert losses["ce"] == pytest.approx(float(torch.stack(by_hand).mean()), rel=1e-5)
    assert losses["ce"] < float(torch.stack(plain).mean()) - 0.01  # not the unmasked CE
    absent = [c for c in range(digits.n_classes) if c not in classes]
    for grads in spy.task_grads:  # the task loss's gradient alone (on_task_gradient)
        head_w, head_b = grads["head.linear.weight"], grads["head.linear.bias"]
        assert torch.equal(head_w[absent], torch.zeros_like(head_w[absent]))
        assert torch.equal(head_b[absent], torch.zeros_like(head_b[absent]))
        assert head_w[list(classes)].abs().sum() > 0


# --------------------------------------------------------- eval_logits, masked
class TaskAwareEval(Strategy):
    """Task-aware evaluation in a class-incremental stream: argmax among the task's classes."""

    name = "task_aware_eval"

    def eval_logits(self, ctx: Context, features: Tensor, logits: Tensor) -> Tensor:
        present = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
        present[list(ctx.experience.classes)] = True
        return logits.masked_fill(~present, float("-inf"))


def test_eval_logits_masks_each_experience_to_its_classes_at_evaluation(digits) -> None:
    lrn = learner(digits, TaskAwareEval())
    lrn.run_experience(0)
    lrn.run_experience(1)
    plain = learner(digits)
    plain.model.load_state_dict(lrn.model.state_dict())
    unmasked = plain.evaluate()
    with torch.no_grad():
        for j, exp in enumerate(digits):
            logits = lrn.model(exp.x_test)
            kept = torch.tensor(exp.classes)
            pred = kept[logits[:, kept].argmax(1)]
            assert lrn.R[1, j] == pytest.approx(float((pred == exp.y_test).double().mean()))
    assert lrn.R[1, 0] > unmasked[0] + 0.02  # masking out experience 1's classes helps 0


# ------------------------------------------------------------------- the docs
def doc_files() -> dict[str, str]:
    """The ``python file=NAME`` blocks of the tutorial, by name."""
    text = TUTORIAL.read_text(encoding="utf-8")
    pattern = r"^```python file=(\S+)\n(.*?)^```$"
    return dict(re.findall(pattern, text, flags=re.MULTILINE | re.DOTALL))


def test_the_tutorial_shows_these_three_classes_verbatim() -> None:
    files = doc_files()
    for name, classes in DOC_FILES.items():
        assert name in files, f"docs/writing-a-strategy.md has no ```python file={name}"
        for cls in classes:
            assert inspect.getsource(cls) in files[name], f"{cls.__name__} differs in {name}"
        registered = [n for n, c in METHODS.items() if c is classes[-1]]
        assert (
            f'@register_strategy("{registered[0]}")\nclass {classes[-1].__name__}(' in (files[name])
        )
