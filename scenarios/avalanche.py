"""Avalanche benchmarks as lifelong scenarios.

An Avalanche benchmark (any object with a ``train_stream`` and a ``test_stream``
of classification experiences, e.g. from ``class_incremental_benchmark``,
``task_incremental_benchmark`` or ``benchmark_from_datasets``) becomes a
:class:`~lifelong.scenarios.stream.Stream`: experience ``i`` takes its training
samples from ``train_stream[i]`` and its test samples from ``test_stream[i]``,
its classes from the labels present, and its task id from the experience's
task label. Two ways in::

    from lifelong.scenarios.avalanche import stream_from_avalanche
    stream = stream_from_avalanche(benchmark)          # Python API

    scenario:                                            # experiment file
      source: avalanche
      options:
        factory: "my_package.benchmarks:split_digits"    # returns a benchmark
        args: {n_experiences: 5}

The protocol is inferred unless the scenario sets it: distinct task labels make
a task-incremental stream, disjoint class sets a class-incremental one, and
anything else a domain-incremental one. Task labels are renumbered ``0..T-1``
in order of first appearance; outside task-incremental streams the model gets
task id 0, as in every lifelong stream.

Samples are read once through each dataset's *eval* transform group (lifelong
keeps in-memory tensors and batches them on the device); a random training
augmentation in the benchmark's train transforms is therefore not applied.
Avalanche is imported on first use only (it takes seconds to import).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from lifelong.scenarios.sources import SOURCES, ScenarioError, Source, SourceInfo
from lifelong.scenarios.stream import Experience, Protocol, Stream

__all__ = [
    "AvalancheSource",
    "avalanche_stream",
    "check_avalanche_scenario",
    "resolve_factory",
    "stream_from_avalanche",
    "to_avalanche_benchmark",
]


def resolve_factory(spec: str, field: str = "options.factory") -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the callable.

    Raises:
        ScenarioError: (``field``) for a malformed string, a module that cannot be
            imported, a missing attribute or a non-callable one.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ScenarioError(
            field, f"expected 'package.module:function', got {spec!r} (a ':' separates them)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ScenarioError(field, f"cannot import module {module_name!r}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ScenarioError(field, f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ScenarioError(field, f"{spec!r} is not callable (got {type(obj).__name__})")
    return obj


class AvalancheSource(Source):
    """The ``avalanche`` scenario source: a factory function returning an Avalanche benchmark.

    Unlike other sources it cuts no experiences itself: the benchmark brings
    them, so ``n_experiences`` and ``protocol``, when set, must agree with it
    (``protocol`` may also pick the interpretation; see the module docstring).
    """

    stream_source: ClassVar[bool] = True

    class Config(BaseModel):
        """Options of the ``avalanche`` source."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        factory: str = Field(
            description="'package.module:function' returning an Avalanche benchmark "
            "(an object with train_stream and test_stream)."
        )
        args: dict[str, Any] = Field(
            default_factory=dict, description="Keyword arguments of the factory."
        )

    config: Config

    def info(self) -> SourceInfo:
        """Not known without building the benchmark; use :meth:`check` and :meth:`stream`."""
        raise NotImplementedError("the avalanche source knows its shape only once built")

    def check(self, scenario: Any) -> None:
        """Check the factory imports and accepts ``args``, without calling it."""
        check_avalanche_scenario(self.config.factory, self.config.args)

    def stream(self, scenario: Any) -> Stream:
        """Call the factory and convert the benchmark (see :func:`stream_from_avalanche`)."""
        fn = resolve_factory(self.config.factory)
        benchmark = fn(**self.config.args)
        explicit = scenario.model_fields_set
        stream = stream_from_avalanche(
            benchmark,
            protocol=scenario.protocol if "protocol" in explicit else None,
            seed=scenario.seed,
            name=getattr(fn, "__name__", "avalanche"),
            field="options.factory",
        )
        if "n_experiences" in explicit and scenario.n_experiences != len(stream):
            raise ScenarioError(
                "n_experiences",
                f"the benchmark from {self.config.factory!r} has {len(stream)} experiences, "
                f"not {scenario.n_experiences} (leave n_experiences out)",
            )
        return stream


SOURCES.register("avalanche", AvalancheSource)


def check_avalanche_scenario(factory: str, args: dict[str, Any]) -> None:
    """Check ``factory`` resolves to a callable whose signature accepts ``args``.

    Raises:
        ScenarioError: ``options.factory`` or ``options.args`` names the problem.
    """
    fn = resolve_factory(factory)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: checked when called
    try:
        sig.bind(**args)
    except TypeError as e:
        msg = f"{factory!r} does not accept these args: {e}"
        raise ScenarioError("options.args", msg) from None


def _tensors_of(dataset: Any, where: str, field: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """Read every ``(x, y[, task])`` sample of an Avalanche dataset into stacked tensors."""
    ds = dataset.eval() if hasattr(dataset, "eval") else dataset
    collate = getattr(ds, "collate_fn", None)
    loader = torch.utils.data.DataLoader(ds, batch_size=4096, shuffle=False, collate_fn=collate)
    xs, ys, ts = [], [], []
    for batch in loader:
        if not isinstance(batch, list | tuple) or len(batch) < 2:
            raise ScenarioError(
                field, f"{where}: expected (input, label[, task]) samples, got {type(batch)}"
            )
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
        if len(batch) > 2:
            ts.append(torch.as_tensor(batch[2]))
    if not xs:
        raise ScenarioError(field, f"{where} has no samples")
    x = torch.cat(xs).to(torch.float32).contiguous()
    y = torch.cat(ys)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1:
        raise ScenarioError(field, f"{where}: labels must be integer class ids, got {y.dtype}")
    return x, y.to(torch.int64), (torch.cat(ts).to(torch.int64) if ts else None)


def _task_label(exp: Any, t: Tensor | None, where: str, field: str) -> int:
    labels = getattr(exp, "task_labels", None)
    if labels is None:
        labels = sorted(set(t.tolist())) if t is not None else [0]
    labels = [int(v) for v in labels]
    if len(labels) != 1:
        raise ScenarioError(field, f"{where} mixes task labels {labels}; lifelong needs one")
    return labels[0]


def _infer_protocol(tasks: list[int], classes: list[tuple[int, ...]]) -> Protocol:
    if len(set(tasks)) > 1:
        return "task_incremental"
    seen: set[int] = set()
    for c in classes:
        if seen & set(c):
            return "domain_incremental"
        seen |= set(c)
    return "class_incremental"


def stream_from_avalanche(
    benchmark: Any,
    *,
    protocol: Protocol | None = None,
    seed: int = 0,
    name: str = "avalanche",
    field: str = "benchmark",
) -> Stream:
    """Convert an Avalanche benchmark into a lifelong :class:`Stream`.

    Args:
        benchmark: an Avalanche benchmark (``CLScenario``): its ``train_stream``
            and ``test_stream`` must have the same number of experiences.
        protocol: how lifelong treats the stream; ``None`` infers it (distinct
            task labels: task-incremental; disjoint classes: class-incremental;
            else domain-incremental). ``task_incremental`` needs task labels.
        seed: recorded as the stream's seed (the benchmark fixed its own order).
        name: used in the stream name (``avalanche_<name>``).
        field: the name errors use for the benchmark (``options.factory`` when
            it came from an experiment file).

    Raises:
        ScenarioError: ``field`` names what is wrong with the benchmark.
    """
    streams = []
    for part in ("train_stream", "test_stream"):
        s = getattr(benchmark, part, None)
        if s is None:
            raise ScenarioError(
                field,
                f"expected an Avalanche benchmark with train_stream and test_stream, got "
                f"{type(benchmark).__name__} without {part}",
            )
        streams.append(list(s))
    train, test = streams
    if not train or len(train) != len(test):
        raise ScenarioError(
            field,
            f"the benchmark has {len(train)} training and {len(test)} test experiences; "
            "lifelong needs the same number (>= 1) of each",
        )
    raw = []
    for i, (etr, ete) in enumerate(zip(train, test, strict=True)):
        xtr, ytr, ttr = _tensors_of(etr.dataset, f"train experience {i}", field)
        xte, yte, tte = _tensors_of(ete.dataset, f"test experience {i}", field)
        task = _task_label(etr, ttr, f"train experience {i}", field)
        if _task_label(ete, tte, f"test experience {i}", field) != task:
            raise ScenarioError(field, f"experience {i}: train and test task labels differ")
        raw.append((task, xtr, ytr, xte, yte))
    shapes = {tuple(r[1].shape[1:]) for r in raw} | {tuple(r[3].shape[1:]) for r in raw}
    if len(shapes) != 1:
        raise ScenarioError(field, f"experiences have differently shaped inputs: {sorted(shapes)}")
    input_shape = shapes.pop()
    lo = min(int(min(r[2].min(), r[4].min())) for r in raw)
    if lo < 0:
        raise ScenarioError(field, f"labels must be >= 0, found {lo}")
    n_classes = 1 + max(int(max(r[2].max(), r[4].max())) for r in raw)
    classes = [tuple(sorted(set(r[2].tolist()))) for r in raw]
    order = list(dict.fromkeys(r[0] for r in raw))  # task labels by first appearance
    tasks = [order.index(r[0]) for r in raw]
    inferred = _infer_protocol(tasks, classes)
    chosen: Protocol = protocol or inferred
    if chosen == "task_incremental" and len(order) < 2:
        raise ScenarioError(
            "protocol", "task_incremental needs a benchmark with task labels; this one has none"
        )
    if chosen != "task_incremental":
        tasks = [0] * len(raw)
    experiences = tuple(
        Experience(i, tasks[i], classes[i], r[1], r[2], r[3], r[4]) for i, r in enumerate(raw)
    )
    stream = Stream(
        f"avalanche_{name}",
        chosen,
        experiences,
        n_classes,
        input_shape,
        seed,
        {"source": "avalanche", "benchmark": type(benchmark).__name__},
    )
    from lifelong.scenarios.builder import validate_stream

    validate_stream(stream)
    return stream


def avalanche_stream(factory: str, args: dict[str, Any] | None = None, **kw: Any) -> Stream:
    """Call ``factory`` (``"module:function"``) with ``args`` and convert its benchmark."""
    check_avalanche_scenario(factory, dict(args or {}))
    return stream_from_avalanche(resolve_factory(factory)(**(args or {})), **kw)


def to_avalanche_benchmark(stream: Stream) -> Any:
    """The inverse view: an Avalanche benchmark over ``stream``'s tensors (no copy).

    Each experience's datasets carry ``targets`` and ``targets_task_labels`` and
    the experiences ``task_labels`` and ``classes_in_this_experience``, so
    Avalanche strategies see the same samples, labels and task labels as a
    lifelong learner.
    """
    from avalanche.benchmarks.scenarios import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    def dataset(x: Tensor, y: Tensor, task: int) -> Any:
        return _make_taskaware_tensor_classification_dataset(
            x, y, task_labels=torch.full_like(y, task)
        )

    benchmark = benchmark_from_datasets(
        train=[dataset(e.x_train, e.y_train, e.task_id) for e in stream],
        test=[dataset(e.x_test, e.y_test, e.task_id) for e in stream],
    )
    return with_task_labels(with_classes_timeline(benchmark))
