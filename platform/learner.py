"""The learner: trains one model over one stream with a list of strategies.

For each experience the learner calls the strategies' hooks around a plain
training loop, then evaluates on the test set of every experience (seen and
unseen), filling one row of the accuracy matrix ``R``. The untrained model's
row is kept apart (``untrained``) for forward transfer.

In-memory experiences are moved to the device once and batched by indexing a
random permutation: no DataLoader, no host-device copy and no ``.item()`` in
the hot loop. An experience too large for the device, or whose training data
are augmented (``scenario.augment``), is streamed from the host instead
(:mod:`lifelong.platform.loader`: a DataLoader with workers, the same batches).
Lightning Fabric chooses the device, seeds every RNG and supplies the precision
context; the module itself is not wrapped, so a step costs what a hand-written
PyTorch step costs.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.platform.data_parallel import DataParallel
from lifelong.platform.fabric_import import Fabric
from lifelong.platform.hook_errors import annotate
from lifelong.platform.loader import (
    ExperienceLoader,
    StreamedExperience,
    eval_tensors,
    place_experiences,
)
from lifelong.platform.models import ContinualModel, ModelConfig, build_model
from lifelong.platform.models.core import frozen_modules
from lifelong.platform.models.feature_cache import is_encoded
from lifelong.platform.sgd import plain_sgd_step
from lifelong.platform.shared_reference import ReferenceCache
from lifelong.platform.task_loss import (
    IGNORE,
    bce_seen,
    exact_match,
    seen_mask,
)
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios.augment import build_augment
from lifelong.scenarios.digest import stream_digest
from lifelong.scenarios.stream import Experience, Stream
from lifelong.strategies.base import Batch, Context, Strategy, check_state


def _first_nonfinite(values: Tensor) -> Tensor:
    """Index (0-d tensor, on the device) of the first non-finite entry of ``values``, or -1."""
    bad = ~torch.isfinite(values)
    return torch.where(bad.any(), bad.to(torch.int64).argmax(), -1)


Batches = Iterator[tuple[Tensor, Tensor, Tensor | None]]
"""One epoch's ``(x, y, index)`` training batches on the device."""


def _scalar(value: Any, strategy: Strategy, hook: str, name: str) -> Tensor:
    """``value`` if it is a 0-dim tensor; else an error naming the strategy, hook and term."""
    if isinstance(value, Tensor) and value.dim() == 0:
        return value
    got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value)
    raise TypeError(
        f"strategy {strategy.name!r}: {hook} gave loss term {name!r} as {got}; a loss "
        f"term is a 0-dim tensor (e.g. .sum() or .mean() it; a Python number has no gradient)"
    )


def _blamed(method: Callable[..., Any]) -> Callable[..., Any]:
    """Note on any exception a strategy raised inside ``method`` where it was raised.

    The strategy, hook, experience (``run_experience``'s argument, ``None`` for the
    untrained evaluation, else the last one trained), step and line:
    :func:`lifelong.platform.hook_errors.annotate`.
    """

    @functools.wraps(method)
    def wrapper(self: Learner, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as e:
            if method.__name__ == "run_experience":
                i: int | None = args[0] if args else kwargs["i"]
            elif method.__name__ == "evaluate_untrained":
                i = None
            else:
                i = max(self.next_experience - 1, 0)
            annotate(e, i, self._step_now)
            raise

    return wrapper


def _overrides(strategy: Strategy, hook: str) -> bool:
    return getattr(type(strategy), hook) is not getattr(Strategy, hook)


@functools.cache
def _fabric(accelerator: str, precision: str, gpu: int | None = None) -> Fabric:
    """One Fabric per process and setting: its constructor scans all entry points (~10 ms).

    ``gpu``: the GPU index of a data-parallel worker (Ray Train gives every worker
    of a node all the node's GPUs and sets each one's current device); else the first.
    """
    return Fabric(accelerator=accelerator, devices=1 if gpu is None else [gpu], precision=precision)


def _check_data_parallel(
    model: ContinualModel, config: ModelConfig, parallel: DataParallel
) -> None:
    """Refuse a model whose training depends on the batch as a whole (BatchNorm)."""
    frozen = {id(sub) for m in frozen_modules(model) for sub in m.modules()}  # eval mode
    norms = [
        name
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and id(m) not in frozen
    ]
    if norms:
        raise ValueError(
            f"model {config.name!r} has BatchNorm layers that train ({norms[0]}, ...): "
            f"their batch statistics would differ between the {parallel.world_size} "
            "data-parallel workers (resources.workers); freeze them (model.freeze) or "
            "train on one worker"
        )


class TrainingStopped(Exception):
    """Training was asked to stop (:attr:`Learner.stop_requested`); the learner is mid-way."""


class DivergenceError(RuntimeError):
    """Raised when a loss term or the gradient becomes NaN or infinite during training.

    Attributes:
        experience: index of the experience being trained.
        epoch: the epoch (within the experience) of the first bad step.
        step: the global optimizer step (``Learner.step`` numbering) of the first bad step.
        terms: the loss terms that were NaN/inf at that step (empty when only the
            gradient was).
        gradient: whether the gradient norm was NaN/inf at that step.
    """

    def __init__(
        self,
        message: str,
        *,
        experience: int,
        epoch: int,
        step: int,
        terms: tuple[str, ...],
        gradient: bool,
    ) -> None:
        super().__init__(message)
        self.experience = experience
        self.epoch = epoch
        self.step = step
        self.terms = terms
        self.gradient = gradient

    def __reduce__(self) -> tuple[Any, ...]:  # keep the attributes across Ray's pickling
        return (
            _rebuild_divergence,
            (str(self), self.experience, self.epoch, self.step, self.terms, self.gradient),
        )


def _rebuild_divergence(
    message: str, experience: int, epoch: int, step: int, terms: tuple[str, ...], gradient: bool
) -> DivergenceError:
    return DivergenceError(
        message, experience=experience, epoch=epoch, step=step, terms=terms, gradient=gradient
    )


PACK_BYTES = 16 * 2**20
"""Packed evaluation joins test sets while a batch's activations stay under this."""


def packed_batch_size(eval_batch_size: int, n_tests: Sequence[int], sample_bytes: int) -> int:
    """The batch size of packed evaluation over test sets of ``n_tests`` samples.

    Packing joins small test sets so that each forward pass amortises its fixed
    cost; ``sample_bytes`` is what one sample's forward pass writes (every
    module's output). Batches grow while they write at most :data:`PACK_BYTES`,
    up to ``eval_batch_size``, and never shrink below what one experience at a
    time would run (the largest test set, or ``eval_batch_size``). Larger
    batches save no more dispatch and their activations outgrow the CPU's
    caches: a CNN 32-64 (about 0.3 MiB a sample) scored five joined Fashion-MNIST
    test sets of 200 in 59 ms as batches of 200, 118 ms as batches of 256 and
    187 ms as one batch (this project's 2-core machine, L3 32 MiB), while an MLP
    256-256 (2 KiB a sample) gains from batches of 1,000.
    """
    by_memory = PACK_BYTES // max(1, sample_bytes)
    return min(eval_batch_size, max(by_memory, *n_tests))


def activation_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes the leaf modules of ``model.features`` write for the batch ``x`` (no grad)."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model.features(x)
    finally:
        for h in handles:
            h.remove()
    return total


class Learner:
    """Trains ``model`` on ``stream`` experience by experience with ``strategies``.

    Args:
        stream: the task sequence (tensors on the host).
        model_config: which built-in model to build.
        strategies: strategies applied together (loss terms add).
        training: optimizer, batch size, epochs, device and precision.
        seed: seeds model initialisation and batch order.
        parallel: this worker's place when one learner trains over several workers
            (:mod:`lifelong.platform.data_parallel`); ``None``: one process.
    """

    check_gradients: bool = True
    """Also check every step's gradient norms for NaN/inf (one fused op per step)."""

    pack_evaluation: bool = True
    """Evaluate the test sets back to back (:meth:`_evaluate_packed`), in batches sized by
    :func:`packed_batch_size`; ``False``: one experience at a time (a strategy's
    ``on_eval_start`` always does)."""

    stop_requested: Callable[[], bool] | None = None
    """Asked before every epoch (and plasticity reference); ``True`` raises
    :class:`TrainingStopped`, e.g. once a Tune scheduler has stopped the trial."""

    def __init__(
        self,
        stream: Stream,
        model_config: ModelConfig,
        strategies: Sequence[Strategy],
        training: TrainingConfig,
        seed: int,
        parallel: DataParallel | None = None,
    ) -> None:
        self.stream = stream
        self.parallel = parallel
        self.strategies = list(strategies)
        self.training = training
        self.seed = seed
        gpu = None if parallel is None else parallel.gpu
        self.fabric = _fabric(training.accelerator, training.precision, gpu)
        self.fabric.seed_everything(seed, verbose=False)
        multi_head = model_config.multi_head
        if multi_head is None:
            multi_head = stream.protocol == "task_incremental"
        task_classes = stream.task_classes if multi_head else []
        encoded = is_encoded(stream, model_config)  # the frozen backbone's features
        self._build = functools.partial(
            build_model,
            model_config,
            stream.input_shape,
            stream.n_classes,
            task_classes,
            encoded=encoded,
        )
        self.model: ContinualModel = self.fabric.to_device(self._build())
        if training.channels_last:  # 4-D weights only; convolutions then run channels-last
            self.model.to(memory_format=torch.channels_last)
        self.device = self.fabric.device
        # The feature extractor the training step and evaluation call (training.compile).
        self._features: Callable[[Tensor], Tensor] = (
            torch.compile(self.model.features) if training.compile else self.model.features
        )
        if parallel is not None:
            _check_data_parallel(self.model, model_config, parallel)
            parallel.sync_module(self.model)
        self.optimizer = training.make_optimizer(self.trainable())
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        steps: Any = stream.info.get("augment")  # scenario.augment (plain data)
        self.augment = build_augment(steps, stream.input_shape)
        self.experiences = place_experiences(
            stream.experiences, self.device, training, augment=self.augment is not None
        )
        self.data_wait_s = 0.0  # seconds blocked waiting for streamed batches
        self.task_free = bool(stream.info.get("task_free", False))
        # A text stream (lifelong.scenarios.text): per-position labels, the causal-LM
        # loss on response tokens, exact match as the score, and a general-text set.
        self.text = stream.info.get("kind") == "text"
        general: Any = stream.info.get("general")
        self._general = (
            (general["x"].to(self.device), general["y"].to(self.device)) if general else None
        )
        self.retention_base: dict[str, float] = {}  # the untrained model's retention
        self.retention: dict[str, float] = {}  # after the latest experience
        n = len(stream)
        self.R = np.full((n, n), np.nan)
        self.untrained = np.full(n, np.nan)
        self.fresh = np.full(n, np.nan)  # plasticity reference, when training asks for it
        self.model_config = model_config
        self.step = 0
        self.samples_seen = 0
        self.anytime: list[tuple[int, float]] = []  # (samples seen, accuracy), this experience
        self.next_experience = 0
        self._term_owner: dict[str, str] = {}
        self._term_steps: dict[str, list[int]] = {}  # global step of each history entry
        self._grad_norms: list[list[Tensor]] = []  # per step: each gradient's norm (on device)
        self._epoch_start_step = 0
        self._experience_start_step = 0
        self._params: list[torch.nn.Parameter] = []
        self._named: dict[str, torch.nn.Parameter] = {}  # name -> parameter, per experience
        self._loss_hooks: list[Strategy] = []
        self._backward_hooks: list[Strategy] = []
        # the plasticity reference shared by the sweep's trials (platform/shared_reference.py)
        self.reference_cache: ReferenceCache | None = None
        self._digest: str | None = None  # the stream's, computed once for the cache key
        self._hooks: dict[str, list[Strategy]] = {}  # per-step hook -> who overrides it
        self._ctx: Context | None = None  # the training context, while an experience trains
        self._seen: Tensor | None = None  # bce_seen: the classes seen so far
        self._loss_columns: Tensor | None = None  # bce_seen: the classes the loss covers
        # the test sets joined for packed evaluation: (columns, (x, y, owner))
        self._joined: tuple[tuple[int, ...], tuple[Tensor, Tensor, Tensor]] | None = None
        self._sample_bytes: int | None = None  # one sample's activations (packed batches)

    def _logits(self, x: Tensor, task_id: int = 0) -> Tensor:
        """The model's logits; through the compiled feature extractor under ``compile``."""
        if self.training.compile:
            return self.model.classify(self._features(x), task_id)
        return self.model(x, task_id)

    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer steps (``model.freeze`` leaves the others out)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ loop
    def context(self, experience: Experience) -> Context:
        """Return the hook context for ``experience`` (tensors on the device)."""
        return Context(
            self.model,
            self.optimizer,
            self.stream,
            experience,
            self.device,
            self.step,
            seed=self.seed,
            fresh_model=self.fresh_model,
        )

    @property
    def _step_now(self) -> int:
        return self._ctx.step if self._ctx is not None else self.step

    def fresh_model(self, seed: int | None = None) -> ContinualModel:
        """A new copy of the model as this trial built it, on the device (``Context``).

        Drawn with ``seed`` (default: derived from the trial's seed and the current
        step, so it is the same after a resume); the learner's RNG streams are kept.
        """
        if seed is None:
            seed = int(np.random.SeedSequence([self.seed, 7, self._step_now]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
            torch.manual_seed(seed)
            return self.fabric.to_device(self._build())

    def train_experience(self, i: int) -> dict[str, float]:
        """Train on experience ``i``; return the mean of each loss term over its steps."""
        exp = self.experiences[i]
        # A task-free stream gives the learner no boundary: the strategies see one long
        # experience (start before the first, end after the last); R keeps its rows.
        starts = not self.task_free or i == 0
        ends = not self.task_free or i == len(self.experiences) - 1
        if self.training.reset_optimizer and starts:
            self.optimizer = self.training.make_optimizer(self.trainable())
        if self.training.task_loss == "bce_seen":
            self._track_seen(i, exp.task_id)
        ctx = self.context(exp)
        ctx.total_steps = self.training.epochs * -(-exp.n_train // self.training.batch_size)
        for s in self.strategies if starts else ():
            s.on_experience_start(ctx)
        history: dict[str, list[Tensor]] = {}
        self._term_steps, self._grad_norms = {}, []
        self._experience_start_step = ctx.step
        self._named = dict(self.model.named_parameters())
        self._params = list(self._named.values())
        # Only the strategies that override a per-step hook are called per step.
        self._loss_hooks = [s for s in self.strategies if _overrides(s, "loss_terms")]
        self._backward_hooks = [s for s in self.strategies if _overrides(s, "on_after_backward")]
        self._hooks = {
            h: [s for s in self.strategies if _overrides(s, h)]
            for h in ("transform_batch", "task_loss", "on_task_gradient", "on_after_step")
        }
        epoch_hooks = {
            h: [s for s in self.strategies if _overrides(s, h)]
            for h in ("on_epoch_start", "on_epoch_end")
        }
        self._ctx = ctx
        totals: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        anytime = self.training.anytime_every
        self.anytime = []
        self.model.train()
        with self._batches(exp) as epoch_batches:
            for epoch in range(self.training.epochs):
                self._check_stop(i)
                self._epoch_start_step = ctx.step
                ctx.epoch = epoch
                for s in epoch_hooks["on_epoch_start"]:
                    s.on_epoch_start(ctx)
                for x, y, index in epoch_batches():
                    step = ctx.step
                    terms = self._step(ctx, x, y, exp.task_id, index)
                    for k, v in terms.items():
                        history.setdefault(k, []).append(v)
                        self._term_steps.setdefault(k, []).append(step)
                    self.samples_seen += y.shape[0]
                    if anytime and ctx.step % anytime == 0:
                        self._anytime(i)
                for s in epoch_hooks["on_epoch_end"]:
                    s.on_epoch_end(ctx)
                self._end_epoch(history, totals, counts, i, epoch, ctx.step)
        for s in self.strategies if ends else ():
            s.on_experience_end(ctx)
        self.step = ctx.step
        self._ctx = None
        means = torch.stack([totals[k] for k in totals]).tolist() if totals else []
        return {k: m / counts[k] for k, m in zip(totals, means, strict=True)}

    def _track_seen(self, i: int, task_id: int) -> None:
        """``bce_seen``: the classes of experiences ``0..i``, and those the loss covers."""
        n = self.stream.n_classes
        # Experiences arrive in order: add experience i's classes (all of 0..i after a
        # restore), so a lazy stream never builds its earlier experiences again.
        earlier = self.experiences[: i + 1] if self._seen is None else [self.experiences[i]]
        seen = seen_mask((e.classes for e in earlier), n, self.device)
        self._seen = seen if self._seen is None else self._seen | seen
        covered = self._seen
        if self.model.head.multi_head:  # the head scores only the task's classes
            covered = covered & self.model.head.task_mask[task_id]
        self._loss_columns = covered.nonzero().flatten()

    @contextlib.contextmanager
    def _batches(self, exp: Experience) -> Iterator[Callable[[], Batches]]:
        """Give the function that yields one epoch's batches of ``exp``.

        In memory: a permutation from ``self.generator``, gathered once per epoch;
        each batch is then a view (no per-step copy). Streamed: the same
        permutation's batches through an :class:`ExperienceLoader`.
        """
        if not isinstance(exp, StreamedExperience):

            def in_memory() -> Batches:
                n, bs = exp.n_train, self.training.batch_size
                perm = torch.randperm(n, device=self.device, generator=self.generator)
                xs, ys = exp.x_train[perm], exp.y_train[perm]
                for start in range(0, n, bs):
                    batch = slice(start, start + bs)
                    yield xs[batch], ys[batch], perm[batch]

            yield in_memory
            return
        loader = ExperienceLoader(exp, self.training, self.generator, self.seed, self.augment)
        try:
            with loader:
                yield loader.epoch
        finally:
            self.data_wait_s += loader.wait_s

    def _anytime(self, i: int) -> None:
        """Record the mean accuracy on experiences ``0..i`` now (online CL's anytime accuracy)."""
        row = self.evaluate(range(i + 1))
        self.anytime.append((self.samples_seen, float(np.mean(row[: i + 1]))))

    def _losses(
        self, ctx: Context, x: Tensor, y: Tensor, task_id: int, index: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None, dict[str, Tensor]]:
        """The step's forward pass: ``(loss, task loss, penalties, terms)``.

        ``penalties`` is the loss terms' sum when a strategy reads the task gradient
        alone (else ``None``); ``terms`` are the detached values to log.
        """
        weight = 1.0  # this worker's share of the batch (data parallel), else all of it
        for s in self._hooks["transform_batch"]:
            x, y = s.transform_batch(ctx, x, y)
        if self.parallel is not None:
            shard = self.parallel.shard(x, y, index, (y != IGNORE) if self.text else None)
            x, y, index, weight = shard.x, shard.y, shard.index, shard.weight
        features = self._features(x)
        if self.text:
            # The LM head runs at the scored (response) positions only: the same loss,
            # without the head's matmul over the vocabulary at every prompt and
            # padding position (a fifth of SmolLM2's compute per position). The
            # boolean index costs one host sync per step, small beside an LM step.
            scored = y != IGNORE
            logits = self.model.classify(features[scored], task_id)
            if self.parallel is None:
                loss = F.cross_entropy(logits, y[scored])
            else:  # the shard's share of the batch's token mean (a shard may score none)
                total = F.cross_entropy(logits, y[scored], reduction="sum")
                loss = total * (weight / max(1, logits.shape[0]))
            task = "ce"
        elif self._loss_columns is not None:
            logits = self.model.classify(features, task_id)
            loss = bce_seen(logits, y, self._loss_columns) * weight
            task = "bce"
        else:
            logits = self.model.classify(features, task_id)
            loss = F.cross_entropy(logits, y)
            if self.parallel is not None:
                loss = loss * weight
            task = "ce"
        batch = Batch(x, y, task_id, features, logits, index)
        for s in self._hooks["task_loss"]:
            loss = _scalar(s.task_loss(ctx, batch, loss), s, "task_loss", task)
            self._term_owner[task] = f"the task loss as strategy {s.name!r} returns it"
        terms = {task: loss.detach()}
        task_loss, penalty = loss, None
        for s in self._loss_hooks:
            for name, value in s.loss_terms(ctx, batch).items():
                _scalar(value, s, "loss_terms", name)
                if name in terms:
                    raise ValueError(f"loss term {name!r} of strategy {s.name!r} is already used")
                if self.parallel is not None:  # counts once summed over workers
                    value = value * weight
                terms[name] = value.detach()
                self._term_owner[name] = f"strategy {s.name!r}"
                loss = loss + value
                if self._hooks["on_task_gradient"]:
                    penalty = value if penalty is None else penalty + value
        return loss, task_loss, penalty, terms

    def _step(
        self, ctx: Context, x: Tensor, y: Tensor, task_id: int, index: Tensor | None
    ) -> dict[str, Tensor]:
        # Autocast (training.precision) around the forward pass and the loss only: it
        # caches its low-precision copy of each weight until the context exits, so a
        # context held across optimizer steps would go on computing with the weights
        # of its first step.
        with self.fabric.autocast():
            loss, task_loss, penalty, terms = self._losses(ctx, x, y, task_id, index)
        # What ``optimizer.zero_grad(set_to_none=True)`` does, without its per-call
        # profiler context (~50 us a step on a 2-core CPU): the optimizer steps exactly
        # the model's parameters (``TrainingConfig.make_optimizer``).
        for p in self._params:
            p.grad = None
        if self._hooks["on_task_gradient"]:  # the task gradient alone, then the terms'
            task_loss.backward(retain_graph=penalty is not None)
            for s in self._hooks["on_task_gradient"]:
                s.on_task_gradient(ctx)
            if penalty is not None:
                penalty.backward()
        else:
            loss.backward()
        if self.parallel is not None:  # every worker now holds the whole batch's gradient
            self.parallel.all_reduce_gradients(self._params)
        for s in self._backward_hooks:
            s.on_after_backward(ctx)
        if self.check_gradients:  # one fused op, kept on the device; checked per epoch
            grads = [p.grad for p in self._params if p.grad is not None]
            self._grad_norms.append(torch._foreach_norm(grads) if grads else [])
        if ctx.protected:
            self._protected_step(ctx)
        elif not plain_sgd_step(self.optimizer):
            self.optimizer.step()
        for s in self._hooks["on_after_step"]:
            s.on_after_step(ctx)
        ctx.step += 1
        return terms

    def _protected_step(self, ctx: Context) -> None:
        """Step the optimizer, leaving every entry a strategy protected unchanged."""
        params = self._named
        # Copy-and-restore only where the step could move a protected entry: SGD and
        # Adam skip a parameter without gradient, and plain SGD (no momentum, no weight
        # decay) leaves an entry with zero gradient exactly unchanged.
        opt = self.optimizer
        skips_no_grad = type(opt) in (torch.optim.SGD, torch.optim.Adam)
        plain_sgd = type(opt) is torch.optim.SGD and not any(
            g["momentum"] or g["weight_decay"] for g in opt.param_groups
        )
        saved = []
        for name, mask in ctx.protected.items():
            p = params[name]
            if mask is None:
                p.grad = None  # no gradient: SGD and Adam skip it (no decay, no moments)
                if not skips_no_grad:
                    saved.append((p, None, p.detach().clone()))
            else:
                if p.grad is not None:
                    p.grad.masked_fill_(mask, 0.0)
                if not plain_sgd:
                    saved.append((p, mask, p.detach().clone()))
        if not plain_sgd_step(opt):  # the fused update when SGD is plain
            opt.step()
        with torch.no_grad():
            for p, mask, old in saved:
                if mask is None:
                    p.copy_(old)
                else:
                    torch.where(mask, old, p, out=p)
        ctx.protected.clear()

    def _end_epoch(
        self,
        history: dict[str, list[Tensor]],
        totals: dict[str, Tensor],
        counts: dict[str, int],
        i: int,
        epoch: int,
        step: int,
    ) -> None:
        """Fold the epoch's per-step terms into totals; fail at the first NaN/inf step.

        This is the loop's only host sync: once per epoch, not per step. Every
        step's loss terms and gradient norms stayed on the device; here one stacked
        tensor gives, per term and for the gradient, the index of its first
        non-finite step (or -1), so the error names the exact optimizer step.
        """
        if not history:
            return
        stacked = {k: torch.stack(v) for k, v in history.items()}
        if self.parallel is not None:  # each worker's weighted share -> the batch's value
            self.parallel.check_same_terms({k: len(v) for k, v in history.items()}, self.device)
            stacked = {k: self.parallel.sum(v) for k, v in stacked.items()}
        sums = {k: v.double().sum() for k, v in stacked.items()}
        for k, v in history.items():
            counts[k] = counts.get(k, 0) + len(v)
            totals[k] = totals[k] + sums[k] if k in totals else sums[k]
        checks = [_first_nonfinite(v) for v in stacked.values()]
        norms = [n for g in self._grad_norms for n in g]
        grad_steps = [j for j, g in enumerate(self._grad_norms) for _ in g]
        if norms:
            checks.append(_first_nonfinite(torch.stack(norms)))
        firsts = torch.stack(checks).tolist()
        steps = dict(self._term_steps)
        history.clear()
        self._term_steps = {}
        self._grad_norms = []
        bad_terms = {k: steps[k][int(f)] for k, f in zip(stacked, firsts, strict=False) if f >= 0}
        bad_grad = (
            self._epoch_start_step + grad_steps[int(firsts[-1])]
            if norms and firsts[-1] >= 0
            else None
        )
        if not bad_terms and bad_grad is None:
            return
        first = min([*bad_terms.values(), *([bad_grad] if bad_grad is not None else [])])
        terms = tuple(k for k, s in bad_terms.items() if s == first)
        where = (
            f"experience {i}, epoch {epoch}, optimizer step {first} "
            f"(step {first - self._experience_start_step} of the experience)"
        )
        if terms:
            who = ", ".join(
                f"{k!r} (from {self._term_owner.get(k, 'the task loss')})" for k in terms
            )
            message = f"loss became NaN/inf in {where}: term {who}"
        else:
            present = ", ".join(
                f"{k!r} (from {self._term_owner.get(k, 'the task loss')})"
                for k in stacked
                if first in steps[k]
            )
            message = (
                f"gradients became NaN/inf in {where} while every loss term was finite; "
                f"the backward pass of {present} produced them"
            )
        raise DivergenceError(
            message, experience=i, epoch=epoch, step=first, terms=terms, gradient=not terms
        )

    @torch.no_grad()
    def evaluate(self, columns: Iterable[int] | None = None) -> np.ndarray:
        """Return the accuracy on each experience's test set (one row of ``R``).

        ``columns``: the experiences to evaluate (default: all); the others are
        ``nan``. Strategies' ``on_eval_start`` may change the weights for one
        experience (a task mask); they are restored afterwards.
        """
        self.model.eval()
        n = len(self.experiences)
        columns = list(range(n) if columns is None else columns)
        accs = []
        bs = self.training.eval_batch_size
        hooks = [s for s in self.strategies if _overrides(s, "on_eval_start")]
        logit_hooks = [s for s in self.strategies if _overrides(s, "eval_logits")]
        saved = [p.detach().clone() for p in self.model.parameters()] if hooks else []
        mine = columns if self.parallel is None else self.parallel.mine(columns)
        packed = self.pack_evaluation and not hooks and not self.text
        packed = packed and not any(
            isinstance(self.experiences[j], StreamedExperience) for j in mine
        )
        with self.fabric.autocast():
            if packed:  # the test sets back to back, in full batches
                accs = self._evaluate_packed(mine, logit_hooks)
            for j in [] if packed else mine:
                exp = self.experiences[j]
                ctx = self.context(exp)
                for s in hooks:
                    s.on_eval_start(ctx)
                correct = torch.zeros((), dtype=torch.long, device=self.device)
                x_test, y_test = eval_tensors(exp)  # a streamed experience's stay on the host
                for start in range(0, exp.n_test, bs):
                    x = x_test[start : start + bs].to(self.device, non_blocking=True)
                    y = y_test[start : start + bs].to(self.device, non_blocking=True)
                    if self.text:  # exact match: every response token argmax-correct
                        correct += self._exact_matches(x, y, exp.task_id, ctx, logit_hooks)
                        continue
                    if logit_hooks:
                        h = self._features(x)
                        logits = self.model.classify(h, exp.task_id)
                        for s in logit_hooks:
                            logits = s.eval_logits(ctx, h, logits)
                    else:
                        logits = self._logits(x, exp.task_id)
                    if self._seen is not None:  # bce_seen: predict among the seen classes
                        logits = logits.masked_fill(~self._seen, float("-inf"))
                    correct += (logits.argmax(1) == y).sum()
                accs.append(correct.double() / exp.n_test)
                if saved:
                    torch._foreach_copy_(list(self.model.parameters()), saved)
        self.model.train()
        row = np.full(n, np.nan)
        if self.parallel is not None:  # each worker scored its own columns
            scores = torch.zeros(n, dtype=torch.float64, device=self.device)
            if accs:
                scores[mine] = torch.stack(accs)
            row[columns] = self.parallel.sum(scores).cpu().numpy()[columns]
        elif accs:
            row[columns] = torch.stack(accs).cpu().numpy()
        return row

    def _evaluate_packed(self, columns: Sequence[int], logit_hooks: list[Strategy]) -> list[Tensor]:
        """Each column's accuracy, its test set evaluated back to back with the others'.

        The body runs on batches of ``eval_batch_size`` samples that cross test-set
        boundaries (a stream of many small test sets takes a few full passes, not one
        short pass per experience); the head, a logit hook and the accuracy then see
        each experience's own rows.
        """
        if not columns:  # a data-parallel worker with no column of its own
            return []
        exps = [self.experiences[j] for j in columns]
        if self._sample_bytes is None:  # once: the shapes decide it, not a timing
            self._sample_bytes = activation_bytes(self.model, exps[0].x_test[:1])
        n_tests = [e.n_test for e in exps]
        bs = packed_batch_size(self.training.eval_batch_size, n_tests, self._sample_bytes)
        ctxs = [self.context(e) for e in exps] if logit_hooks else []
        correct = torch.zeros(len(exps), dtype=torch.long, device=self.device)
        if not self.model.head.multi_head and not logit_hooks:
            x, y, owner = self._joined_tests(columns)
            for start in range(0, y.shape[0], bs):  # one head for all: whole batches
                logits = self._logits(x[start : start + bs])
                if self._seen is not None:  # bce_seen: predict among the seen classes
                    logits = logits.masked_fill(~self._seen, float("-inf"))
                hits = (logits.argmax(1) == y[start : start + bs]).long()
                correct.index_add_(0, owner[start : start + bs], hits)
            totals = torch.tensor([e.n_test for e in exps], dtype=torch.float64)
            return list(correct.double() / totals.to(self.device))
        pieces: list[tuple[int, int, int]] = []  # (position in columns, start, end) of a batch
        filled = 0
        for k, exp in enumerate(exps):
            start = 0
            while start < exp.n_test:
                end = min(exp.n_test, start + bs - filled)
                pieces.append((k, start, end))
                filled += end - start
                start = end
                if filled == bs or (k == len(exps) - 1 and start == exp.n_test):
                    self._score_batch(pieces, exps, ctxs, logit_hooks, correct)
                    pieces, filled = [], 0
        if pieces:
            self._score_batch(pieces, exps, ctxs, logit_hooks, correct)
        totals = torch.tensor([e.n_test for e in exps], dtype=torch.float64, device=self.device)
        return list(correct.double() / totals)

    def _joined_tests(self, columns: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        """The columns' test sets back to back, and each row's position in ``columns``.

        Kept for the next evaluation of the same columns (``eval_on: all`` asks for the
        same ones every time) when the inputs take at most 256 MiB.
        """
        key = tuple(columns)
        if self._joined is not None and self._joined[0] == key:
            return self._joined[1]
        exps = [self.experiences[j] for j in columns]
        x = torch.cat([e.x_test for e in exps])
        y = torch.cat([e.y_test for e in exps])
        sizes = torch.tensor([e.n_test for e in exps], device=self.device)
        owner = torch.repeat_interleave(torch.arange(len(exps), device=self.device), sizes)
        if x.element_size() * x.nelement() <= 256 * 2**20:
            self._joined = (key, (x, y, owner))
        return x, y, owner

    def _score_batch(
        self,
        pieces: list[tuple[int, int, int]],
        exps: list[Experience],
        ctxs: list[Context],
        logit_hooks: list[Strategy],
        correct: Tensor,
    ) -> None:
        """Add one packed batch's correct predictions to each of its experiences' counts."""
        x = torch.cat([exps[k].x_test[a:b] for k, a, b in pieces])
        h = self._features(x)
        offset = 0
        for k, a, b in pieces:
            rows = h[offset : offset + b - a]
            offset += b - a
            exp = exps[k]
            logits = self.model.classify(rows, exp.task_id)
            for s in logit_hooks:
                logits = s.eval_logits(ctxs[k], rows, logits)
            if self._seen is not None:  # bce_seen: predict among the seen classes
                logits = logits.masked_fill(~self._seen, float("-inf"))
            correct[k] += (logits.argmax(1) == exp.y_test[a:b]).sum()

    def _exact_matches(
        self, x: Tensor, y: Tensor, task_id: int, ctx: Context, hooks: list[Strategy]
    ) -> Tensor:
        """How many rows of a text batch are exact matches (the LM head at scored positions)."""
        h = self._features(x)[y != IGNORE]
        logits = self.model.classify(h, task_id)
        for s in hooks:
            logits = s.eval_logits(ctx, h, logits)
        return exact_match(logits, y).sum()

    @_blamed
    def evaluate_untrained(self) -> np.ndarray:
        """Evaluate the model before any training (the FWT baseline row).

        Under ``eval_on: seen`` or ``last_k`` nothing unseen is ever evaluated, so
        forward transfer is undefined and the row stays ``nan``.
        """
        if self.training.eval_on == "all":
            self.untrained = self._shared_untrained()
        if self._general is not None:
            self.retention_base = self.general_retention()
        return self.untrained

    def _shared_untrained(self) -> np.ndarray:
        """The untrained row, from the sweep's cache when another trial of the seed has it.

        The key: the stream, model, evaluation settings, seed and device (none of the
        strategies is in it: a strategy that changes evaluation is not shared).
        """
        changes_eval = any(
            _overrides(s, h) for s in self.strategies for h in ("on_eval_start", "eval_logits")
        )
        if self.reference_cache is None or self.parallel is not None or changes_eval or self.text:
            return self.evaluate()
        evaluation = self.training.model_dump(
            mode="json",
            include={"eval_batch_size", "precision", "accelerator", "compile", "channels_last"},
        )
        key = self._shared_key("untrained", evaluation=evaluation)
        return np.array(self.reference_cache.get(key, lambda: self.evaluate().tolist()))

    @torch.no_grad()
    def general_retention(self) -> dict[str, float]:
        """Perplexity and next-token accuracy on the stream's general-text set.

        The general-ability retention metric of a text stream: the set is fixed
        (:func:`lifelong.scenarios.text_tasks.general_text`), every next token is
        scored, and the values are ``exp`` of the mean token cross-entropy and the
        fraction of tokens that are the argmax.
        """
        if self._general is None:
            return {}
        x, y = self._general
        self.model.eval()
        nll = torch.zeros((), dtype=torch.float64, device=self.device)
        hits = torch.zeros((), dtype=torch.long, device=self.device)
        bs = max(1, min(self.training.eval_batch_size, 16))
        starts = range(0, x.shape[0], bs)
        with self.fabric.autocast():
            for start in starts if self.parallel is None else self.parallel.mine(starts):
                labels = y[start : start + bs]
                logits = self._logits(x[start : start + bs]).float()
                scored = labels != IGNORE
                nll += F.cross_entropy(logits[scored], labels[scored], reduction="sum").double()
                hits += (logits.argmax(-1)[scored] == labels[scored]).sum()
        self.model.train()
        if self.parallel is not None:  # each worker scored its own batches
            nll, hits = self.parallel.sum(nll), self.parallel.sum(hits)
        n = int((y != IGNORE).sum())
        mean, acc = (nll / n).item(), hits.item() / n
        return {"ppl": float(np.exp(mean)), "token_acc": float(acc)}

    def fit(self) -> np.ndarray:
        """Train through the whole stream; return the accuracy matrix ``R``."""
        if self.next_experience == 0 and np.isnan(self.untrained).all():
            self.evaluate_untrained()
        for i in range(self.next_experience, len(self.experiences)):
            self.run_experience(i)
        return self.R

    @_blamed
    def run_experience(self, i: int) -> tuple[np.ndarray, dict[str, float]]:
        """Train experience ``i``, evaluate, record row ``i`` of ``R``; return it and losses.

        Under ``training.eval_every`` a row between evaluations stays ``nan``.
        """
        losses = self.train_experience(i)
        n = len(self.experiences)
        if self.training.evaluated_row(i, n):
            self.R[i] = self.evaluate(self.training.evaluated_columns(i, n))
        if self.training.plasticity_baseline:
            self._check_stop(i)
            self.fresh[i] = self.fresh_accuracy(i)
        if self._general is not None:
            self.retention = self.general_retention()
        self.next_experience = i + 1
        return self.R[i], losses

    def _check_stop(self, i: int) -> None:
        stop = self.stop_requested is not None and self.stop_requested()
        if self.parallel is not None:  # every worker stops at the same point
            stop = self.parallel.any(stop, self.device)
        if stop:
            raise TrainingStopped(f"stopped while training experience {i}")

    def fresh_accuracy(self, i: int) -> float:
        """Accuracy on experience ``i`` of a freshly initialised model trained on it alone.

        The plasticity reference: same model, training settings and no strategy,
        seeded from ``(seed, i)``; the learner's own RNG streams are left untouched.
        A data-parallel learner trains it over the same workers.
        """
        seed = int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0])
        training = self.training.model_copy(update={"plasticity_baseline": False})

        def compute() -> float:
            with torch.random.fork_rng(devices=[]):
                fresh = Learner(self.stream, self.model_config, [], training, seed, self.parallel)
                fresh.train_experience(i)
                return float(fresh.evaluate([i])[i])

        if self.reference_cache is None or self.parallel is not None:  # workers train together
            return compute()
        key = self._shared_key(
            "plasticity/fresh", training=training.model_dump(mode="json"), experience=i
        )
        return float(self.reference_cache.get(key, compute))

    def _shared_key(self, what: str, **inputs: Any) -> dict[str, Any]:
        """The :class:`ReferenceCache` key of value ``what``.

        The stream (its digest, computed once), the model, the seed, the device and
        the value's own ``inputs``.
        """
        if self._digest is None:
            self._digest = stream_digest(self.stream)[0]
        return {
            "what": what,
            "stream": self._digest,
            "model": self.model_config.model_dump(mode="json"),
            "seed": self.seed,
            "device": str(self.fabric.device),
            **inputs,
        }

    @_blamed
    def strategy_metrics(self) -> dict[str, float]:
        """Every strategy's diagnostics, keyed ``<strategy>/<key>``."""
        return {f"{s.name}/{k}": float(v) for s in self.strategies for k, v in s.metrics().items()}

    # ----------------------------------------------------------------- state
    @_blamed
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, strategies, RNGs, R.

        A strategy state that ``torch.load(weights_only=True)`` could not read back is
        a ``TypeError`` naming the strategy and key, here, not at the resume.
        """
        strategies = {s.name: s.state_dict() for s in self.strategies}
        for s in self.strategies:
            check_state(s, strategies[s.name])
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "strategies": strategies,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            # The evaluated rows only: a long stream evaluated every k-th experience
            # checkpoints T/k rows, not a T x T matrix of nan after every experience.
            "R_index": torch.from_numpy(np.flatnonzero(~np.isnan(self.R).all(axis=1))),
            "R_rows": torch.from_numpy(self.R[~np.isnan(self.R).all(axis=1)].copy()),
            "untrained": torch.from_numpy(self.untrained.copy()),
            "fresh": torch.from_numpy(self.fresh.copy()),
            "retention_base": dict(self.retention_base),
            "retention": dict(self.retention),
            "step": self.step,
            "samples_seen": self.samples_seen,
            "next_experience": self.next_experience,
        }

    @_blamed
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (e.g. read with ``torch.load(weights_only=True)``)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for s in self.strategies:
            s.load_state_dict(state["strategies"][s.name])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.R = np.full_like(self.R, np.nan)
        self.R[state["R_index"].numpy()] = state["R_rows"].numpy()
        self.untrained = state["untrained"].numpy().copy()
        self.fresh = state["fresh"].numpy().copy()
        self.retention_base = {k: float(v) for k, v in state.get("retention_base", {}).items()}
        self.retention = {k: float(v) for k, v in state.get("retention", {}).items()}
        self.step = int(state["step"])
        self.samples_seen = int(state.get("samples_seen", 0))
        self.next_experience = int(state["next_experience"])
