"""Batches of one experience from the host: the learner's streaming path.

An in-memory experience is moved to the device once and batched by indexing a
permutation (the learner's fast path). An experience that is too large for the
device, or whose training data are augmented, stays on the host instead and
is fed through a ``torch.utils.data.DataLoader``: worker processes gather (and
augment) the batches, pinned memory and ``prefetch_factor`` batches per worker
keep the device busy, and the copy to the device is asynchronous.

When: ``training.data_on_device`` is ``auto`` (an experience whose training
tensors exceed ``training.device_data_mb`` streams), ``always`` or ``never``;
``scenario.augment`` (``Stream.info["augment"]``) streams every experience.

Same batches: the batch sampler (:class:`EpochBatches`) cuts the same
``torch.randperm(n, generator=learner.generator)`` per epoch that the
in-memory path draws, so on equal data both paths train on identical batches
in the same order. Augmentation is seeded per batch: each batch carries a seed
drawn from a generator seeded from ``(trial seed, experience index)`` and its
samples are transformed under that seed, so the result is the same for any
``loader_workers`` (0, 1, 2, ...), ``prefetch_factor`` and process; the
``DataLoader`` itself gets a seeded generator too (it seeds each worker from
it). A checkpoint is taken between experiences, and each experience's
generators are derived again from its index, so a resumed trial continues
exactly.

Workers share the data instead of copying it: they are forked (``fork`` start
method, where the platform has it), so the host tensors' pages are shared
copy-on-write and only read; a stream read zero-copy from Ray's object store
(``cluster/shared.py``) is a shared mapping, which forked workers read in place
too. Each worker receives a batch's indices and returns the batch.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from lifelong.platform.training import TrainingConfig
from lifelong.scenarios.augment import Augment
from lifelong.scenarios.stream import Experience, LazyExperiences, on_device

_MB = 2**20


class StreamedExperience(Experience):
    """An experience whose data stay on the host; the learner streams its batches.

    ``host`` is the experience itself (tensors on the host). Reading ``x_train``,
    ``y_train``, ``x_test`` or ``y_test`` returns that tensor moved to ``device``
    (a copy at every read; on the CPU no copy at all): a strategy that reads the
    whole training set (EWC's Fisher, MAS) keeps working, at the cost of one copy
    when it reads. The learner itself reads ``host``.
    """

    def __init__(self, host: Experience, device: torch.device) -> None:
        # Experience is a frozen dataclass; these are its fields, set once.
        object.__setattr__(self, "index", host.index)
        object.__setattr__(self, "task_id", host.task_id)
        object.__setattr__(self, "classes", host.classes)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "device", device)

    host: Experience
    device: torch.device

    @property  # type: ignore[override]
    def x_train(self) -> Tensor:
        """Training inputs on the device (moved when read)."""
        return self.host.x_train.to(self.device)

    @property  # type: ignore[override]
    def y_train(self) -> Tensor:
        """Training labels on the device (moved when read)."""
        return self.host.y_train.to(self.device)

    @property  # type: ignore[override]
    def x_test(self) -> Tensor:
        """Test inputs on the device (moved when read)."""
        return self.host.x_test.to(self.device)

    @property  # type: ignore[override]
    def y_test(self) -> Tensor:
        """Test labels on the device (moved when read)."""
        return self.host.y_test.to(self.device)

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return self.host.n_train

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return self.host.n_test

    def __repr__(self) -> str:
        return f"StreamedExperience(index={self.index}, classes={self.classes})"


class StreamedExperiences(LazyExperiences):
    """Experiences built on demand (``host``), each streamed from the host."""

    def __init__(self, host: LazyExperiences, device: torch.device) -> None:
        self.host = host
        self.device = device

    def __len__(self) -> int:
        return len(self.host)

    def item(self, i: int) -> Experience:
        """Experience ``i``, built on the host when read."""
        return StreamedExperience(self.host.item(i), self.device)

    def to(self, device: torch.device | str) -> StreamedExperiences:
        """The same experiences, their batches streamed to ``device``."""
        return StreamedExperiences(self.host, torch.device(device))

    def representatives(self) -> list[Experience]:
        """The host experiences' representatives."""
        return self.host.representatives()


def train_megabytes(e: Experience) -> float:
    """Size of ``e``'s training tensors in MiB (the quantity ``device_data_mb`` bounds)."""
    return sum(t.numel() * t.element_size() for t in (e.x_train, e.y_train)) / _MB


def place_experiences(
    experiences: Sequence[Experience],
    device: torch.device,
    training: TrainingConfig,
    *,
    augment: bool,
) -> Sequence[Experience]:
    """``experiences`` as the learner trains them: on ``device``, or streamed from the host.

    With nothing to stream this is exactly :func:`~lifelong.scenarios.stream.on_device`.
    Built-on-demand experiences stream or not together, decided on experience 0
    (they hold the same amount of data).

    Raises:
        ValueError: ``data_on_device: always`` with augmentation, which only
            the loader applies.
    """
    mode = training.data_on_device
    if augment and mode == "always":
        raise ValueError(
            "training.data_on_device: always cannot augment: scenario.augment runs per sample "
            "in the loader workers (set data_on_device to auto or never)"
        )
    if mode == "always":
        return on_device(experiences, device)
    limit = training.device_data_mb

    def streams(e: Experience) -> bool:
        return augment or mode == "never" or train_megabytes(e) > limit

    if isinstance(experiences, LazyExperiences):
        lazy_streams = len(experiences) > 0 and streams(experiences[0])
        return StreamedExperiences(experiences, device) if lazy_streams else experiences.to(device)
    streamed = [streams(e) for e in experiences]
    if not any(streamed):
        return on_device(experiences, device)
    return [
        StreamedExperience(e, device) if s else e.to(device)
        for e, s in zip(experiences, streamed, strict=True)
    ]


def eval_tensors(e: Experience) -> tuple[Tensor, Tensor]:
    """The test tensors to evaluate ``e`` on: on the host for a streamed experience.

    The learner batches them and moves each evaluation batch to the device, so a
    large test set never reaches the device at once.
    """
    data = e.host if isinstance(e, StreamedExperience) else e
    return data.x_test, data.y_test


class BatchRequest(NamedTuple):
    """What a loader worker is sent for one batch.

    Attributes:
        index: the batch's positions in the training set.
        seed: the augmentation seed of the batch (None without augmentation).
    """

    index: np.ndarray
    seed: int | None


class ExperienceData(Dataset[tuple[Tensor, Tensor]]):
    """One experience's training tensors on the host, read a batch at a time.

    Without augmentation a batch is one gather (``x[index]``); with it, each
    sample is transformed on its own (in the worker processes), under the
    batch's seed.

    Args:
        x: training inputs (host).
        y: training labels (host).
        augment: the per-sample transform, or None.
    """

    def __init__(self, x: Tensor, y: Tensor, augment: Augment | None) -> None:
        self.x, self.y, self.augment = x, y, augment

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        """Sample ``i`` (augmented with torch's global generator, if augmenting)."""
        x = self.x[i]
        return (self.augment(x) if self.augment is not None else x), self.y[i]

    def __getitems__(self, request: BatchRequest) -> tuple[Tensor, Tensor]:
        """The batch ``request`` names (the ``DataLoader`` calls this, one call per batch)."""
        index = torch.from_numpy(request.index)
        if self.augment is None:
            return self.x[index], self.y[index]
        # The batch's own seed, not the process's generator: the same samples for any
        # number of workers (and in this process, whose generator stays untouched).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(request.seed)
            x = torch.stack([self.augment(self.x[i]) for i in request.index.tolist()])
        return x, self.y[index]


def _as_is(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate: :meth:`ExperienceData.__getitems__` already returns the batch."""
    return batch


class EpochBatches(Sampler[BatchRequest]):
    """The batches of one epoch: ``randperm(n, generator)`` cut every ``batch_size``.

    The same permutation, drawn from the same generator, as the learner's
    in-memory path (one host sync per epoch when the generator is on a GPU).

    Args:
        n: training samples.
        batch_size: samples per batch (the last batch may be smaller).
        generator: the learner's batch-order generator.
        seeds: draws each batch's augmentation seed; None without augmentation.
    """

    def __init__(
        self, n: int, batch_size: int, generator: torch.Generator, seeds: torch.Generator | None
    ) -> None:
        self.n, self.batch_size, self.generator, self.seeds = n, batch_size, generator, seeds

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[BatchRequest]:
        g = self.generator
        perm = torch.randperm(self.n, device=g.device, generator=g).cpu().numpy()
        n_batches = len(self)
        if self.seeds is None:
            seeds: list[int | None] = [None] * n_batches
        else:
            seeds = torch.randint(2**62, (n_batches,), generator=self.seeds).tolist()
        for k, start in enumerate(range(0, self.n, self.batch_size)):
            yield BatchRequest(perm[start : start + self.batch_size], seeds[k])


def _worker_context() -> str | None:
    """``fork`` where the platform has it: workers share the parent's pages, nothing is pickled."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else None


class ExperienceLoader:
    """The batches of one streamed experience, epoch after epoch, on the device.

    A context manager: the worker processes live from the first epoch to
    ``__exit__`` (``persistent_workers``), so an experience of several epochs
    starts them once.

    Args:
        experience: the streamed experience (its ``host`` tensors are read).
        training: ``batch_size``, ``loader_workers`` and ``prefetch_factor``.
        generator: the learner's batch-order generator (see :class:`EpochBatches`).
        seed: the trial seed; with the experience index it seeds the
            augmentation and the ``DataLoader``'s generator.
        augment: the per-sample transform of the training data, or None.

    Attributes:
        wait_s: seconds spent blocked waiting for the next batch so far.
        batches: batches delivered so far.
    """

    def __init__(
        self,
        experience: StreamedExperience,
        training: TrainingConfig,
        generator: torch.Generator,
        seed: int,
        augment: Augment | None,
    ) -> None:
        host = experience.host
        self.device = experience.device
        aug_seed, loader_seed = np.random.SeedSequence([seed, experience.index]).generate_state(2)
        seeds = torch.Generator().manual_seed(int(aug_seed)) if augment is not None else None
        workers = training.loader_workers
        self.loader = DataLoader(
            ExperienceData(host.x_train, host.y_train, augment),
            batch_sampler=EpochBatches(host.n_train, training.batch_size, generator, seeds),
            collate_fn=_as_is,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=training.prefetch_factor if workers else None,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(int(loader_seed)),
            multiprocessing_context=_worker_context() if workers else None,
        )
        self.wait_s = 0.0
        self.batches = 0

    def epoch(self) -> Iterator[tuple[Tensor, Tensor, None]]:
        """One epoch's ``(x, y, None)`` batches on the device (no sample index: see ``Batch``).

        ``wait_s`` grows by the time spent blocked here: starting the workers (the
        first epoch) and each ``next()`` on the loader.
        """
        clock = time.perf_counter
        start = clock()
        batches = iter(self.loader)
        self.wait_s += clock() - start
        while True:
            start = clock()
            try:
                x, y = next(batches)
            except StopIteration:
                return
            finally:
                self.wait_s += clock() - start
            self.batches += 1
            yield (
                x.to(self.device, non_blocking=True),
                y.to(self.device, non_blocking=True),
                None,
            )

    def close(self) -> None:
        """Stop the worker processes (also done when the loader is garbage-collected)."""
        iterator = getattr(self.loader, "_iterator", None)  # the persistent workers' iterator
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None  # type: ignore[attr-defined]

    def __enter__(self) -> ExperienceLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
