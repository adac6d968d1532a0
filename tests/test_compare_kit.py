"""A tiny real sweep for the compare and browser tests (no tests of its own).

Real trials (the Learner on a small Gaussian stream) logged through the real
SweepTracker into a real MLflow SQLite store, in this process: what Ray would
report, without starting Ray. ``SweepTracker.finish`` logs the parent's summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from lifelong.cluster.trial import build_learner
from lifelong.platform.spec import parse_experiment
from lifelong.platform.tracking import SweepTracker
from lifelong.scenarios import build_stream


def tiny_sweep(
    uri: str,
    artifacts: Path,
    *,
    name: str = "cmp",
    strategies: list[Any] | None = None,
    seeds: int = 3,
    n_experiences: int = 3,
    fail: tuple[str, ...] = (),
    training: Mapping[str, Any] | None = None,
    resources: Mapping[str, Any] | None = None,
) -> SweepTracker:
    """Run every trial of a small experiment and log it; trials in ``fail`` end FAILED.

    ``training`` overrides the experiment's ``training`` settings (e.g. ``{"lr": 0.001}``)
    and ``resources`` its ``resources`` (``{"cpu": 2}``); strategy settings go in
    ``strategies`` (``[{"ewc": {"mode": "online"}}]``).
    """
    spec = {
        "name": name,
        "seeds": seeds,
        "scenario": {
            "source": "gaussian",
            "protocol": "domain_incremental",
            "n_experiences": n_experiences,
            "seed": 0,
            "options": {
                "n_classes": 4,
                "n_features": 8,
                "n_train_per_class": 24,
                "n_test_per_class": 12,
            },
        },
        "model": {"name": "mlp", "hidden": [16]},
        "training": {"epochs": 1, "batch_size": 32, "lr": 0.1, **(training or {})},
        "strategies": strategies or ["naive", {"l2": {"lambda": 1.0}}],
        "resources": dict(resources or {}),
    }
    experiment = parse_experiment(yaml.safe_dump(spec))
    stream = build_stream(experiment.spec.scenario)
    client = MlflowClient(uri)
    if client.get_experiment_by_name(name) is None:  # artifacts under the test's tmp dir
        client.create_experiment(name, artifact_location=(artifacts / name).as_uri())
    tracker = SweepTracker(experiment, uri)
    tracker.start()
    for trial in experiment.trials():
        tracker.trial_started(trial)
        learner = build_learner(
            {
                "trial": trial.to_dict(),
                "model": experiment.spec.model.model_dump(mode="json"),
                "training": experiment.spec.training.model_dump(mode="json"),
            },
            stream,
        )
        learner.evaluate_untrained()
        for i in range(len(stream)):
            _, losses = learner.run_experience(i)
            tracker.trial_result(trial.trial_id, i, learner.R, losses, learner.strategy_metrics())
            if trial.trial_id in fail:
                break
        if trial.trial_id in fail:
            tracker.trial_failed(trial.trial_id, "DivergenceError: made to fail by the test")
        else:
            tracker.trial_finished(trial.trial_id, learner.R, learner.untrained)
    tracker.finish("FAILED" if fail else "FINISHED")
    return tracker
