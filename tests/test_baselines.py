"""Tests of the rehearsal-free baselines lwf, si and mas (values, Avalanche parity, state)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor, nn

import lifelong.strategies.lwf
import lifelong.strategies.mas
import lifelong.strategies.si  # noqa: F401  (import registers the strategies)
from lifelong.platform import metrics
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig, build_model
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.scenarios.stream import Stream
from lifelong.strategies import build_strategy
from lifelong.strategies._importance import output_sensitivity
from lifelong.strategies.lwf import LwF, LwFConfig
from lifelong.strategies.mas import MAS, MASConfig
from lifelong.strategies.si import SI, SIConfig

from strategy_kit import (
    CPU,
    make_batch,
    make_ctx,
    make_model,
    make_stream,
    run_experience,
    shift_params,
    term,
    train_steps,
)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_dicts_close(a: dict[str, Tensor], b: dict[str, Tensor], **kw: Any) -> None:
    assert sorted(a) == sorted(b)
    for n in a:
        torch.testing.assert_close(a[n], b[n], msg=n, **kw)


def _is_plain(obj: object) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_is_plain(v) for v in obj)
    return isinstance(obj, Tensor | int | float | str | bool)


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "lwf": ("lwf", {"lambda": 2.0}),
    "si": ("si", {"lambda": 10.0, "clip_to": None}),
    "mas": ("mas", {"lambda": 3.0}),
}


@pytest.fixture(scope="module")
def avalanche() -> SimpleNamespace:
    """Avalanche's reference implementations (a dependency of lifelong)."""
    from avalanche.training.plugins import MASPlugin, SynapticIntelligencePlugin
    from avalanche.training.regularization import LearningWithoutForgetting

    return SimpleNamespace(
        lwf=LearningWithoutForgetting, si=SynapticIntelligencePlugin, mas=MASPlugin
    )


# ------------------------------------------------------- shared behaviour
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("multi_head", [False, True], ids=["single-head", "multi-head"])
def test_no_term_in_first_experience_zero_at_anchor_then_positive(
    case: str, multi_head: bool
) -> None:
    name, params = CASES[case]
    stream = make_stream(multi_head=multi_head)
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = build_strategy(name, params)
    s.on_experience_start(ctx)
    assert s.loss_terms(ctx, make_batch(ctx)) == {}
    train_steps(s, ctx)
    assert s.loss_terms(ctx, make_batch(ctx)) == {}
    s.on_experience_end(ctx)
    ctx.experience = stream[1]
    s.on_experience_start(ctx)
    at_anchor = term(s, ctx)  # the model equals the anchor / the teacher
    if name == "lwf":  # KL(q || q), up to rounding of log_softmax vs softmax
        torch.testing.assert_close(at_anchor, torch.tensor(0.0), rtol=0, atol=1e-6)
    else:
        assert at_anchor.item() == 0.0
    shift_params(model, 3e-2)
    p1 = term(s, ctx)
    assert torch.isfinite(p1) and p1 > 0
    if name != "lwf":  # quadratic penalties: twice the distance, four times the penalty
        shift_params(model, 3e-2)
        torch.testing.assert_close(term(s, ctx), 4 * p1, rtol=1e-4, atol=0)
    train_steps(s, ctx)  # gradients of the term stay finite with masked heads
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------- LwF
def test_lwf_distillation_matches_hand_computation() -> None:
    s = LwF(LwFConfig(temperature=2.0))
    new = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    old = torch.tensor([[2.0, 0.0], [3.0, 1.0]])
    expected = 0.0
    for n_row, o_row in zip(new.tolist(), old.tolist(), strict=True):
        zq = [math.exp(v / 2) for v in o_row]
        zp = [math.exp(v / 2) for v in n_row]
        q = [z / sum(zq) for z in zq]
        p = [z / sum(zp) for z in zp]
        expected += sum(qi * math.log(qi / pi) for qi, pi in zip(q, p, strict=True))
    expected /= 2  # batch mean
    torch.testing.assert_close(s.distillation(new, old), torch.tensor(expected))


def test_lwf_term_on_seen_classes_only_matches_explicit_kl() -> None:
    """Single head with 5 units, only 0..2 seen: KL of the 3-way softmaxes, times lambda."""
    stream = make_stream()
    model = make_model(stream, n_classes=5)
    ctx = make_ctx(model, stream)
    s = build_strategy("lwf", {"lambda": 0.7, "temperature": 3.0})
    run_experience(s, ctx, 0)
    teacher = snapshot(model)
    ctx.experience = stream[1]
    shift_params(model, 0.05)
    batch = make_batch(ctx)
    with torch.no_grad():
        h = F.relu(batch.x @ teacher["body.1.weight"].T + teacher["body.1.bias"])
        old = h @ teacher["head.linear.weight"].T + teacher["head.linear.bias"]
    q = torch.softmax(old[:, :3] / 3, 1)
    log_p = torch.log_softmax(batch.logits[:, :3] / 3, 1)
    expected = 0.7 * (q * (q.log() - log_p)).sum(1).mean()
    torch.testing.assert_close(s.loss_terms(ctx, batch)["lwf"], expected)


def test_lwf_multi_head_sums_one_kl_per_previous_task() -> None:
    stream = make_stream(multi_head=True, n_exp=3)
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = build_strategy("lwf", {})
    run_experience(s, ctx, 0)
    run_experience(s, ctx, 1)
    assert s.seen == {0: [0, 1], 1: [2, 3]}
    teacher = build_model(ModelConfig(hidden=[8]), (4,), 6, stream.task_classes)
    teacher.load_state_dict(model.state_dict())
    ctx.experience = stream[2]
    shift_params(model, 0.05)
    batch = make_batch(ctx)
    assert torch.isinf(batch.logits).any()  # other tasks' classes are masked
    with torch.no_grad():
        raw_old = teacher.head.linear(teacher.features(batch.x))
    raw_new = model.head.linear(batch.features)
    expected = sum(s.distillation(raw_new[:, cls], raw_old[:, cls]) for cls in ([0, 1], [2, 3]))
    got = s.loss_terms(ctx, batch)["lwf"]
    assert torch.isfinite(got) and got > 0
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("multi_head", [False, True])
def test_lwf_cached_targets_by_index_equal_the_teacher_on_the_batch(multi_head: bool) -> None:
    """With ``batch.index`` the teacher's targets come from a per-experience cache."""
    stream = make_stream(multi_head=multi_head, n_exp=3)
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = build_strategy("lwf", {"temperature": 2.0})
    run_experience(s, ctx, 0)
    run_experience(s, ctx, 1)
    ctx.experience = stream[2]
    shift_params(model, 0.05)
    index = torch.tensor([5, 0, 3, 3, 7])
    plain = make_batch(ctx, size=len(stream[2].y_train))
    x, y = stream[2].x_train[index], stream[2].y_train[index]
    h = model.features(x)
    indexed = type(plain)(x, y, plain.task_id, h, model.classify(h, plain.task_id), index)
    direct = type(plain)(x, y, plain.task_id, h, model.classify(h, plain.task_id))
    got = s.loss_terms(ctx, indexed)["lwf"]
    assert s._cache is not None and s._cache[0] is ctx.experience  # the cached path ran
    torch.testing.assert_close(got, s.loss_terms(ctx, direct)["lwf"])
    assert got > 0
    s.on_experience_end(ctx)  # a new teacher: the cache is dropped
    assert s._cache is None


def test_lwf_matches_avalanche(avalanche: SimpleNamespace) -> None:
    """Avalanche's LearningWithoutForgetting (single task) on the same teacher and batch."""
    stream = make_stream()
    model = make_model(stream, n_classes=5)
    ctx = make_ctx(model, stream)
    s = build_strategy("lwf", {"alpha": 1.5, "temperature": 2.0})
    run_experience(s, ctx, 0)
    ref = avalanche.lwf(alpha=1.5, temperature=2.0)
    ref.prev_model = s._build_teacher(model, snapshot(model))
    ref.prev_classes_by_task[0] = set(stream[0].classes)
    ctx.experience = stream[1]
    train_steps(s, ctx, 2)  # move away from the teacher
    batch = make_batch(ctx)
    torch.testing.assert_close(s.loss_terms(ctx, batch)["lwf"], ref(batch.x, batch.logits, model))


# ------------------------------------------------------------------------ SI
def test_si_importance_is_the_hand_computed_path_integral() -> None:
    """Three SGD-with-momentum steps per experience, recorded by hand (update != -lr*g)."""
    stream = make_stream()
    model = make_model(stream)
    ctx = make_ctx(model, stream, momentum=0.9)
    eps = 0.05
    s = SI(SIConfig(lambda_=4.0, eps=eps, clip_to=None))
    expected: dict[str, Tensor] = {}
    for i in range(2):
        ctx.experience = stream[i]
        s.on_experience_start(ctx)
        start = snapshot(model)
        omega = {n: torch.zeros_like(t) for n, t in start.items()}
        for k in range(3):
            batch = make_batch(ctx, start=8 * k)
            loss = F.cross_entropy(batch.logits, batch.y)
            loss = loss + sum(s.loss_terms(ctx, batch).values())
            ctx.optimizer.zero_grad()
            loss.backward()
            s.on_after_backward(ctx)
            before = snapshot(model)
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            ctx.optimizer.step()
            s.on_after_step(ctx)
            after = snapshot(model)
            for n in omega:
                omega[n] -= grads[n] * (after[n] - before[n])
        s.on_experience_end(ctx)
        end = snapshot(model)
        for n in omega:
            contribution = omega[n] / ((end[n] - start[n]) ** 2 + eps)
            expected[n] = expected.get(n, 0) + contribution
        assert_dicts_close(s.omega_sum, expected, rtol=1e-5, atol=1e-7)
        assert_dicts_close(s.anchor, end, rtol=0, atol=0)
    shift_params(model, 0.01)
    quad = sum((expected[n] * (p - s.anchor[n]) ** 2).sum() for n, p in model.named_parameters())
    torch.testing.assert_close(term(s, ctx), 2.0 * quad)  # lambda/2 = 2


def test_si_clipping_and_nonnegative() -> None:
    stream = make_stream()
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    # weight decay moves some weights against their gradient: negative omega
    ctx.optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    clipped = SI(SIConfig(clip_to=1e-3, nonnegative=True))
    run_experience(clipped, ctx, 0)
    raw = torch.cat([t.flatten() for t in clipped.omega_sum.values()])
    imp = torch.cat([t.flatten() for t in clipped.importance.values()])
    assert raw.max() > 1e-3 and raw.min() < 0  # both clamps act here ...
    torch.testing.assert_close(imp, raw.clamp(0.0, 1e-3))  # ... and nothing else
    m = clipped.metrics()
    assert m["importance_max"] == pytest.approx(1e-3) and 0 < m["clipped_fraction"] <= 1


def test_si_matches_avalanche_plugin(avalanche: SimpleNamespace) -> None:
    """Drive Avalanche's SynapticIntelligencePlugin hooks alongside ours, step by step.

    Avalanche snapshots CPU weights as views of the live parameters (see si.py), so
    it watches a shadow copy whose tensors are rebound (not updated in place) to
    our model's values and gradients before each of its hooks.
    """
    stream = make_stream(n_exp=3)
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    ctx.optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    s = SI(SIConfig(lambda_=50.0, eps=1.0, nonnegative=False))  # clip_to=0.001 as Avalanche
    ref = avalanche.si(si_lambda=50.0, eps=1.0)
    shadow = copy.deepcopy(model)
    fake = SimpleNamespace(model=shadow, device=CPU, clock=SimpleNamespace(train_exp_counter=0))

    def sync() -> None:
        for ps, p in zip(shadow.parameters(), model.parameters(), strict=True):
            ps.data = p.detach().clone()
            ps.grad = None if p.grad is None else p.grad.detach().clone()

    for i in range(3):
        fake.clock.train_exp_counter = i
        ctx.experience = stream[i]
        s.on_experience_start(ctx)
        sync()
        ref.before_training_exp(fake)
        for k in range(3):
            sync()
            ref.before_training_iteration(fake)
            batch = make_batch(ctx, start=8 * k)
            ce = F.cross_entropy(batch.logits, batch.y)
            ours = s.loss_terms(ctx, batch)
            fake.loss = ce.detach().clone()
            ref.before_backward(fake)
            if ours:
                torch.testing.assert_close(ce.detach() + ours["si"].detach(), fake.loss.detach())
            loss = ce + sum(ours.values())
            ctx.optimizer.zero_grad()
            loss.backward()
            s.on_after_backward(ctx)
            ctx.optimizer.step()
            s.on_after_step(ctx)
            sync()
            ref.after_training_iteration(fake)
        s.on_experience_end(ctx)
        sync()
        ref.after_training_exp(fake)
        for n in s.anchor:
            torch.testing.assert_close(
                s.importance[n].flatten(), ref.ewc_data[1][n].data, rtol=1e-4, atol=1e-9
            )
            torch.testing.assert_close(s.anchor[n].flatten(), ref.ewc_data[0][n].data)
    flat = torch.cat([t.flatten() for t in s.importance.values()])
    assert (flat == 1e-3).any() and ((flat > 0) & (flat < 1e-3)).any()  # clamped and not
    assert (flat < 0).any()  # Avalanche keeps negative importances (nonnegative=False)


# ----------------------------------------------------------------------- MAS
def loop_importance(model: nn.Module, x: Tensor, task_id: int, per_sample: bool, bs: int):
    """Reference MAS importance: an explicit loop over batches or samples."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    imp = {n: torch.zeros_like(p) for n, p in named}
    size = 1 if per_sample else bs
    count = 0
    for start in range(0, len(x), size):
        out = model(x[start : start + size], task_id)
        out = out[:, torch.isfinite(out[0])]  # the task's own classes
        loss = out.pow(2).sum(1).mean()
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        for (n, _), g in zip(named, grads, strict=True):
            if g is not None:
                imp[n] += g.abs()
        count += 1
    return {n: t / count for n, t in imp.items()}


@pytest.mark.parametrize("per_sample", [False, True], ids=["batch", "per-sample"])
@pytest.mark.parametrize("multi_head", [False, True], ids=["single-head", "multi-head"])
def test_mas_importance_matches_explicit_loop(per_sample: bool, multi_head: bool) -> None:
    stream = make_stream(multi_head=multi_head)
    model = make_model(stream)
    exp = stream[1]
    got = output_sensitivity(
        model, exp.x_train, task_id=exp.task_id, batch_size=7, per_sample=per_sample
    )
    ref = loop_importance(model, exp.x_train, exp.task_id, per_sample, bs=7)  # 24 = 7+7+7+3
    assert_dicts_close(got, ref, rtol=1e-5, atol=1e-7)
    assert all(torch.isfinite(t).all() for t in got.values())
    assert all(p.grad is None for p in model.parameters())  # .grad untouched
    if multi_head:  # task 1 scores classes 2 and 3 only
        assert got["head.linear.weight"][:2].abs().sum() == 0
        assert got["head.linear.weight"][2:].abs().sum() > 0


@pytest.mark.parametrize("accumulate", ["average", "sum"])
def test_mas_accumulates_across_experiences(accumulate: str) -> None:
    stream = make_stream()
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = MAS(MASConfig(alpha=0.25, accumulate=accumulate, batch_size=5))
    run_experience(s, ctx, 0)
    first = loop_importance(model, stream[0].x_train, 0, False, 5)
    assert_dicts_close(s.importance, first)
    run_experience(s, ctx, 1)
    second = loop_importance(model, stream[1].x_train, 0, False, 5)
    if accumulate == "sum":
        expected = {n: first[n] + second[n] for n in first}
    else:
        expected = {n: 0.25 * first[n] + 0.75 * second[n] for n in first}
    assert_dicts_close(s.importance, expected)
    assert_dicts_close(s.anchor, snapshot(model), rtol=0, atol=0)
    shift_params(model, 0.02)
    quad = sum((expected[n] * (p - s.anchor[n]) ** 2).sum() for n, p in model.named_parameters())
    torch.testing.assert_close(term(s, ctx), s.config.lambda_ * quad)


def test_mas_matches_avalanche_plugin(avalanche: SimpleNamespace) -> None:
    """Avalanche's MASPlugin importance, running average and penalty on the same model."""
    stream = make_stream(n=40)
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = MAS(MASConfig(lambda_=2.0, alpha=0.3, batch_size=16))
    ref = avalanche.mas(lambda_reg=2.0, alpha=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(2):
        run_experience(s, ctx, i)
        exp = stream[i]
        data = torch.utils.data.TensorDataset(
            exp.x_train, exp.y_train, torch.zeros_like(exp.y_train)
        )
        fake = SimpleNamespace(
            model=model,
            optimizer=opt,
            device=CPU,
            train_mb_size=16,
            experience=SimpleNamespace(dataset=data),
            clock=SimpleNamespace(train_exp_counter=i),
        )
        ref.after_training_exp(fake)
        assert_dicts_close(s.importance, {n: d.data for n, d in ref.importance.items()})
    shift_params(model, 0.02)
    fake.loss = torch.tensor(1.0)
    ref.before_backward(fake)
    torch.testing.assert_close(term(s, ctx), fake.loss - 1.0)


# --------------------------------------------------------------------- state
@pytest.mark.parametrize("case", CASES)
def test_state_dict_is_plain_and_round_trips(case: str, tmp_path: Path) -> None:
    name, params = CASES[case]
    stream = make_stream(multi_head=True)
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = build_strategy(name, params)
    assert _is_plain(s.state_dict())
    run_experience(s, ctx, 0)
    run_experience(s, ctx, 1)
    shift_params(model, 3e-2)
    state = s.state_dict()
    assert _is_plain(state)
    torch.save(state, tmp_path / "state.pt")
    fresh = build_strategy(name, params)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    before, after = term(s, ctx), term(fresh, ctx)
    assert before > 0 and torch.equal(before, after)
    with pytest.raises(ValueError, match="state keys"):
        fresh.load_state_dict({**state, "bogus": 1})


TRAIN_CFG: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 32,
    "lr": 0.05,
    "optimizer": "sgd",
    "momentum": 0.9,
    "reset_optimizer": False,
}


@pytest.mark.parametrize(
    ("name", "params", "protocol"),
    [
        ("lwf", {"lambda": 2.0}, "task_incremental"),
        ("lwf", {"lambda": 2.0}, "domain_incremental"),
        ("si", {"lambda": 100.0}, "domain_incremental"),
        ("mas", {"lambda": 1.0}, "task_incremental"),
    ],
)
def test_resume_after_two_experiences_matches_uninterrupted(
    name: str, params: dict[str, Any], protocol: str, tmp_path: Path
) -> None:
    n = 5 if protocol == "task_incremental" else 3
    stream = build_stream(
        ScenarioConfig(source="digits", protocol=protocol, n_experiences=n, seed=0)
    )
    stream = Stream(stream.name, stream.protocol, stream.experiences[:3], stream.n_classes,
                    stream.input_shape, stream.seed, stream.info)  # fmt: skip
    training = TrainingConfig(**TRAIN_CFG)

    def make(seed: int = 0) -> Learner:
        return Learner(
            stream, ModelConfig(hidden=[32]), [build_strategy(name, params)], training, seed
        )

    full = make().fit()
    first = make()
    first.evaluate_untrained()
    first.run_experience(0)
    first.run_experience(1)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = make(seed=99)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    np.testing.assert_array_equal(resumed.fit(), full)


# ------------------------------------------------------------- forgetting
def test_each_baseline_forgets_less_than_naive_on_permuted_digits() -> None:
    stream = build_stream(
        ScenarioConfig(source="digits", protocol="domain_incremental", n_experiences=4, seed=0)
    )
    training = TrainingConfig(epochs=3, batch_size=32, lr=0.05)
    forgetting = {}
    for name, params in [
        ("naive", {}),
        ("lwf", {"lambda": 3.0}),
        ("si", {"lambda": 100.0}),
        ("mas", {"lambda": 1.0}),
    ]:
        runs = [
            Learner(
                stream, ModelConfig(hidden=[128]), [build_strategy(name, params)], training, s
            ).fit()
            for s in (0, 1)
        ]
        forgetting[name] = np.mean([metrics.average_forgetting(R) for R in runs])
    for name in ("lwf", "si", "mas"):
        assert forgetting[name] < forgetting["naive"], forgetting


# -------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("cfg", "aliases"),
    [(LwFConfig, ["alpha"]), (SIConfig, ["si_lambda"]), (MASConfig, ["lambda_reg"])],
)
def test_config_aliases_and_validation(cfg: Any, aliases: list[str]) -> None:
    for key in ["lambda", "lambda_", *aliases]:
        assert cfg.model_validate({key: 2.5}).lambda_ == 2.5
    assert cfg().model_dump(by_alias=True)["lambda"] == 1.0
    with pytest.raises(ValidationError):
        cfg.model_validate({"lambda": -1.0})
    with pytest.raises(ValidationError):
        cfg.model_validate({"lamda": 1.0})
    with pytest.raises(ValidationError):
        cfg().lambda_ = 2.0  # frozen


def test_config_defaults_and_ranges() -> None:
    assert LwFConfig().temperature == 2.0
    si = SIConfig()
    assert (si.eps, si.clip_to, si.nonnegative) == (1e-7, 0.001, True)
    assert SIConfig.model_validate({"xi": 0.1}).eps == 0.1
    mas = MASConfig()
    assert (mas.alpha, mas.accumulate, mas.per_sample) == (0.5, "average", False)
    for cfg, bad in [
        (LwFConfig, {"temperature": 0}),
        (SIConfig, {"eps": 0}),
        (SIConfig, {"clip_to": -1}),
        (MASConfig, {"alpha": 1.5}),
        (MASConfig, {"accumulate": "max"}),
        (MASConfig, {"batch_size": 0}),
        (MASConfig, {"max_samples": 0}),
    ]:
        with pytest.raises(ValidationError):
            cfg.model_validate(bad)
    assert isinstance(build_strategy("lwf"), LwF)
    assert isinstance(build_strategy("si"), SI)
    assert isinstance(build_strategy("mas"), MAS)
