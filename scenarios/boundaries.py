"""Streams without sharp boundaries: blurry-M and Gaussian-scheduled task-free streams.

Both start from the class groups of the sharp class-incremental stream
(:func:`~lifelong.scenarios.protocols.split_classes`, same seed, so the nominal
groups are those of ``split_<source>``) and change only which training samples
each experience holds. The test set of experience ``i`` is always the test data
of nominal group ``i``, so ``R[i, j]`` stays "accuracy on group ``j`` after
training through experience ``i``" (see ``docs/metrics.md``, *Streams without
sharp boundaries*). Every training sample is used exactly once over the stream.

**Blurry-M** (Bang, Kim, Yoo, Ha & Choi, *Rainbow Memory: Continual Learning
with a Memory of Diverse Samples*, CVPR 2021, arXiv:2103.17230; reference code
``clovaai/rainbow-memory``, ``notebooks/make_dataset_per_task.ipynb``, and the
splits it released, e.g. ``collections/cifar10/cifar10_train_blurry10_rand1_cls2_task*.json``).
Each experience has *major* classes (its own group) and *minor* classes (the
other groups'); M% of its training samples are minor:

1. cut the classes into ``T`` groups as the sharp stream does;
2. in each group ``g`` of ``n_g`` training samples, a random ``round(M·n_g/100)``
   of them *leave* and the others stay in experience ``g``;
3. the samples leaving group ``g`` are spread as evenly as possible (counts
   differing by at most one) over the ``T - 1`` other experiences.

Experience ``i`` thus holds ``n_i - round(M·n_i/100)`` samples of its own
classes plus about ``M·n_j/(100·(T-1))`` of every other group ``j``: exactly
M% foreign when the groups have equal sizes (the reference's balanced data),
within a fraction of a percent for near-equal ones. The reference notebook
draws the leaving part ``T - 1`` times independently (a sample may repeat or
be dropped) and keeps ``int(0.9·n)``; its released splits partition the data
exactly (each of CIFAR-10's 48,750 training samples once), as this module does.

**Gaussian schedule** (Shanahan, Kaplanis & Mitrović, *Encoders and Ensembles
for Task-Free Continual Learning*, 2021, arXiv:2105.13327; reference code
``google-deepmind/deepmind-research``, ``continual_learning/encoders_and_ensembles.ipynb``,
``gaussian_schedule``). Classes fade in and out: each has a Gaussian over time,
the peaks spread evenly, width 50 batches for peaks 100 batches apart (half the
peak spacing), and no task boundary reaches the learner. Here:

1. class group ``g`` has a Gaussian over time centred at ``g`` (in units of
   experiences) with standard deviation ``width`` (default 0.5, the reference's
   width relative to its peak spacing);
2. each training sample of group ``g`` gets a time drawn from that Gaussian;
3. the samples, sorted by time, are cut into ``T`` equal-size chunks (sizes
   differing by at most one): the *nominal* boundaries, where the learner
   evaluates (rows of ``R``) but, the stream being task-free
   (``info["task_free"]``), calls no boundary hooks mid-stream.

Within a chunk the samples keep their time order. The reference instead
re-draws, per 5-batch episode, which classes are present (class ``c`` with
probability ``exp(-(t - peak_c)² / 2σ²)``) and takes its batches from a
shuffled, repeating dataset of those classes; placing every sample once at a
drawn time gives the same rising and falling class proportions without
repeating data.

Everything is deterministic from the seed; no per-sample Python loop.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lifelong.scenarios.protocols import split_classes
from lifelong.scenarios.sources import Dataset, ScenarioError
from lifelong.scenarios.stream import Experience, Stream

__all__ = [
    "BOUNDARIES",
    "Boundaries",
    "blurry_stream",
    "boundary_stream_name",
    "gaussian_stream",
    "make_boundary_stream",
]

Boundaries = Literal["sharp", "blurry", "gaussian"]
BOUNDARIES: tuple[Boundaries, ...] = ("sharp", "blurry", "gaussian")

# Generator purposes, distinct from protocols.py's (_CLASS_ORDER, _PERMUTATIONS, _LABEL_SHUFFLES).
_BLURRY_SPLIT, _GAUSSIAN_TIMES = 4, 5


def boundary_stream_name(source: str, boundaries: Boundaries, *, m: float = 10.0) -> str:
    """Return a stream's name: ``blurry<M>_split_<source>`` or ``gaussian_split_<source>``.

    ``split_<source>`` for sharp boundaries, as :func:`~lifelong.scenarios.protocols.stream_name`.
    """
    if boundaries == "blurry":
        return f"blurry{m:g}_split_{source}"
    if boundaries == "gaussian":
        return f"gaussian_split_{source}"
    return f"split_{source}"


def _nominal_groups(data: Dataset, n_experiences: int, seed: int) -> tuple[list[list[int]], Tensor]:
    """The sharp stream's class groups and each training sample's group (its home experience).

    Raises:
        ScenarioError: (field ``n_experiences``) for fewer than 2 experiences or
            more than there are classes.
    """
    if n_experiences < 2:
        raise ScenarioError(
            "n_experiences",
            f"a stream without sharp boundaries needs at least 2 experiences, got {n_experiences}",
        )
    groups = split_classes(data.n_classes, n_experiences, seed)
    group_of = torch.empty(data.n_classes, dtype=torch.int64)
    for g, classes in enumerate(groups):
        group_of[classes] = g
    return groups, group_of[data.y_train]


def _build(
    data: Dataset,
    groups: list[list[int]],
    home: Tensor,
    parts: list[Tensor],
    *,
    name: str,
    seed: int,
    info: dict[str, object],
) -> Stream:
    """Make the stream whose experience ``i`` trains on ``data``'s samples ``parts[i]``.

    The test set of experience ``i`` is nominal group ``i``'s test data; its
    ``classes`` are the labels of its training samples and of its group.
    ``info`` gets ``class_order``, ``class_groups`` and ``group_counts``
    (``[i][g]``: samples of group ``g`` in experience ``i``).
    """
    n = len(groups)
    experiences = []
    for i, (group, idx) in enumerate(zip(groups, parts, strict=True)):
        y_train = data.y_train[idx]
        in_group = torch.isin(data.y_test, torch.tensor(group, dtype=torch.int64))
        classes = set(torch.unique(y_train).tolist()) | set(group)
        experiences.append(
            Experience(
                index=i,
                task_id=0,
                classes=tuple(sorted(classes)),
                x_train=data.x_train[idx].contiguous(),
                y_train=y_train.contiguous(),
                x_test=data.x_test[in_group].contiguous(),
                y_test=data.y_test[in_group].contiguous(),
            )
        )
    counts = [torch.bincount(home[idx], minlength=n).tolist() for idx in parts]
    return Stream(
        name=name,
        protocol="class_incremental",
        experiences=tuple(experiences),
        n_classes=data.n_classes,
        input_shape=data.input_shape,
        seed=seed,
        info={
            "class_order": [c for g in groups for c in g],
            "class_groups": groups,
            "group_counts": counts,
            **info,
        },
    )


def blurry_stream(data: Dataset, n_experiences: int, seed: int, *, m: float, name: str) -> Stream:
    """Cut ``data`` into a blurry-M class-incremental stream (Bang et al. 2021).

    Each group keeps ``(100 - m)``% of its training samples in its own
    experience and spreads the other ``m``% evenly over the other experiences.

    ``info``: ``boundaries="blurry"``, ``blurry_m``, ``class_groups`` (nominal),
    ``foreign_per_experience`` (training samples from other groups), ``group_counts``.

    Raises:
        ScenarioError: (field ``blurry_m``) unless ``0 < m < 100``; (field
            ``n_experiences``) see :func:`split_classes`, and fewer than 2.
    """
    if not 0 < m < 100:
        raise ScenarioError("blurry_m", f"must be a percentage in (0, 100), got {m}")
    groups, home = _nominal_groups(data, n_experiences, seed)
    t, n = n_experiences, len(home)
    home_np = home.numpy()

    # Rank every sample within its group in a random order: listing the samples group
    # by group (a stable sort of a random permutation) puts group g at starts[g]...
    rng = np.random.default_rng([seed, _BLURRY_SPLIT])
    perm = rng.permutation(n)
    listed = perm[np.argsort(home_np[perm], kind="stable")]
    sizes = np.bincount(home_np, minlength=t)
    starts = np.cumsum(sizes) - sizes
    rank = np.empty(n, dtype=np.int64)
    rank[listed] = np.arange(n) - np.repeat(starts, sizes)

    # ... the first round(m% of n_g) of them leave, dealt in turn to the other experiences
    # (offsets 1..T-1; the turn starts at g so that no experience always gets the remainders).
    n_leave = np.rint(sizes * (m / 100.0)).astype(np.int64)
    leaves = rank < n_leave[home_np]
    dest = home_np.copy()
    offset = 1 + (rank[leaves] + home_np[leaves]) % (t - 1)
    dest[leaves] = (home_np[leaves] + offset) % t

    parts = [torch.from_numpy(np.flatnonzero(dest == i)) for i in range(t)]
    foreign = [int((home[idx] != i).sum()) for i, idx in enumerate(parts)]
    info = {"boundaries": "blurry", "blurry_m": m, "foreign_per_experience": foreign}
    return _build(data, groups, home, parts, name=name, seed=seed, info=info)


def gaussian_stream(
    data: Dataset, n_experiences: int, seed: int, *, width: float, name: str
) -> Stream:
    """Cut ``data`` into a task-free stream on a Gaussian schedule (Shanahan et al. 2021).

    Group ``g``'s samples get times drawn from ``N(g, width²)``; sorted by time,
    they are cut into ``n_experiences`` equal-size chunks (the nominal boundaries).

    ``info``: ``boundaries="gaussian"``, ``task_free=True``, ``gaussian_width``,
    ``class_groups`` (nominal), ``group_counts``, ``boundary_times`` (the time
    half-way between the last sample of chunk ``i`` and the first of ``i + 1``).

    Raises:
        ScenarioError: (field ``gaussian_width``) unless ``width`` is finite and
            positive; (field ``n_experiences``) see :func:`split_classes`, and fewer than 2.
    """
    if not (np.isfinite(width) and width > 0):
        raise ScenarioError("gaussian_width", f"must be a finite number > 0, got {width}")
    groups, home = _nominal_groups(data, n_experiences, seed)
    rng = np.random.default_rng([seed, _GAUSSIAN_TIMES])
    times = home.numpy() + width * rng.standard_normal(len(home))
    order = np.argsort(times, kind="stable")
    chunks = np.array_split(order, n_experiences)
    cuts, sorted_times = np.cumsum([len(c) for c in chunks])[:-1], times[order]
    edges = ((sorted_times[cuts - 1] + sorted_times[cuts]) / 2).tolist()
    parts = [torch.from_numpy(c) for c in chunks]
    info = {
        "boundaries": "gaussian",
        "task_free": True,
        "gaussian_width": width,
        "boundary_times": edges,
    }
    return _build(data, groups, home, parts, name=name, seed=seed, info=info)


def make_boundary_stream(
    data: Dataset,
    *,
    boundaries: Boundaries,
    n_experiences: int,
    seed: int,
    name: str,
    m: float = 10.0,
    width: float = 0.5,
) -> Stream:
    """Dispatch to :func:`blurry_stream` or :func:`gaussian_stream` by ``boundaries``.

    Raises:
        ScenarioError: (field ``boundaries``) for ``sharp`` (cut it with
            :func:`~lifelong.scenarios.protocols.make_stream`) or an unknown name.
    """
    if boundaries == "blurry":
        return blurry_stream(data, n_experiences, seed, m=m, name=name)
    if boundaries == "gaussian":
        return gaussian_stream(data, n_experiences, seed, width=width, name=name)
    raise ScenarioError(
        "boundaries", f"expected 'blurry' or 'gaussian', got {boundaries!r} (sharp: make_stream)"
    )
