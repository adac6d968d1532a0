"""The hot spots of a lifelong run, measured: Fisher, evaluation, host syncs per step.

1. EWC's diagonal empirical Fisher on one Split-Digits experience (MLP 64-256-256-10,
   and the small CNN): an explicit per-sample loop (one backward per sample) vs
   ``torch.func`` (``vmap(grad(...))``) vs the closed form lifelong uses for
   linear layers (``linear_fisher``: one backward per chunk, a matrix product
   per layer). All three are checked equal before timing.
2. Evaluation of every experience (``Learner.evaluate``: batched, on the
   device) vs a per-sample Python loop doing the same forward passes.
3. Host-device synchronisations in the training loop: the PyTorch profiler's
   ``aten::_local_scalar_dense`` / ``aten::item`` events (what ``.item()``,
   ``float(t)`` and ``if t:`` record) during one experience's training, per
   strategy, divided by the number of optimizer steps.

    python benchmarks/hotspots.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig, build_model
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import STRATEGIES, build_strategy
from lifelong.strategies._importance import empirical_fisher, linear_fisher


def loop_fisher(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """The reference: one forward/backward per sample, squared gradients summed."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out = {n: torch.zeros_like(p) for n, p in params}
    model.eval()
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, [p for _, p in params])
        for (n, _), g in zip(params, grads, strict=True):
            out[n] += g.square()
    model.train()
    return {n: t / len(y) for n, t in out.items()}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fisher_section(repeats: int) -> None:
    """Time the three Fisher computations on one experience."""
    stream = build_stream(ScenarioConfig(source="digits", n_experiences=5))
    exp = stream[0]
    x, y = exp.x_train, exp.y_train
    print(f"1. EWC Fisher on one Split-Digits experience ({len(y)} samples), median of {repeats}")
    print(f"   {'model':<22} {'per-sample loop':>15} {'torch.func vmap':>15} {'closed form':>12}")
    for label, cfg in [
        ("MLP 64-256-256-10", ModelConfig(hidden=[256, 256])),
        ("CNN 16-32 channels", ModelConfig(name="cnn", hidden=[16, 32])),
    ]:
        torch.manual_seed(0)
        model = build_model(cfg, stream.input_shape, stream.n_classes)
        ref = loop_fisher(model, x, y)
        via_vmap = empirical_fisher(model, x, y, method="vmap")
        for n in ref:
            torch.testing.assert_close(via_vmap[n], ref[n], rtol=1e-4, atol=1e-8)
        t_loop = timed(lambda m=model: loop_fisher(m, x, y), max(1, repeats // 2))
        t_vmap = timed(lambda m=model: empirical_fisher(m, x, y, method="vmap"), repeats)
        fast = linear_fisher(model, x, y)
        if fast is None:
            closed = "n/a (conv)"
        else:
            for n in ref:
                torch.testing.assert_close(fast[n], ref[n], rtol=1e-4, atol=1e-8)
            t_fast = timed(lambda m=model: linear_fisher(m, x, y), repeats)
            closed = f"{t_fast * 1e3:.1f} ms"
        print(
            f"   {label:<22} {t_loop * 1e3:>12.1f} ms {t_vmap * 1e3:>12.1f} ms {closed:>12}"
            f"   vmap speed-up x{t_loop / t_vmap:.1f}"
            + (f", closed form x{t_loop / t_fast:.0f}" if fast is not None else "")
        )


@torch.no_grad()
def per_sample_eval(learner: Learner) -> list[float]:
    """The slow way: one forward pass per test sample, a Python comparison each."""
    learner.model.eval()
    accs = []
    for exp in learner.experiences:
        correct = 0
        for i in range(exp.n_test):
            logits = learner.model(exp.x_test[i : i + 1], exp.task_id)
            correct += int(logits.argmax(1).item() == exp.y_test[i].item())
        accs.append(correct / exp.n_test)
    learner.model.train()
    return accs


def eval_section(repeats: int) -> None:
    """Batched evaluation vs a per-sample loop on permuted MNIST-1D (10 experiences)."""
    stream = build_stream(
        ScenarioConfig(source="mnist1d", protocol="domain_incremental", n_experiences=10)
    )
    training = TrainingConfig(accelerator="cpu")
    learner = Learner(stream, ModelConfig(hidden=[256, 256]), [], training, 0)
    n = sum(e.n_test for e in stream)
    batched = learner.evaluate()
    assert [round(float(a), 12) for a in batched] == [
        round(a, 12) for a in per_sample_eval(learner)
    ]
    t_b = timed(learner.evaluate, repeats)
    t_s = timed(lambda: per_sample_eval(learner), max(1, repeats // 3))
    print(f"2. Evaluation of all 10 Permuted MNIST-1D experiences ({n} test samples)")
    print(
        f"   batched (Learner.evaluate): {t_b * 1e3:.1f} ms; per-sample loop: "
        f"{t_s * 1e3:.0f} ms; speed-up x{t_s / t_b:.0f}"
    )


def count_syncs(name: str, epochs: int) -> tuple[int, int]:
    """Profiler-recorded host syncs while training experience 1, and the steps taken."""
    stream = build_stream(ScenarioConfig(source="digits", n_experiences=2))
    training = TrainingConfig(epochs=epochs, batch_size=32, lr=0.05, accelerator="cpu")
    learner = Learner(stream, ModelConfig(hidden=[64]), [build_strategy(name)], training, 0)
    learner.run_experience(0)
    before = learner.step
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        learner.train_experience(1)
    events = ("aten::_local_scalar_dense", "aten::item")
    return sum(e.count for e in prof.key_averages() if e.key in events), learner.step - before


def sync_section() -> None:
    """Count host syncs during one experience's training, 1 and 3 epochs, every strategy."""
    # libkineto prints a line on stderr at every profiler start and stop unless
    # its log level is above 5; it reads the variable when the profiler starts.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    print("3. Host syncs (aten::_local_scalar_dense + aten::item) training experience 1")
    cols = f"{'steps':>5} {'syncs':>5} {'steps x3':>8} {'syncs':>5} {'per step':>8}"
    print(f"   {'strategy':<17} {cols}")
    for name in sorted(STRATEGIES):
        s1, n1 = count_syncs(name, 1)
        s3, n3 = count_syncs(name, 3)
        per_step = (s3 - s1) / (n3 - n1)
        print(f"   {name:<17} {n1:>5} {s1:>5} {n3:>8} {s3:>5} {per_step:>8.2f}")
    print("   per step = extra syncs / extra steps. The loop's one per-epoch sync is a .tolist(),")
    print("   which the profiler does not record; dst reads its mask sizes once per experience.")


def main() -> None:
    """Run the three sections and print their tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    repeats = 3 if args.quick else args.repeats
    torch.set_num_threads(1)
    fisher_section(repeats)
    eval_section(repeats)
    sync_section()


if __name__ == "__main__":
    main()
