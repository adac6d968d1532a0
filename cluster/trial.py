"""The Ray Tune trainable: one trial = one learner over the shared stream.

The trial reports once per experience with a checkpoint (learner state, loaded
with ``weights_only=True``, and the experience's result as JSON), so a trial
that is restarted continues from its last finished experience instead of
starting over. A trial restored from its last experience's checkpoint (a driver
killed between that report and the trial's end) reports that result again, so
the driver can end its run FINISHED with the same final metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from lifelong.cluster.system_metrics import SystemSampler
from lifelong.platform.data_parallel import DataParallel
from lifelong.platform.expand import scenario_key, trial_from_config
from lifelong.platform.learner import Learner, TrainingStopped
from lifelong.platform.metrics import step_metrics
from lifelong.platform.models import ModelConfig
from lifelong.platform.partial_metrics import partial_description, partial_step_metrics
from lifelong.platform.plugins import import_on_worker, load_plugin
from lifelong.platform.shared_reference import ReferenceCache, sharing_enabled
from lifelong.platform.training import TrainingConfig
from lifelong.platform.tuning import METRICS
from lifelong.scenarios.stream import Stream
from lifelong.strategies import build_strategy

from .data_parallel import CHECKPOINT_FILE, train_data_parallel, workers_of
from .shared import SharedStream, unpack
from .vector_groups import train_member

RESULT_FILE = "result.json"
"""The experience's reported result, kept in its checkpoint."""


def build_learner(
    config: dict[str, Any], stream: Stream, parallel: DataParallel | None = None
) -> Learner:
    """Build the learner a trial's ``config`` (Tune param space entry) describes.

    ``parallel``: this worker's place when the learner trains over several
    workers (``resources.workers``, :mod:`lifelong.cluster.data_parallel`).
    """
    trial = trial_from_config(config)
    model = ModelConfig.model_validate(trial.model or config["model"])
    training = TrainingConfig.model_validate(trial.training or config["training"])
    if any(s.name.startswith("avalanche.") for s in trial.strategies):
        assert parallel is None, "Avalanche strategies train on one worker (spec.py refuses)"
        from lifelong.platform.avalanche_learner import build_avalanche_learner

        pairs = [(s.name, dict(s.params)) for s in trial.strategies]
        return build_avalanche_learner(stream, model, pairs, training, trial.seed)
    strategies = [build_strategy(s.name, s.params) for s in trial.strategies]
    learner = Learner(stream, model, strategies, training, trial.seed, parallel)
    if config.get("reference_cache") and sharing_enabled():  # the sweep's shared reference
        learner.reference_cache = ReferenceCache(config["reference_cache"])
    return learner


def _plasticity(learner: Learner, i: int) -> dict[str, float]:
    if not learner.training.plasticity_baseline:
        return {}
    return {"plasticity/fresh": float(learner.fresh[i])}


def _retention(learner: Learner) -> dict[str, float]:
    """A text stream's general-ability retention now and before training (``retention/...``)."""
    now = {f"retention/{k}": v for k, v in learner.retention.items()}
    return now | {f"retention/base_{k}": v for k, v in learner.retention_base.items()}


def import_plugins(plugins: dict[str, list[str]]) -> None:
    """Import the experiment's plugins in this worker: shipped modules, or local files."""
    import_on_worker(plugins.get("modules", []))
    # A relative file is in a Ray job's working_dir (lifelong submit): the directory
    # the worker started in, before Tune moved it into the trial's own directory.
    base = Path(os.environ.get("TUNE_ORIG_WORKING_DIR") or Path.cwd())
    for file in plugins.get("files", []):
        load_plugin(file, base)


def step_values(learner: Learner, i: int) -> dict[str, float]:
    """The metrics logged after experience ``i`` (none for a row left unevaluated)."""
    if learner.training.partial_R:
        return partial_step_metrics(learner.R, i)
    return step_metrics(learner.R, i)


def experience_result(
    learner: Learner, i: int, losses: dict[str, float], node: str, last: dict[str, float]
) -> dict[str, Any]:
    """The metrics a trial reports after experience ``i`` (plain Python values).

    ``metrics`` is what the tracker logs at step ``i``; the whole matrix ``R``
    (with the untrained and fresh rows) travels only with the last experience,
    so a report costs O(T), not O(T^2), on a stream of T experiences. ``last``:
    the latest evaluated metrics, which a Tune scheduler reads on a row left
    unevaluated (``training.eval_every``); updated in place.
    """
    values = step_values(learner, i)
    last.update({m: values[m] for m in METRICS if m in values})
    n = len(learner.experiences)
    final = i == n - 1
    return {
        **{m: last.get(m, float("nan")) for m in METRICS},  # what a scheduler reads
        "metrics": values,
        "experience": i,
        "n_experiences": n,
        "R": learner.R.tolist() if final else None,
        "untrained": learner.untrained.tolist() if final else None,
        "fresh": learner.fresh.tolist() if final and learner.training.plasticity_baseline else None,
        "partial_R": partial_description(learner.training),
        "anytime": [list(point) for point in learner.anytime],
        "losses": losses,
        "strategy_metrics": learner.strategy_metrics()
        | _plasticity(learner, i)
        | _retention(learner),
        "node_id": node,
        "pid": os.getpid(),
    }


def train_ahead(learner: Learner, node: str, out: queue.Queue[Any], stop: threading.Event) -> None:
    """Train the remaining experiences, queueing each one's result and checkpoint directory.

    Runs in a helper thread, so experience ``i + 1`` trains while experience ``i``'s
    ``tune.report`` waits for the driver. Each item is ``(result, checkpoint_dir)``;
    the last item is ``None`` (done) or the exception that stopped training.
    """
    learner.stop_requested = stop.is_set  # a stopped trial quits within one epoch
    last: dict[str, float] = {}
    try:
        for i in range(learner.next_experience, len(learner.experiences)):
            if stop.is_set():
                return
            _, losses = learner.run_experience(i)
            result = experience_result(learner, i, losses, node, last)
            d = Path(tempfile.mkdtemp(prefix="lifelong-checkpoint-"))
            torch.save(learner.state_dict(), d / CHECKPOINT_FILE)
            (d / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
            out.put((result, d))
        out.put(None)
    except TrainingStopped:  # the trial's thread has stopped waiting for results
        return
    except BaseException as error:  # handed to the trial's thread, which raises it
        out.put(error)


def train_trial(
    config: dict[str, Any],
    stream: Stream | SharedStream | None = None,
    streams: dict[str, Stream | SharedStream] | None = None,
) -> None:
    """Train one trial, reporting metrics and a checkpoint after every experience.

    ``stream``: the sweep's stream, as a :class:`SharedStream` read zero-copy from
    the node's object store (or a plain :class:`Stream`); ``streams``: instead,
    every stream of a sweep that searches ``scenario`` fields, by
    :func:`~lifelong.platform.expand.scenario_key`, of which the trial takes its own.

    Reporting is pipelined: Tune's function API blocks ``tune.report`` until the
    driver has processed the result (MLflow logging, Tune's bookkeeping), so the
    experiences train in a helper thread (:func:`train_ahead`), at most two
    experiences ahead of the report. The results and checkpoints are snapshots
    taken when each experience ended, so they are the same as without the helper.
    """
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    # A scheduler that stops this trial reuses the worker for the next one once this
    # function has returned; the helper thread stops within an epoch, so wait for it
    # (Tune's default, 2 s, fails the next trial when an epoch takes longer).
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "120")
    import_plugins(config.get("plugins", {}))
    if streams is not None:
        stream = streams[scenario_key(config["trial"]["scenario"])]
    assert stream is not None, "train_trial needs a stream"
    checkpoint = tune.get_checkpoint()
    group = (config.get("vector_groups") or {}).get(trial_from_config(config).trial_id)
    if group is not None:  # trained with the other seeds of its group (resources.vectorize)
        blob, last = None, None
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                blob = (Path(d) / CHECKPOINT_FILE).read_bytes()
                saved = Path(d) / RESULT_FILE
                last = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else None
        train_member(config, stream, group, blob, last)
        return
    if workers_of(config) > 1:  # one learner over several Ray Train workers
        state = None
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                state = (Path(d) / CHECKPOINT_FILE).read_bytes()
        train_data_parallel(config, stream, state)
        return
    stream = unpack(stream)
    learner = build_learner(config, stream)
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, weights_only=True)
            saved = Path(d) / RESULT_FILE
            last = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else None
        learner.load_state_dict(state)
        if learner.next_experience >= len(learner.experiences) and last is not None:
            tune.report(last)  # trained to the end already: the driver needs the result
            return
    else:
        learner.evaluate_untrained()
    node = ray.get_runtime_context().get_node_id()
    done: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()
    helper = threading.Thread(
        target=train_ahead, args=(learner, node, done, stop), name="lifelong-train", daemon=True
    )
    machine = SystemSampler()  # set up (MLflow's monitors: ~1 s) before training starts,
    helper.start()  # so that it never delays a report
    try:
        with machine:
            while (item := done.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                result, d = item
                result["system"] = machine.take()  # the machine since the last report
                try:
                    tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
                finally:
                    shutil.rmtree(d, ignore_errors=True)
    finally:
        stop.set()
        while helper.is_alive() or not done.empty():  # unblock a helper on a full queue
            with contextlib.suppress(queue.Empty):
                item = done.get(timeout=0.05)
                if isinstance(item, tuple):
                    shutil.rmtree(item[1], ignore_errors=True)
