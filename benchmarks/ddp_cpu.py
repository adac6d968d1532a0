"""Data-parallel training over 2 CPU workers against 1: tokens (or examples) per second.

    python benchmarks/ddp_cpu.py                    # SmolLM2-135M on a text task, 2 rounds
    python benchmarks/ddp_cpu.py --model mlp        # an MLP 1024-1024, quicker

Three sides train the same learner (the ``naive`` strategy) on the same
experience, each inside a Ray Train ``TorchTrainer`` as a ``resources.workers``
trial does (:mod:`lifelong.cluster.data_parallel`):

- ``1w x 1t``: one worker, one torch thread (the one-process learner);
- ``2w x 1t``: two workers of one thread each, the batch split between them and
  the gradients summed over gloo after every backward pass (DDP);
- ``1w x 2t``: one worker with two threads: the same two cores as ``2w x 1t``.

Each side trains the experience once to warm up, then ``--repeats`` times,
timed inside the worker (start-up excluded; it is printed apart). The rounds
alternate the sides (1w1t, 2w1t, 1w2t, 1w1t, ...) so that machine noise hits
all alike. Tokens are the padded positions processed (batch x length per
step); for the MLP, examples. Prints every round, then the median throughput
of each side and the ratios 2w x 1t / 1w x 1t and 2w x 1t / 1w x 2t.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import ray
import torch
from lm_vs_hf import EXPERIMENT as TEXT  # the same SmolLM2 experiment (benchmarks/)
from ray.util.queue import Queue

from lifelong.cluster.sweep import ensure_ray
from lifelong.platform.data_parallel import DataParallel
from lifelong.platform.learner import Learner
from lifelong.platform.spec import build_checked_stream, parse_experiment
from lifelong.strategies import build_strategy

MLP = """
seeds: [0]
scenario:
  source: gaussian
  n_experiences: 1
  options: {{n_classes: 2, n_features: 1024, n_train_per_class: {half}, n_test_per_class: 4}}
model: {{hidden: [1024, 1024]}}
training: {{epochs: 1, batch_size: {batch}, optimizer: sgd, lr: 0.01}}
strategies: [naive]
"""

SIDES = (("1w x 1t", 1, 1), ("2w x 1t", 2, 1), ("1w x 2t", 1, 2))


def _side(config: dict[str, Any]) -> None:
    """One Ray Train worker: warm up on the experience, then time ``repeats`` passes."""
    import ray.train

    torch.set_num_threads(config["threads"])
    exp = parse_experiment(config["text"])
    stream = build_checked_stream(exp)
    world = ray.train.get_context().get_world_size()
    parallel = DataParallel.from_process_group() if world > 1 else None
    strategies = [build_strategy("naive", {})]
    learner = Learner(stream, exp.spec.model, strategies, exp.spec.training, 0, parallel)
    learner.train_experience(0)
    seconds = []
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        learner.train_experience(0)
        seconds.append(time.perf_counter() - start)
    x = learner.experiences[0].x_train
    units = x.shape[0] * (x.shape[1] if x.dtype == torch.long else 1)
    if ray.train.get_context().get_world_rank() == 0:
        config["out"].put((seconds, units))


def run_side(workers: int, threads: int, config: dict[str, Any]) -> tuple[float, float]:
    """(units per second, median over repeats; wall seconds of the whole Train run)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Queue(actor_options={"num_cpus": 0})
    start = time.perf_counter()
    TorchTrainer(
        _side,
        train_loop_config=config | {"threads": threads, "out": out},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": threads}),
        run_config=RunConfig(name=f"ddp-bench-{time.time_ns()}", storage_path="/tmp/ddp-bench"),
    ).fit()
    wall = time.perf_counter() - start
    seconds, units = out.get(timeout=10)
    return units / statistics.median(seconds), wall


def main() -> None:
    """Run the interleaved rounds and print throughput and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["smollm2", "mlp"], default="smollm2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per side and round")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per pass")
    ap.add_argument("--batch", type=int, default=None, help="8 (smollm2) or 256 (mlp)")
    args = ap.parse_args()
    batch = args.batch or (8 if args.model == "smollm2" else 256)
    n = args.steps * batch
    text = TEXT.format(n_train=n, batch=batch) if args.model == "smollm2" else MLP
    text = text.format(half=n // 2, batch=batch) if args.model == "mlp" else text
    unit = "tokens/s" if args.model == "smollm2" else "examples/s"
    ensure_ray(num_cpus=2)
    config = {"text": text, "repeats": args.repeats}
    rates: dict[str, list[float]] = {name: [] for name, _, _ in SIDES}
    print(f"{args.model}: {args.steps} steps of batch {batch} per pass, {unit}")
    for r in range(args.rounds):
        for name, workers, threads in SIDES:
            rate, wall = run_side(workers, threads, config)
            rates[name].append(rate)
            print(f"round {r}  {name}: {rate:10.1f} {unit}  (Train run {wall:.1f} s with start-up)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"median {k}: {v:.1f} {unit}")
    print(f"ratio 2w x 1t / 1w x 1t: {med['2w x 1t'] / med['1w x 1t']:.3f}")
    print(f"ratio 2w x 1t / 1w x 2t: {med['2w x 1t'] / med['1w x 2t']:.3f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
