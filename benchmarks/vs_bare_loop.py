"""lifelong's Learner vs. a bare hand-written PyTorch loop, for every built-in strategy.

Same stream (class-incremental Split-Digits, 5 experiences x 2 classes), model
(MLP 64-256-256-10 built from the same seed), optimizer (SGD, lr 0.05), batch
size 32, epochs, batch order and evaluation on every experience's test set
before training and after each experience. Both run in this process,
interleaved, on one thread; the script prints median wall times, their ratio,
and the largest difference between the two accuracy matrices (0 for naive:
the same work bit for bit; rounding-level elsewhere: a hand-written penalty
sums in another order).

The bare loop is one shared skeleton plus a small per-strategy regulariser
object with four moments (``start``, ``term``, ``after_backward``, ``end``),
hand-written in plain PyTorch. Once-per-experience estimates that the unit
tests already check against explicit loops are reused (``empirical_fisher``
for EWC, ``output_sensitivity`` for MAS), and ``dst``/``hft`` reuse their
strategy's mask bookkeeping (drawing, prune-and-regrow) while the bare loop
applies the masks to gradients and weights itself: the per-step work, where a
framework's overhead would show, is hand-written everywhere.

    python benchmarks/vs_bare_loop.py            # every strategy, 5 epochs, 7 repeats
    python benchmarks/vs_bare_loop.py --quick    # 1 epoch, 3 repeats
    python benchmarks/vs_bare_loop.py --strategies naive ewc --epochs 5
    python benchmarks/vs_bare_loop.py --device cuda   # both loops on the GPU

Target (issues 2 and 8): lifelong within 1.2x of the bare loop for every strategy.
``benchmarks/learner_vs_bare.py`` is the same comparison for one strategy.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _device import device_name, require_device
from torch import Tensor, nn

from lifelong.platform.learner import Learner
from lifelong.platform.models import ContinualModel, ModelConfig, build_model
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, Stream, build_stream
from lifelong.scenarios.stream import Experience
from lifelong.strategies import STRATEGIES, Context, build_strategy
from lifelong.strategies._importance import empirical_fisher
from lifelong.strategies.mas import output_sensitivity


# ---------------------------------------------------------------- regularisers
class Reg:
    """No regulariser (naive); the four moments of the bare loop."""

    def __init__(self, model: ContinualModel, stream: Stream) -> None:
        self.model, self.stream = model, stream

    def start(self, exp: Experience, opt: torch.optim.Optimizer) -> None:
        """Before the experience's first step."""

    def term(self, x: Tensor, y: Tensor, h: Tensor, logits: Tensor, task: int) -> Tensor | None:
        """The penalty added to the loss (None: nothing)."""
        return None

    def after_backward(self) -> None:
        """Between backward and the optimizer step."""

    def after_step(self) -> None:
        """After the optimizer step."""

    def end(self, exp: Experience) -> None:
        """After the experience's last step."""

    def eval_start(self, exp: Experience) -> list[Tensor]:
        """Before evaluating ``exp``; returns weights to restore afterwards (none here)."""
        return []


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every parameter, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def device_of(model: nn.Module) -> torch.device:
    """The device the model's parameters live on."""
    return next(model.parameters()).device


class L2(Reg):
    """lambda * ||theta - theta_prev||^2."""

    lam = 1.0
    anchor: dict[str, Tensor] | None = None

    def term(self, x, y, h, logits, task):  # noqa: D102
        if self.anchor is None:
            return None
        return self.lam * sum(
            ((p - self.anchor[n]) ** 2).sum() for n, p in self.model.named_parameters()
        )

    def end(self, exp):  # noqa: D102
        self.anchor = snapshot(self.model)


class EWC(Reg):
    """(lambda/2) sum_k F_k (theta - theta*_k)^2, empirical Fisher per experience."""

    lam = 10.0

    def __init__(self, model, stream):  # noqa: D107
        super().__init__(model, stream)
        self.pairs: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []

    def term(self, x, y, h, logits, task):  # noqa: D102
        if not self.pairs:
            return None
        params = dict(self.model.named_parameters())
        total = sum((f[n] * (params[n] - a[n]) ** 2).sum() for f, a in self.pairs for n in params)
        return self.lam / 2 * total

    def end(self, exp):  # noqa: D102
        fisher = empirical_fisher(self.model, exp.x_train, exp.y_train, task_id=exp.task_id)
        self.pairs.append((fisher, snapshot(self.model)))


class SI(Reg):
    """Synaptic Intelligence: path integral of -g * dtheta, (lambda/2) Omega (theta-theta*)^2."""

    lam, eps, clip = 1.0, 1e-7, 1e-3

    def __init__(self, model, stream):  # noqa: D107
        super().__init__(model, stream)
        self.params = list(model.parameters())
        self.omega_sum: list[Tensor] | None = None
        self.importance: list[Tensor] | None = None
        self.anchor: list[Tensor] = []

    def start(self, exp, opt):  # noqa: D102
        self.begin = [p.detach().clone() for p in self.params]
        self.omega = [torch.zeros_like(p) for p in self.params]

    def term(self, x, y, h, logits, task):  # noqa: D102
        if self.importance is None:
            return None
        total = sum(
            (w * (p - a) ** 2).sum()
            for w, p, a in zip(self.importance, self.params, self.anchor, strict=True)
        )
        return self.lam / 2 * total

    def after_backward(self):  # noqa: D102
        self.before = [p.detach().clone() for p in self.params]
        self.grads = [p.grad.detach().clone() for p in self.params]

    def after_step(self):  # noqa: D102
        for o, g, p, b in zip(self.omega, self.grads, self.params, self.before, strict=True):
            o.sub_(g * (p.detach() - b))

    def end(self, exp):  # noqa: D102
        theta = [p.detach().clone() for p in self.params]
        contrib = [
            o / ((t - b) ** 2 + self.eps)
            for o, t, b in zip(self.omega, theta, self.begin, strict=True)
        ]
        if self.omega_sum is not None:
            contrib = [c + s for c, s in zip(contrib, self.omega_sum, strict=True)]
        self.omega_sum, self.anchor = contrib, theta
        self.importance = [c.clamp(0.0, self.clip) for c in contrib]


class MAS(Reg):
    """lambda * Omega (theta - theta*)^2, output-sensitivity importance, running average."""

    lam, alpha = 1.0, 0.5
    importance: dict[str, Tensor] | None = None

    def term(self, x, y, h, logits, task):  # noqa: D102
        if self.importance is None:
            return None
        params = dict(self.model.named_parameters())
        return self.lam * sum(
            (w * (params[n] - self.anchor[n]) ** 2).sum() for n, w in self.importance.items()
        )

    def end(self, exp):  # noqa: D102
        new = output_sensitivity(self.model, exp.x_train, task_id=exp.task_id)
        if self.importance is not None:
            new = {
                n: self.alpha * self.importance[n] + (1 - self.alpha) * t for n, t in new.items()
            }
        self.importance, self.anchor = new, snapshot(self.model)


class LwF(Reg):
    """lambda * KL(teacher || student) at temperature T on the classes seen so far."""

    lam, temperature = 1.0, 2.0
    teacher: nn.Module | None = None

    def __init__(self, model, stream):  # noqa: D107
        super().__init__(model, stream)
        self.seen: list[int] = []

    def term(self, x, y, h, logits, task):  # noqa: D102
        if self.teacher is None:
            return None
        with torch.no_grad():
            old = self.teacher(x, task)[:, self.idx]
        t = self.temperature
        kl = F.kl_div(
            F.log_softmax(logits[:, self.idx] / t, 1), F.softmax(old / t, 1), reduction="batchmean"
        )
        return self.lam * kl

    def end(self, exp):  # noqa: D102
        self.seen = sorted(set(self.seen) | set(exp.classes))
        self.idx = torch.tensor(self.seen, device=device_of(self.model))
        self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)


class CenterLoss(Reg):
    """lambda * 0.5 ||h - c_y||^2 with centres moved by alpha; head frozen after experience 0."""

    lam, alpha = 0.1, 0.5
    frozen = False

    def __init__(self, model, stream):  # noqa: D107
        super().__init__(model, stream)
        self.centers = torch.zeros(
            stream.n_classes, model.head.linear.in_features, device=device_of(model)
        )

    def term(self, x, y, h, logits, task):  # noqa: D102
        self.last = (h.detach(), y)
        return self.lam * 0.5 * (h - self.centers[y]).square().sum(1).mean()

    def after_backward(self):  # noqa: D102
        if self.frozen:
            for p in self.model.head.parameters():
                p.grad = None  # plain SGD: a parameter without gradient is not stepped
            return
        h, y = self.last
        onehot = F.one_hot(y, len(self.centers)).float()
        delta = onehot.t() @ (self.centers[y] - h) / (1.0 + onehot.sum(0)).unsqueeze(1)
        self.centers -= self.alpha * delta

    def end(self, exp):  # noqa: D102
        self.frozen = True


class Spectral(Reg):
    """lambda * sum_l (sigma_max(W_l)^2 - 1)^2 + ||b_l||^4, one power iteration per step."""

    lam = 1e-4

    def __init__(self, model, stream):  # noqa: D107
        super().__init__(model, stream)
        self.layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.uv = []
        for m in self.layers:
            g = torch.Generator().manual_seed(0)
            u = F.normalize(torch.randn(m.weight.shape[0], generator=g), dim=0)
            v = F.normalize(torch.randn(m.weight.shape[1], generator=g), dim=0)
            self.uv.append(self.power(m.weight, u.to(m.weight.device), v.to(m.weight.device), 15))

    @staticmethod
    @torch.no_grad()
    def power(w: Tensor, u: Tensor, v: Tensor, steps: int) -> tuple[Tensor, Tensor]:
        """Power iterations for the top singular vectors of ``w``."""
        for _ in range(steps):
            v = F.normalize(w.t() @ u, dim=0, eps=1e-12)
            u = F.normalize(w @ v, dim=0, eps=1e-12)
        return u, v

    def term(self, x, y, h, logits, task):  # noqa: D102
        total = 0.0
        for k, m in enumerate(self.layers):
            u, v = self.uv[k] = self.power(m.weight, *self.uv[k], 1)
            total = total + (torch.dot(u, m.weight @ v) ** 2 - 1) ** 2 + m.bias.square().sum() ** 2
        return self.lam * total


class WassersteinInit(Reg):
    """lambda * sum_l ||sort(theta_l) - sort(theta_l^0)||^2."""

    lam = 1e-3

    def __init__(self, model, stream):  # noqa: D107
        super().__init__(model, stream)
        self.init = [p.detach().flatten().sort().values for p in model.parameters()]

    def term(self, x, y, h, logits, task):  # noqa: D102
        pairs = zip(self.model.parameters(), self.init, strict=True)
        return self.lam * sum(((p.flatten().sort().values - s) ** 2).sum() for p, s in pairs)


class Masked(Reg):
    """dst / hft: the strategy's own mask bookkeeping; the bare loop applies the masks."""

    name = ""

    def __init__(self, model, stream):  # noqa: D107
        super().__init__(model, stream)
        self.strategy = build_strategy(self.name)
        self.params = dict(model.named_parameters())

    def start(self, exp, opt):  # noqa: D102
        self.ctx = Context(self.model, opt, self.stream, exp, device_of(self.model), 0)
        bs = 32
        self.ctx.total_steps = self.epochs * -(-exp.n_train // bs)
        self.strategy.on_experience_start(self.ctx)
        if self.name == "dst":  # sizes its prune-rate schedule from the batch size
            self.strategy._total_steps = -(-exp.n_train // bs)

    def after_backward(self):  # noqa: D102
        self.strategy.on_after_backward(self.ctx)  # prune/regrow when due; fills ctx.protected
        for n, mask in self.ctx.protected.items():
            p = self.params[n]
            if mask is None:
                p.grad = None  # plain SGD skips a parameter without gradient
            else:  # plain SGD: a zero gradient leaves the entry exactly unchanged
                p.grad.masked_fill_(mask, 0.0)
        self.ctx.protected.clear()

    def after_step(self):  # noqa: D102
        self.ctx.step += 1

    def end(self, exp):  # noqa: D102
        self.strategy.on_experience_end(self.ctx)

    def eval_start(self, exp):  # noqa: D102
        if self.name != "dst":
            return []
        saved = [p.detach().clone() for p in self.model.parameters()]
        self.strategy.on_eval_start(
            Context(self.model, None, self.stream, exp, device_of(self.model))
        )
        return saved


class DST(Masked):
    """Dynamic sparse training (mask per task, isolation)."""

    name = "dst"


class HFT(Masked):
    """Half fine-tuning (half of the parameters frozen per experience)."""

    name = "hft"


BARE: dict[str, tuple[type[Reg], dict[str, Any]]] = {
    "naive": (Reg, {}),
    "l2": (L2, {"lambda": L2.lam}),
    "ewc": (EWC, {"lambda": EWC.lam}),
    "si": (SI, {"lambda": SI.lam}),
    "mas": (MAS, {"lambda": MAS.lam}),
    "lwf": (LwF, {"lambda": LwF.lam}),
    "center_loss": (CenterLoss, {}),
    "spectral": (Spectral, {}),
    "wasserstein_init": (WassersteinInit, {}),
    "dst": (DST, {}),
    "hft": (HFT, {}),
}


# ------------------------------------------------------------------ the loops
def bare_loop(stream: Stream, hidden: list[int], epochs: int, bs: int, lr: float, seed: int,
              strategy: str, device: str = "cpu") -> np.ndarray:  # fmt: skip
    """The reference: what a researcher would write by hand."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(hidden=hidden), stream.input_shape, stream.n_classes)
    model = model.to(device)
    experiences = [e.to(device) for e in stream]
    reg_cls, _ = BARE[strategy]
    reg = reg_cls(model, stream)
    reg.epochs = epochs  # type: ignore[attr-defined]
    gen = torch.Generator(device=device).manual_seed(seed)
    R = np.zeros((len(stream), len(stream)))

    @torch.no_grad()
    def evaluate() -> np.ndarray:
        model.eval()
        accs = []
        for e in experiences:
            saved = reg.eval_start(e)  # dst: the experience's task mask
            accs.append((model(e.x_test, e.task_id).argmax(1) == e.y_test).double().mean())
            if saved:
                torch._foreach_copy_(list(model.parameters()), saved)
        model.train()
        return torch.stack(accs).cpu().numpy()

    evaluate()  # the untrained row, as lifelong computes it
    for i, exp in enumerate(experiences):
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        reg.start(exp, opt)
        for _ in range(epochs):
            perm = torch.randperm(exp.n_train, device=device, generator=gen)
            for s in range(0, exp.n_train, bs):
                idx = perm[s : s + bs]
                x, y = exp.x_train[idx], exp.y_train[idx]
                h = model.features(x)
                logits = model.classify(h, exp.task_id)
                loss = F.cross_entropy(logits, y)
                extra = reg.term(x, y, h, logits, exp.task_id)
                if extra is not None:
                    loss = loss + extra
                opt.zero_grad(set_to_none=True)
                loss.backward()
                reg.after_backward()
                opt.step()
                reg.after_step()
        reg.end(exp)
        R[i] = evaluate()
    return R


def lifelong_run(stream: Stream, hidden: list[int], epochs: int, bs: int, lr: float, seed: int,
                 strategy: str, device: str = "cpu") -> np.ndarray:  # fmt: skip
    """The same work through lifelong's Learner."""
    training = TrainingConfig(epochs=epochs, batch_size=bs, lr=lr, accelerator=device)
    params = BARE[strategy][1]
    learner = Learner(
        stream, ModelConfig(hidden=hidden), [build_strategy(strategy, params)], training, seed
    )
    return learner.fit()


def main() -> None:
    """Run both loops interleaved per strategy and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 epoch, 3 repeats")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    ap.add_argument("--strategies", nargs="+", default=list(BARE), choices=list(BARE))
    ap.add_argument(
        "--no-grad-check",
        action="store_true",
        help="turn off the learner's per-step NaN/inf gradient check (Learner.check_gradients)",
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both loops run")
    args = ap.parse_args()
    require_device(ap, args.device)
    if args.no_grad_check:
        Learner.check_gradients = False
    if args.quick:
        args.epochs, args.repeats = 1, 3
    missing = sorted(set(STRATEGIES) - set(BARE))
    torch.set_num_threads(1)
    stream = build_stream(ScenarioConfig(source="digits", n_experiences=5, seed=0))
    print(
        f"Split-Digits, MLP 64-{'-'.join(map(str, args.hidden))}-10, SGD lr 0.05, batch "
        f"{args.batch_size}, {args.epochs} epochs, 1 thread, {device_name(args.device)}, "
        f"median of {args.repeats} interleaved repeats"
    )
    head = (
        f"{'strategy':<17} {'bare s':>8} {'lifelong s':>10} {'ratio':>7} {'cpu ratio':>9} "
        f"{'max |dR|':>9}"
    )
    print(head)
    print("-" * len(head))
    for strategy in args.strategies:
        common = (stream, args.hidden, args.epochs, args.batch_size, 0.05, 0, strategy, args.device)
        lifelong_run(*common)  # warm-up both paths
        bare_loop(*common)
        t_bare, t_ll, c_bare, c_ll = [], [], [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            R_bare = bare_loop(*common)
            t_bare.append(time.perf_counter() - t)
            c_bare.append(time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            R_ll = lifelong_run(*common)
            t_ll.append(time.perf_counter() - t)
            c_ll.append(time.process_time() - c)
        b, ll = statistics.median(t_bare), statistics.median(t_ll)
        cpu = statistics.median(c_ll) / statistics.median(c_bare)
        diff = float(np.abs(R_bare - R_ll).max())
        flag = "" if min(ll / b, cpu) <= 1.2 else "  (over 1.2x)"
        print(
            f"{strategy:<17} {b:>8.3f} {ll:>10.3f} {ll / b:>6.2f}x {cpu:>8.2f}x {diff:>9.4f}{flag}",
            flush=True,
        )
    print("ratio: lifelong/bare median wall time; cpu ratio: the same for this process's CPU")
    print("time (steadier when other work shares the cores); max |dR|: largest difference of")
    print("the two accuracy matrices (0: the same work, bit for bit)")
    if missing:
        print(f"not covered (no bare loop written): {', '.join(missing)}")


if __name__ == "__main__":
    main()
