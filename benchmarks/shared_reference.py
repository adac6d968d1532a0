"""The plasticity sweep with the reference shared between trials, against each trial's own.

``training.plasticity_baseline`` trains a fresh model on every experience as the
plasticity reference. Shared (the default, :mod:`lifelong.platform.shared_reference`)
it is trained once per seed; with ``LIFELONG_SHARED_REFERENCE=0`` once per trial,
as before. Both sides run the same sweep, ``examples/comparison/plasticity_mnist1d.yaml``
(cut down by the options below), on a local Ray instance started for each run
(so the workers see the setting), interleaved; the script prints each side's
median wall time, the ratio, how many reference trainings each side does, and
whether the logged ``plasticity/fresh`` values are the same.

    python benchmarks/shared_reference.py [--seeds 2] [--experiences 5] [--epochs 5]
        [--strategies naive l2 ewc si] [--repeats 1]

Target (issue 24): the reference costs once per seed, not once per trial.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

import lifelong
from lifelong.platform.shared_reference import ENV

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "comparison" / "plasticity_mnist1d.yaml"


def fresh_values(uri: str) -> dict[tuple[str, str], list[float]]:
    """``plasticity/fresh`` per (strategy, seed), in experience order."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("plasticity_mnist1d")
    runs = client.search_runs([exp.experiment_id], "tags.`lifelong.role` = 'trial'")
    out = {}
    for r in runs:
        hist = client.get_metric_history(r.info.run_id, "plasticity/fresh")
        out[(r.data.tags["strategy"], r.data.tags["seed"])] = [
            m.value for m in sorted(hist, key=lambda m: m.step)
        ]
    return out


def one_run(shared: bool, overrides: list[str]) -> tuple[float, dict]:
    """Wall time of the sweep (Ray start included) and its logged references."""
    os.environ[ENV] = "1" if shared else "0"
    with tempfile.TemporaryDirectory() as d:
        here = os.getcwd()
        os.chdir(d)
        try:
            uri = f"sqlite:///{Path(d) / 'mlflow.db'}"
            t = time.perf_counter()
            lifelong.run(EXAMPLE, overrides=overrides, tracking_uri=uri)
            seconds = time.perf_counter() - t
            return seconds, fresh_values(uri)
        finally:
            os.chdir(here)


def main() -> None:
    """Run both sides interleaved and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--experiences", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--strategies", nargs="+", default=["naive", "l2", "ewc", "si"])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    overrides = [
        f"seeds={args.seeds}",
        f"scenario.n_experiences={args.experiences}",
        f"training.epochs={args.epochs}",
        f"strategies=[{','.join(args.strategies)}]",
    ]
    times: dict[bool, list[float]] = {True: [], False: []}
    logged: dict[bool, dict] = {}
    for _ in range(args.repeats):
        for shared in (False, True):
            seconds, values = one_run(shared, overrides)
            times[shared].append(seconds)
            logged[shared] = values
    trials = args.seeds * len(args.strategies)
    print(
        f"plasticity sweep: {len(args.strategies)} strategies x {args.seeds} seeds, "
        f"{args.experiences} experiences x {args.epochs} epochs, MNIST-1D, median of "
        f"{args.repeats}"
    )
    own, shared = statistics.median(times[False]), statistics.median(times[True])
    n_own, n_shared = trials * args.experiences, args.seeds * args.experiences
    print(f"each trial's own reference: {own:7.1f} s  ({n_own} trainings)")
    print(f"shared once per seed:       {shared:7.1f} s  ({n_shared} trainings)")
    print(f"speed-up: {own / shared:.2f}x")
    same = logged[True] == logged[False]
    print(f"plasticity/fresh identical on both sides: {same}")


if __name__ == "__main__":
    main()
