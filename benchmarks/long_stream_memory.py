"""Peak memory of a 1,000-experience stream against a 10-experience one (target: within 10 %).

Each side trains a learner over Permuted Fashion-MNIST (the ``permuted_fmnist``
preset, Debian's real images) in a fresh process, so its peak resident set size
(``ru_maxrss``) is its own: the same data, model and evaluation schedule
(after every 100th experience and the last, on the seen experiences), only the
number of experiences differs. A third process builds the 1,000 experiences up
front as tensors, as streams were built before they were derived on demand,
to show what that costs. Usage::

    python benchmarks/long_stream_memory.py [--train-per-class 30] [--experiences 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import dataclasses, json, resource, sys, time
import torch
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import Experience, ScenarioConfig, build_stream
from lifelong.strategies import build_strategy

n, per_class, eager = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "eager"
torch.set_num_threads(1)
cfg = ScenarioConfig(
    preset="permuted_fmnist",
    n_experiences=n,
    options={"train_per_class": per_class, "test_per_class": per_class},
)
stream = build_stream(cfg)
if eager:  # every experience built as tensors up front
    xs = tuple(Experience(e.index, e.task_id, e.classes, e.x_train, e.y_train, e.x_test,
                          e.y_test) for e in stream.experiences)
    stream = dataclasses.replace(stream, experiences=xs)
training = TrainingConfig(epochs=1, batch_size=30, lr=0.01, accelerator="cpu",
                          eval_every=100, eval_on="seen")
start = time.perf_counter()
learner = Learner(stream, ModelConfig(hidden=[100]), [build_strategy("l2")], training, 0)
learner.fit()
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": peak_kib / 1024, "seconds": time.perf_counter() - start,
                  "final_acc": float(learner.R[-1, : n].mean())}))
"""


def measure(n: int, per_class: int, eager: bool, fixed_mmap: bool = False) -> dict[str, float]:
    """Run one side in a fresh interpreter and return its peak RSS, time and accuracy.

    ``fixed_mmap``: run with glibc's mmap threshold fixed at 128 KiB; by default
    glibc raises it as large blocks are freed, and later ~1 MB experience tensors
    then come from a heap that does not shrink (RSS wanders up by a few hundred MB).
    """
    mode = "eager" if eager else "lazy"
    env = dict(os.environ, **({"MALLOC_MMAP_THRESHOLD_": "131072"} if fixed_mmap else {}))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(per_class), mode],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure the three sides and print the table with the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=30)
    parser.add_argument("--experiences", type=int, default=1000)
    args = parser.parse_args()
    started = time.perf_counter()
    short = measure(10, args.train_per_class, eager=False)
    long = measure(args.experiences, args.train_per_class, eager=False)
    eager = measure(args.experiences, args.train_per_class, eager=True)
    short_fixed = measure(10, args.train_per_class, eager=False, fixed_mmap=True)
    long_fixed = measure(args.experiences, args.train_per_class, eager=False, fixed_mmap=True)
    rows = [
        ("10 experiences, on demand", short),
        (f"{args.experiences} experiences, on demand", long),
        (f"{args.experiences} experiences, built up front", eager),
        ("10, on demand, fixed mmap threshold", short_fixed),
        (f"{args.experiences}, on demand, fixed mmap threshold", long_fixed),
    ]
    print(
        f"Permuted Fashion-MNIST, {args.train_per_class} train + {args.train_per_class} "
        "test images per class per experience, MLP [100], l2, 1 epoch, CPU, 1 thread"
    )
    print(f"{'stream':<42} {'peak RSS (MiB)':>15} {'train+eval (s)':>15}")
    for name, r in rows:
        print(f"{name:<42} {r['peak_mib']:>15.0f} {r['seconds']:>15.1f}")
    print(
        f"peak memory, {args.experiences} vs 10 experiences (on demand): "
        f"{long['peak_mib'] / short['peak_mib']:.3f}x (target <= 1.10)"
    )
    print(
        f"  with MALLOC_MMAP_THRESHOLD_=131072: "
        f"{long_fixed['peak_mib'] / short_fixed['peak_mib']:.3f}x"
    )
    print(
        f"peak memory, built up front vs on demand ({args.experiences}): "
        f"{eager['peak_mib'] / long['peak_mib']:.2f}x"
    )
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
