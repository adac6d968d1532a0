"""EWC++'s cost per training step against ``naive``: the hook vs. the old workaround.

EWC++ (Chaudhry et al. 2018) updates its Fisher every step from the task loss's
gradient alone. It is measured exactly as docs/writing-a-strategy.md writes it
(the ``ewcpp.py`` block of the page, loaded as a plugin file), which reads that
gradient in ``on_task_gradient``. The workaround it replaces, needed before that
hook existed, took a second ``torch.autograd.grad`` of the cross-entropy inside
``loss_terms``; it is measured too, as a subclass of the same class. All three
train the same stream (class-incremental Split-Digits, 5 x 2 classes), MLP,
batch size, epochs and seed, interleaved in this process on one thread; the
script prints median wall times and the ratios to ``naive``. Two more rows split
the cost: an ``on_task_gradient`` that does nothing (the hook's own cost: the
learner's backward split in two) and the built-in ``ewc`` (the same quadratic
penalty with a Fisher fixed per experience, no per-step update).

    python benchmarks/ewc_online_cost.py [--epochs 3] [--repeats 5]

Target (issue 22): EWC++ within 1.3x of naive (was 2.35x with the workaround).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.plugins import load_plugin
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import Batch, Context, Strategy, build_strategy, get_strategy

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "writing-a-strategy.md"


def load_tutorial_ewcpp() -> type[Strategy]:
    """Register the tutorial's ``ewcpp.py`` as a plugin file and return its class."""
    text = TUTORIAL.read_text(encoding="utf-8")
    match = re.search(r"^```python file=ewcpp\.py\n(.*?)^```$", text, flags=re.M | re.S)
    if match is None:
        raise SystemExit(f"{TUTORIAL}: no ```python file=ewcpp.py block")
    folder = Path(tempfile.mkdtemp(prefix="ewcpp-"))
    (folder / "ewcpp.py").write_text(match.group(1), encoding="utf-8")
    load_plugin("ewcpp.py", folder)
    return get_strategy("ewcpp")


def workaround(ewcpp: type[Strategy]) -> Strategy:
    """EWC++ as it had to be written before ``on_task_gradient``: a second backward."""

    class SecondBackward(ewcpp):  # type: ignore[misc, valid-type]
        """The Fisher from ``autograd.grad`` of the cross-entropy inside ``loss_terms``."""

        name = "ewcpp_workaround"

        def on_task_gradient(self, ctx: Context) -> None:
            """Unused: the gradient is taken in ``loss_terms``."""

        def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
            """Update F from a second gradient of the task loss, then the penalty."""
            names, params = zip(*ctx.model.named_parameters(), strict=True)
            ce = F.cross_entropy(batch.logits, batch.y)
            grads = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
            a = self.config.alpha
            for n, g in zip(names, grads, strict=True):
                if g is not None:
                    old = self.fisher.get(n)
                    self.fisher[n] = (
                        a * g.square() if old is None else a * g.square() + (1 - a) * old
                    )
            return super().loss_terms(ctx, batch)

    return SecondBackward()


class HookOnly(Strategy):
    """Overrides ``on_task_gradient`` with nothing: what calling the hook costs."""

    name = "hook_only"

    def on_task_gradient(self, ctx: Context) -> None:
        """Nothing."""


def run(stream, strategy: Strategy, epochs: int, hidden: list[int]) -> tuple[float, int]:
    """Wall time of one fit and the steps it took."""
    training = TrainingConfig(epochs=epochs, batch_size=32, lr=0.05, accelerator="cpu")
    learner = Learner(stream, ModelConfig(hidden=hidden), [strategy], training, seed=0)
    t = time.perf_counter()
    learner.fit()
    return time.perf_counter() - t, learner.step


def main() -> None:
    """Time naive, EWC++ (hook) and EWC++ (workaround) interleaved; print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    args = ap.parse_args()
    torch.set_num_threads(1)
    stream = build_stream(ScenarioConfig(source="digits", n_experiences=5, seed=0))
    ewcpp = load_tutorial_ewcpp()
    makers = {
        "naive": lambda: build_strategy("naive"),
        "on_task_gradient, empty": HookOnly,
        "ewc (built-in, fixed Fisher)": lambda: build_strategy("ewc"),
        "ewcpp (on_task_gradient)": ewcpp,
        "ewcpp (second autograd.grad)": lambda: workaround(ewcpp),
    }
    times: dict[str, list[float]] = {k: [] for k in makers}
    steps = 0
    for make in makers.values():  # warm-up
        run(stream, make(), 1, args.hidden)
    for _ in range(args.repeats):
        for label, make in makers.items():
            seconds, steps = run(stream, make(), args.epochs, args.hidden)
            times[label].append(seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"Split-Digits 5 x 2, MLP 64-{'-'.join(map(str, args.hidden))}-10, batch 32, "
        f"{args.epochs} epochs ({steps} steps), 1 thread, median of {args.repeats}"
    )
    for label, seconds in med.items():
        per_step = 1e3 * seconds / steps
        ratio = seconds / med["naive"]
        print(f"{label:30s} {seconds:7.3f} s  {per_step:6.3f} ms/step  {ratio:.2f}x naive")
    print("target: ewcpp (on_task_gradient) <= 1.3x naive")


if __name__ == "__main__":
    main()
