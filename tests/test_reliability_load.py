"""Concurrency and load: 32 trials at once on the default SQLite store, summary correct.

32 trials (8 running at a time: 32 Ray workers at once exhaust this machine's
memory) log to ``sqlite:///mlflow.db`` in the working directory, while a second
process writes to the same SQLite file the whole time, so the store really is
contended (the trials' results are all written by the driver, one writer). No
write may be lost to "database is locked": every trial run is complete (every
metric at every step exactly once, artifacts present) and the summary counts
every seed. (benchmarks/load.py runs 50 and 200 trials and reports the
driver's peak memory; too slow for the test suite on a 2-core machine.)
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.platform.cli import app

N_SEEDS = 16  # x 2 strategies = 32 trials
STEP_KEYS = ["acc/avg", "forgetting/avg", "bwt", "loss/ce", "acc/exp_0", "acc/exp_1"]

HAMMER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    exp = client.create_experiment("hammer")
    run = client.create_run(exp).info.run_id
    step = 0
    while not Path("stop").exists():
        metrics = [Metric(f"m{k}", float(step), int(time.time() * 1000), step) for k in range(50)]
        client.log_batch(run, metrics=metrics)
        step += 1
        time.sleep(0.01)
    print(step)
    """
)


def test_32_trials_at_once_on_sqlite_lose_nothing(ray_instance: str, in_tmp: Path) -> None:
    spec = {
        "name": "crowd",
        "seeds": N_SEEDS,
        "scenario": {
            "source": "gaussian",
            "n_experiences": 2,
            "options": {"n_classes": 4, "n_features": 5, "n_train_per_class": 20},
        },
        "model": {"hidden": [8]},
        "training": {"epochs": 1, "batch_size": 16},
        "strategies": ["naive", {"l2": {"lambda": 0.1}}],
        # 8 trials at a time on the session's 2 CPUs: 32 Ray workers at once (~0.4 GB each)
        # run this shared 2-core, 24 GB machine out of memory (Ray's OOM killer fires)
        "resources": {"cpu": 0.25},
    }
    path = in_tmp / "crowd.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    # create the schema once
    MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}").search_experiments()
    hammer = subprocess.Popen(
        [sys.executable, "-c", HAMMER], cwd=in_tmp, stdout=subprocess.PIPE, text=True
    )
    try:
        result = CliRunner().invoke(app, ["run", str(path)])
    finally:
        (in_tmp / "stop").touch()
        hammer_steps = int(hammer.communicate(timeout=120)[0].strip() or 0)
    assert result.exit_code == 0, result.output
    assert "database is locked" not in result.output
    assert hammer.returncode == 0 and hammer_steps > 0  # the other writer really wrote
    assert "trials: 32/32 done, 0 running, 0 failed" in result.stderr
    for label in ("naive", "l2"):  # the summary counts every seed of each strategy
        assert re.search(rf"^\s*\d+\s+{label}\s+{N_SEEDS}\s", result.stdout, re.M), result.stdout

    client = MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("crowd")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    kids = [r for r in runs if r.data.tags.get("lifelong.role") == "trial"]
    assert len(kids) == 32 and all(k.info.status == "FINISHED" for k in kids)
    for kid in kids:
        for key in STEP_KEYS:
            steps = [m.step for m in client.get_metric_history(kid.info.run_id, key)]
            assert sorted(steps) == [0, 1], (kid.info.run_name, key, steps)
        assert [m.step for m in client.get_metric_history(kid.info.run_id, "fwt")] == [1]
        artifacts = {a.path for a in client.list_artifacts(kid.info.run_id)}
        assert {"accuracy_matrix.csv", "accuracy_matrix.png"} <= artifacts
    print(f"\n32 trials on SQLite beside a writer that logged {hammer_steps} batches: complete")
