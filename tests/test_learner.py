"""The learner on real streams: forgetting, regularisation, determinism, resume, divergence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong.platform import metrics
from lifelong.platform.learner import DivergenceError, Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.strategies import build_strategy

TRAIN = TrainingConfig(epochs=3, batch_size=32, lr=0.05)


@pytest.fixture(scope="module")
def split_digits():
    return build_stream(ScenarioConfig(source="digits", n_experiences=5, seed=0))


@pytest.fixture(scope="module")
def permuted_digits():
    return build_stream(
        ScenarioConfig(source="digits", protocol="domain_incremental", n_experiences=4, seed=0)
    )


def learner(stream, *strategies, seed=0, training=TRAIN, hidden=(128,)):
    built = [build_strategy(n, p) for n, p in strategies] or [build_strategy("naive")]
    return Learner(stream, ModelConfig(hidden=list(hidden)), built, training, seed)


def test_naive_forgets_class_incremental(split_digits) -> None:
    lrn = learner(split_digits)
    R = lrn.fit()
    assert R.shape == (5, 5) and np.isfinite(R).all()
    assert R[0, 0] > 0.9  # it learned the first experience ...
    assert R[4, 0] < 0.20  # ... and forgot it after four more
    assert metrics.average_forgetting(R) > 0.8
    assert lrn.untrained.shape == (5,) and np.isfinite(lrn.untrained).all()


def test_regularisation_reduces_forgetting_domain_incremental(permuted_digits) -> None:
    forgetting = {}
    for name, params in [("naive", {}), ("l2", {"lambda": 0.1}), ("ewc", {"lambda": 100.0})]:
        runs = [learner(permuted_digits, (name, params), seed=s).fit() for s in (0, 1)]
        forgetting[name] = np.mean([metrics.average_forgetting(R) for R in runs])
    assert forgetting["ewc"] < forgetting["naive"]
    assert forgetting["l2"] < forgetting["naive"]


def test_same_seed_same_matrix_other_seed_differs(split_digits) -> None:
    a = learner(split_digits, ("ewc", {}), seed=3).fit()
    b = learner(split_digits, ("ewc", {}), seed=3).fit()
    c = learner(split_digits, ("ewc", {}), seed=4).fit()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_resume_from_checkpoint_matches_uninterrupted(split_digits, tmp_path: Path) -> None:
    strategies = [("l2", {"lambda": 0.5}), ("ewc", {"lambda": 10.0})]
    training = TrainingConfig(
        epochs=2, batch_size=32, lr=0.05, optimizer="sgd", momentum=0.9, reset_optimizer=False
    )
    full = learner(split_digits, *strategies, training=training).fit()

    first = learner(split_digits, *strategies, training=training)
    first.evaluate_untrained()
    for i in range(2):
        first.run_experience(i)
    torch.save(first.state_dict(), tmp_path / "state.pt")

    resumed = learner(split_digits, *strategies, training=training, seed=99)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.next_experience == 2
    np.testing.assert_array_equal(resumed.fit(), full)


def test_task_incremental_heads_predict_only_their_classes() -> None:
    stream = build_stream(
        ScenarioConfig(source="digits", protocol="task_incremental", n_experiences=5, seed=1)
    )
    lrn = learner(stream)
    R = lrn.fit()
    with torch.no_grad():
        for exp in stream:
            pred = lrn.model(exp.x_test, exp.task_id).argmax(1)
            assert set(pred.tolist()) <= set(exp.classes)
    # with task ids and a head per task, old tasks stay far above chance (0.5)
    assert R[4, 0] > 0.6


def test_divergence_names_experience_and_term(split_digits) -> None:
    lrn = learner(split_digits, ("l2", {"lambda": 1e38}))
    lrn.run_experience(0)
    with pytest.raises(DivergenceError, match=r"experience 1.*'l2' \(from strategy 'l2'\)"):
        lrn.run_experience(1)


def test_loss_terms_are_logged_per_experience(split_digits) -> None:
    lrn = learner(split_digits, ("ewc", {"lambda": 10.0}))
    _, first = lrn.run_experience(0)
    _, second = lrn.run_experience(1)
    assert set(first) == {"ce"}  # no EWC term before a Fisher exists
    assert set(second) == {"ce", "ewc"} and second["ewc"] > 0


def test_plasticity_baseline_is_measured_without_disturbing_the_run() -> None:
    stream = build_stream(
        ScenarioConfig(
            source="digits",
            protocol="domain_incremental",
            transform="shuffled_labels",
            n_experiences=3,
            seed=0,
        )
    )
    plain = learner(stream, training=TRAIN).fit()
    with_ref = learner(stream, training=TRAIN.model_copy(update={"plasticity_baseline": True}))
    R = with_ref.fit()
    np.testing.assert_array_equal(R, plain)  # the reference runs leave the trial untouched
    assert np.isfinite(with_ref.fresh).all() and (with_ref.fresh > 0.5).all()
    again = learner(stream, training=TRAIN.model_copy(update={"plasticity_baseline": True}))
    again.fit()
    np.testing.assert_array_equal(again.fresh, with_ref.fresh)
    assert metrics.summary(R)["plasticity/avg"] == pytest.approx(np.diag(R).mean())


def test_bf16_mixed_steps_see_the_updated_weights(split_digits) -> None:
    """Each step's forward pass uses the weights the previous step left.

    Autocast caches its bf16 copy of every weight until its context exits; a context
    held over a whole experience made every step compute with the first step's
    weights (the task loss then lagged the fp32 run's by 0.02 after one step).
    """
    losses: dict[str, list[float]] = {}
    for precision in ("32-true", "bf16-mixed"):
        training = TrainingConfig(epochs=1, batch_size=32, lr=0.05, precision=precision)
        learner = Learner(split_digits, ModelConfig(hidden=[32]), [], training, seed=0)
        step = learner._step
        seen: list[float] = []

        def recorded(*args, step=step, seen=seen):  # noqa: ANN002, ANN202
            terms = step(*args)
            seen.append(float(terms["ce"]))
            return terms

        learner._step = recorded  # type: ignore[method-assign]
        learner.train_experience(0)
        losses[precision] = seen
    assert len(losses["32-true"]) >= 6
    np.testing.assert_allclose(losses["bf16-mixed"], losses["32-true"], atol=5e-3)
