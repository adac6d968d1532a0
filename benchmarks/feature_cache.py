"""A sweep over a frozen backbone: the features computed once vs recomputed in every trial.

The sweep is K strategies (default naive, l2, ewc, lwf) on a frozen ImageNet
EfficientNet-Lite0 over class-incremental Split Fashion-MNIST. Two sides, run
in this process with the same learner:

  cached      what ``lifelong run`` does: ``encode_stream`` once, then each
              trial trains the head over the stored features;
  recomputed  each trial runs the frozen backbone on every batch (training and
              evaluation), as it would without the cache.

The sides are interleaved (for each strategy: its recomputed trial, then its
cached one); the cached side's total includes the one encoding pass. Prints
each side's seconds, the ratio recomputed / cached, and the largest difference
between the two sides' accuracy matrices (they should agree).

    python benchmarks/feature_cache.py                        # 96 px, 50 images per class
    python benchmarks/feature_cache.py --input-size 224 --device cuda
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _device import device_name, require_device

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.models.feature_cache import encode_stream
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig
from lifelong.scenarios.builder import build_stream
from lifelong.strategies import build_strategy


def trial(
    stream, model: ModelConfig, strategy: str, training: TrainingConfig
) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    learner = Learner(stream, model, [build_strategy(strategy)], training, seed=0)
    R = learner.fit()
    return time.perf_counter() - start, R


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["naive", "l2", "ewc", "lwf"])
    parser.add_argument("--train-per-class", type=int, default=50)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    require_device(parser, args.device)
    torch.set_num_threads(args.threads)
    options = {"train_per_class": args.train_per_class, "test_per_class": args.test_per_class}
    stream = build_stream(ScenarioConfig(preset="split_fmnist", options=options))
    model = ModelConfig(name="efficientnet_lite0", freeze="backbone", input_size=args.input_size)
    training = TrainingConfig(
        epochs=args.epochs, batch_size=32, optimizer="adam", lr=1e-3, accelerator=args.device
    )
    n_images = sum(e.n_train + e.n_test for e in stream)
    print(
        f"{len(args.strategies)} trials on a frozen EfficientNet-Lite0 at {args.input_size} px, "
        f"{n_images:,} images, {args.epochs} epoch(s), {device_name(args.device)}"
    )
    start = time.perf_counter()
    encoded = encode_stream(stream, model, device=args.device)
    encode_s = time.perf_counter() - start
    rows, cached_s, recomputed_s, worst = [], encode_s, 0.0, 0.0
    for name in args.strategies:
        t_full, R_full = trial(stream, model, name, training)
        t_cached, R_cached = trial(encoded, model, name, training)
        recomputed_s += t_full
        cached_s += t_cached
        worst = max(worst, float(np.nanmax(np.abs(R_full - R_cached))))
        rows.append((name, t_full, t_cached, float(np.mean(R_cached[-1]))))
    print(f"{'trial':<8} {'recomputed s':>13} {'cached s':>9} {'final acc':>10}")
    for name, t_full, t_cached, acc in rows:
        print(f"{name:<8} {t_full:>13.1f} {t_cached:>9.2f} {acc:>10.3f}")
    print(f"encoding once: {encode_s:.1f} s")
    print(
        f"sweep: recomputed {recomputed_s:.1f} s, cached {cached_s:.1f} s (encoding included): "
        f"{recomputed_s / cached_s:.2f}x faster cached"
    )
    print(f"largest |R_recomputed - R_cached|: {worst:.4f}")


if __name__ == "__main__":
    main()
