"""GPU packing: the same sweep with 1, 2, 4 and 8 trials sharing one GPU.

Ray Tune starts a trial when its resource request fits: a trial asking for
``gpu: 1/k`` lets k of them run on one GPU at once (each one's worker sees the
same device). For each k the script runs the same sweep (naive, l2, ewc, si on
Permuted MNIST-1D, ``--seeds`` seeds each, CUDA, one CPU per trial, every metric
logged to a fresh MLflow SQLite store) on one local Ray instance, and prints the
wall time, the throughput (trials per minute), the speed-up over k = 1, and the
GPU's mean utilisation and peak memory as ``nvidia-smi`` sampled them.

It needs a CUDA GPU and at least max(k) CPUs. ``--cpu-dry-run`` declares one
logical GPU to Ray and trains on the CPU: it checks the script's mechanics and
says nothing about a GPU.

    python benchmarks/gpu_packing.py                      # k = 1 2 4 8, 8 trials, 2 epochs
    python benchmarks/gpu_packing.py --per-gpu 1 8 --epochs 4
    python benchmarks/gpu_packing.py --cpu-dry-run --per-gpu 1 2 --epochs 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import ray
import torch
from _gpu_sampler import GpuSampler
from sweep_throughput import experiment, start_ray, sweep

from lifelong.scenarios import build_stream


def main() -> None:
    """Run the sweep once per packing factor and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seeds", type=int, default=2, help="seeds per strategy (4 strategies)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--cpu-dry-run", action="store_true", help="logical GPU, train on the CPU")
    args = ap.parse_args()
    if not args.cpu_dry_run and not torch.cuda.is_available():
        ap.error("no CUDA GPU here (use --cpu-dry-run to check the mechanics on a CPU)")
    cpus = os.cpu_count() or 1
    if not args.cpu_dry_run and cpus < max(args.per_gpu):
        ap.error(f"{max(args.per_gpu)} trials per GPU need as many CPUs; this machine has {cpus}")
    accelerator = "cpu" if args.cpu_dry_run else "cuda"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tmp = Path(tempfile.mkdtemp(prefix="llgpu_", dir="/tmp"))
    rows = []
    try:
        t_ray = start_ray(tmp / "ray", num_cpus=cpus, num_gpus=1 if args.cpu_dry_run else None)
        try:
            for k in args.per_gpu:
                exp = experiment(args.epochs, seeds=args.seeds, accelerator=accelerator, gpu=1 / k)
                stream = build_stream(exp.spec.scenario)
                with GpuSampler() as gpu:
                    run = sweep(exp, stream, tmp, f"k{k}")
                    wall, startup = run.wall, run.startup
                rows.append((k, len(exp.trials()), wall, startup, gpu.summary()))
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    device = torch.cuda.get_device_name(0) if not args.cpu_dry_run else "CPU (dry run)"
    print(f"{device}, {cpus} CPUs; Permuted MNIST-1D 10 exp, MLP 256-256, {args.epochs} epochs")
    print(f"Ray start {t_ray:.1f} s (once)")
    head = (
        f"{'trials/GPU':>10} {'trials':>6} {'wall s':>8} {'start-up s':>10} "
        f"{'trials/min':>10} {'speed-up':>8} {'GPU util':>8} {'peak MiB':>9}"
    )
    print(head)
    print("-" * len(head))
    base = rows[0][1] / rows[0][2] if rows else 1.0
    for k, n, wall, startup, gpu_summary in rows:
        rate = n / wall
        print(
            f"{k:>10} {n:>6} {wall:>8.1f} {startup:>10.1f} {60 * rate:>10.2f} "
            f"{rate / base:>7.2f}x {gpu_summary}"
        )
    print("trials/min: trials / wall time (start-up included); speed-up: over the first row")


if __name__ == "__main__":
    main()
