"""Training images per second: lifelong's in-memory path, its streaming path, Avalanche's loaders.

The same class-incremental Fashion-MNIST stream (Debian's files, read by the
``fashion_mnist`` source; ``--train-per-class`` / ``--test-per-class`` keep it
small), the same small CNN (the built-in ``cnn``, built from the same seed:
identical initial weights), SGD, batch size and epochs, in one process with
``--threads`` intra-op threads; the sides are interleaved in every repeat and
the medians are reported:

- ``memory``: ``Learner`` with ``data_on_device: always``: each experience moved
  to the device once, batches indexed from a seeded permutation (the fast path);
- ``stream wN``: ``data_on_device: never``, ``loader_workers: N``: each
  experience stays on the host and reaches the device through
  ``lifelong.platform.loader`` (a DataLoader over the same permutation's
  batches; pinned memory on CUDA);
- ``avalanche wN``: Avalanche 0.6's ``Naive`` strategy, ``train(experience,
  num_workers=N)``: its own DataLoader over in-memory tensor datasets, with an
  accuracy-only evaluator and no logger (``eval_every=-1``: no evaluation while
  training).

Only training is timed (every experience, in order); ``img/s`` is epochs x
training images / that time, ``ratio`` is ``img/s`` over the memory side's.
``wait`` (streaming only) is the time the training loop spent blocked in the
loader's ``next()`` over the training time. ``acc`` is the final average
accuracy over the test sets (lifelong's evaluation; for Avalanche the same
function on its model): on the same batches the memory and stream sides agree.
With ``--augment``, the streaming and Avalanche sides augment each training
sample (the same ``transforms.v2`` steps: ``scenario.augment`` for lifelong,
the datasets' train transform for Avalanche); the memory side cannot augment
and stays the unaugmented reference.

    python benchmarks/streaming.py                    # ~1-2 minutes on 2 CPU cores
    python benchmarks/streaming.py --augment          # per-sample flip + crop
    python benchmarks/streaming.py --device cuda --train-per-class 6000 --epochs 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings
from typing import Any

import numpy as np
import torch
from _device import device_name, require_device

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig, build_model
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, Stream, build_stream
from lifelong.scenarios.augment import build_augment

AUGMENT = ["horizontal_flip", {"random_crop": {"padding": 2}}]


def sync(device: str) -> None:
    """Wait for the GPU's queued work (timings end there)."""
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def accuracy(model: torch.nn.Module, stream: Stream, device: str, bs: int = 1024) -> float:
    """Mean test accuracy over the experiences (the last row of R)."""
    model.eval()
    accs = []
    for e in stream:
        correct = 0
        for s in range(0, e.n_test, bs):
            logits = model(e.x_test[s : s + bs].to(device), e.task_id)
            correct += int((logits.argmax(1).cpu() == e.y_test[s : s + bs]).sum())
        accs.append(correct / e.n_test)
    model.train()
    return float(np.mean(accs))


def run_lifelong(
    stream: Stream, model: ModelConfig, training: TrainingConfig, seed: int, device: str
) -> tuple[float, float, float]:
    """Train every experience; return (training seconds, seconds waiting for data, accuracy)."""
    learner = Learner(stream, model, [], training, seed)
    sync(device)
    start = time.perf_counter()
    for i in range(len(stream)):
        learner.train_experience(i)
    sync(device)
    seconds = time.perf_counter() - start
    wait = float("nan") if training.data_on_device == "always" else learner.data_wait_s
    return seconds, wait, float(learner.evaluate().mean())


def avalanche_benchmark(stream: Stream, augment: bool) -> Any:
    """An Avalanche benchmark over the stream's tensors (a train transform when augmenting)."""
    from avalanche.benchmarks.scenarios import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    transform = build_augment(AUGMENT, stream.input_shape) if augment else None

    def dataset(x: torch.Tensor, y: torch.Tensor, task: int, train: bool) -> Any:
        return _make_taskaware_tensor_classification_dataset(
            x,
            y,
            task_labels=torch.full_like(y, task),
            transform=transform.transform if transform is not None and train else None,
        )

    benchmark = benchmark_from_datasets(
        train=[dataset(e.x_train, e.y_train, e.task_id, True) for e in stream],
        test=[dataset(e.x_test, e.y_test, e.task_id, False) for e in stream],
    )
    return with_task_labels(with_classes_timeline(benchmark))


def run_avalanche(
    stream: Stream,
    bench: Any,
    model_cfg: ModelConfig,
    training: TrainingConfig,
    seed: int,
    workers: int,
    device: str,
) -> tuple[float, float, float]:
    """Avalanche's Naive through the same stream: (training seconds, nan, accuracy)."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    torch.manual_seed(seed)
    model = build_model(model_cfg, stream.input_shape, stream.n_classes).to(device)
    sink = open(os.devnull, "w")  # noqa: SIM115  (closed below)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        cl = Naive(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=training.lr),
            criterion=torch.nn.CrossEntropyLoss(),
            train_mb_size=training.batch_size,
            train_epochs=training.epochs,
            eval_mb_size=training.eval_batch_size,
            device=device,
            evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
            eval_every=-1,
        )
        sync(device)
        start = time.perf_counter()
        for exp in bench.train_stream:
            cl.train(exp, num_workers=workers)
        sync(device)
        seconds = time.perf_counter() - start
    sink.close()
    return seconds, float("nan"), accuracy(model, stream, device)


def main() -> None:
    """Time every side, interleaved, and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-per-class", type=int, default=1000)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--experiences", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--hidden", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--augment", action="store_true", help=f"streamed/Avalanche: {AUGMENT}")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where all sides run")
    args = ap.parse_args()
    require_device(ap, args.device)
    torch.set_num_threads(args.threads)
    scenario = ScenarioConfig(
        source="fashion_mnist",
        n_experiences=args.experiences,
        options={"train_per_class": args.train_per_class, "test_per_class": args.test_per_class},
        augment=AUGMENT if args.augment else [],
    )
    stream = build_stream(scenario)
    plain = build_stream(scenario.model_copy(update={"augment": []}))  # the memory side's
    bench = avalanche_benchmark(plain, args.augment)
    model = ModelConfig(name="cnn", hidden=args.hidden)
    base = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "accelerator": args.device,
    }
    memory = TrainingConfig(**base, data_on_device="always")
    sides: dict[str, Any] = {
        "memory": lambda seed: run_lifelong(plain, model, memory, seed, args.device)
    }
    for w in args.workers:
        streamed = TrainingConfig(**base, data_on_device="never", loader_workers=w)
        sides[f"stream w{w}"] = lambda seed, t=streamed: run_lifelong(
            stream, model, t, seed, args.device
        )
    for w in args.workers:
        sides[f"avalanche w{w}"] = lambda seed, w=w: run_avalanche(
            plain, bench, model, memory, seed, w, args.device
        )
    images = args.epochs * sum(e.n_train for e in stream)
    print(
        f"Fashion-MNIST, {args.experiences} experiences, {images // args.epochs} training images, "
        f"cnn {args.hidden}, SGD lr {args.lr}, batch {args.batch_size}, {args.epochs} epoch(s), "
        f"{args.threads} thread(s), {device_name(args.device)}, {os.cpu_count()} CPU cores, "
        f"augment: {AUGMENT if args.augment else 'none'}; median of {args.repeats} interleaved "
        "repeats"
    )
    for run in sides.values():  # warm-up every path
        run(0)
    seconds: dict[str, list[float]] = {k: [] for k in sides}
    waits: dict[str, list[float]] = {k: [] for k in sides}
    accs: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.repeats):
        for name, run in sides.items():
            s, w, a = run(r)
            seconds[name].append(s)
            waits[name].append(w / s)
            accs[name].append(a)
    header = f"{'side':<14} {'train s':>8} {'img/s':>8} {'ratio':>7} {'wait':>6} {'acc':>6}"
    print(header)
    print("-" * len(header))
    ref = images / statistics.median(seconds["memory"])
    for name in sides:
        t = statistics.median(seconds[name])
        wait = statistics.median(waits[name])
        shown = "-" if np.isnan(wait) else f"{100 * wait:.0f}%"
        print(
            f"{name:<14} {t:>8.2f} {images / t:>8.0f} {images / t / ref:>6.2f}x {shown:>6} "
            f"{100 * statistics.mean(accs[name]):>5.1f}%",
            flush=True,
        )
    print("img/s: training images per second (median); ratio: over the memory side's img/s;")
    print("wait: time blocked in the loader's next() / training time; acc: final average")
    print("test accuracy, mean over the repeats' seeds (0..repeats-1)")


if __name__ == "__main__":
    main()
