"""Filling one GPU with N trials: k processes sharing it, or the N seeds vectorised.

The same N trials (``--strategy`` on Permuted MNIST-1D, 5 experiences, MLP
256-256, seeds 0..N-1) run three ways on one device: in k worker processes that
share it (k = 1, 2, 4, 8; each process trains its share of the seeds one after
another, which is what Ray Tune's ``gpu: 1/k`` gives each of k concurrent
trials), and as one :class:`VectorizedLearner` of all N seeds in one process.
Every worker builds the stream and touches the device before a barrier; the
clock starts at the barrier, so process and CUDA start-up are not counted.
``nvidia-smi`` samples the GPU's utilisation and memory meanwhile.

This is the packing measurement without Ray (``benchmarks/gpu_packing.py`` runs
it through Ray Tune and MLflow, which need Ray's 76 MiB wheel on the machine).

    python benchmarks/gpu_sharing.py --device cuda               # N = 32, k = 1 2 4 8
    python benchmarks/gpu_sharing.py --device cpu --trials 4 --processes 1 2   # mechanics
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

import torch
from _device import device_name, require_device
from _gpu_sampler import GpuSampler

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.platform.vectorized import VectorizedLearner
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import build_strategy

PARAMS: dict[str, dict[str, Any]] = {"naive": {}, "l2": {"lambda": 0.1}, "ewc": {"lambda": 1.0}}


def _setup(args: dict[str, Any]) -> tuple[Any, ModelConfig, TrainingConfig]:
    torch.set_num_threads(1)
    stream = build_stream(
        ScenarioConfig(
            source="mnist1d",
            protocol="domain_incremental",
            transform="permuted",
            n_experiences=5,
            seed=0,
        )
    )
    model = ModelConfig(name="mlp", hidden=[256, 256])
    training = TrainingConfig(
        epochs=args["epochs"], batch_size=32, lr=0.05, momentum=0.9, accelerator=args["device"]
    )
    return stream, model, training


def _worker(seeds: list[int], args: dict[str, Any], barrier: Any, done: Any) -> None:
    """Train ``seeds`` one after another once every worker is ready."""
    stream, model, training = _setup(args)
    strategy = args["strategy"]
    Learner(stream, model, [build_strategy(strategy, PARAMS[strategy])], training, 0)  # CUDA up
    barrier.wait()
    for seed in seeds:
        Learner(stream, model, [build_strategy(strategy, PARAMS[strategy])], training, seed).fit()
    done.put(time.perf_counter())


def shared(k: int, n: int, args: dict[str, Any]) -> float:
    """Wall seconds for ``n`` trials in ``k`` processes sharing the device."""
    ctx = mp.get_context("spawn")
    barrier, done = ctx.Barrier(k + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(list(range(i, n, k)), args, barrier, done))
        for i in range(k)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    ends = [done.get() for _ in procs]
    for p in procs:
        p.join()
    return max(ends) - start


def vectorised(n: int, args: dict[str, Any]) -> float:
    """Wall seconds for ``n`` seeds as one vectorised program (after a warm-up)."""
    stream, model, training = _setup(args)
    strategy = args["strategy"]
    VectorizedLearner(
        stream, model, lambda: [build_strategy(strategy, PARAMS[strategy])], training, [0]
    )
    start = time.perf_counter()
    learner = VectorizedLearner(
        stream,
        model,
        lambda: [build_strategy(strategy, PARAMS[strategy])],
        training,
        list(range(n)),
    )
    learner.fit()
    if args["device"] == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    """Print one row per way of running the N trials."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--strategy", default="naive", choices=sorted(PARAMS))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    ns = ap.parse_args()
    require_device(ap, ns.device)
    args = {"epochs": ns.epochs, "device": ns.device, "strategy": ns.strategy}
    n = ns.trials
    rows = []
    for k in ns.processes:
        with GpuSampler() as gpu:
            wall = shared(k, n, args)
        rows.append((f"{k} process{'es' if k > 1 else ''}", wall, gpu.summary()))
        print(f"  {rows[-1][0]}: {wall:.1f} s", flush=True)
    with GpuSampler() as gpu:
        wall = vectorised(n, args)
    rows.append((f"vectorised S={n}", wall, gpu.summary()))
    print(
        f"{device_name(ns.device)}; {n} {ns.strategy} trials, Permuted MNIST-1D 5 exp, "
        f"MLP 256-256, {ns.epochs} epoch(s)"
    )
    head = (
        f"{'how':<18}{'wall s':>8}{'trials/min':>12}{'speed-up':>10}{'GPU util':>9}{'peak MiB':>10}"
    )
    print(head)
    print("-" * len(head))
    base = rows[0][1]
    for how, wall, summary in rows:
        print(f"{how:<18}{wall:>8.1f}{60 * n / wall:>12.1f}{base / wall:>9.2f}x {summary}")
    print("speed-up: over the first row; GPU util: nvidia-smi's mean while the row ran")


if __name__ == "__main__":
    main()
