"""Vectorised trials: S seeds as one program vs. the same S seeds trained one by one.

Same stream (Permuted MNIST-1D, 5 experiences), model (MLP 40-256-256-10),
optimizer (SGD, lr 0.05, momentum 0.9), batch size 32, epochs and strategy. For
each S the script trains the S seeds as S separate :class:`Learner` runs, one
after another, and as one :class:`VectorizedLearner`
(:mod:`lifelong.platform.vectorized`), the two sides interleaved in every round.
It prints the median wall time of each side, the throughput in
trial-experiences per second, the speed-up, and the largest difference between
the two sides' accuracy matrices (rounding: a batched matrix product sums in
another order, which can flip an argmax now and then).

On the CPU both sides get the same threads (``--threads``, default 1: what one
trial of a sweep gets per CPU), so the speed-up is per core: the S trials'
matrix products batched into one ``bmm`` per layer and the per-step Python and
kernel-launch overhead paid once instead of S times. On a GPU a small MLP's
step is launch-bound, which is where stacking S trials pays most.

    python benchmarks/vectorized_trials.py                        # S = 1 4 16 64, naive and ewc
    python benchmarks/vectorized_trials.py --sizes 1 4 --repeats 1 --epochs 1
    python benchmarks/vectorized_trials.py --device cuda --sizes 1 4 16 32 64

Target (issue 24): at S = 32 on a GPU, >= 10x the separate trials' throughput.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _device import device_name, require_device

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.platform.vectorized import VectorizedLearner
from lifelong.scenarios import ScenarioConfig, Stream, build_stream
from lifelong.strategies import build_strategy

PARAMS = {
    "naive": {},
    "l2": {"lambda": 0.1},
    "ewc": {"lambda": 1.0},
    "si": {"lambda": 100.0},
    "mas": {"lambda": 0.1},
    "spectral": {"lambda": 1e-4},
    "wasserstein_init": {"lambda": 1e-3},
    "lwf": {"lambda": 1.0},
}


def separate(
    stream: Stream, model: ModelConfig, training: TrainingConfig, strategy: str, seeds: list[int]
) -> tuple[float, np.ndarray]:
    """Train each seed on its own; return the wall time and the stacked ``R``."""
    start = time.perf_counter()
    rs = [
        Learner(stream, model, [build_strategy(strategy, PARAMS[strategy])], training, s).fit()
        for s in seeds
    ]
    return time.perf_counter() - start, np.stack(rs)


def vectorised(
    stream: Stream, model: ModelConfig, training: TrainingConfig, strategy: str, seeds: list[int]
) -> tuple[float, np.ndarray]:
    """Train the seeds as one program; return the wall time and ``R`` ``(S, T, T)``."""
    start = time.perf_counter()
    learner = VectorizedLearner(
        stream, model, lambda: [build_strategy(strategy, PARAMS[strategy])], training, seeds
    )
    r = learner.fit()
    return time.perf_counter() - start, r


def main() -> None:
    """Print the table for every strategy and S."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--strategies", nargs="+", default=["naive", "ewc"], choices=sorted(PARAMS))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--experiences", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    require_device(ap, args.device)
    torch.set_num_threads(args.threads)
    stream = build_stream(
        ScenarioConfig(
            source="mnist1d",
            protocol="domain_incremental",
            transform="permuted",
            n_experiences=args.experiences,
            seed=0,
        )
    )
    model = ModelConfig(name="mlp", hidden=[256, 256])
    training = TrainingConfig(
        epochs=args.epochs, batch_size=32, lr=0.05, momentum=0.9, accelerator=args.device
    )
    t = args.experiences
    print(
        f"{device_name(args.device)}, {args.threads} thread(s); Permuted MNIST-1D, {t} "
        f"experiences, MLP 256-256, {args.epochs} epoch(s), median of {args.repeats}"
    )
    print(
        f"{'strategy':<9}{'S':>4}{'separate s':>12}{'vectorised s':>14}{'sep tr-exp/s':>14}"
        f"{'vec tr-exp/s':>14}{'speed-up':>10}{'max |dR|':>10}"
    )
    for strategy in args.strategies:
        vectorised(stream, model, training, strategy, [0])  # warm-up (kernels, caches)
        separate(stream, model, training, strategy, [0])
        for size in args.sizes:
            seeds = list(range(size))
            sep_t, vec_t, diff = [], [], 0.0
            for r in range(args.repeats):  # interleaved, the order alternating per round
                sides = [separate, vectorised] if r % 2 == 0 else [vectorised, separate]
                out = {f.__name__: f(stream, model, training, strategy, seeds) for f in sides}
                sep_t.append(out["separate"][0])
                vec_t.append(out["vectorised"][0])
                diff = max(
                    diff, float(np.nanmax(np.abs(out["separate"][1] - out["vectorised"][1])))
                )
            s_med, v_med = statistics.median(sep_t), statistics.median(vec_t)
            print(
                f"{strategy:<9}{size:>4}{s_med:>12.2f}{v_med:>14.2f}{size * t / s_med:>14.1f}"
                f"{size * t / v_med:>14.1f}{s_med / v_med:>9.2f}x{diff:>10.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
