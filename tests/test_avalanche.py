"""Avalanche interop: its benchmarks as scenarios, its strategies as baselines, metrics agree.

Every benchmark is built from in-memory tensors (nothing is downloaded).
"""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.platform import metrics
from lifelong.platform.avalanche_learner import AvalancheLearner, check_params
from lifelong.platform.cli import app
from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig
from lifelong.platform.spec import SpecError, parse_experiment
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, ScenarioError, build_stream
from lifelong.scenarios.avalanche import stream_from_avalanche, to_avalanche_benchmark
from lifelong.strategies import build_strategy

N_CLASSES, N_FEATURES = 6, 5


def tensors(seed: int = 0, n_per_class: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(N_CLASSES).repeat(n_per_class)
    x = torch.randn(len(y), N_FEATURES, generator=g) + 2.0 * torch.nn.functional.one_hot(
        y % N_FEATURES, N_FEATURES
    )
    return x, y


def classification_dataset(x: torch.Tensor, y: torch.Tensor) -> Any:
    from avalanche.benchmarks.utils.classification_dataset import ClassificationDataset
    from avalanche.benchmarks.utils.data_attribute import DataAttribute

    data = torch.utils.data.TensorDataset(x, y)
    return ClassificationDataset(data, data_attributes=[DataAttribute(y.tolist(), "targets")])


def class_incremental(n_experiences: int = 3, seed: int = 0) -> Any:
    """A factory an experiment can name: a class-incremental Avalanche benchmark."""
    from avalanche.benchmarks.scenarios import class_incremental_benchmark

    x, y = tensors(seed)
    xt, yt = tensors(seed + 1, 5)
    data = {"train": classification_dataset(x, y), "test": classification_dataset(xt, yt)}
    return class_incremental_benchmark(data, num_experiences=n_experiences, seed=seed)


# ------------------------------------------------------------------ benchmarks
def test_class_incremental_benchmark_becomes_a_stream() -> None:
    bm = class_incremental()
    stream = stream_from_avalanche(bm)
    assert stream.protocol == "class_incremental" and len(stream) == 3
    assert stream.n_classes == N_CLASSES and stream.input_shape == (N_FEATURES,)
    for e, a_tr, a_te in zip(stream, bm.train_stream, bm.test_stream, strict=True):
        assert e.task_id == 0
        assert set(e.classes) == set(a_tr.classes_in_this_experience)
        xs = torch.stack([a_tr.dataset[k][0] for k in range(len(a_tr.dataset))])
        ys = torch.tensor([int(a_tr.dataset[k][1]) for k in range(len(a_tr.dataset))])
        assert torch.equal(e.x_train, xs) and torch.equal(e.y_train, ys)
        assert e.n_test == len(a_te.dataset)
    assert sorted(c for e in stream for c in e.classes) == list(range(N_CLASSES))


def test_task_incremental_benchmark_keeps_task_labels() -> None:
    from avalanche.benchmarks.scenarios import task_incremental_benchmark

    stream = stream_from_avalanche(task_incremental_benchmark(class_incremental()))
    assert stream.protocol == "task_incremental"
    assert [e.task_id for e in stream] == [0, 1, 2]
    learner = Learner(
        stream, ModelConfig(hidden=[8]), [], TrainingConfig(accelerator="cpu"), seed=0
    )
    assert learner.model.head.multi_head  # one masked head per task
    # and the class-incremental reading of it drops the task labels
    flat = stream_from_avalanche(
        task_incremental_benchmark(class_incremental()), protocol="class_incremental"
    )
    assert [e.task_id for e in flat] == [0, 0, 0]


def test_benchmark_from_datasets_with_shared_classes_is_domain_incremental() -> None:
    from avalanche.benchmarks.scenarios import benchmark_from_datasets

    parts = [tensors(s) for s in range(4)]
    ds = [classification_dataset(x, y) for x, y in parts]
    stream = stream_from_avalanche(benchmark_from_datasets(train=ds[:2], test=ds[2:]))
    assert stream.protocol == "domain_incremental"
    assert [e.classes for e in stream] == [tuple(range(N_CLASSES))] * 2
    assert torch.equal(stream[1].x_test, parts[3][0])


def test_round_trip_through_to_avalanche_benchmark() -> None:
    stream = build_stream(ScenarioConfig(source="gaussian", n_experiences=2))
    back = stream_from_avalanche(to_avalanche_benchmark(stream))
    assert back.protocol == stream.protocol
    for a, b in zip(stream, back, strict=True):
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
        assert a.classes == b.classes


def test_not_a_benchmark_and_mismatched_streams_are_named() -> None:
    with pytest.raises(ScenarioError, match="benchmark: expected an Avalanche benchmark"):
        stream_from_avalanche([1, 2, 3])
    from avalanche.benchmarks.scenarios import benchmark_from_datasets

    x, y = tensors()
    d = classification_dataset(x, y)
    with pytest.raises(ScenarioError, match="2 training and 1 test"):
        stream_from_avalanche(benchmark_from_datasets(train=[d, d], test=[d]))


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module on sys.path exposing this file's factory and a wrong one."""
    (tmp_path / "ava_factories.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from test_avalanche import class_incremental

            def not_a_benchmark(n=1):
                return [n]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "ava_factories"
    sys.modules.pop("ava_factories", None)


def test_factory_scenario_builds_the_stream(factory_module: str) -> None:
    cfg = ScenarioConfig(
        source="avalanche",
        options={"factory": f"{factory_module}:class_incremental", "args": {"n_experiences": 2}},
    )
    stream = build_stream(cfg)
    assert len(stream) == 2 and stream.protocol == "class_incremental"
    assert stream.info["source"] == "avalanche"
    with pytest.raises(ScenarioError, match="n_experiences: the benchmark .* has 2 experiences"):
        build_stream(ScenarioConfig.model_validate({**cfg.model_dump(), "n_experiences": 3}))
    bad = ScenarioConfig(
        source="avalanche", options={"factory": f"{factory_module}:not_a_benchmark"}
    )
    with pytest.raises(ScenarioError, match=r"options.factory: expected an Avalanche benchmark"):
        build_stream(bad)


@pytest.mark.parametrize(
    ("options", "where", "message"),
    [
        ({"factory": "no_colon"}, "scenario.options.factory", "expected 'package.module:function'"),
        ({"factory": "no_such_mod_xyz:f"}, "scenario.options.factory", "cannot import module"),
        ({"factory": "{m}:missing"}, "scenario.options.factory", "has no attribute 'missing'"),
        ({"factory": "{m}:class_incremental", "args": {"bogus": 1}}, "scenario.options.args",
         "does not accept these args"),
        ({"factory": "{m}:x", "extra": 1}, "scenario.options.extra", "unknown field"),
        ({}, "scenario.options.factory", "Field required"),
    ],
)  # fmt: skip
def test_bad_factory_is_reported_with_its_field(
    factory_module: str, options: dict[str, Any], where: str, message: str
) -> None:
    options = {
        k: v.format(m=factory_module) if isinstance(v, str) else v for k, v in options.items()
    }
    text = yaml.safe_dump(
        {"scenario": {"source": "avalanche", "options": options}, "strategies": ["naive"]}
    )
    with pytest.raises(SpecError) as info:
        parse_experiment(text, file="e.yaml")
    rendered = str(info.value)
    assert rendered.startswith("e.yaml:") and f"{where}:" in rendered and message in rendered


# ------------------------------------------------------------------ strategies
def test_avalanche_strategy_names_and_kwargs_are_validated() -> None:
    text = textwrap.dedent(
        """\
        strategies:
          - avalanche.EWC: {ewc_lambda: 100}
          - avalanche.EWC: {ewc_lambda: fast}
          - avalanche.EWC: {}
          - avalanche.Nope
          - avalanche.LwF: {alpha: 1, temperature: 2, lr: 3}
          - avalanche.Naive: {train_epochs: 3}
          - [naive, avalanche.Naive]
        """
    )
    with pytest.raises(SpecError) as info:
        parse_experiment(text, file="e.yaml")
    lines = str(info.value).splitlines()
    expected = [
        "e.yaml:3: strategies[1].avalanche.EWC.ewc_lambda: Input should be a valid number",
        "e.yaml:4: strategies[2].avalanche.EWC.ewc_lambda: required by EWC (no default)",
        "e.yaml:5: strategies[3]: unknown Avalanche strategy 'avalanche.Nope'; known: ",
        "e.yaml:6: strategies[4].avalanche.LwF.lr: not an argument of LwF; its arguments: ",
        "e.yaml:7: strategies[5].avalanche.Naive.train_epochs: set by lifelong",
        "e.yaml:8: strategies[6]: an Avalanche strategy runs its own loop and cannot be composed",
    ]
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), (line, start)
    ok = parse_experiment("strategies: [naive, {avalanche.EWC: {ewc_lambda: 100}}]")
    assert [t.label for t in ok.trials()] == ["naive", "avalanche.EWC"]
    assert ok.groups[1][0].params == {"ewc_lambda": 100}
    two = parse_experiment(
        "strategies: [{avalanche.EWC: {ewc_lambda: 1}}, {avalanche.EWC: {ewc_lambda: 2}}]"
    )
    assert two.labels() == ["avalanche.EWC(ewc_lambda=1)", "avalanche.EWC(ewc_lambda=2)"]
    assert check_params("avalanche.SynapticIntelligence", {"si_lambda": 1.0})[1] == []


def small_stream(n_experiences: int = 2) -> Any:
    return build_stream(
        ScenarioConfig(
            source="gaussian",
            n_experiences=n_experiences,
            options={"n_train_per_class": 30, "n_test_per_class": 20, "separation": 2.0},
        )
    )


TRAINING = TrainingConfig(epochs=3, batch_size=16, lr=0.1, accelerator="cpu")


def test_avalanche_naive_learns_and_checkpoints_resume_exactly(tmp_path: Path) -> None:
    stream = small_stream(3)

    def make() -> AvalancheLearner:
        return AvalancheLearner(
            stream, ModelConfig(hidden=[16]), "avalanche.Naive", {}, TRAINING, 0
        )

    full = make()
    full.evaluate_untrained()
    losses = [full.run_experience(i)[1] for i in range(3)]
    assert all(set(loss) == {"ce"} and loss["ce"] > 0 for loss in losses)
    assert full.R[0, 0] > full.untrained[0] + 0.2  # it learned
    # the same initial weights as a native learner with the same seed
    native = Learner(stream, ModelConfig(hidden=[16]), [build_strategy("naive")], TRAINING, 0)
    fresh = make()
    for a, b in zip(native.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(a, b)
    first = make()
    first.evaluate_untrained()
    first.run_experience(0)
    torch.save(first.state_dict(), tmp_path / "c.pt")
    resumed = make()
    resumed.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    assert resumed.next_experience == 1
    for i in (1, 2):
        resumed.run_experience(i)
    np.testing.assert_array_equal(resumed.R, full.R)


def test_avalanche_ewc_adds_its_penalty_and_warns_on_resume(tmp_path: Path) -> None:
    stream = small_stream()
    learner = AvalancheLearner(
        stream, ModelConfig(hidden=[16]), "avalanche.EWC", {"ewc_lambda": 50.0}, TRAINING, 0
    )
    assert learner.run_experience(0)[1].keys() == {"ce"}
    losses = learner.run_experience(1)[1]
    assert losses["ewc"] > 0  # Avalanche's EWC plugin added its term in experience 1
    torch.save(learner.state_dict(), tmp_path / "c.pt")
    again = AvalancheLearner(
        stream, ModelConfig(hidden=[16]), "avalanche.EWC", {"ewc_lambda": 50.0}, TRAINING, 0
    )
    with pytest.warns(UserWarning, match="plugin state .* is not checkpointed"):
        again.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    np.testing.assert_array_equal(again.R, learner.R)


def test_avalanche_synaptic_intelligence_adds_nothing_on_cpu() -> None:
    """Avalanche 0.6.0 snapshots CPU weights as views (see strategies/si.py): no penalty."""
    stream = small_stream()
    learner = AvalancheLearner(
        stream,
        ModelConfig(hidden=[16]),
        "avalanche.SynapticIntelligence",
        {"si_lambda": 1e6},
        TRAINING,
        0,
    )
    learner.run_experience(0)
    assert learner.run_experience(1)[1].keys() == {"ce"}  # total loss == task loss
    naive = AvalancheLearner(stream, ModelConfig(hidden=[16]), "avalanche.Naive", {}, TRAINING, 0)
    np.testing.assert_array_equal(naive.fit()[:2], learner.R[:2])


def test_task_incremental_avalanche_lwf_uses_each_task_head() -> None:
    stream = build_stream(
        ScenarioConfig(
            source="gaussian",
            protocol="task_incremental",
            n_experiences=2,
            options={"n_train_per_class": 20, "n_test_per_class": 10},
        )
    )
    learner = AvalancheLearner(
        stream,
        ModelConfig(hidden=[16]),
        "avalanche.LwF",
        {"alpha": 1.0, "temperature": 2.0},
        TRAINING,
        0,
    )
    R = learner.fit()
    assert np.isfinite(R).all() and R[1, 1] > 0.5 and R[0, 0] > 0.5
    assert learner.model.head.multi_head


# ------------------------------------------------------------- metrics agree
@pytest.mark.parametrize("seen_only", [True, False], ids=["seen-experiences", "whole-stream"])
def test_metrics_agree_with_avalanche_evaluation_plugin(seen_only: bool) -> None:
    """Train once; after each experience evaluate the same weights with both."""
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.training.plugins import EvaluationPlugin

    stream = small_stream(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no loggers": we read the metrics directly
        evaluator = EvaluationPlugin(
            accuracy_metrics(experience=True, stream=True),
            forgetting_metrics(experience=True, stream=True),
            loggers=[],
        )
    learner = AvalancheLearner(
        stream, ModelConfig(hidden=[16]), "avalanche.Naive", {}, TRAINING, 0, evaluator=evaluator
    )
    learner.evaluate_untrained()
    sizes = np.array([e.n_test for e in stream], dtype=float)
    for i in range(len(stream)):
        row, _ = learner.run_experience(i)
        test = learner.benchmark.test_stream
        learner.template.eval(test[: i + 1] if seen_only else test)
        m = evaluator.get_last_metrics()
        for j in range(i + 1 if seen_only else len(stream)):
            acc = m[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"]
            assert acc == pytest.approx(row[j], abs=1e-12)
        seen = slice(0, i + 1) if seen_only else slice(None)
        weighted = np.average(row[seen], weights=sizes[seen])  # Avalanche's stream accuracy
        assert m["Top1_Acc_Stream/eval_phase/test_stream/Task000"] == pytest.approx(weighted)
        ours = metrics.average_first_minus_last_forgetting(learner.R, i)
        assert m["StreamForgetting/eval_phase/test_stream"] == pytest.approx(ours, abs=1e-12)
        per_exp = metrics.first_minus_last_forgetting(learner.R, i)
        for j, f in enumerate(per_exp):
            got = m[f"ExperienceForgetting/eval_phase/test_stream/Task000/Exp{j:03d}"]
            assert got == pytest.approx(f, abs=1e-12)
    assert metrics.average_first_minus_last_forgetting(learner.R) > 0.05  # something forgot


# ----------------------------------------------------------------- a sweep
def test_sweep_mixes_native_and_avalanche_strategies(ray_instance: str, in_tmp: Path) -> None:
    spec = {
        "name": "mixed",
        "seeds": [0],
        "scenario": {"source": "gaussian", "n_experiences": 2,
                     "options": {"n_train_per_class": 20, "n_test_per_class": 10}},
        "model": {"hidden": [16]},
        "training": {"epochs": 3, "batch_size": 16, "lr": 0.1},
        "strategies": ["naive", "avalanche.Naive"],
    }  # fmt: skip
    path = in_tmp / "mixed.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mixed")
    kids = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("lifelong.role") == "trial"
    ]
    assert sorted(k.data.params["strategy"] for k in kids) == ["avalanche.Naive", "naive"]
    for kid in kids:
        assert kid.info.status == "FINISHED"
        for key in ["acc/avg", "forgetting/avg", "loss/ce", "acc/exp_0", "acc/exp_1"]:
            steps = [m.step for m in client.get_metric_history(kid.info.run_id, key)]
            assert sorted(steps) == [0, 1], (kid.data.params["strategy"], key, steps)
        assert 0.3 < kid.data.metrics["acc/exp_1"] <= 1.0
