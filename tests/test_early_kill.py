"""A sweep killed before Tune saved its state (its first seconds) is resumed all the same.

The driver runs as its own process (``lifelong run``, its own local Ray) and is
SIGKILLed once its first trial has started; the Tune folder is then left as a
kill in Tune's first second leaves it: empty, or a ``tuner.pkl`` without its
trials' state (where ``Tuner.restore`` fails with ``KeyError: 'trial'``).
``lifelong run --resume`` must then finish every trial into its MLflow run, each
step logged once, with the R of an undisturbed run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from test_sweep_e2e import children
from typer.testing import CliRunner

from lifelong.cluster.state import sweep_states
from lifelong.cluster.trial import build_learner
from lifelong.platform.cli import app
from lifelong.platform.plots import read_accuracy_matrix_csv
from lifelong.platform.spec import build_checked_stream, load_experiment

LIFELONG = str(Path(sys.executable).parent / "lifelong")

SPEC = {
    "name": "early",
    "seeds": [0],
    "scenario": {
        "source": "gaussian",
        "n_experiences": 3,
        "options": {"n_classes": 6, "n_features": 8, "n_train_per_class": 200},
    },
    "model": {"hidden": [32]},
    "training": {"epochs": 4},
    "strategies": ["naive", "ewc"],
    "resources": {"cpu": 1},
}


def reference(path: Path) -> dict[str, np.ndarray]:
    """Each trial's R, trained undisturbed in this process."""
    exp = load_experiment(path)
    stream = build_checked_stream(exp)
    out = {}
    for trial in exp.trials():
        config = {
            "trial": trial.to_dict(),
            "model": exp.spec.model.model_dump(mode="json"),
            "training": exp.spec.training.model_dump(mode="json"),
        }
        out[trial.label] = build_learner(config, stream).fit()
    return out


def kill_after_first_trial_starts(path: Path, log: Path) -> None:
    """Run the sweep as its own process; SIGKILL it (and its group) once a trial starts."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [LIFELONG, "run", str(path), "--num-cpus", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": ""},
        )
    deadline = time.monotonic() + 180
    while "started" not in log.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("left", ["nothing", "a tuner without trials"])
def test_a_sweep_killed_before_tunes_first_save_resumes(
    ray_instance: str, in_tmp: Path, left: str
) -> None:
    path = in_tmp / "early.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    kill_after_first_trial_starts(path, in_tmp / "first.log")
    (state,) = [s for s in sweep_states(next((in_tmp / ".lifelong" / "sweeps").iterdir())).values()]
    tune_dir = Path(state.tune_path)
    if left == "nothing":
        shutil.rmtree(tune_dir, ignore_errors=True)
    else:  # what a kill between Tune's tuner.pkl and its first experiment state leaves
        assert (tune_dir / "tuner.pkl").is_file()
        for f in tune_dir.glob("experiment_state-*.json"):
            f.unlink()
    result = CliRunner().invoke(app, ["run", str(path), "--resume"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    parents, kids = children(client, "early")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(k.data.params["strategy"] for k in kids) == ["ewc", "naive"]
    expected = reference(path)
    for kid in kids:
        assert kid.info.status == "FINISHED"
        for key in ("acc/avg", "loss/ce", "acc/exp_2"):  # every step exactly once
            steps = sorted(m.step for m in client.get_metric_history(kid.info.run_id, key))
            assert steps == [0, 1, 2], (key, steps)
        csv = client.download_artifacts(kid.info.run_id, "accuracy_matrix.csv", str(in_tmp))
        R = read_accuracy_matrix_csv(csv)[0]
        np.testing.assert_array_equal(R, expected[kid.data.params["strategy"]])
