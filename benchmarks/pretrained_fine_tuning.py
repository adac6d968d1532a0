"""Fine-tuning a pre-trained backbone: lifelong vs. a bare PyTorch loop vs. Avalanche 0.6.

All three sides fine-tune the same network, the packaged ImageNet
EfficientNet-Lite0 (its preprocessing, grey to RGB, resize and normalise, is the
body's first layer) with a fresh 10-class head, built from the same seed
(identical initial weights), on the same class-incremental Split Fashion-MNIST
stream (5 experiences x 2 classes). Every side trains the whole network
(``freeze: none``) with Adam (lr 1e-3, a fresh optimizer state per experience),
batch 32, cross-entropy, one epoch per experience by default, and evaluates
every experience's test set before training and after each experience (the
timed work includes that evaluation, the model's construction and the weights'
loading):

- lifelong: ``Learner(..., [naive], ...).fit()``;
- bare: a hand-written loop: ``model.train()``, a seeded ``torch.Generator``
  permutation per epoch, ``F.cross_entropy``, ``Adam``, argmax accuracy in
  batches of ``eval_batch_size`` (lifelong's batch order and RNG use, so its
  accuracy matrix equals lifelong's on the CPU; ``max |dR|`` shows it);
- Avalanche: ``Naive(...)``'s own ``train(experience, reset_optimizer_state=True)``
  and ``eval(test_stream)`` over in-memory tensor datasets
  (``to_avalanche_benchmark``, built once outside the timing) with an
  accuracy-only ``EvaluationPlugin`` and no logger. Its DataLoader shuffles with
  the global RNG, so its batch order (and dropout masks) differ: its accuracies
  are close to, not equal to, the other two.

The three sides run one after another in each repeat (interleaved), after one
untimed warm-up round; the table gives median wall and CPU seconds per side and
the ratios to the bare loop. Read the ratios, not the absolute times: those
depend on the machine and on what else shares its cores.

    python benchmarks/pretrained_fine_tuning.py                      # defaults below
    python benchmarks/pretrained_fine_tuning.py --train-per-class 10 --test-per-class 10 \\
        --repeats 1 --input-size 32                                  # a smoke run
    python benchmarks/pretrained_fine_tuning.py --device cuda        # all sides on the GPU

Defaults: 100 training and 50 test images per class, 64-pixel inputs, 1 epoch,
3 repeats, 2 threads, CPU. On a machine whose cores other work shares, pass
``--threads 1``: with more threads than free cores every op waits for a
descheduled thread (a 20x slower run was seen on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _device import device_name, require_device

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig, build_model
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, Stream
from lifelong.scenarios.avalanche import to_avalanche_benchmark
from lifelong.scenarios.builder import build_stream
from lifelong.strategies import build_strategy

SIDES = ("lifelong", "bare", "avalanche")


def run_lifelong(
    stream: Stream, model_cfg: ModelConfig, training: TrainingConfig, seed: int, bench: Any
) -> np.ndarray:
    """lifelong's Learner with plain fine-tuning; returns the accuracy matrix R."""
    learner = Learner(stream, model_cfg, [build_strategy("naive")], training, seed)
    return learner.fit()


def run_bare(
    stream: Stream, model_cfg: ModelConfig, training: TrainingConfig, seed: int, bench: Any
) -> np.ndarray:
    """The hand-written loop; returns the accuracy matrix R.

    ``training``'s optimizer, precision (``bf16-mixed``: ``torch.autocast`` around
    each forward pass and loss), ``channels_last`` and ``compile`` (of the model's
    ``features``) are applied by hand, as a user of plain PyTorch would.
    """
    device = training.accelerator
    torch.manual_seed(seed)
    model = build_model(model_cfg, stream.input_shape, stream.n_classes).to(device)
    if training.channels_last:
        model.to(memory_format=torch.channels_last)
    features = torch.compile(model.features) if training.compile else model.features
    bf16 = training.precision == "bf16-mixed"
    experiences = [e.to(device) for e in stream]
    gen = torch.Generator(device=device).manual_seed(seed)
    bs, ebs = training.batch_size, training.eval_batch_size

    def logits_of(x: torch.Tensor, task_id: int) -> torch.Tensor:
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=bf16):
            return model.classify(features(x), task_id)

    @torch.no_grad()
    def evaluate() -> np.ndarray:
        model.eval()
        accs = []
        for e in experiences:
            correct = torch.zeros((), dtype=torch.long, device=device)
            for s in range(0, e.n_test, ebs):
                logits = logits_of(e.x_test[s : s + ebs], e.task_id)
                correct += (logits.argmax(1) == e.y_test[s : s + ebs]).sum()
            accs.append(correct.double() / e.n_test)
        model.train()
        return torch.stack(accs).cpu().numpy()

    evaluate()  # the untrained row, as lifelong computes it
    R = np.zeros((len(experiences), len(experiences)))
    for i, exp in enumerate(experiences):
        opt = training.make_optimizer(list(model.parameters()))
        model.train()
        for _ in range(training.epochs):
            perm = torch.randperm(exp.n_train, device=device, generator=gen)
            xs, ys = exp.x_train[perm], exp.y_train[perm]
            for s in range(0, exp.n_train, bs):
                with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=bf16):
                    logits = model.classify(features(xs[s : s + bs]), exp.task_id)
                    loss = F.cross_entropy(logits, ys[s : s + bs])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        R[i] = evaluate()
    return R


def run_avalanche(
    stream: Stream, model_cfg: ModelConfig, training: TrainingConfig, seed: int, bench: Any
) -> np.ndarray:
    """Avalanche's Naive strategy over ``bench``; returns the accuracy matrix R."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    torch.manual_seed(seed)
    model = build_model(model_cfg, stream.input_shape, stream.n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cl = Naive(
            model=model,
            optimizer=training.make_optimizer(list(model.parameters())),
            criterion=torch.nn.CrossEntropyLoss(),
            train_mb_size=training.batch_size,
            train_epochs=training.epochs,
            eval_mb_size=training.eval_batch_size,
            device=training.accelerator,
            evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
            eval_every=-1,
        )
        cl.eval(bench.test_stream, num_workers=0)  # the untrained row
        rows = []
        for exp in bench.train_stream:
            cl.train(exp, reset_optimizer_state=True, num_workers=0)
            cl.eval(bench.test_stream, num_workers=0)
            rows.append(cl.evaluator.get_last_metrics())
    prefix = "Top1_Acc_Exp/eval_phase/test_stream/"
    keys = sorted((k for k in rows[-1] if k.startswith(prefix)), key=lambda k: int(k[-3:]))
    assert len(keys) == len(stream), sorted(rows[-1])
    return np.array([[m[k] for k in keys] for m in rows])


RUNNERS: dict[str, Callable[..., np.ndarray]] = {
    "lifelong": run_lifelong,
    "bare": run_bare,
    "avalanche": run_avalanche,
}


def main() -> None:
    """Run the three sides interleaved and print the table and the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-per-class", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--input-size", type=int, default=64, help="side images are resized to")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="the same seed for every side and repeat")
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch.set_num_threads; use 1 where other work shares the cores (more threads "
        "than free cores make every op wait for a descheduled thread: 20x slower seen)",
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where all sides run")
    args = ap.parse_args()
    require_device(ap, args.device)
    torch.set_num_threads(args.threads)
    sizes = {"train_per_class": args.train_per_class, "test_per_class": args.test_per_class}
    stream = build_stream(ScenarioConfig(preset="split_fmnist", options=sizes))
    bench = to_avalanche_benchmark(stream)
    model_cfg = ModelConfig(name="efficientnet_lite0", input_size=args.input_size)
    training = TrainingConfig(
        epochs=args.epochs, batch_size=32, optimizer="adam", lr=1e-3, accelerator=args.device
    )
    common = (stream, model_cfg, training, args.seed, bench)
    print(
        f"Split Fashion-MNIST ({len(stream)} experiences, {args.train_per_class} train / "
        f"{args.test_per_class} test per class), EfficientNet-Lite0 (ImageNet) at "
        f"{args.input_size} px, Adam lr 1e-3, batch 32, {args.epochs} epoch(s), "
        f"{args.threads} thread(s), {device_name(args.device)}, "
        f"median of {args.repeats} interleaved repeats",
        flush=True,
    )
    for side in SIDES:  # warm-up: imports, Fabric, first-call allocations
        RUNNERS[side](*common)
    wall: dict[str, list[float]] = {k: [] for k in SIDES}
    cpu: dict[str, list[float]] = {k: [] for k in SIDES}
    Rs: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for side in SIDES:
            t, c = time.perf_counter(), time.process_time()
            Rs[side] = RUNNERS[side](*common)
            wall[side].append(time.perf_counter() - t)
            cpu[side].append(time.process_time() - c)
    w = {k: statistics.median(v) for k, v in wall.items()}
    c = {k: statistics.median(v) for k, v in cpu.items()}
    head = (
        f"{'side':<10} {'wall s':>8} {'cpu s':>8} {'/bare':>7} {'cpu /bare':>9} "
        f"{'final avg':>9}  final accuracy row (experiences 0..{len(stream) - 1})"
    )
    print(head)
    print("-" * len(head))
    for side in SIDES:
        row = " ".join(f"{a:.3f}" for a in Rs[side][-1])
        print(
            f"{side:<10} {w[side]:>8.2f} {c[side]:>8.2f} {w[side] / w['bare']:>6.2f}x "
            f"{c[side] / c['bare']:>8.2f}x {Rs[side][-1].mean():>9.3f}  {row}"
        )
    print(
        f"ratios (median wall): lifelong/bare {w['lifelong'] / w['bare']:.2f}x, "
        f"avalanche/bare {w['avalanche'] / w['bare']:.2f}x; "
        f"max |dR| lifelong vs bare {np.abs(Rs['lifelong'] - Rs['bare']).max():.4f}, "
        f"avalanche vs bare {np.abs(Rs['avalanche'] - Rs['bare']).max():.4f}"
    )
    print("/bare: median wall time over the bare loop's; cpu /bare: the same for this process's")
    print("CPU time (steadier when other work shares the cores); dR: the accuracy matrices")
    print("(every row, after each experience) of the last repeat; 0: the same work, bit for bit")


if __name__ == "__main__":
    main()
