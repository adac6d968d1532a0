"""Tests of the strategy API and the built-in strategies (naive, l2, ewc)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor, nn

from lifelong.platform._registry import RegistryError
from lifelong.platform.models import ContinualModel
from lifelong.strategies import (
    STRATEGIES,
    Context,
    Strategy,
    build_strategy,
    get_strategy,
    register_strategy,
)
from lifelong.strategies._importance import empirical_fisher
from lifelong.strategies.ewc import EWC, EWCConfig
from lifelong.strategies.l2 import L2, L2Config

from strategy_kit import (
    make_batch,
    make_ctx,
    make_model,
    make_stream,
    run_experience,
    shift_params,
    term,
    train_steps,
)


def loop_fisher(model: nn.Module, x: Tensor, y: Tensor, task_id: int) -> dict[str, Tensor]:
    """Reference empirical Fisher: an explicit per-sample loop with autograd.grad."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    fisher = {n: torch.zeros_like(p) for n, p in named}
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i : i + 1], task_id=task_id), y[i : i + 1])
        grads = torch.autograd.grad(loss, [p for _, p in named])
        for (n, _), g in zip(named, grads, strict=True):
            fisher[n] += g.square()
    return {n: f / len(y) for n, f in fisher.items()}


def assert_dicts_close(a: dict[str, Tensor], b: dict[str, Tensor], atol: float = 1e-6) -> None:
    assert list(a) == list(b)
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=atol, rtol=1e-5, msg=n)


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "l2-previous": ("l2", {"lambda": 0.5}),
    "l2-initial": ("l2", {"lambda": 0.5, "anchor": "initial"}),
    "ewc-separate": ("ewc", {"lambda": 10.0}),
    "ewc-online": ("ewc", {"lambda": 10.0, "mode": "online", "gamma": 0.5}),
}


# ------------------------------------------------------------ penalty shape
@pytest.mark.parametrize("case", CASES)
def test_penalty_zero_at_anchor_and_grows_with_distance(case: str) -> None:
    name, params = CASES[case]
    stream = make_stream()
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = build_strategy(name, params)
    if case == "l2-initial":  # anchored at the start of the first experience
        s.on_experience_start(ctx)
    else:
        run_experience(s, ctx, 0)
        ctx.experience = stream[1]
        s.on_experience_start(ctx)
    zero = term(s, ctx)
    assert zero.item() == 0.0
    shift_params(model, 1e-2)
    p1 = term(s, ctx)
    shift_params(model, 1e-2)
    p2 = term(s, ctx)
    assert 0 < p1 < p2
    torch.testing.assert_close(p2, 4 * p1, rtol=1e-4, atol=0)  # quadratic in the distance


def test_l2_value_and_gradient() -> None:
    stream = make_stream()
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = build_strategy("l2", {"lambda": 0.5})
    run_experience(s, ctx, 0)
    shift_params(model, 0.1)
    n_params = sum(p.numel() for p in model.parameters())
    term = s.loss_terms(ctx, make_batch(ctx))["l2"]
    model.zero_grad()
    torch.testing.assert_close(term, torch.tensor(0.5 * n_params * 0.01))
    term.backward()
    for p in model.parameters():  # d/dtheta lambda*(theta-theta*)^2 = 2*lambda*0.1
        torch.testing.assert_close(p.grad, torch.full_like(p, 0.1))


def test_l2_ignores_frozen_parameters() -> None:
    stream = make_stream()
    model = make_model(stream)
    model.body[1].weight.requires_grad_(False)
    ctx = make_ctx(model, stream)
    s = build_strategy("l2", {})
    run_experience(s, ctx, 0)
    assert s.anchor is not None and "body.1.weight" not in s.anchor


@pytest.mark.parametrize("case", ["l2-previous", "ewc-separate", "ewc-online"])
def test_no_term_during_first_experience(case: str) -> None:
    name, params = CASES[case]
    stream = make_stream()
    ctx = make_ctx(make_model(stream), stream)
    s = build_strategy(name, params)
    s.on_experience_start(ctx)
    assert s.loss_terms(ctx, make_batch(ctx)) == {}
    train_steps(s, ctx)
    assert s.loss_terms(ctx, make_batch(ctx)) == {}
    s.on_experience_end(ctx)
    assert set(s.loss_terms(ctx, make_batch(ctx))) == {name}


def test_l2_initial_applies_from_the_start() -> None:
    stream = make_stream()
    model = make_model(stream)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    ctx = make_ctx(model, stream)
    s = build_strategy("l2", {"anchor": "initial"})
    s.on_experience_start(ctx)
    assert set(s.loss_terms(ctx, make_batch(ctx))) == {"l2"}
    train_steps(s, ctx)
    assert term(s, ctx) > 0
    s.on_experience_end(ctx)
    run_experience(s, ctx, 1)  # the anchor never moves
    assert s.anchor is not None
    assert all(torch.equal(s.anchor[n], init[n]) for n in init)


def test_naive_adds_nothing() -> None:
    stream = make_stream()
    ctx = make_ctx(make_model(stream), stream)
    s = build_strategy("naive")
    run_experience(s, ctx, 0)
    assert s.loss_terms(ctx, make_batch(ctx)) == {}
    assert s.state_dict() == {}
    s.load_state_dict({})


# -------------------------------------------------------------------- Fisher
@pytest.mark.parametrize("multi_head", [False, True], ids=["single-head", "multi-head"])
def test_fisher_matches_per_sample_loop(multi_head: bool) -> None:
    stream = make_stream(multi_head=multi_head)
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = build_strategy("ewc", {"fisher_batch_size": 7})  # 24 samples: uneven chunks
    run_experience(s, ctx, 0)
    run_experience(s, ctx, 1)
    exp = stream[1]
    ref = loop_fisher(model, exp.x_train, exp.y_train, exp.task_id)
    assert_dicts_close(s.fishers[1], ref)
    assert all(torch.isfinite(f).all() for f in s.fishers[1].values())
    if multi_head:  # task 1 only scores classes 2 and 3: no Fisher on the other rows
        assert s.fishers[1]["head.linear.weight"][:2].abs().sum() == 0
        assert s.fishers[1]["head.linear.weight"][2:].abs().sum() > 0


def test_fisher_max_samples_uses_the_first_n() -> None:
    stream = make_stream()
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = build_strategy("ewc", {"fisher_max_samples": 5})
    run_experience(s, ctx, 0)
    exp = stream[0]
    assert_dicts_close(s.fishers[0], loop_fisher(model, exp.x_train[:5], exp.y_train[:5], 0))


def test_fisher_runs_in_eval_mode_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5))
    model = ContinualModel(body, 8, 3, ())
    model.train()
    stream = make_stream()
    x, y = stream[0].x_train, stream[0].y_train
    fisher = empirical_fisher(model, x, y, batch_size=5)
    assert model.training and body[2].training
    model.eval()
    assert_dicts_close(fisher, loop_fisher(model, x, y, 0))


def test_online_fisher_is_decayed_sum() -> None:
    gamma = 0.5
    stream = make_stream()
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = build_strategy("ewc", {"mode": "online", "gamma": gamma})
    run_experience(s, ctx, 0)
    f1 = loop_fisher(model, stream[0].x_train, stream[0].y_train, 0)
    run_experience(s, ctx, 1)
    f2 = loop_fisher(model, stream[1].x_train, stream[1].y_train, 0)
    assert len(s.fishers) == len(s.anchors) == 1
    assert_dicts_close(s.fishers[0], {n: gamma * f1[n] + f2[n] for n in f1})
    latest = {n: p.detach() for n, p in model.named_parameters()}
    assert all(torch.equal(s.anchors[0][n], latest[n]) for n in latest)


def test_separate_mode_keeps_one_pair_per_experience() -> None:
    stream = make_stream(n_exp=3)
    ctx = make_ctx(make_model(stream), stream)
    s = build_strategy("ewc", {})
    for i in range(3):
        run_experience(s, ctx, i)
    assert len(s.fishers) == len(s.anchors) == 3


# --------------------------------------------------------------------- state
def _is_plain(obj: object) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_is_plain(v) for v in obj)
    return isinstance(obj, Tensor | int | float | str | bool)


@pytest.mark.parametrize("case", CASES)
def test_state_dict_round_trip(case: str, tmp_path: Any) -> None:
    name, params = CASES[case]
    stream = make_stream()
    model = make_model(stream)
    ctx = make_ctx(model, stream)
    s = build_strategy(name, params)
    run_experience(s, ctx, 0)
    run_experience(s, ctx, 1)
    shift_params(model, 3e-2)
    state = s.state_dict()
    assert _is_plain(state)
    torch.save(state, tmp_path / "state.pt")
    fresh = build_strategy(name, params)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    before, after = term(s, ctx), term(fresh, ctx)
    assert before > 0
    assert torch.equal(before, after)
    with pytest.raises(ValueError, match="state keys"):
        fresh.load_state_dict({**state, "bogus": 1})


# -------------------------------------------------------------------- config
@pytest.mark.parametrize("cfg", [L2Config, EWCConfig])
def test_config_validation(cfg: type[L2Config] | type[EWCConfig]) -> None:
    assert cfg.model_validate({"lambda": 2.5}).lambda_ == 2.5
    assert cfg(lambda_=3.0).lambda_ == 3.0
    with pytest.raises(ValidationError):
        cfg.model_validate({"lambda": -1.0})
    with pytest.raises(ValidationError):
        cfg.model_validate({"lamda": 1.0})
    with pytest.raises(ValidationError):
        cfg(lambda_=1.0).lambda_ = 2.0  # frozen


def test_config_ranges() -> None:
    with pytest.raises(ValidationError):
        L2Config.model_validate({"anchor": "start"})
    with pytest.raises(ValidationError):
        EWCConfig.model_validate({"gamma": 1.5})
    with pytest.raises(ValidationError):
        EWCConfig.model_validate({"mode": "offline"})
    with pytest.raises(ValidationError):
        EWCConfig.model_validate({"fisher_batch_size": 0})
    with pytest.raises(ValidationError):
        EWCConfig.model_validate({"fisher_max_samples": 0})
    assert EWCConfig().model_dump(by_alias=True)["lambda"] == EWCConfig().lambda_


# ------------------------------------------------------------------ registry
def test_build_strategy() -> None:
    s = build_strategy("l2", {"lambda": 0.5})
    assert isinstance(s, L2) and s.config.lambda_ == 0.5 and s.name == "l2"
    assert isinstance(build_strategy("ewc"), EWC)
    assert get_strategy("naive").name == "naive"
    assert {"naive", "l2", "ewc"} <= set(STRATEGIES.names())
    with pytest.raises(ValidationError):
        build_strategy("l2", {"lambda": -1})


def test_unknown_strategy_lists_known_names() -> None:
    with pytest.raises(RegistryError) as err:
        build_strategy("ewcc")
    assert all(n in str(err.value) for n in ("ewc", "l2", "naive"))


def test_duplicate_registration_raises() -> None:
    before = STRATEGIES.get("l2")
    with pytest.raises(RegistryError, match="duplicate"):

        @register_strategy("l2")
        class Again(Strategy):
            """A second strategy named l2."""

    assert STRATEGIES.get("l2") is before


def test_misspelled_hook_raises_at_class_creation() -> None:
    with pytest.raises(TypeError, match="on_experience_end"):

        class Typo(Strategy):
            """A strategy with a misspelled hook."""

            def on_experience_ends(self, ctx: Context) -> None:
                """Never called."""
