"""The plasticity reference is computed once per seed and read back, bit-identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

import lifelong
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.shared_reference import ENV, ReferenceCache
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import build_strategy

from conftest import tiny_experiment

TRAINING = TrainingConfig(epochs=1, batch_size=16, plasticity_baseline=True, accelerator="cpu")


def _stream():
    options = {"n_classes": 4, "n_features": 6, "n_train_per_class": 20}
    return build_stream(ScenarioConfig(source="gaussian", n_experiences=3, options=options))


def test_every_strategy_of_a_seed_reads_the_first_ones_reference(tmp_path: Path) -> None:
    stream = _stream()
    alone = Learner(stream, ModelConfig(hidden=[8]), [], TRAINING, seed=3)
    alone.fit()  # no cache: computes its own, as before sharing existed
    cache = ReferenceCache(tmp_path / "reference")
    fresh = {}
    for name in ("naive", "l2", "ewc"):
        learner = Learner(stream, ModelConfig(hidden=[8]), [build_strategy(name)], TRAINING, 3)
        learner.reference_cache = cache
        learner.fit()
        fresh[name] = learner.fresh.copy()
        np.testing.assert_array_equal(learner.untrained, alone.untrained, err_msg=name)
        if name == "naive":  # a learner that read the cached row trains as before
            np.testing.assert_array_equal(learner.R, alone.R)
    # one reference per experience and one untrained row, by the first strategy only
    assert cache.computed == 3 + 1
    for name, values in fresh.items():
        np.testing.assert_array_equal(values, alone.fresh, err_msg=name)  # bit-identical

    other_seed = Learner(stream, ModelConfig(hidden=[8]), [], TRAINING, seed=4)
    other_seed.reference_cache = cache
    other_seed.fit()
    assert cache.computed == 8  # a seed's reference (and untrained row) is its own


def test_a_changed_setting_is_a_new_key(tmp_path: Path) -> None:
    cache = ReferenceCache(tmp_path)
    base = {"seed": 0, "training": {"lr": 0.01}}
    assert cache.path(base) != cache.path({**base, "training": {"lr": 0.02}})
    assert cache.path(base) == cache.path({"training": {"lr": 0.01}, "seed": 0})


def _sweep(folder: Path, shared: bool, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv(ENV, "1" if shared else "0")
    spec = tiny_experiment("shared", [], ["naive", "l2", "ewc"])
    spec["seeds"] = 2
    spec["training"]["plasticity_baseline"] = True
    folder.mkdir()
    monkeypatch.chdir(folder)
    path = folder / "shared.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    computed: list[tuple[str, int]] = []
    real = ReferenceCache.get

    def counting(self: ReferenceCache, key: dict, compute):  # noqa: ANN001
        before = self.computed
        value = real(self, key, compute)
        computed.append((key["what"], self.computed - before))
        return value

    monkeypatch.setattr(ReferenceCache, "get", counting)
    lifelong.run(path, in_process=True, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("shared")
    runs = client.search_runs([exp.experiment_id], "tags.`lifelong.role` = 'trial'")
    values = {
        (r.data.tags["strategy"], r.data.tags["seed"]): [
            m.value
            for m in sorted(
                client.get_metric_history(r.info.run_id, "plasticity/fresh"), key=lambda m: m.step
            )
        ]
        + [r.data.metrics["fwt"]]  # from the untrained row
        for r in runs
    }
    assert not (folder / ".lifelong" / "cache").exists() or not any(
        (folder / ".lifelong" / "cache").iterdir()
    )  # the sweep's shared values are gone once it ended
    return {
        "values": values,
        "computed": sum(n for what, n in computed if what == "plasticity/fresh"),
        "asked": sum(1 for what, _ in computed if what == "plasticity/fresh"),
        "untrained": sum(n for what, n in computed if what == "untrained"),
        "untrained_asked": sum(1 for what, _ in computed if what == "untrained"),
    }


def test_a_sweep_computes_the_reference_once_per_seed_and_logs_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = _sweep(tmp_path / "shared", True, monkeypatch)
    assert shared["asked"] == 3 * 2 * 2  # strategies x seeds x experiences
    assert shared["computed"] == 2 * 2  # seeds x experiences
    assert shared["untrained_asked"] == 3 * 2  # the untrained row: strategies x seeds
    assert shared["untrained"] == 2  # once per seed
    alone = _sweep(tmp_path / "alone", False, monkeypatch)
    assert alone["asked"] == 0  # sharing off: every trial trains its own reference
    assert shared["values"] == alone["values"]  # logged numbers bit-identical
    for seed in ("0", "1"):
        per_strategy = {
            v for (s, sd), vals in shared["values"].items() if sd == seed for v in [tuple(vals)]
        }
        assert len(per_strategy) == 1, seed  # the same reference for every strategy of a seed
