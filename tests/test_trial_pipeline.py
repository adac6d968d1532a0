"""The trial's pipelined reporting: what the helper thread hands to ``tune.report``."""

from __future__ import annotations

import queue
import shutil
import threading

import numpy as np
import pytest
import torch

from lifelong.cluster.trial import CHECKPOINT_FILE, train_ahead
from lifelong.platform.learner import Learner
from lifelong.platform.metrics import step_metrics
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import build_strategy

TRAIN = TrainingConfig(epochs=1, batch_size=32, lr=0.05)


@pytest.fixture(scope="module")
def stream():
    return build_stream(ScenarioConfig(source="digits", n_experiences=3, seed=0))


def learner(stream) -> Learner:
    return Learner(stream, ModelConfig(hidden=[32]), [build_strategy("ewc")], TRAIN, 0)


def drain(out: queue.Queue) -> list:
    items = []
    while True:
        item = out.get(timeout=60)
        items.append(item)
        if not isinstance(item, tuple):
            return items


def test_results_and_checkpoints_are_snapshots_at_each_experience_end(stream) -> None:
    ahead = learner(stream)
    ahead.evaluate_untrained()
    out: queue.Queue = queue.Queue(maxsize=1)
    thread = threading.Thread(target=train_ahead, args=(ahead, "node", out, threading.Event()))
    thread.start()
    items = drain(out)
    thread.join()
    assert items[-1] is None and len(items) == len(stream) + 1

    reference = learner(stream)
    reference.evaluate_untrained()
    for i, (result, d) in enumerate(items[:-1]):
        _, losses = reference.run_experience(i)
        assert result["experience"] == i and result["n_experiences"] == len(stream)
        assert result["metrics"] == step_metrics(reference.R, i)
        if i == len(stream) - 1:  # the matrix travels with the last experience only
            np.testing.assert_array_equal(np.asarray(result["R"], dtype=float), reference.R)
        else:
            assert result["R"] is None
        assert result["losses"] == losses and result["node_id"] == "node"
        # the checkpoint holds the state after experience i, not a later one
        state = torch.load(d / CHECKPOINT_FILE, weights_only=True)
        assert state["next_experience"] == i + 1
        expected = reference.state_dict()["model"]
        for name, tensor in state["model"].items():
            torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
        shutil.rmtree(d)


def test_a_training_error_is_the_last_item(stream, monkeypatch) -> None:
    lrn = learner(stream)
    lrn.evaluate_untrained()
    run = lrn.run_experience

    def fail_second(i: int):
        if i == 1:
            raise RuntimeError("stopped at experience 1")
        return run(i)

    monkeypatch.setattr(lrn, "run_experience", fail_second)
    out: queue.Queue = queue.Queue()  # unbounded: the helper runs in this thread here
    train_ahead(lrn, "node", out, threading.Event())
    first, error = out.get_nowait(), out.get_nowait()
    assert first[0]["experience"] == 0
    shutil.rmtree(first[1])
    assert isinstance(error, RuntimeError) and str(error) == "stopped at experience 1"
    assert out.empty()


def test_stop_ends_training_before_the_next_experience(stream) -> None:
    stop = threading.Event()
    stop.set()
    out: queue.Queue = queue.Queue(maxsize=1)
    lrn = learner(stream)
    train_ahead(lrn, "node", out, stop)
    assert out.empty() and lrn.next_experience == 0
