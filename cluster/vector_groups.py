"""Vectorised trials in a sweep (``resources.vectorize``): which train together, and where.

The driver groups the trials that differ only in seed and learning rate
(:func:`plan_groups`), up to ``resources.vectorize`` per group. Every trial stays
its own Ray Tune trial, with its own result stream, checkpoints and MLflow child
run; what changes is
where it trains. A group's trials are thin clients (:func:`train_member`, a
hundredth of a CPU each) of one Ray actor (:class:`VectorGroup`) that holds the
trial's resources (``resources.cpu``/``gpu``) and trains all of them as one
:class:`~lifelong.platform.vectorized.VectorizedLearner`, experience by
experience, when the first of them asks. Each trial then reports its own
result and a checkpoint in :class:`~lifelong.platform.learner.Learner`'s format.

A trial restarted from a checkpoint (``--resume``, a retry after a failure)
goes on alone, in an actor of its own holding the full resources. A trial that
diverges fails alone: its slice is zeroed and the others go on. A group's actor
ends when its last trial has left.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from lifelong.cluster.system_metrics import SystemSampler
from lifelong.platform.expand import trial_from_config
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.spec import ExperimentSpec, TrialSpec
from lifelong.platform.training import TrainingConfig
from lifelong.platform.vectorized import (
    VectorizedLearner,
    batchnorm_blocker,
    per_trial_blocker,
    trial_model,
    vectorization_blocker,
)
from lifelong.scenarios.stream import Stream
from lifelong.strategies import build_strategy

MEMBER_CPU = 0.01
"""What a vectorised trial's own Tune trial asks for: it only waits for the group's actor."""

NAMESPACE = "lifelong-vector-groups"


def plan_groups(
    trials: Sequence[TrialSpec],
    spec: ExperimentSpec,
    streams: Mapping[str, Stream],
    sweep_id: str,
    salt: str,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Group ``trials`` that differ only in seed and ``training.lr``, up to ``resources.vectorize``.

    ``streams``: each trial's stream by its scenario key (``""`` for the sweep's one).
    The groups' actor names start with ``sweep_id`` (:func:`stop_groups`); ``salt``
    makes them unique to this run of the sweep. Returns
    ``{trial_id: {"id", "seeds", "lrs", "member"}}`` and a note per configuration that
    trains one seed at a time, with the reason.
    """
    from lifelong.platform.expand import scenario_key

    size = spec.resources.vector_size
    if size <= 1:
        return {}, []
    buckets: dict[str, list[TrialSpec]] = {}
    for t in trials:  # the configuration without its seed and learning rate
        training = TrainingConfig.model_validate(t.training or spec.training.model_dump())
        d = t.to_dict()
        key = {k: d[k] for k in ("strategies", "scenario", "model")}
        key["training"] = training.model_dump(mode="json", exclude={"lr"})
        buckets.setdefault(json.dumps(key, sort_keys=True, default=str), []).append(t)
    groups: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for key, members in buckets.items():
        if len(members) == 1:  # one seed: nothing to train together
            continue
        first = members[0]
        stream = streams.get(scenario_key(first.scenario)) if first.scenario else None
        stream = stream if stream is not None else next(iter(streams.values()))
        training = TrainingConfig.model_validate(first.training or spec.training.model_dump())
        strategies = [build_strategy(s.name, s.params) for s in first.strategies]
        blocker = vectorization_blocker(stream, training, strategies)
        if blocker is None:
            model = ModelConfig.model_validate(first.model or spec.model.model_dump())
            built = trial_model(stream, model)
            norm = batchnorm_blocker(built) or per_trial_blocker(built, strategies)
            blocker = f"model {model.name!r} {norm}" if norm else None
        if blocker is not None:
            notes.append(f"{first.label}: each seed trains on its own ({blocker})")
            continue

        def lr(t: TrialSpec) -> float:
            return TrainingConfig.model_validate(t.training or spec.training.model_dump()).lr

        members = sorted(members, key=lambda t: (lr(t), t.seed))
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            if len(chunk) < 2:
                notes.append(
                    f"{chunk[0].trial_id}: trains on its own (left over from groups of {size})"
                )
                continue
            seeds, lrs = [t.seed for t in chunk], [lr(t) for t in chunk]
            digest = hashlib.sha256(f"{salt}|{key}|{seeds}|{lrs}".encode()).hexdigest()[:16]
            for k, t in enumerate(chunk):
                groups[t.trial_id] = {
                    "id": f"{sweep_id}-{digest}",
                    "seeds": seeds,
                    "lrs": lrs,
                    "member": k,
                }
    return groups, notes


def trial_resources(cpu: float, gpu: float) -> Any:
    """Tune's per-trial resource request: a vectorised trial's, or the experiment's."""
    full = {"CPU": cpu} | ({"GPU": gpu} if gpu else {})

    def resources(config: dict[str, Any]) -> tune.PlacementGroupFactory:
        trial = trial_from_config(config)
        if trial.trial_id in (config.get("vector_groups") or {}):
            return tune.PlacementGroupFactory([{"CPU": MEMBER_CPU}])
        return tune.PlacementGroupFactory([full])

    return resources


class _TrialView:
    """Trial ``s`` of a :class:`VectorizedLearner`, read as a Learner by ``experience_result``."""

    def __init__(self, learner: VectorizedLearner, s: int) -> None:
        self.learner, self.s = learner, s
        self.R = learner.R[s]
        self.untrained = learner.untrained[s]
        self.fresh = np.full(len(learner.experiences), np.nan)
        self.training = learner.training
        self.experiences = learner.experiences
        self.anytime: list[tuple[int, float]] = []
        self.retention: dict[str, float] = {}
        self.retention_base: dict[str, float] = {}

    def strategy_metrics(self) -> dict[str, float]:
        """The trial's strategy diagnostics."""
        return self.learner.strategy_metrics(self.s)


@ray.remote
class VectorGroup:
    """Trains a group's trials together (or one restored trial alone) for its Tune trials.

    ``seeds``: the group's; ``state``: instead, one trial's checkpoint to go on from
    (``seeds`` then holds its seed alone).
    """

    def __init__(
        self,
        config: dict[str, Any],
        stream: Any,
        seeds: list[int],
        state: bytes | None = None,
        lrs: list[float] | None = None,
    ) -> None:
        from lifelong.cluster.shared import unpack
        from lifelong.cluster.trial import build_learner, import_plugins

        torch.set_num_threads(max(1, int(config.get("threads", 1))))
        import_plugins(config.get("plugins", {}))
        stream = unpack(stream)
        self.seeds = seeds
        self.learner: VectorizedLearner | Learner
        if state is not None:
            self.learner = build_learner(config, stream)
            self.learner.load_state_dict(torch.load(io.BytesIO(state), weights_only=True))
        else:
            trial = trial_from_config(config)
            model = ModelConfig.model_validate(trial.model or config["model"])
            training = TrainingConfig.model_validate(trial.training or config["training"])
            specs = trial.strategies
            self.learner = VectorizedLearner(
                stream,
                model,
                lambda: [build_strategy(s.name, s.params) for s in specs],
                training,
                seeds,
                lrs,
            )
            self.learner.evaluate_untrained()
        self.node = ray.get_runtime_context().get_node_id()
        self.machine = SystemSampler()  # where the group trains (the trials only wait)
        self.machine.__enter__()
        self.last: list[dict[str, float]] = [{} for _ in seeds]
        self.results: dict[tuple[int, int], tuple[str, Any, bytes | None]] = {}
        self.left: set[int] = set()
        self.error: BaseException | None = None

    def result(self, member: int, i: int) -> tuple[str, Any, bytes | None]:
        """Member ``member``'s result of experience ``i``, training the group up to it.

        ``("ok", result, state)``, or ``("failed", message, None)`` for a trial that
        diverged.
        """
        if self.error is not None:
            raise self.error
        try:
            while self.learner.next_experience <= i:
                self._advance()
        except BaseException as error:
            self.error = error
            raise
        return self.results.pop((member, i))

    def _advance(self) -> None:
        from lifelong.cluster.trial import experience_result

        learner = self.learner
        i = learner.next_experience
        _, losses = learner.run_experience(i)
        system = self.machine.take()
        if isinstance(learner, Learner):  # one restored trial
            result = experience_result(learner, i, losses, self.node, self.last[0])
            result["system"] = system
            self.results[(0, i)] = ("ok", result, _saved(learner.state_dict()))
            return
        for s in range(learner.size):
            if s in self.left:
                continue
            if s in learner.failed:
                self.results[(s, i)] = ("failed", learner.failed[s], None)
                continue
            own = {k: float(v[s]) for k, v in losses.items() if np.isfinite(v[s])}
            view = _TrialView(learner, s)
            result = experience_result(view, i, own, self.node, self.last[s])  # type: ignore[arg-type]
            result["vectorized"] = {
                "size": learner.size,
                "seeds": learner.seeds,
                "lrs": learner.lrs,
                # a stacked penalty is the trials' sum: its loss/<term> is not this trial's
                "penalty_losses": (
                    "a stacked strategy's loss/<term> is the group's mean; loss/ce and a "
                    "per_trial strategy's terms are this trial's own"
                ),
            }
            result["system"] = system
            self.results[(s, i)] = ("ok", result, _saved(learner.member_state(s)))

    def leave(self, member: int) -> None:
        """Member ``member`` is done; the actor ends once every member is."""
        self.left.add(member)
        self.results = {k: v for k, v in self.results.items() if k[0] not in self.left}
        if len(self.left) >= len(self.seeds):
            self.machine.__exit__(None, None, None)
            ray.actor.exit_actor()


def _saved(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def train_member(
    config: dict[str, Any],
    stream: Any,
    group: dict[str, Any],
    state: bytes | None,
    last: dict[str, Any] | None,
) -> None:
    """A vectorised trial's Tune function: report what the group's actor trained for it.

    ``state``/``last``: the trial's checkpoint and its result, when Tune restored it;
    it then trains alone in an actor of its own.
    """
    from lifelong.cluster.data_parallel import CHECKPOINT_FILE
    from lifelong.cluster.trial import RESULT_FILE

    resources = config.get("resources") or {}
    options: dict[str, Any] = {
        "num_cpus": float(resources.get("cpu", 1.0)),
        "num_gpus": float(resources.get("gpu", 0.0)),
        # outside the Tune trial's placement group, which holds MEMBER_CPU only
        "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group=None),
        "max_restarts": 0,
    }
    if state is None:
        actor = VectorGroup.options(  # type: ignore[attr-defined]
            name=group["id"],
            namespace=NAMESPACE,
            get_if_exists=True,
            lifetime="detached",  # outlives the trial that created it; ends with its last
            **options,
        ).remote(config, stream, list(group["seeds"]), None, group.get("lrs"))
        member, i = int(group["member"]), 0
    else:
        restored = torch.load(io.BytesIO(state), weights_only=True)
        i = int(restored["next_experience"])
        if last is not None and int(last["experience"]) + 1 == int(last["n_experiences"]):
            tune.report(last)  # trained to the end already: the driver needs the result
            return
        seed = trial_from_config(config).seed
        actor = VectorGroup.options(**options).remote(config, stream, [seed], state)  # type: ignore[attr-defined]
        member = 0
    try:
        while True:
            kind, result, blob = ray.get(actor.result.remote(member, i))
            if kind == "failed":
                raise FloatingPointError(result)
            d = Path(tempfile.mkdtemp(prefix="lifelong-checkpoint-"))
            try:
                assert blob is not None
                (d / CHECKPOINT_FILE).write_bytes(blob)
                (d / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            if int(result["experience"]) + 1 >= int(result["n_experiences"]):
                return
            i += 1
    finally:
        try:
            actor.leave.remote(member)
        except Exception:  # the actor is gone already
            pass


def stop_groups(sweep_id: str) -> None:
    """End the sweep's group actors that are still alive.

    At the sweep's end or stop, and before it runs: a driver that was killed leaves
    them behind (they are detached, so that they outlive the trial that made them).
    """
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name, namespace = entry["name"], entry["namespace"]  # type: ignore[index]
        if namespace != NAMESPACE or not name.startswith(f"{sweep_id}-"):
            continue
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE))
        except ValueError:  # gone meanwhile
            continue
