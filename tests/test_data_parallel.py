"""One learner over several workers (``resources.workers``) gives the one-process result.

The learner-level tests run the data-parallel learner in real gloo process
groups (``torch.distributed``, one process per worker) and compare R, the loss
terms, the retention metric and the final weights with one process; the sweep
tests run real Ray Train ``TorchTrainer`` trials inside a Ray Tune sweep, logged
to a real MLflow store, including a worker that fails and a trial that Tune
restarts from its checkpoint.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import yaml
from mlflow.tracking import MlflowClient
from test_sweep_e2e import children
from tiny_lm import make_tiny_lm
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.platform.data_parallel import DataParallel
from lifelong.platform.learner import Learner
from lifelong.platform.plots import read_accuracy_matrix_csv
from lifelong.platform.spec import build_checked_stream, parse_experiment
from lifelong.strategies import Strategy, build_strategy

# 2 experiences of 82 training examples: batches of 16 end with a batch of 2, which
# three workers split as 0 + 1 + 1 rows (one stand-in row at weight 0).
CLASSIFICATION = """
seeds: [3]
scenario:
  source: gaussian
  n_experiences: 2
  options: {n_classes: 4, n_features: 8, n_train_per_class: 41, n_test_per_class: 10}
model: {hidden: [16]}
training: {epochs: 2, batch_size: 16, lr: 0.1, plasticity_baseline: true, anytime_every: 4}
strategies: [[ewc, si]]
"""


def text_spec(model: Path) -> str:
    """Two text tasks on the tiny LLaMA model: token-weighted shards, retention."""
    return f"""
seeds: [0]
scenario:
  source: text_tasks
  options: {{tasks: [arithmetic, reverse], n_train: 12, n_test: 6}}
model: {{name: hf_causal_lm, path: {model}}}
training: {{epochs: 1, batch_size: 4, optimizer: adam, lr: 0.003, eval_batch_size: 4}}
strategies: [[ewc, mas]]
"""


def fit(text: str, parallel: DataParallel | None) -> dict[str, Any]:
    """Train the experiment's one trial; R, the loss terms, retention and the weights."""
    exp = parse_experiment(text)
    stream = build_checked_stream(exp)
    (trial,) = exp.trials()
    strategies = [build_strategy(s.name, s.params) for s in trial.strategies]
    learner = Learner(stream, exp.spec.model, strategies, exp.spec.training, trial.seed, parallel)
    learner.evaluate_untrained()
    losses = [learner.run_experience(i)[1] for i in range(len(learner.experiences))]
    return {
        "R": learner.R,
        "fresh": learner.fresh,
        "anytime": learner.anytime,
        "losses": losses,
        "retention": learner.retention,
        "weights": {k: v.detach().clone() for k, v in learner.model.state_dict().items()},
    }


def _worker(rank: int, world: int, init: str, text: str, out: str) -> None:
    """One worker of a gloo group: fit, and rank 0 saves what it got."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        got = fit(text, DataParallel(rank, world))
        if rank == 0:  # tensors and plain values: loadable with weights_only=True
            got |= {k: torch.from_numpy(got[k]) for k in ("R", "fresh")}
            torch.save(got, out)
    finally:
        dist.destroy_process_group()


def fit_on_workers(text: str, world: int, tmp: Path) -> dict[str, Any]:
    """:func:`fit` over ``world`` worker processes joined in a gloo group."""
    ctx = multiprocessing.get_context("spawn")
    out = tmp / "rank0.pt"
    procs = [
        ctx.Process(target=_worker, args=(r, world, str(tmp / "init"), text, str(out)))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * world
    got = torch.load(out, weights_only=True)
    return got | {k: got[k].numpy() for k in ("R", "fresh")}


def assert_same_training(one: dict[str, Any], many: dict[str, Any]) -> None:
    """The data-parallel learner trained what one process trains (float tolerance)."""
    np.testing.assert_allclose(many["R"], one["R"], atol=1e-6)
    np.testing.assert_allclose(many["fresh"], one["fresh"], atol=1e-6, equal_nan=True)
    assert [s for s, _ in many["anytime"]] == [s for s, _ in one["anytime"]]
    np.testing.assert_allclose([a for _, a in many["anytime"]], [a for _, a in one["anytime"]])
    assert [set(x) for x in many["losses"]] == [set(x) for x in one["losses"]]
    for a, b in zip(many["losses"], one["losses"], strict=True):
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), k
    assert many["retention"].keys() == one["retention"].keys()
    for k, v in one["retention"].items():
        assert many["retention"][k] == pytest.approx(v, rel=1e-5)
    for k, v in one["weights"].items():
        torch.testing.assert_close(many["weights"][k], v, atol=1e-5, rtol=1e-4)


def test_three_workers_train_what_one_process_trains(tmp_path: Path) -> None:
    one = fit(CLASSIFICATION, None)
    many = fit_on_workers(CLASSIFICATION, 3, tmp_path)
    assert_same_training(one, many)
    assert set(one["losses"][1]) == {"ce", "ewc", "si"} and np.isfinite(one["fresh"]).all()


def test_two_workers_on_a_language_model_weight_shards_by_tokens(tmp_path: Path) -> None:
    text = text_spec(make_tiny_lm(tmp_path / "tiny"))
    one = fit(text, None)
    many = fit_on_workers(text, 2, tmp_path)
    assert_same_training(one, many)
    assert set(one["retention"]) == {"ppl", "token_acc"}


def test_a_model_with_training_batchnorm_is_refused(tmp_path: Path) -> None:
    from lifelong.platform.models import ModelConfig
    from lifelong.platform.training import TrainingConfig
    from lifelong.scenarios import ScenarioConfig, build_stream

    from conftest import save_test_resnet

    weights = str(save_test_resnet(tmp_path, seed=0))
    stream = build_stream(ScenarioConfig(source="digits", n_experiences=2))
    training = TrainingConfig(epochs=1, accelerator="cpu")
    init = f"file://{tmp_path / 'init'}"
    dist.init_process_group("gloo", init_method=init, rank=0, world_size=1)
    try:
        model = {"name": "timm", "arch": "test_resnet", "weights": weights, "input_size": 32}
        with pytest.raises(ValueError, match="has BatchNorm layers that train"):
            Learner(stream, ModelConfig(**model), [], training, 0, DataParallel(0, 1))
        frozen = ModelConfig(**model, freeze="backbone")  # BatchNorm in eval mode: accepted
        Learner(stream, frozen, [], training, 0, DataParallel(0, 1))
    finally:
        dist.destroy_process_group()


class _RankTerm(Strategy):
    """A term only worker 0 returns: what a strategy reading its own slice could do."""

    name = "rank_term"

    def loss_terms(self, ctx: Any, batch: Any) -> dict[str, torch.Tensor]:
        return {"extra": batch.logits.sum() * 0} if dist.get_rank() == 0 else {}


def _diverging_worker(rank: int, world: int, init: str, text: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        exp = parse_experiment(text)
        stream = build_checked_stream(exp)
        (trial,) = exp.trials()
        parallel = DataParallel(rank, world)
        learner = Learner(stream, exp.spec.model, [_RankTerm()], exp.spec.training, 0, parallel)
        try:
            learner.train_experience(0)
        except RuntimeError as e:
            Path(f"{out}.{rank}").write_text(str(e))
    finally:
        dist.destroy_process_group()


def test_workers_that_log_different_terms_fail_alike(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = str(tmp_path / "error")
    args = (str(tmp_path / "init"), CLASSIFICATION, out)
    procs = [ctx.Process(target=_diverging_worker, args=(r, 2, *args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    for rank in range(2):  # both raised, neither hung in a mismatched collective
        text = Path(f"{out}.{rank}").read_text()
        assert "the data-parallel workers logged different loss terms" in text


def test_the_failing_worker_is_named_not_the_others_broken_connection() -> None:
    from ray.train import WorkerGroupError

    from lifelong.cluster.data_parallel import worker_error

    echo = RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer")
    cause = ValueError("loss term 'x' of strategy 'y' is already used")
    assert worker_error(WorkerGroupError("two failed", {0: echo, 1: cause})) is cause
    assert worker_error(WorkerGroupError("one failed", {1: echo})) is echo
    plain = KeyError("k")
    assert worker_error(plain) is plain


def test_concurrency_counts_workers_that_fit_on_each_node() -> None:
    from lifelong.cluster.data_parallel import max_concurrent

    spec = parse_experiment(CLASSIFICATION + "resources: {workers: 3, cpu: 2.5}\n").spec
    with pytest.raises(ValueError, match="2 such workers fit on its 2 node"):
        max_concurrent(spec, [{"CPU": 4.0}, {"CPU": 4.0}])  # 8 CPUs, but 1 + 1 workers
    assert max_concurrent(spec, [{"CPU": 5.0}, {"CPU": 2.5}, {"CPU": 8.0}]) == 2  # 2 + 1 + 3
    two = parse_experiment(CLASSIFICATION + "resources: {workers: 2, cpu: 1}\n").spec
    assert max_concurrent(two, [{"CPU": 4.0}, {"CPU": 3.0}]) == 3


# ------------------------------------------------------------------ sweeps
CRASH = '''\
"""Test plugin: worker 0 of a data-parallel trial fails at experience 1."""

from pathlib import Path

import torch.distributed as dist

from lifelong.strategies import Strategy, StrategyConfig, register_strategy


class CrashConfig(StrategyConfig):
    """``marker``: fail once, recording it in this file; empty: fail every time."""

    marker: str = ""


@register_strategy("crash")
class Crash(Strategy):
    """No loss term, no state: results are those of the strategies beside it."""

    Config = CrashConfig

    def on_experience_start(self, ctx):
        """Raise on rank 0 at experience 1 (once, when a marker file is given)."""
        if ctx.experience.index != 1 or not dist.is_initialized() or dist.get_rank() != 0:
            return
        marker = Path(self.config.marker) if self.config.marker else None
        if marker is not None and marker.exists():
            return
        if marker is not None:
            marker.write_text("crashed")
        raise RuntimeError("crash plugin: worker 0 fails at experience 1")
'''


def sweep_file(where: Path, name: str, strategies: list[Any], **changes: Any) -> Path:
    """A small sweep (2 experiences, 1 seed) of ``strategies``."""
    spec = yaml.safe_load(CLASSIFICATION)
    spec["training"] = {"epochs": 1, "batch_size": 16, "lr": 0.1}
    spec |= {"name": name, "strategies": strategies, **changes}
    path = where / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def matrices(client: MlflowClient, name: str, tmp: Path) -> dict[str, tuple[str, Any]]:
    """Each trial's (status, R from its accuracy_matrix.csv artifact) by strategy label."""
    _, kids = children(client, name)
    out = {}
    for kid in kids:
        R = None
        if kid.info.status == "FINISHED":
            csv = client.download_artifacts(kid.info.run_id, "accuracy_matrix.csv", str(tmp))
            R = read_accuracy_matrix_csv(csv)[0]
        out[kid.data.params["strategy"]] = (kid.info.status, R, kid)
    return out


def test_a_sweep_on_two_workers_logs_what_one_process_logs(ray_instance: str, in_tmp: Path) -> None:
    runner = CliRunner()
    for name, workers in (("one", 1), ("two", 2)):
        path = sweep_file(in_tmp, name, ["ewc", "si"], resources={"cpu": 1, "workers": workers})
        result = runner.invoke(app, ["run", str(path)])
        assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    one, two = matrices(client, "one", in_tmp), matrices(client, "two", in_tmp)
    assert set(one) == set(two) == {"ewc", "si"}
    for label in one:
        (s1, R1, k1), (s2, R2, k2) = one[label], two[label]
        assert s1 == s2 == "FINISHED"
        np.testing.assert_allclose(R2, R1, atol=1e-6)
        assert set(k2.data.metrics) == set(k1.data.metrics)
        for key, value in k1.data.metrics.items():
            if key.startswith("system/"):  # the machine's load at the time, not the learning
                continue
            assert k2.data.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        steps = [m.step for m in client.get_metric_history(k2.info.run_id, "acc/avg")]
        assert steps == [0, 1]


def test_a_failed_worker_fails_alone_and_a_restart_resumes(ray_instance: str, in_tmp: Path) -> None:
    (in_tmp / "crash.py").write_text(CRASH)
    marker = in_tmp / "crashed-once"
    strategies = [["ewc", {"crash": {"marker": str(marker)}}], ["si", "crash"]]
    path = sweep_file(
        in_tmp,
        "crashes",
        strategies,
        plugins=["crash.py"],
        max_failures=1,
        resources={"cpu": 1, "workers": 2},
    )
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 1, result.output  # one trial failed
    assert marker.read_text() == "crashed"  # the first trial did fail once
    client = MlflowClient(f"sqlite:///{in_tmp / 'mlflow.db'}")
    runs = matrices(client, "crashes", in_tmp)
    status, R, kid = runs["ewc+crash"]
    assert status == "FINISHED"
    for key in ("acc/avg", "loss/ce", "acc/exp_0"):  # every step exactly once
        assert sorted(m.step for m in client.get_metric_history(kid.info.run_id, key)) == [0, 1]
    reference = fit(
        CLASSIFICATION.replace("epochs: 2", "epochs: 1")
        .replace(", plasticity_baseline: true, anytime_every: 4", "")
        .replace("[[ewc, si]]", "[ewc]"),
        None,
    )
    np.testing.assert_allclose(R, reference["R"], atol=1e-6)  # resumed from experience 0
    status, _, failed = runs["si+crash"]
    assert status == "FAILED"
    assert "crash plugin: worker 0 fails at experience 1" in failed.data.tags["lifelong.error"]


@pytest.mark.parametrize(
    ("strategies", "resources", "message"),
    [
        (["center_loss"], {"workers": 2}, "'center_loss' cannot train over 2 workers"),
        (["avalanche.Naive"], {"workers": 2}, "train in Avalanche's own loop"),
        (["naive"], {"workers": 3}, "needs 3 CPUs per trial; the Ray cluster has 2"),
        (["naive"], {"workers": 2, "gpu": 0.5}, "each worker trains on one whole GPU"),
    ],
)
def test_what_cannot_train_over_workers_exits_2_before_anything_starts(
    ray_instance: str, in_tmp: Path, strategies: list[str], resources: dict, message: str
) -> None:
    path = sweep_file(in_tmp, "refused", strategies, resources=resources)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    db = in_tmp / "mlflow.db"
    if db.exists():  # nothing was logged
        client = MlflowClient(f"sqlite:///{db}")
        assert client.get_experiment_by_name("refused") is None
