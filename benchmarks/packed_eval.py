"""Evaluation packed across test sets vs one experience at a time (issue 24 item 3).

After each experience the learner scores every experience's test set (a row of
R). One experience at a time, a stream of T experiences costs T forward passes
per row however small each test set is; packed (``Learner.pack_evaluation``,
the default), the test sets go back to back in batches of
``training.eval_batch_size``, so the body runs on full batches and the head
and accuracy see each experience's own rows. The script trains one learner on
each stream and times ``evaluate()`` both ways, interleaved, on one thread,
and checks that the two rows are identical.

    python benchmarks/packed_eval.py
    python benchmarks/packed_eval.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream

STREAMS = {
    "Split-Digits, 5 experiences": ScenarioConfig(source="digits", n_experiences=5, seed=0),
    "Gaussian domains, 100 experiences x 20 test samples": ScenarioConfig(
        source="gaussian",
        protocol="domain_incremental",
        n_experiences=100,
        seed=0,
        options={"n_classes": 2, "n_features": 32, "n_train_per_class": 10, "n_test_per_class": 10},
    ),
    "Split Fashion-MNIST, 5 x 200 test images, CNN 32-64": ScenarioConfig(
        preset="split_fmnist", options={"train_per_class": 20, "test_per_class": 100}
    ),
}
MODELS = {"CNN": ModelConfig(name="cnn", hidden=[32, 64])}


def timed(learner: Learner, packed: bool, repeats: int) -> tuple[float, np.ndarray]:
    """Median seconds of one ``evaluate()`` call, and its row."""
    Learner.pack_evaluation = packed
    times, row = [], np.array([])
    for _ in range(repeats):
        start = time.perf_counter()
        row = learner.evaluate()
        times.append(time.perf_counter() - start)
    return statistics.median(times), row


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(1)
    training = TrainingConfig(epochs=1, batch_size=32, accelerator="cpu")
    print(
        f"CPU, 1 thread; MLP 256-256 unless named; eval_batch_size {training.eval_batch_size}; "
        f"median of {args.repeats}, sides interleaved"
    )
    print(
        f"{'stream':<54}{'per experience ms':>18}{'packed ms':>11}{'speed-up':>10}{'same row':>9}"
    )
    for name, scenario in STREAMS.items():
        stream = build_stream(scenario)
        model = next((m for k, m in MODELS.items() if k in name), ModelConfig(hidden=[256, 256]))
        learner = Learner(stream, model, [], training, 0)
        learner.train_experience(0)
        each, packed, rows = [], [], []
        for r in range(3):  # rounds, the order alternating
            for side in [False, True] if r % 2 == 0 else [True, False]:
                t, row = timed(learner, side, args.repeats)
                (packed if side else each).append(t)
                rows.append(row)
        Learner.pack_evaluation = True
        same = all(np.array_equal(rows[0], row) for row in rows)
        e, p = statistics.median(each), statistics.median(packed)
        print(f"{name:<54}{1e3 * e:>18.2f}{1e3 * p:>11.2f}{e / p:>9.2f}x{str(same):>9}")


if __name__ == "__main__":
    main()
