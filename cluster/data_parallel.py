"""A trial whose one learner trains over several workers with Ray Train (``resources.workers``).

The Tune trial launches a Ray Train ``TorchTrainer`` of ``workers`` workers, each
with ``resources.cpu`` CPUs and ``resources.gpu`` GPUs; Ray Train sets up the
process group (gloo on CPU, NCCL on GPUs) and every worker runs the same
learner on its slice of each batch (:mod:`lifelong.platform.data_parallel`).
Rank 0 sends each experience's result and learner state to the trial through
a Ray queue, and the trial reports them to Tune with a checkpoint exactly as a
one-process trial does (:func:`lifelong.cluster.trial.train_trial`), so MLflow
logging, schedulers, ``max_failures`` and ``--resume`` are unchanged.

The trial process itself only relays results, so it asks Ray for no CPU (one
byte of memory: a placement group needs some resource); the workers hold the
trial's CPUs and GPUs, and a sweep runs at most as many trials at once as the
cluster has room for (:func:`max_concurrent`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.util.queue import Empty, Queue

from lifelong.cluster.system_metrics import SystemSampler
from lifelong.platform.data_parallel import DataParallel
from lifelong.platform.learner import TrainingStopped
from lifelong.platform.spec import ExperimentSpec
from lifelong.scenarios.stream import Stream

from .shared import SharedStream, unpack

CHECKPOINT_FILE = "learner.pt"

RELAY_RESOURCES = {"cpu": 0, "gpu": 0, "memory": 1}
"""What the Tune trial of a data-parallel learner asks for: nothing but a placement group."""


def workers_of(config: dict[str, Any]) -> int:
    """How many workers train a trial's learner (``resources.workers``; 1 when absent)."""
    return int(config.get("resources", {}).get("workers", 1))


def max_concurrent(spec: ExperimentSpec, nodes: list[dict[str, float]]) -> int:
    """How many data-parallel trials the cluster's nodes hold at once (>= 1).

    ``nodes``: each alive node's resources (``ray.nodes()``). A worker runs on one
    node, so a node of 3 CPUs holds one worker of ``cpu: 2``, not one and a half.
    Without a cap Tune would start every trial (each asks for no CPU) and their
    worker groups would wait for one another's CPUs.

    Raises:
        ValueError: one trial's workers do not fit on the whole cluster.
    """
    res = spec.resources
    fits = []
    for key, per in (("CPU", res.cpu), ("GPU", res.gpu)):
        if per > 0:
            # A small epsilon: Ray keeps resources in units of 1/10000.
            room = sum(int(node.get(key, 0.0) / per + 1e-6) for node in nodes)
            if room < res.workers:
                total = sum(node.get(key, 0.0) for node in nodes)
                raise ValueError(
                    f"resources.workers {res.workers} x {key.lower()} {per:g} needs "
                    f"{res.workers * per:g} {key}s per trial; the Ray cluster has {total:g} "
                    f"({room} such workers fit on its {len(nodes)} node(s))"
                )
            fits.append(room // res.workers)
    return max(1, min(fits))


def node_resources() -> list[dict[str, float]]:
    """The resources of each alive node of the connected Ray cluster."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def train_data_parallel(
    config: dict[str, Any], stream: Stream | SharedStream, state: bytes | None
) -> None:
    """Train one trial's learner over ``resources.workers`` Ray Train workers, reporting to Tune.

    ``state``: the learner state of the trial's last checkpoint (a restarted or
    resumed trial continues from it). Runs in the Tune trial's process: the
    Train run goes in a helper thread, and this thread reports each experience
    that rank 0 sends, so a scheduler's stop or a failure behaves as for a
    one-process trial.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    res = config["resources"]
    results: Queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    stop: Queue = Queue(actor_options={"num_cpus": 0})
    storage = tempfile.mkdtemp(prefix="lifelong-train-")
    loop = {
        "config": config,
        "stream": ray.put(stream),
        "state": None if state is None else ray.put(state),
        "results": results,
        "stop": stop,
        "base": os.environ.get("TUNE_ORIG_WORKING_DIR") or str(Path.cwd()),
    }
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=loop,
        scaling_config=ScalingConfig(
            num_workers=int(res["workers"]),
            use_gpu=float(res["gpu"]) > 0,
            resources_per_worker={"CPU": float(res["cpu"]), "GPU": float(res["gpu"])},
        ),
        # Tune restarts a failed trial (max_failures) from its checkpoint; Train must not.
        run_config=RunConfig(
            name="learner",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=0, max_preemption_failures=0),
        ),
    )
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as error:  # raised by this trial's thread
            failure.append(error)
        finally:
            results.put(None)

    machine = SystemSampler()  # set up before the workers train: it never delays a report
    helper = threading.Thread(target=fit, name="lifelong-train-workers", daemon=True)
    helper.start()
    try:
        with machine:  # the machine of the trial's process
            while (item := results.get()) is not None:
                result, learner_state = item
                result["system"] = machine.take()
                d = Path(tempfile.mkdtemp(prefix="lifelong-checkpoint-"))
                try:
                    (d / CHECKPOINT_FILE).write_bytes(learner_state)
                    tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
                finally:
                    shutil.rmtree(d, ignore_errors=True)
        helper.join()
        if failure:
            raise worker_error(failure[0]) from failure[0]
    finally:
        if helper.is_alive():  # stopped early: the workers stop before their next epoch
            stop.put(True)
            while helper.is_alive():
                with contextlib.suppress(Empty):
                    results.get(timeout=0.05)
        shutil.rmtree(storage, ignore_errors=True)


def worker_error(error: BaseException) -> BaseException:
    """The exception that stopped the workers, out of Ray Train's ``WorkerGroupError``.

    The trial then fails with the learner's own message (which strategy, which
    hook, which step), as a one-process trial does. A worker that fails makes the
    others' collectives fail too ("Connection closed by peer"): the lowest rank
    whose error is not such an echo is the cause.
    """
    failures: dict[int, BaseException] | None = getattr(error, "worker_failures", None)
    if not failures:
        return error
    ranks = sorted(failures)
    causes = [r for r in ranks if not _collective_echo(failures[r])]
    return failures[(causes or ranks)[0]]


def _collective_echo(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another worker went away."""
    if isinstance(error, torch.distributed.DistError):
        return True
    text = str(error)
    return any(w in text for w in ("gloo", "NCCL", "Connection closed by peer"))


def _worker_loop(loop: dict[str, Any]) -> None:
    """One Ray Train worker: the learner on this rank's slices; rank 0 sends the results."""
    from .trial import build_learner, experience_result, import_plugins

    config = loop["config"]
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    os.environ.setdefault("TUNE_ORIG_WORKING_DIR", loop["base"])  # relative plugin files
    import_plugins(config.get("plugins", {}))
    stream = unpack(ray.get(loop["stream"]))
    parallel = DataParallel.from_process_group()
    learner = build_learner(config, stream, parallel)
    if loop["state"] is not None:
        data = io.BytesIO(ray.get(loop["state"]))
        state = torch.load(data, map_location="cpu", weights_only=True)
        learner.load_state_dict(state)
    else:
        learner.evaluate_untrained()
    lead = parallel.rank == 0
    stop: Queue = loop["stop"]
    if lead:  # asked before every epoch; the answer is shared with every worker
        learner.stop_requested = lambda: not stop.empty()
    node = ray.get_runtime_context().get_node_id()
    last: dict[str, float] = {}
    try:
        for i in range(learner.next_experience, len(learner.experiences)):
            _, losses = learner.run_experience(i)
            if lead:
                result = experience_result(learner, i, losses, node, last)
                buffer = io.BytesIO()
                torch.save(learner.state_dict(), buffer)
                loop["results"].put((result, buffer.getvalue()))
    except TrainingStopped:  # the trial was stopped (a scheduler, the end of the sweep)
        return
