"""Correctness of the speed work of issue 8 (the timings live in benchmarks/, not here).

The closed-form Fisher and the folded EWC quadratic compute what they replace,
and the training loop makes no host sync per step for any built-in strategy.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig, build_model
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import STRATEGIES, build_strategy
from lifelong.strategies._importance import empirical_fisher, linear_fisher
from lifelong.strategies._penalty import FlatQuadratic


@pytest.mark.parametrize("multi_head", [False, True], ids=["single-head", "multi-head"])
def test_closed_form_fisher_equals_per_sample_gradients(multi_head: bool) -> None:
    torch.manual_seed(0)
    tasks = [(0, 1, 2), (3, 4)] if multi_head else []
    model = build_model(ModelConfig(hidden=[12, 9]), (2, 3), 5, tasks)
    x, y = torch.randn(23, 2, 3), torch.randint(3, 5, (23,))
    fast = linear_fisher(model, x, y, task_id=1 if multi_head else 0, batch_size=10)
    ref = empirical_fisher(model, x, y, task_id=1 if multi_head else 0, method="vmap")
    assert fast is not None and set(fast) == set(ref)
    for n in ref:
        torch.testing.assert_close(fast[n], ref[n], rtol=1e-5, atol=1e-9)
    assert all(p.grad is None for p in model.parameters())
    if multi_head:  # task 1 scores classes 3 and 4 only
        assert fast["head.linear.weight"][:3].abs().sum() == 0


def test_closed_form_fisher_declines_models_it_cannot_handle() -> None:
    torch.manual_seed(0)
    cnn = build_model(ModelConfig(name="cnn", hidden=[4]), (1, 6, 6), 3)
    x, y = torch.randn(5, 1, 6, 6), torch.randint(0, 3, (5,))
    assert linear_fisher(cnn, x, y) is None  # conv weights: vmap path

    class Twice(nn.Module):  # one layer applied twice: per-sample grads do not factor
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor, task_id: int = 0) -> torch.Tensor:
            return self.lin(torch.relu(self.lin(x)))

    twice = Twice()
    x, y = torch.randn(7, 3), torch.randint(0, 3, (7,))
    assert linear_fisher(twice, x, y) is None
    auto = empirical_fisher(twice, x, y)
    ref = empirical_fisher(twice, x, y, method="vmap")
    for n in ref:
        torch.testing.assert_close(auto[n], ref[n])


def test_folded_quadratic_equals_the_sum_of_pairs() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[6]), (4,), 3)
    names = [n for n, _ in model.named_parameters()]
    pairs = []
    for _ in range(3):
        fisher = {
            n: torch.rand_like(p) * (torch.rand_like(p) > 0.3) for n, p in model.named_parameters()
        }
        anchor = {n: p.detach() + 0.1 * torch.randn_like(p) for n, p in model.named_parameters()}
        pairs.append((fisher, anchor))
    fold = FlatQuadratic([f for f, _ in pairs], [a for _, a in pairs])
    value = fold(model)
    (grad,) = torch.autograd.grad(value, [dict(model.named_parameters())[names[0]]])
    params = dict(model.named_parameters())
    expected = sum(((f[n] * (params[n] - a[n]) ** 2).sum() for f, a in pairs for n in names))
    (egrad,) = torch.autograd.grad(expected, [params[names[0]]])
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, egrad, rtol=1e-5, atol=1e-6)
    one = FlatQuadratic([pairs[0][0]], [{n: p.detach().clone() for n, p in params.items()}])
    assert one(model).item() == 0.0  # exactly zero at the anchor


class CountSyncs(TorchDispatchMode):
    """Count the ops that copy a device scalar to the host (``.item()``, ``float(t)``, ``if t``).

    The same events the PyTorch profiler records as ``aten::_local_scalar_dense``
    (benchmarks/hotspots.py counts them that way), without the profiler's overhead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def syncs_training(name: str, epochs: int) -> tuple[int, int]:
    """Host syncs while training experience 1, and the optimizer steps taken."""
    stream = build_stream(
        ScenarioConfig(
            source="gaussian", n_experiences=2, options={"n_train_per_class": 16, "n_features": 6}
        )
    )
    training = TrainingConfig(epochs=epochs, batch_size=8, lr=0.05, accelerator="cpu")
    learner = Learner(stream, ModelConfig(hidden=[8]), [build_strategy(name)], training, 0)
    learner.run_experience(0)
    before = learner.step
    with CountSyncs() as counter:
        learner.train_experience(1)
    return counter.count, learner.step - before


def test_no_host_sync_per_training_step() -> None:
    """Tripling the steps adds no sync: whatever a strategy syncs, it is per experience."""
    built_in = [e.name for e in STRATEGIES.entries() if e.origin == "built-in"]
    assert len(built_in) >= 11
    for name in built_in:  # plugins other tests loaded into this process are not ours to time
        one, steps_one = syncs_training(name, 1)
        three, steps_three = syncs_training(name, 3)
        assert steps_three == 3 * steps_one
        assert three == one, (name, one, three)
        if name == "dst":  # dst reads its mask sizes once per experience: seen by the counter
            assert one > 0
        else:
            assert one == 0, (name, one)
