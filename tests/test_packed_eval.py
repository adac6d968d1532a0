"""Packed evaluation (issue 24 item 3): test sets back to back give the same row of R."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import Context, Strategy, build_strategy


class _Shift(Strategy):
    """A logit hook that depends on the experience (the per-experience path of packing)."""

    name = "packed_shift"

    def eval_logits(self, ctx: Context, features: torch.Tensor, logits: torch.Tensor):
        bump = torch.zeros_like(logits)
        bump[:, ctx.experience.index % logits.shape[1]] = 0.5
        return logits + bump


@pytest.mark.parametrize(
    ("protocol", "task_loss", "hook"),
    [
        ("class_incremental", "cross_entropy", False),  # one head: one pass per full batch
        ("class_incremental", "bce_seen", False),  # predictions among the seen classes
        ("task_incremental", "cross_entropy", False),  # multi-head: per experience's rows
        ("class_incremental", "cross_entropy", True),  # a logit hook sees its experience
    ],
)
def test_packed_evaluation_gives_the_same_row(protocol: str, task_loss: str, hook: bool) -> None:
    stream = build_stream(
        ScenarioConfig(source="digits", n_experiences=5, seed=0, protocol=protocol)
    )
    # batches of 7 cross every test set's boundary
    training = TrainingConfig(epochs=1, eval_batch_size=7, task_loss=task_loss, accelerator="cpu")
    strategies = [build_strategy("l2"), *([_Shift()] if hook else [])]
    learner = Learner(stream, ModelConfig(hidden=[16]), strategies, training, seed=0)
    for i in range(3):
        learner.run_experience(i)
        for columns in (None, range(i + 1), [4, 0, 2]):
            packed = learner.evaluate(columns)
            learner.pack_evaluation = False
            try:
                each = learner.evaluate(columns)
            finally:
                learner.pack_evaluation = True
            np.testing.assert_array_equal(packed, each)
            assert np.isfinite(packed).sum() == (5 if columns is None else len(list(columns)))


def test_no_columns_evaluate_to_an_empty_row() -> None:
    """A data-parallel worker can be given none of the columns (more workers than them)."""
    stream = build_stream(ScenarioConfig(source="digits", n_experiences=2, seed=0))
    learner = Learner(stream, ModelConfig(hidden=[8]), [], TrainingConfig(accelerator="cpu"), 0)
    assert learner._evaluate_packed([], []) == []
    assert np.isnan(learner.evaluate([])).all()


@pytest.mark.parametrize(
    ("model", "joined"),
    [(ModelConfig(hidden=[16]), True), (ModelConfig(name="cnn", hidden=[32, 64]), False)],
)
def test_packed_batches_grow_only_while_the_activations_are_small(model, joined) -> None:
    """An MLP's test sets are joined into one batch; a CNN's stay about one set a batch."""
    options = {"train_per_class": 2, "test_per_class": 20}
    stream = build_stream(ScenarioConfig(preset="split_fmnist", options=options))
    learner = Learner(stream, model, [], TrainingConfig(accelerator="cpu"), seed=0)
    sizes: list[int] = []
    handle = learner.model.register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    learner.evaluate()
    handle.remove()
    n_test = [e.n_test for e in stream]
    per_sample = learner._sample_bytes
    assert per_sample is not None and per_sample > 0
    if joined:  # an MLP 784-16-10: the flattened input and 16 features, ~3 KiB per sample
        assert per_sample < 2**12 and sizes == [sum(n_test)]
    else:  # 28 x 28 x 32 channels: ~0.3 MiB per sample, so ~53 samples a batch
        assert per_sample > 2**18
        assert max(sizes) <= max(*n_test, 16 * 2**20 // per_sample) < sum(n_test)
        assert len(sizes) > 1
