"""Tokens per second of lifelong's LM learner against a bare Hugging Face training loop.

    python benchmarks/lm_vs_hf.py                      # SmolLM2-135M, 3 interleaved rounds
    python benchmarks/lm_vs_hf.py --rounds 5 --steps 6

Both sides train the same pre-trained model (two copies loaded from the same
file) on the same ``text_tasks`` experience (lifelong in its own seeded order,
the bare loop in file order: the same batch shapes and tokens), with Adam, for the
same number of optimizer steps, in this one process; the rounds alternate
(lifelong, bare, lifelong, bare, ...) so that machine noise hits both alike.
lifelong's side is ``Learner.train_experience`` with the ``naive`` strategy
(its whole step: response-only loss, per-step NaN bookkeeping, the per-epoch
check); the bare side is ``logits = model(input_ids).logits``, the same
cross-entropy, ``zero_grad``, ``backward``, ``step``. Tokens are counted as
the padded positions processed (batch x length per step), the same on both
sides. Prints each round, then the median ratio lifelong / bare (target within
5 %: a ratio >= 0.95).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lifelong.platform.learner import Learner
from lifelong.platform.models.language import load_causal_lm
from lifelong.platform.spec import build_checked_stream, parse_experiment
from lifelong.strategies import build_strategy

EXPERIMENT = """
seeds: [0]
scenario:
  source: text_tasks
  options: {{tasks: [arithmetic], n_train: {n_train}, n_test: 4}}
model: {{name: smollm2_135m}}
training: {{epochs: 1, batch_size: {batch}, optimizer: adam, lr: 0.0001}}
strategies: [naive]
"""


def main() -> None:
    """Run the interleaved rounds and print tokens/s and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per round and side")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    exp = parse_experiment(EXPERIMENT.format(n_train=args.steps * args.batch, batch=args.batch))
    stream = build_checked_stream(exp)
    learner = Learner(stream, exp.spec.model, [build_strategy("naive", {})], exp.spec.training, 0)
    bare = load_causal_lm("smollm2_135m").train()
    optimizer = torch.optim.Adam(bare.parameters(), lr=1e-4)
    e = stream[0]
    batches = [
        (e.x_train[i : i + args.batch], e.y_train[i : i + args.batch])
        for i in range(0, e.n_train, args.batch)
    ]
    tokens = sum(x.numel() for x, _ in batches)

    def bare_round() -> None:
        for x, y in batches:
            logits = bare(input_ids=x, use_cache=False).logits
            loss = F.cross_entropy(logits.flatten(0, -2), y.flatten(), ignore_index=-100)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def lifelong_round() -> None:
        learner.train_experience(0)

    print(
        f"SmolLM2-135M, {len(batches)} steps of {args.batch} x {e.x_train.shape[1]} tokens "
        f"per round, {args.threads} threads"
    )
    lifelong_round(), bare_round()  # warm-up (allocator, kernels), not timed
    ratios = []
    for r in range(args.rounds):
        t = time.perf_counter()
        lifelong_round()
        ours = tokens / (time.perf_counter() - t)
        t = time.perf_counter()
        bare_round()
        theirs = tokens / (time.perf_counter() - t)
        ratios.append(ours / theirs)
        print(
            f"round {r}: lifelong {ours:8.1f} tok/s   bare HF {theirs:8.1f} tok/s   "
            f"ratio {ours / theirs:.3f}",
            flush=True,
        )
    print(f"median ratio lifelong / bare: {statistics.median(ratios):.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
