"""Load: sweeps of many tiny trials through the real CLI; the driver's peak memory per size.

For each trial count N, ``lifelong run`` sweeps N tiny trials (Gaussian stream,
2 experiences, 1 epoch, MLP 8; strategies naive and l2 x N/2 seeds) on a local
Ray instance it starts itself (``--num-cpus``), logging to a fresh SQLite store.
The driver process's resident memory is sampled every 0.2 s (psutil; Ray's own
processes are separate and not counted). It then checks that the summary table
lists both strategies with N/2 seeds each and that MLflow holds N FINISHED trial
runs, and prints one line per N:

    python benchmarks/load.py [--trials 50 200] [--num-cpus 2]

The issue's target: 200 trials complete and the driver's memory stays bounded
(peak RSS at 200 trials close to that at 50).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml
from mlflow.tracking import MlflowClient


def experiment(n_trials: int) -> dict:
    """N tiny trials: 2 strategies x N/2 seeds."""
    return {
        "name": f"load{n_trials}",
        "seeds": n_trials // 2,
        "scenario": {
            "source": "gaussian",
            "n_experiences": 2,
            "options": {"n_classes": 4, "n_features": 5, "n_train_per_class": 20},
        },
        "model": {"hidden": [8]},
        "training": {"epochs": 1, "batch_size": 16},
        "strategies": ["naive", {"l2": {"lambda": 0.1}}],
        "resources": {"cpu": 0.5},
    }


def run(n_trials: int, num_cpus: int) -> None:
    """Sweep ``n_trials`` through the CLI; print wall time, peak driver RSS and checks."""
    with tempfile.TemporaryDirectory(prefix="lifelong-load-") as d:
        work = Path(d)
        (work / "load.yaml").write_text(yaml.safe_dump(experiment(n_trials)))
        lifelong = Path(sys.executable).with_name("lifelong")
        cmd = [str(lifelong), "run", "load.yaml", "--num-cpus", str(num_cpus)]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        driver = psutil.Process(proc.pid)
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                try:
                    peak[0] = max(peak[0], driver.memory_info().rss)
                except psutil.Error:
                    return
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, err = proc.communicate()
        sampler.join()
        wall = time.perf_counter() - start
        text = out.decode()
        seeds_ok = all(
            re.search(rf"│ {label}\s+│\s+{n_trials // 2} │", text) for label in ("naive", "l2")
        )
        client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
        exp = client.get_experiment_by_name(f"load{n_trials}")
        runs = client.search_runs([exp.experiment_id], max_results=10_000) if exp else []
        finished = sum(
            r.info.status == "FINISHED" and r.data.tags.get("lifelong.role") == "trial"
            for r in runs
        )
        print(
            f"{n_trials:4d} trials: exit {proc.returncode}, {wall:6.1f} s, "
            f"peak driver RSS {peak[0] / 2**20:6.0f} MiB, "
            f"{finished}/{n_trials} runs FINISHED in MLflow, summary seeds correct: {seeds_ok}",
            flush=True,
        )
        if proc.returncode != 0:
            print(err.decode()[-3000:], file=sys.stderr)


def main() -> None:
    """Run each requested trial count and print its line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--num-cpus", type=int, default=2)
    args = ap.parse_args()
    for n in args.trials:
        run(n, args.num_cpus)


if __name__ == "__main__":
    main()
