"""Tiny streams, models and contexts for unit tests of strategies (shared by test files)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.platform.models import ContinualModel, ModelConfig, build_model
from lifelong.scenarios.stream import Experience, Stream
from lifelong.strategies import Batch, Context, Strategy

CPU = torch.device("cpu")


# ------------------------------------------------------------------ fixtures
def make_stream(*, multi_head: bool = False, n_exp: int = 2, n: int = 24, seed: int = 0) -> Stream:
    """Random 4-feature inputs; 3 shared classes, or 2 classes per task when multi-head."""
    g = torch.Generator().manual_seed(seed)
    exps = []
    for i in range(n_exp):
        classes = (2 * i, 2 * i + 1) if multi_head else (0, 1, 2)
        lab = torch.tensor(classes)
        exps.append(
            Experience(
                index=i,
                task_id=i if multi_head else 0,
                classes=classes,
                x_train=torch.randn(n, 4, generator=g),
                y_train=lab[torch.randint(len(classes), (n,), generator=g)],
                x_test=torch.randn(n, 4, generator=g),
                y_test=lab[torch.randint(len(classes), (n,), generator=g)],
            )
        )
    return Stream(
        name="toy",
        protocol="task_incremental" if multi_head else "domain_incremental",
        experiences=tuple(exps),
        n_classes=2 * n_exp if multi_head else 3,
        input_shape=(4,),
        seed=seed,
    )


def make_model(stream: Stream, seed: int = 0, n_classes: int | None = None) -> ContinualModel:
    torch.manual_seed(seed)
    multi = stream.protocol == "task_incremental"
    task_classes = stream.task_classes if multi else ()
    return build_model(ModelConfig(hidden=[8]), (4,), n_classes or stream.n_classes, task_classes)


def make_ctx(model: nn.Module, stream: Stream, momentum: float = 0.0) -> Context:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    return Context(model=model, optimizer=opt, stream=stream, experience=stream[0], device=CPU)


def make_batch(ctx: Context, start: int = 0, size: int = 8) -> Batch:
    exp = ctx.experience
    x, y = exp.x_train[start : start + size], exp.y_train[start : start + size]
    h = ctx.model.features(x)
    return Batch(
        x=x, y=y, task_id=exp.task_id, features=h, logits=ctx.model.classify(h, exp.task_id)
    )


def train_steps(strategy: Strategy, ctx: Context, steps: int = 3) -> None:
    """A bare training loop: task loss plus the strategy's terms."""
    for k in range(steps):
        batch = make_batch(ctx, start=8 * (k % 3))
        loss = F.cross_entropy(batch.logits, batch.y)
        loss = loss + sum(strategy.loss_terms(ctx, batch).values())
        ctx.optimizer.zero_grad()
        loss.backward()
        strategy.on_after_backward(ctx)
        ctx.optimizer.step()
        strategy.on_after_step(ctx)


def run_experience(strategy: Strategy, ctx: Context, i: int, steps: int = 3) -> None:
    ctx.experience = ctx.stream[i]
    strategy.on_experience_start(ctx)
    train_steps(strategy, ctx, steps)
    strategy.on_experience_end(ctx)


def term(strategy: Strategy, ctx: Context) -> Tensor:
    terms = strategy.loss_terms(ctx, make_batch(ctx))
    assert set(terms) == {strategy.name}
    return terms[strategy.name].detach()


def shift_params(model: nn.Module, eps: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(eps)
