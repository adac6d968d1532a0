"""Sweep throughput: 16 trials on the local Ray instance vs. the same trials one after another.

Part 1, parallel efficiency. The same 16 trials (naive, l2, ewc, si x 4 seeds on
Permuted MNIST-1D, 10 experiences) run

- sequentially in this process, one thread: ``Learner(...).fit()`` per trial
  (the training and evaluation work, nothing else), total ``T_seq``;
- as a sweep on a local Ray instance with 2 CPUs (``run_sweep``: Ray Tune, one
  CPU per trial, the stream in the object store, checkpoints after every
  experience, every metric logged to a fresh MLflow SQLite store), total
  ``T_sweep`` (Ray start excluded, reported apart).

Parallel efficiency = ``T_seq / (2 * T_sweep)`` (1.0: two trials at a time
with no overhead). Targets: >= 80% where trials last >= 10 s (issue 8), >= 90%
(issue 24).

The sweep's start-up (until Tune has started the first trial's worker process,
which imports torch, Lightning Fabric and lifelong) is printed apart: it is paid
once per sweep, as each worker runs trial after trial (``reuse_actors``).

Part 2, fixed cost per trial: the same sweep with trials that do almost no
work (1 experience of 16 samples), its start-up taken off and the rest divided
per trial, next to its parts measured directly: learner set-up (building the
model, moving the stream to the device) and MLflow logging through lifelong's
``SweepTracker`` (one run, params, a metric batch per experience, the matrix
CSV and PNG artifacts).

    python benchmarks/sweep_throughput.py             # 28 epochs: every trial >= 10 s here (~7 min)
    python benchmarks/sweep_throughput.py --epochs 10 # 10 epochs: 4-9 s trials since 2026-12
    python benchmarks/sweep_throughput.py --quick    # short trials (about 1 min)
    python benchmarks/sweep_throughput.py --device cuda  # trials on one GPU, half of it each
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import ray
import torch
import yaml
from _device import device_name, require_device
from rich.console import Console

from lifelong.cluster.sweep import run_sweep
from lifelong.cluster.trial import build_learner
from lifelong.platform.learner import Learner
from lifelong.platform.spec import Experiment, parse_experiment
from lifelong.platform.tracking import SweepTracker
from lifelong.scenarios import Stream, build_stream

STRATEGIES = ["naive", {"l2": {"lambda": 1.0}}, {"ewc": {"lambda": 10.0}}, "si"]


def experiment(
    epochs: int,
    tiny: bool = False,
    *,
    seeds: int = 4,
    accelerator: str = "cpu",
    gpu: float = 0.0,
) -> Experiment:
    """The 4-strategy experiment, ``seeds`` seeds each; ``tiny``: almost no work.

    ``gpu``: GPUs each trial asks Ray for (a fraction packs several trials on one).
    """
    scenario = (
        {"source": "gaussian", "n_experiences": 1,
         "options": {"n_classes": 2, "n_train_per_class": 8, "n_test_per_class": 4}}
        if tiny
        else {"source": "mnist1d", "protocol": "domain_incremental", "n_experiences": 10}
    )  # fmt: skip
    spec = {
        "name": "throughput",
        "seeds": seeds,
        "scenario": scenario,
        "model": {"hidden": [256, 256]},
        "training": {"epochs": 1 if tiny else epochs, "batch_size": 32, "lr": 0.05,
                     "accelerator": accelerator},
        "strategies": STRATEGIES,
        "resources": {"cpu": 1, "gpu": gpu},
    }  # fmt: skip
    return parse_experiment(yaml.safe_dump(spec), file="throughput.yaml")


def sequential(exp: Experiment, stream: Stream) -> tuple[float, list[float]]:
    """Every trial's ``fit()`` one after another in this process; total and per-trial times."""
    times = []
    for trial in exp.trials():
        config = {
            "trial": trial.to_dict(),
            "model": exp.spec.model.model_dump(mode="json"),
            "training": exp.spec.training.model_dump(mode="json"),
        }
        t = time.perf_counter()
        build_learner(config, stream).fit()
        times.append(time.perf_counter() - t)
    return sum(times), times


def start_ray(tmp: Path, num_cpus: int = 2, num_gpus: int | None = None) -> float:
    """Start a local Ray instance (temp dir under ``tmp``); return the seconds it took.

    ``num_gpus``: None lets Ray detect the GPUs; a number declares them.
    """
    t = time.perf_counter()
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(tmp),
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    return time.perf_counter() - t


def ray_processes_cpu() -> float:
    """CPU seconds used so far by Ray's own processes on this node (raylet, GCS, agents)."""
    total = 0.0
    for p in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["name"] in _RAY_DAEMONS or any(a in cmd for a in _RAY_AGENTS):
                cpu = p.cpu_times()
                total += cpu.user + cpu.system
    return total


_RAY_DAEMONS = {"raylet", "gcs_server"}
_RAY_AGENTS = ("dashboard/agent.py", "runtime_env/agent/main.py", "ray::DashboardAgent",
               "ray::RuntimeEnvAgent")  # fmt: skip


@dataclass
class SweepRun:
    """One sweep's wall time, start-up, and the CPU its driver and Ray's daemons used."""

    wall: float
    startup: float
    driver_cpu: float
    ray_cpu: float


def sweep(exp: Experiment, stream: Stream, tmp: Path, tag: str) -> SweepRun:
    """Run the experiment as a Ray Tune sweep logging to a fresh SQLite store.

    The start-up is the seconds until the first trial started (its MLflow run opens
    when Tune has started its worker: process, imports). The driver's CPU (all its
    threads: Tune's loop, MLflow logging, the PNGs) and that of Ray's daemons are
    taken over the sweep: on 2 cores they compete with the trials.
    """
    tracker = SweepTracker(exp, f"sqlite:///{tmp / (tag + '.db')}", experiment_name=tag)
    ray0, cpu0 = ray_processes_cpu(), time.process_time()
    t, t0 = time.perf_counter(), time.time()
    outcomes = run_sweep(
        exp, stream, tracker, storage_path=tmp / f"ray_{tag}", console=Console(quiet=True)
    )
    wall = time.perf_counter() - t
    driver_cpu, ray_cpu = time.process_time() - cpu0, ray_processes_cpu() - ray0
    bad = [o.trial.trial_id for o in outcomes if o.status != "FINISHED"]
    assert not bad and len(outcomes) == len(exp.trials()), bad
    first = min(tracker.client.get_run(o.run_id).info.start_time for o in outcomes)
    return SweepRun(wall, first / 1000 - t0, driver_cpu, ray_cpu)


def mlflow_cost(exp: Experiment, stream: Stream, tmp: Path) -> float:
    """Seconds SweepTracker spends logging one trial (run, params, metrics, artifacts)."""
    tracker = SweepTracker(exp, f"sqlite:///{tmp / 'mlflow_cost.db'}", experiment_name="cost")
    tracker.start()
    n = len(stream)
    R = np.tril(np.full((n, n), 0.5))
    times = []
    for trial in exp.trials():
        t = time.perf_counter()
        tracker.trial_started(trial)
        for i in range(n):
            tracker.trial_result(trial.trial_id, i, R, {"ce": 0.1})
        tracker.trial_finished(trial.trial_id, R, np.full(n, 0.1))
        times.append(time.perf_counter() - t)
    tracker.finish()
    return statistics.median(times)


def heatmap_cost(n: int, tmp: Path) -> float:
    """Median seconds to render one trial's accuracy-matrix PNG (part of the MLflow logging)."""
    from lifelong.platform.plots import accuracy_matrix_heatmap

    R = np.tril(np.full((n, n), 0.5))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        accuracy_matrix_heatmap(R, tmp / "m.png", untrained=np.full(n, 0.1), title="t")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def setup_cost(exp: Experiment, stream: Stream) -> float:
    """Median seconds to build a trial's learner (model, optimizer, stream on the device)."""
    times = []
    for trial in exp.trials():
        config = {
            "trial": trial.to_dict(),
            "model": exp.spec.model.model_dump(mode="json"),
            "training": exp.spec.training.model_dump(mode="json"),
        }
        t = time.perf_counter()
        learner: Learner = build_learner(config, stream)
        learner.evaluate_untrained()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    """Measure and print both parts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 epochs per experience")
    ap.add_argument("--epochs", type=int, default=28, help="epochs per experience (trial length)")
    ap.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the trials train (cuda: the two trials share one GPU, gpu: 0.5 each)",
    )
    args = ap.parse_args()
    require_device(ap, args.device)
    epochs = 2 if args.quick else args.epochs
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tmp = Path(tempfile.mkdtemp(prefix="llsw_", dir="/tmp"))
    try:
        gpu = 0.5 if args.device == "cuda" else 0.0
        real = experiment(epochs, accelerator=args.device, gpu=gpu)
        tiny = experiment(epochs, tiny=True, accelerator=args.device, gpu=gpu)
        s_real, s_tiny = build_stream(real.spec.scenario), build_stream(tiny.spec.scenario)
        t_seq, per_trial = sequential(real, s_real)
        t_ray = start_ray(tmp / "ray")
        try:
            run = sweep(real, s_real, tmp, "real")
            tiny_run = sweep(tiny, s_tiny, tmp, "tiny")
        finally:
            ray.shutdown()
        _, tiny_seq = sequential(tiny, s_tiny)
        t_log = mlflow_cost(real, s_real, tmp)
        t_setup = setup_cost(real, s_real)
        t_png = heatmap_cost(len(s_real), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t_sweep, up_real, t_tiny, up_tiny = run.wall, run.startup, tiny_run.wall, tiny_run.startup
    eff = t_seq / (2 * t_sweep)
    eff_start = t_seq / (2 * (t_sweep + t_ray))
    print(
        f"16 trials (naive, l2, ewc, si x 4 seeds), Permuted MNIST-1D 10 exp, {epochs} epochs, "
        f"{device_name(args.device)}"
    )
    shortest, median = min(per_trial), statistics.median(per_trial)
    print(f"trial length (sequential)      : median {median:.1f} s, shortest {shortest:.1f} s")
    print(f"sequential, one process        : {t_seq:8.1f} s")
    print(f"Ray sweep, 2 CPUs              : {t_sweep:8.1f} s   (+ Ray start {t_ray:.1f} s)")
    print(f"  of which start-up, until the first trial ran: {up_real:.1f} s")
    beside = f"driver {run.driver_cpu:.1f} s, Ray's daemons {run.ray_cpu:.1f} s"
    print(f"  CPU used beside the trials: {beside}")
    with_start = f"({100 * eff_start:.1f} % with Ray start)"
    print(f"parallel efficiency            : {100 * eff:7.1f} %   {with_start}")
    fixed = 2 * (t_tiny - up_tiny) / 16 - statistics.median(tiny_seq)
    print(f"fixed cost per trial, after the start-up: {fixed:.2f} s")
    print("  (16 near-empty trials through the sweep, 2 at a time)")
    print("  its parts, each measured alone (in the sweep the driver logs while workers train):")
    print(f"    MLflow logging in the driver (SweepTracker, one trial): {t_log:.2f} s")
    print(f"      of which rendering the accuracy-matrix PNG          : {t_png:.2f} s")
    print(f"    learner set-up + untrained evaluation in the worker   : {t_setup:.3f} s")
    print(f"once per sweep: Ray start {t_ray:.1f} s, worker start-up {up_tiny:.1f} s")


if __name__ == "__main__":
    main()
