"""lifelong vs. Avalanche 0.6.0 doing the same continual-learning work, side by side.

Same stream, model (built from the same seed: identical initial weights),
optimizer (SGD), learning rate, batch size, epochs and evaluation (every
experience's test set before training and after each experience), one thread,
one process; the two runs are interleaved and the medians are reported:

- lifelong: ``Learner(...).fit()``: tensors on the device batched by indexing a
  seeded permutation, batched evaluation, one host sync per epoch;
- Avalanche, two ways, both the strategy's own ``train(experience)`` and
  ``eval(test_stream)`` over in-memory tensor datasets (Avalanche's cheapest
  input):

  - *lean*: an ``EvaluationPlugin(accuracy_metrics(experience=True))`` with no
    logger, the least evaluation work that still yields the accuracies;
  - *stock*: the strategy as constructed with no ``evaluator`` argument, i.e.
    Avalanche's ``default_evaluator`` (accuracy and loss per minibatch, epoch,
    experience and stream, printed by its ``InteractiveLogger``; the print goes
    to ``os.devnull``), which is how the issue's "for scale" figure was taken.

Scenarios: class-incremental Split-Digits (5 experiences) and
domain-incremental Permuted MNIST-1D (10 experiences). Strategies and what each
side computes:

- ``naive``: plain fine-tuning on both sides.
- ``ewc``: lifelong ``lambda = 2 * ewc_lambda`` (lifelong's penalty carries 1/2,
  Avalanche's does not), ``ewc_lambda`` 1: larger values make lifelong's
  per-sample Fisher penalty too stiff for SGD at lr 0.05 on Permuted MNIST-1D.
  lifelong's Fisher is the per-sample empirical Fisher (closed form for the MLP,
  ``torch.func`` vmap otherwise); Avalanche's is the mean over mini-batches of
  the squared *mini-batch* gradient (cheaper, and smaller by about the batch
  size): the same name, not the same estimator.
- ``lwf``: the same distillation (KL at temperature 2 on the seen classes, weight 1).
- ``si``: Avalanche 0.6.0's ``SynapticIntelligence`` is a no-op on CPU: it
  snapshots weights with ``param.detach().cpu()``, a *view* of the live CPU
  parameter, so every update it records is zero and its importances stay 0. The
  stock strategy is timed as ``si`` (Avalanche then does naive's work plus the
  plugin's bookkeeping); ``si-fixed`` times Avalanche with that copy fixed
  (``.clone()``) against lifelong's ``si`` with Avalanche's conventions
  (``nonnegative: false``, ``clip_to: 0.001``), the same computation on both sides.
  On CUDA, ``.cpu()`` copies, so there the two rows do the same work.

    python benchmarks/vs_avalanche.py            # full: 5 epochs, 5 repeats
    python benchmarks/vs_avalanche.py --quick    # 1 epoch, 2 repeats
    python benchmarks/vs_avalanche.py --scenarios digits --strategies naive \\
        --model mlp --hidden 1024 1024          # how the ratio moves with the model
    python benchmarks/vs_avalanche.py --device cuda   # both sides on the GPU

Target (issue 8): lifelong >= 3x faster than Avalanche for every strategy, final
average accuracy within 2 points.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from _device import device_name, require_device

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig, build_model
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, Stream, build_stream
from lifelong.scenarios.avalanche import to_avalanche_benchmark
from lifelong.strategies import build_strategy

SCENARIOS = {
    "digits": ScenarioConfig(source="digits", protocol="class_incremental", n_experiences=5),
    "pmnist1d": ScenarioConfig(
        source="mnist1d", protocol="domain_incremental", n_experiences=10, transform="permuted"
    ),
}
EWC_LAMBDA, SI_LAMBDA = 1.0, 10.0
# EWC: with the per-sample Fisher summed over the past experiences, lifelong lambda = 2 * 50
# makes plain SGD at lr 0.05 unstable on Permuted MNIST-1D and with the CNN
# (lr * lambda * sum F > 2: the run diverges); Avalanche's mini-batch Fisher is smaller.
# ewc_lambda 1 (lifelong lambda 2) is stable for both everywhere here.
# name -> (lifelong strategy, params), (Avalanche class, kwargs)
STRATEGIES: dict[str, tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    "naive": (("naive", {}), ("Naive", {})),
    "ewc": (("ewc", {"lambda": 2 * EWC_LAMBDA}), ("EWC", {"ewc_lambda": EWC_LAMBDA})),
    "lwf": (("lwf", {"lambda": 1.0, "temperature": 2.0}),
            ("LwF", {"alpha": 1.0, "temperature": 2.0})),
    "si": (("si", {"lambda": SI_LAMBDA}), ("SynapticIntelligence", {"si_lambda": SI_LAMBDA})),
    "si-fixed": (
        ("si", {"lambda": SI_LAMBDA, "nonnegative": False, "clip_to": 0.001}),
        ("SynapticIntelligence", {"si_lambda": SI_LAMBDA}),
    ),
}  # fmt: skip


@contextlib.contextmanager
def si_cpu_copy_fixed(enabled: bool) -> Iterator[None]:
    """Patch Avalanche's SI snapshot to copy on CPU (``.cpu()`` is a view there)."""
    from avalanche.training.plugins import SynapticIntelligencePlugin as SIP

    original = SIP.extract_weights
    if enabled:

        @torch.no_grad()
        def extract_weights(model: Any, target: Any, excluded: Any) -> None:
            for name, param in SIP.allowed_parameters(model, excluded):
                target[name].data = param.detach().cpu().flatten().clone()

        SIP.extract_weights = staticmethod(extract_weights)  # type: ignore[method-assign]
    try:
        yield
    finally:
        SIP.extract_weights = original  # type: ignore[method-assign]


def run_lifelong(
    stream: Stream, model: ModelConfig, training: TrainingConfig, strategy: str, seed: int
) -> float:
    """lifelong's Learner through the stream; returns the final average accuracy."""
    name, params = STRATEGIES[strategy][0]
    learner = Learner(stream, model, [build_strategy(name, params)], training, seed)
    return float(learner.fit()[-1].mean())


def run_avalanche(
    stream: Stream,
    bench: Any,
    model_cfg: ModelConfig,
    training: TrainingConfig,
    strategy: str,
    seed: int,
    evaluator: str = "lean",
) -> float:
    """Avalanche's strategy through the same stream; returns the final average accuracy.

    ``evaluator``: ``lean`` (accuracy per experience, no logger) or ``stock``
    (Avalanche's default evaluator and logger, printing to ``os.devnull``).
    """
    import avalanche.training as at
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    cls_name, kwargs = STRATEGIES[strategy][1]
    torch.manual_seed(seed)
    model = build_model(model_cfg, stream.input_shape, stream.n_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=training.lr)
    sink = open(os.devnull, "w")  # noqa: SIM115  (closed below)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        if evaluator == "lean":
            kwargs = {
                **kwargs,
                "evaluator": EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
            }
        cl = getattr(at, cls_name)(
            model=model,
            optimizer=optimizer,
            criterion=torch.nn.CrossEntropyLoss(),
            train_mb_size=training.batch_size,
            train_epochs=training.epochs,
            eval_mb_size=training.eval_batch_size,
            device=training.accelerator,
            eval_every=-1,
            **kwargs,
        )
        with si_cpu_copy_fixed(strategy == "si-fixed"):
            cl.eval(bench.test_stream)  # the untrained row, as lifelong computes it
            for exp in bench.train_stream:
                cl.train(exp, num_workers=0)
                cl.eval(bench.test_stream)
    sink.close()
    m = cl.evaluator.get_last_metrics()
    accs = [v for k, v in m.items() if k.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
    assert len(accs) == len(stream), sorted(m)
    return float(np.mean(accs))


def main() -> None:
    """Run both sides interleaved per (scenario, strategy) and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 epoch, 2 repeats")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both sides run")
    args = ap.parse_args()
    require_device(ap, args.device)
    if args.quick:
        args.epochs, args.repeats = 1, 2
    torch.set_num_threads(1)
    training = TrainingConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, accelerator=args.device
    )
    model = ModelConfig(name=args.model, hidden=args.hidden)
    print(
        f"model {args.model} {args.hidden}, SGD lr {args.lr}, batch {args.batch_size}, "
        f"{args.epochs} epochs, 1 thread, {device_name(args.device)}, "
        f"median of {args.repeats} interleaved repeats"
    )
    header = (
        f"{'scenario':<9} {'strategy':<9} {'lifelong s':>10} {'aval. lean s':>12} "
        f"{'ratio':>7} {'cpu':>7} {'aval. stock s':>13} {'ratio':>7} {'cpu':>7} "
        f"{'acc lifelong':>12} {'acc aval.':>9} {'d acc':>6}"
    )
    print(header)
    print("-" * len(header))
    for sc in args.scenarios:
        stream = build_stream(SCENARIOS[sc])
        bench = to_avalanche_benchmark(stream)
        sides = ("lifelong", "lean", "stock")

        def run(
            side: str, strategy: str, seed: int, stream: Stream = stream, bench: Any = bench
        ) -> float:
            if side == "lifelong":
                return run_lifelong(stream, model, training, strategy, seed)
            return run_avalanche(stream, bench, model, training, strategy, seed, side)

        for strategy in args.strategies:
            for side in sides:  # warm-up every path
                run(side, strategy, 0)
            wall: dict[str, list[float]] = {k: [] for k in sides}
            cpu: dict[str, list[float]] = {k: [] for k in sides}
            acc: dict[str, list[float]] = {k: [] for k in sides}
            for r in range(args.repeats):
                for side in sides:
                    t, c = time.perf_counter(), time.process_time()
                    acc[side].append(run(side, strategy, r))
                    wall[side].append(time.perf_counter() - t)
                    cpu[side].append(time.process_time() - c)
            w = {k: statistics.median(v) for k, v in wall.items()}
            c = {k: statistics.median(v) for k, v in cpu.items()}
            al, aa = 100 * float(np.mean(acc["lifelong"])), 100 * float(np.mean(acc["lean"]))
            assert np.allclose(acc["lean"], acc["stock"]), "the evaluator changed the accuracy"
            print(
                f"{sc:<9} {strategy:<9} {w['lifelong']:>10.3f} {w['lean']:>12.3f} "
                f"{w['lean'] / w['lifelong']:>6.2f}x {c['lean'] / c['lifelong']:>6.2f}x "
                f"{w['stock']:>13.3f} {w['stock'] / w['lifelong']:>6.2f}x "
                f"{c['stock'] / c['lifelong']:>6.2f}x {al:>11.1f}% {aa:>8.1f}% {al - aa:>+6.1f}",
                flush=True,
            )
    print("s: median wall time; ratio: Avalanche/lifelong wall time; cpu: the same ratio of")
    print("this process's CPU time (steadier when other work shares the cores); lean/stock:")
    print("Avalanche's accuracy-only evaluator / its default evaluator and logger")
    print("accuracies: mean final average accuracy over the repeats' seeds (0..repeats-1)")


if __name__ == "__main__":
    main()
