"""Tests of DST (dynamic sparse training with task isolation): masks, isolation, growth, resume."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import lifelong.strategies.dst  # noqa: F401  (registers "dst")
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import Context, Strategy, build_strategy
from lifelong.strategies._sparsity import erk_densities
from lifelong.strategies.dst import DST, DSTConfig

LAYERS = ("body.1.weight", "body.3.weight", "head.linear.weight")


@pytest.fixture(scope="module")
def gaussian():
    """3 tasks x 2 classes, 20 features, 100 training samples per class."""
    options = {"n_classes": 6, "n_features": 20, "n_train_per_class": 100, "n_test_per_class": 50}
    return build_stream(
        ScenarioConfig(
            source="gaussian", protocol="task_incremental", n_experiences=3, options=options
        )
    )


@pytest.fixture(scope="module")
def digits():
    return build_stream(
        ScenarioConfig(source="digits", protocol="task_incremental", n_experiences=5, seed=0)
    )


def make(stream, training=None, hidden=(32, 16), learner_seed=0, **params):
    dst = build_strategy("dst", params)
    training = training or TrainingConfig(epochs=2, batch_size=32, lr=0.05)
    return Learner(stream, ModelConfig(hidden=list(hidden)), [dst], training, learner_seed), dst


def waterfilling_erk(shapes: dict[str, tuple[int, ...]], d: float) -> dict[str, float]:
    """ERK by bisection on eps: d_l = min(1, eps * sum(shape)/prod(shape)), sum d_l n_l = d N."""
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    target = d * sum(sizes.values())
    lo, hi = 0.0, 1e6
    for _ in range(200):
        eps = (lo + hi) / 2
        total = sum(min(1.0, eps * raw[n]) * sizes[n] for n in shapes)
        lo, hi = (eps, hi) if total < target else (lo, eps)
    return {n: min(1.0, lo * raw[n]) for n in shapes}


# --------------------------------------------------------------------- masks
@pytest.mark.parametrize("protocol", ["task_incremental", "domain_incremental"])
def test_erk_layer_densities_and_overall_density(protocol) -> None:
    options = {"n_classes": 6, "n_features": 20, "n_train_per_class": 10, "n_test_per_class": 10}
    stream = build_stream(
        ScenarioConfig(source="gaussian", protocol=protocol, n_experiences=3, options=options)
    )
    dst = DST(DSTConfig(density=0.2, init="erk"))
    lrn = Learner(stream, ModelConfig(hidden=[32, 16]), [dst], TrainingConfig(), 0)
    ctx = lrn.context(lrn.experiences[1])
    dst.on_experience_start(ctx)
    rows = 2 if protocol == "task_incremental" else 6  # the head rows of the experience's classes
    shapes = {LAYERS[0]: (32, 20), LAYERS[1]: (16, 32), LAYERS[2]: (rows, 16)}
    expected = waterfilling_erk(shapes, 0.2)
    if rows == 2:  # the small head is capped at density 1, the rest redistributed
        assert expected[LAYERS[2]] == 1.0
    assert erk_densities(shapes, 0.2) == pytest.approx(expected)
    params = dict(lrn.model.named_parameters())
    total = 0
    for name, shape in shapes.items():
        count = int(dst.mask[name].sum())
        assert abs(count - expected[name] * math.prod(shape)) < 1, name
        assert torch.equal(params[name][~dst.mask[name]], torch.zeros(params[name].numel() - count))
        total += count
    assert abs(total - 0.2 * sum(math.prod(s) for s in shapes.values())) <= 1
    in_rows = torch.zeros(6, dtype=torch.bool)
    in_rows[list(lrn.experiences[1].classes)] = True
    assert not dst.mask[LAYERS[2]][~in_rows].any()  # the head mask keeps to the classes' rows
    assert (
        dst.mask[LAYERS[0]].float().mean() < dst.mask[LAYERS[1]].float().mean()
    )  # larger: sparser


def test_uniform_density_is_d_in_every_layer(gaussian) -> None:
    lrn, dst = make(gaussian, density=0.3, init="uniform")
    dst.on_experience_start(lrn.context(lrn.experiences[0]))
    for name, n in zip(LAYERS, (640, 512, 32), strict=True):
        assert abs(int(dst.mask[name].sum()) - 0.3 * n) < 1


# ----------------------------------------------------------------- isolation
class Probe(Strategy):
    """Runs after DST at every step: are the weights outside its mask zero, do the reused
    weights keep their values (``reference``: owned entries, values); mask sizes and masks."""

    name = "probe"

    def __init__(self, dst: DST) -> None:
        super().__init__()
        self.dst = dst
        self.zero_outside: list[torch.Tensor] = []
        self.sizes: list[dict[str, int]] = []
        self.first_layer: list[torch.Tensor] = []
        self.reference: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reused_unchanged: list[bool] = []

    def on_after_backward(self, ctx: Context) -> None:
        params = dict(ctx.model.named_parameters())
        for n, m in self.dst.mask.items():
            self.zero_outside.append((params[n][~m] == 0).all())
            if n in self.reference:
                owned, values = self.reference[n]
                reused = m & owned
                self.reused_unchanged.append(torch.equal(params[n][reused], values[reused]))
        self.sizes.append({n: int(m.sum()) for n, m in self.dst.mask.items()})
        self.first_layer.append(self.dst.mask[LAYERS[0]].clone())


@pytest.mark.parametrize("growth", ["gradient", "momentum", "unfired"])
def test_owned_weights_are_bit_identical_under_momentum_and_decay(gaussian, growth) -> None:
    dst = DST(DSTConfig(density=0.3, update_frequency=3, growth=growth))
    probe = Probe(dst)
    training = TrainingConfig(
        epochs=2, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.01, reset_optimizer=False
    )
    lrn = Learner(gaussian, ModelConfig(hidden=[32, 16]), [dst, probe], training, seed=0)
    params = dict(lrn.model.named_parameters())
    lrn.run_experience(0)
    owned = dst.owned()
    before = {n: params[n].detach().clone() for n in owned}
    biases = {n: p.detach().clone() for n, p in params.items() if n.startswith("body")}
    probe.reference = {n: (o, before[n]) for n, o in owned.items()}
    lrn.run_experience(1)
    lrn.run_experience(2)
    for n, o in owned.items():
        assert torch.equal(params[n][o], before[n][o]), n
        assert not torch.equal(params[n][~o], before[n][~o]), n  # later tasks trained the rest
    for n, b in biases.items():
        if n.endswith("bias"):
            assert torch.equal(params[n], b), n  # body biases: trained by the first task only
    assert torch.stack(probe.zero_outside).all()  # weights outside the mask stay zero
    assert len(probe.reused_unchanged) == 2 * 14 * 3 and all(probe.reused_unchanged)
    assert len({tuple(s.values()) for s in probe.sizes}) == 1  # prune/regrow keeps |M| ...
    masks_seen = probe.first_layer[:14]  # experience 0: 14 steps, updates after 3, 6, 9, 12
    changes = {
        i
        for i, (a, b) in enumerate(zip(masks_seen, masks_seen[1:], strict=False))
        if not torch.equal(a, b)
    }
    assert changes <= {2, 5, 8, 11} and len(changes) >= 3  # ... and rewires at the updates


def test_task_incremental_accuracies_never_change(digits) -> None:
    training = TrainingConfig(epochs=3, batch_size=32, lr=0.05, momentum=0.9, weight_decay=1e-3)
    lrn, _ = make(digits, training, hidden=(64,), density=0.3, update_frequency=10)
    R = lrn.fit()
    assert np.diag(R).min() > 0.9  # every task is learned ...
    for j in range(5):
        assert (R[j + 1 :, j] == R[j, j]).all(), (j, R[:, j])  # ... and never forgotten
    shared, _ = make(
        digits, training, hidden=(64,), density=0.3, update_frequency=10, bias="shared"
    )
    R_shared = shared.fit()
    assert any((R_shared[j + 1 :, j] != R_shared[j, j]).any() for j in range(4))


def test_bias_zero_gives_bias_free_layers(digits) -> None:
    training = TrainingConfig(epochs=3, batch_size=32, lr=0.05, momentum=0.9)
    lrn, _ = make(digits, training, hidden=(64,), bias="zero", density=0.3, update_frequency=5)
    lrn.run_experience(0)
    lrn.run_experience(1)
    biases = [p for n, p in lrn.model.named_parameters() if n.endswith("bias")]
    assert len(biases) == 2 and all(torch.equal(b, torch.zeros_like(b)) for b in biases)
    assert lrn.R[1, 0] == lrn.R[0, 0] and min(lrn.R[0, 0], lrn.R[1, 1]) > 0.85


# --------------------------------------------------------------- prune/grow
def test_prune_smallest_and_grow_largest_gradient_among_free_entries(gaussian) -> None:
    lrn, dst = make(gaussian, density=0.3, growth="gradient", hidden=(8,))
    name = "body.1.weight"
    p = dict(lrn.model.named_parameters())[name]
    dst.on_experience_start(lrn.context(lrn.experiences[0]))
    dst.on_experience_end(lrn.context(lrn.experiences[0]))  # task 0 owns its mask
    owned = dst.owned()[name]
    ctx = lrn.context(lrn.experiences[1])
    dst.on_experience_start(ctx)
    mask = dst.mask[name].clone()
    active, k = int(mask.sum()), math.ceil(0.5 * int(mask.sum()))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # active weights of magnitude >= 1, except k chosen ones
        act = mask.flatten().nonzero().squeeze(1)
        small = act[torch.randperm(active, generator=g)[:k]]
        values = torch.rand(p.numel(), generator=g) + 1
        values[small] = torch.linspace(1e-3, 1e-2, k)
        p.copy_(torch.where(mask, values.view_as(p), 0.0))
        kept_values = p[mask].clone()
    # gradient: small everywhere, largest on owned inactive entries (must not be reused
    # while free ones remain), then on k chosen free inactive entries
    free = (~mask & ~owned).flatten().nonzero().squeeze(1)
    big = free[torch.randperm(free.numel(), generator=g)[:k]]
    grad = torch.rand(p.numel(), generator=g) * 0.1
    grad[big] = -(torch.rand(k, generator=g) + 5)
    grad[(~mask & owned).flatten()] = 100.0
    p.grad = grad.view_as(p)
    dst.update_masks(ctx, 0.5)
    expected = mask.clone().flatten()
    expected[small], expected[big] = False, True
    assert torch.equal(dst.mask[name].flatten(), expected)
    assert int(dst.mask[name].sum()) == active
    assert (p.flatten()[big] == 0).all() and (p.flatten()[small] == 0).all()  # grown at zero
    survivors = mask.flatten().clone()
    survivors[small] = False
    assert torch.equal(p.flatten()[survivors], kept_values[(values[mask.flatten()] >= 1)])


def test_prune_rate_cosine_decay() -> None:
    dst = DST(DSTConfig(prune_rate=0.5, decay_steps=100))
    dst._total_steps = 100
    assert dst.prune_rate_at(0) == pytest.approx(0.5)
    assert dst.prune_rate_at(50) == pytest.approx((0.5 + 0.005) / 2)
    assert dst.prune_rate_at(100) == pytest.approx(0.005)
    assert dst.prune_rate_at(400) == pytest.approx(0.005)  # held at the minimum


# ---------------------------------------------------------------- state etc
def test_state_round_trip_resumes_exactly(gaussian) -> None:
    params = {"density": 0.3, "update_frequency": 4, "growth": "unfired", "seed": 3}
    training = TrainingConfig(epochs=2, batch_size=32, lr=0.05, momentum=0.9)
    full, _ = make(gaussian, training, **params)
    R_full = full.fit()
    first, _ = make(gaussian, training, **params)
    first.evaluate_untrained()
    first.run_experience(0)
    first.run_experience(1)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed, dst = make(
        gaussian, training, learner_seed=1, **params
    )  # all must come from the state
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert len(dst.masks) == 2 and dst.task_ids == [0, 1]
    R_resumed = resumed.fit()
    assert np.array_equal(R_full, R_resumed, equal_nan=True)
    assert full.strategy_metrics() == resumed.strategy_metrics()
    metrics = resumed.strategy_metrics()
    assert metrics["dst/density/overall"] == pytest.approx(0.3, abs=1e-2)
    assert 0 < metrics["dst/owned/body.1.weight"] <= 1
    with pytest.raises(ValueError, match="expected state keys"):
        dst.load_state_dict({"masks": []})


def test_config_validation() -> None:
    for bad in ({"density": 0.0}, {"prune_rate": 1.0}, {"update_frequency": 0}, {"init": "x"}):
        with pytest.raises(ValidationError):
            build_strategy("dst", bad)
    assert build_strategy("dst", {}).config == DSTConfig()
