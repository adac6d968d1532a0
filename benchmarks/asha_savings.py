"""What ASHA saves against the full grid, for the same best configuration, in one run.

The validation phase of one tuned sweep (``cluster/tuning.py: tune_phase``) runs
twice on the same local Ray instance, sides interleaved (full grid, ASHA, full
grid, ASHA, ... with ``--repeats``): the same search space, the same tuning
seed, the same validation stream; only ``tune.scheduler`` differs (``fifo``: every
configuration trains every experience; ``asha``: ASHAScheduler over experiences,
``grace_period`` 1, reduction factor 2). Printed per side: trials, trials stopped
early, trial-experiences run (reported to MLflow), wall time, and the best
configuration with its validation ``acc/avg``; then the ratios.

Workload: EWC on Permuted MNIST-1D (8 experiences), MLP 256-256, 2 epochs, SGD,
16 configurations drawn log-uniformly (learning rate in [1e-3, 0.3], EWC lambda in
[1e-2, 1e3]; the same 16 on both sides, from ``search_seed`` 0), 2 trials at a
time (2 CPUs). ASHA's rungs are then at experiences 1, 2 and 4. (Asynchronous
ASHA stops a trial whose metric is below the median of those that reached its
rung before it: on configurations that arrive in random order, as here, not on a
grid enumerated from the worst value up.)

    python benchmarks/asha_savings.py              # about 6 minutes here
    python benchmarks/asha_savings.py --quick      # 4 configurations, 3 experiences
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import yaml

LR = [0.001, 0.3]  # log-uniform
LAMBDA = [0.01, 1000.0]  # log-uniform


def experiment_text(scheduler: str, *, quick: bool) -> str:
    """The experiment file of one side."""
    spec = {
        "name": f"asha-savings-{scheduler}",
        "seeds": [0],
        "scenario": {
            "source": "mnist1d",
            "protocol": "domain_incremental",
            "transform": "permuted",
            "n_experiences": 3 if quick else 8,
            "seed": 0,
        },
        "model": {"name": "mlp", "hidden": [64] if quick else [256, 256]},
        "num_samples": 4 if quick else 16,
        "training": {
            "epochs": 1 if quick else 2,
            "batch_size": 64,
            "lr": {"loguniform": LR},
        },
        "strategies": [{"ewc": {"lambda": {"loguniform": LAMBDA}}}],
        "tune": {
            "scheduler": scheduler,
            "grace_period": 1,
            "reduction_factor": 2,
            "seeds": [100],
            "validation": {"holdout": 0.2},
        },
    }
    return yaml.safe_dump(spec, sort_keys=False)


def run_side(scheduler: str, stream, uri: str, *, quick: bool) -> dict:  # noqa: ANN001
    """One validation phase; its cost and choice."""
    from rich.console import Console

    from lifelong.cluster.tuning import tune_phase
    from lifelong.platform.spec import parse_experiment

    experiment = parse_experiment(experiment_text(scheduler, quick=quick))
    t0 = time.perf_counter()
    _, choices, outcomes = tune_phase(
        experiment,
        stream,
        uri,
        experiment.name,
        storage_path=tempfile.mkdtemp(prefix="asha-"),
        console=Console(stderr=True, quiet=True),
    )
    wall = time.perf_counter() - t0
    (choice,) = choices
    return {
        "scheduler": scheduler,
        "trials": len(outcomes),
        "stopped": sum(o.status == "STOPPED" for o in outcomes),
        "failed": sum(o.status == "FAILED" for o in outcomes),
        "experiences": sum(len(o.logged_steps) for o in outcomes),
        "wall": wall,
        "best": choice.trial.label if choice.trial else "none",
        "score": choice.score,
    }


def main() -> None:
    """Run the sides interleaved and print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 x 2 grid, 3 experiences")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of (grid, ASHA)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    from lifelong.cluster.sweep import ensure_ray
    from lifelong.platform.spec import build_checked_stream, parse_experiment

    stream = build_checked_stream(parse_experiment(experiment_text("fifo", quick=args.quick)))
    ensure_ray(num_cpus=2)
    store = Path(tempfile.mkdtemp(prefix="asha-mlflow-")) / "mlflow.db"
    uri = f"sqlite:///{store}"
    rows = []
    for _ in range(args.repeats):
        for scheduler in ("fifo", "asha"):
            rows.append(run_side(scheduler, stream, uri, quick=args.quick))
            r = rows[-1]
            print(
                f"{r['scheduler']:>5}: {r['trials']} trials, {r['stopped']} stopped early, "
                f"{r['failed']} failed, "
                f"{r['experiences']} trial-experiences, {r['wall']:.1f} s; best {r['best']} "
                f"(validation acc/avg {r['score']:.4f})",
                flush=True,
            )
    grid = [r for r in rows if r["scheduler"] == "fifo"]
    asha = [r for r in rows if r["scheduler"] == "asha"]
    for g, a in zip(grid, asha, strict=True):
        same = "the same best configuration" if g["best"] == a["best"] else "a DIFFERENT best"
        print(
            f"ASHA / grid: trial-experiences {a['experiences']}/{g['experiences']} = "
            f"{a['experiences'] / g['experiences']:.2f}, wall time {a['wall']:.1f}/{g['wall']:.1f}"
            f" s = {a['wall'] / g['wall']:.2f}; {same} ({a['best']} vs {g['best']})"
        )


if __name__ == "__main__":
    main()
