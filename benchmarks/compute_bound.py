"""Compute-bound training: channels-last, bf16 autocast, fused optimizers, torch.compile.

For three models whose arithmetic dominates a step, each option of
``training`` (alone, then the helpful ones together) is timed through lifelong's
``Learner`` and through a hand-written loop given the same option by hand
(``pretrained_fine_tuning.run_bare``: the same model, initial weights, batch
order and optimizer), with Avalanche 0.6's ``Naive`` in its default fp32 setting
for scale. Workloads (class-incremental, 5 experiences, naive fine-tuning, every
test set evaluated before training and after each experience):

- ``mlp``: Split-Digits, MLP 64-1024-1024-10, SGD lr 0.05 momentum 0.9, batch 32,
  5 epochs;
- ``cnn``: Split Fashion-MNIST (28 x 28; 200 train / 100 test images per class),
  the built-in CNN 32-64, Adam lr 3e-3, batch 32, 2 epochs;
- ``efficientnet``: the same stream at 64 px (50 train / 25 test per class), the
  packaged ImageNet EfficientNet-Lite0 fine-tuned whole, Adam lr 1e-3, batch 32,
  1 epoch, as ``pretrained_fine_tuning.py`` does with more images; its default
  variants leave out ``fused`` and ``compile``.

Variants: ``default`` (fp32, contiguous, torch's default optimizer kernel,
eager), ``channels_last``, ``bf16`` (``precision: bf16-mixed``), ``fused``
(``fused_optimizer``), ``compile``, and ``best`` (channels-last where the model
has convolutions, bf16 and fused). Every variant's bare and lifelong runs and
Avalanche's run are interleaved repeat by repeat after one untimed warm-up
round, whose time the ``first s`` column shows (it holds ``torch.compile``'s
compilation; later runs in the process reuse the compiled code).

    python benchmarks/compute_bound.py --workloads mlp cnn   # ~4 min
    python benchmarks/compute_bound.py --workloads efficientnet --threads 2 --repeats 2
    python benchmarks/compute_bound.py --workloads mlp --device cuda --no-avalanche
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from _device import device_name, require_device
from pretrained_fine_tuning import run_avalanche, run_bare, run_lifelong

from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, Stream
from lifelong.scenarios.avalanche import to_avalanche_benchmark
from lifelong.scenarios.builder import build_stream

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16-mixed"},
    "fused": {"fused_optimizer": True},
    "compile": {"compile": True},
    "best": {"channels_last": True, "precision": "bf16-mixed", "fused_optimizer": True},
}


@dataclass
class Workload:
    """One model on one stream, with its training settings."""

    title: str
    stream: Callable[[], Stream]
    model: ModelConfig
    training: dict[str, Any]
    convolutional: bool
    variants: tuple[str, ...] = tuple(VARIANTS)


def split_fmnist(train: int, test: int) -> Callable[[], Stream]:
    """Split Fashion-MNIST with ``train``/``test`` images per class."""
    options = {"train_per_class": train, "test_per_class": test}
    return lambda: build_stream(ScenarioConfig(preset="split_fmnist", options=options))


WORKLOADS: dict[str, Workload] = {
    "mlp": Workload(
        "Split-Digits, MLP 64-1024-1024-10, SGD lr 0.05 momentum 0.9, batch 32, 5 epochs",
        lambda: build_stream(ScenarioConfig(source="digits", n_experiences=5, seed=0)),
        ModelConfig(hidden=[1024, 1024]),
        {"epochs": 5, "lr": 0.05, "momentum": 0.9},
        convolutional=False,
    ),
    "cnn": Workload(
        "Split Fashion-MNIST 28 px (200/100 per class), CNN 32-64, Adam lr 3e-3, batch 32, "
        "2 epochs",
        split_fmnist(200, 100),
        ModelConfig(name="cnn", hidden=[32, 64]),
        {"epochs": 2, "optimizer": "adam", "lr": 3e-3},
        convolutional=True,
    ),
    "efficientnet": Workload(
        "Split Fashion-MNIST 64 px (50/25 per class), EfficientNet-Lite0 (ImageNet) fine-tuned "
        "whole, Adam lr 1e-3, batch 32, 1 epoch",
        split_fmnist(50, 25),
        ModelConfig(name="efficientnet_lite0", input_size=64),
        {"epochs": 1, "optimizer": "adam", "lr": 1e-3},
        convolutional=True,
        variants=("default", "channels_last", "bf16", "best"),
    ),
}


def timed(run: Callable[..., np.ndarray], *args: Any) -> tuple[float, float, np.ndarray]:
    """Wall and CPU seconds of ``run(*args)``, and its accuracy matrix."""
    t, c = time.perf_counter(), time.process_time()
    R = run(*args)
    return time.perf_counter() - t, time.process_time() - c, R


def measure(
    name: str, w: Workload, variants: list[str], repeats: int, device: str, avalanche: bool
) -> None:
    """Time every variant of workload ``w`` (bare and lifelong) and Avalanche; print the table."""
    stream = w.stream()
    bench = to_avalanche_benchmark(stream) if avalanche else None
    runs: dict[str, tuple[Callable[..., np.ndarray], TrainingConfig]] = {}
    for v in variants:
        if v == "channels_last" and not w.convolutional:
            continue  # no 4-D weights: nothing changes
        options = dict(VARIANTS[v])
        if not w.convolutional:
            options.pop("channels_last", None)
        training = TrainingConfig(**w.training, **options, batch_size=32, accelerator=device)
        runs[f"bare {v}"] = (run_bare, training)
        runs[f"lifelong {v}"] = (run_lifelong, training)
    if avalanche:
        runs["avalanche default"] = (
            run_avalanche,
            TrainingConfig(**w.training, accelerator=device),
        )
    first: dict[str, float] = {}
    for key, (run, training) in runs.items():  # warm-up; compile happens here
        first[key] = timed(run, stream, w.model, training, 0, bench)[0]
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    Rs: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for key, (run, training) in runs.items():
            t, c, Rs[key] = timed(run, stream, w.model, training, 0, bench)
            wall[key].append(t)
            cpu[key].append(c)
    med = {k: statistics.median(v) for k, v in wall.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"\n[{name}] {w.title}; {device_name(device)}, median of {repeats} interleaved repeats")
    head = (
        f"{'variant':<14} {'bare s':>7} {'lifelong s':>10} {'first s':>8} {'/bare':>6} "
        f"{'cpu /bare':>9} {'speed-up':>8} {'aval./ll':>8} {'final avg':>9} {'max |dR|':>8} "
        f"{'vs default':>10}"
    )
    print(head)
    print("-" * len(head))
    base = med["lifelong default"] if "lifelong default" in med else None
    R0 = Rs.get("lifelong default")
    aval = med.get("avalanche default", float("nan"))
    for v in variants:
        b, ll = f"bare {v}", f"lifelong {v}"
        if ll not in med:
            continue
        R = Rs[ll]
        print(
            f"{v:<14} {med[b]:>7.3f} {med[ll]:>10.3f} {first[ll]:>8.2f} "
            f"{med[ll] / med[b]:>5.2f}x {cmed[ll] / cmed[b]:>8.2f}x "
            f"{(base / med[ll] if base else float('nan')):>7.2f}x {aval / med[ll]:>7.2f}x "
            f"{R[-1].mean():>9.3f} {np.abs(R - Rs[b]).max():>8.4f} "
            f"{(np.abs(R - R0).max() if R0 is not None else float('nan')):>10.4f}"
        )
    if not avalanche:
        return
    print(
        f"{'avalanche':<14} {'':>7} {aval:>10.3f} {first['avalanche default']:>8.2f} "
        f"{'':>6} {'':>9} {(base / aval if base else float('nan')):>7.2f}x {1:>7.2f}x "
        f"{Rs['avalanche default'][-1].mean():>9.3f}"
    )


def main() -> None:
    """Measure the chosen workloads and variants."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="default: each workload's own"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where all sides run")
    ap.add_argument("--no-avalanche", action="store_true", help="leave Avalanche's side out")
    args = ap.parse_args()
    require_device(ap, args.device)
    torch.set_num_threads(args.threads)
    for name in args.workloads:
        w = WORKLOADS[name]
        variants = args.variants or list(w.variants)
        measure(name, w, variants, args.repeats, args.device, not args.no_avalanche)
    print(
        "\n/bare: lifelong's median wall time over the bare loop's with the same option; "
        "speed-up: lifelong default's time over this variant's; aval./ll: Avalanche's (fp32, "
        "default) over this variant's; first s: the warm-up run (torch.compile compiles "
        "there); max |dR|: lifelong vs the bare loop with the same option (0: the same work, "
        "bit for bit); vs default: this variant's R vs lifelong default's"
    )


if __name__ == "__main__":
    main()
