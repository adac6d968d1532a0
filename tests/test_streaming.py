"""The streaming path: experiences fed from the host through a DataLoader, and augmentation.

Same batches as the in-memory path on the same data; augmentation deterministic
from the seed for any number of workers; test data never augmented; workers
share the data's pages instead of copying them; a sweep with streaming forced
runs on the real local Ray and gives the matrix this process gives.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lifelong.cluster.trial import build_learner
from lifelong.platform.cli import app
from lifelong.platform.learner import Learner
from lifelong.platform.loader import (
    ExperienceLoader,
    StreamedExperience,
    StreamedExperiences,
    place_experiences,
)
from lifelong.platform.models import ModelConfig
from lifelong.platform.plots import read_accuracy_matrix_csv
from lifelong.platform.spec import (
    SpecError,
    build_checked_stream,
    load_experiment,
    parse_experiment,
)
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig, build_stream
from lifelong.scenarios.augment import AUGMENTATIONS, build_augment, parse_step
from lifelong.scenarios.stream import Experience, Stream
from lifelong.strategies import build_strategy

AUGMENT = ["horizontal_flip", {"random_crop": {"padding": 1}}]
MODEL = ModelConfig(hidden=[16])


def digits(**changes) -> Stream:
    return build_stream(ScenarioConfig(source="digits", n_experiences=2, **changes))


def training(**changes) -> TrainingConfig:
    return TrainingConfig(
        **{"epochs": 2, "batch_size": 32, "lr": 0.05, "accelerator": "cpu"} | changes
    )


def fit(stream: Stream, strategy: str = "naive", seed: int = 0, **changes) -> np.ndarray:
    learner = Learner(stream, MODEL, [build_strategy(strategy)], training(**changes), seed)
    return learner.fit().copy()


# ------------------------------------------------------------------ which path


def test_small_experiences_stay_on_the_fast_path() -> None:
    stream = digits()
    placed = place_experiences(stream.experiences, torch.device("cpu"), training(), augment=False)
    assert not any(isinstance(e, StreamedExperience) for e in placed)
    tiny = training(device_data_mb=0.01)  # each digits experience holds ~0.05 MiB
    placed = place_experiences(stream.experiences, torch.device("cpu"), tiny, augment=False)
    assert all(isinstance(e, StreamedExperience) for e in placed)
    always = training(data_on_device="always", device_data_mb=0.01)
    placed = place_experiences(stream.experiences, torch.device("cpu"), always, augment=False)
    assert not any(isinstance(e, StreamedExperience) for e in placed)
    placed = place_experiences(stream.experiences, torch.device("cpu"), training(), augment=True)
    assert all(isinstance(e, StreamedExperience) for e in placed)


def test_augmentation_cannot_keep_the_data_on_the_device() -> None:
    with pytest.raises(ValueError, match="data_on_device: always cannot augment"):
        Learner(digits(augment=AUGMENT), MODEL, [], training(data_on_device="always"), 0)


def test_a_streamed_experience_gives_strategies_its_tensors_on_the_device() -> None:
    host = digits()[0]
    e = StreamedExperience(host, torch.device("cpu"))
    assert (e.index, e.task_id, e.classes, e.n_train, e.n_test) == (
        host.index,
        host.task_id,
        host.classes,
        host.n_train,
        host.n_test,
    )
    torch.testing.assert_close(e.x_train, host.x_train)
    torch.testing.assert_close(e.y_test, host.y_test)


# ------------------------------------------------------------- same results


@pytest.mark.parametrize("strategy", ["ewc", "lwf"])
def test_streaming_gives_the_in_memory_matrix(strategy: str) -> None:
    """Same permutation from the same generator: identical batches, identical R."""
    stream = digits()
    fast = fit(stream, strategy)
    assert np.array_equal(fast, fit(stream, strategy, data_on_device="never", loader_workers=0))
    assert np.array_equal(fast, fit(stream, strategy, data_on_device="never", loader_workers=1))


def test_a_lazy_stream_streams_its_experiences() -> None:
    stream = build_stream(
        ScenarioConfig(source="digits", protocol="domain_incremental", n_experiences=2)
    )
    learner = Learner(stream, MODEL, [], training(data_on_device="never", loader_workers=0), 0)
    assert isinstance(learner.experiences, StreamedExperiences)
    assert np.array_equal(learner.fit(), fit(stream))


# ------------------------------------------------------------- augmentation


def test_augmentation_is_deterministic_for_any_number_of_workers() -> None:
    stream = digits(augment=AUGMENT)
    assert stream.info["augment"] == [{"horizontal_flip": {}}, {"random_crop": {"padding": 1}}]
    matrices = [
        fit(stream, epochs=1, loader_workers=w, prefetch_factor=p) for w, p in ((0, 2), (2, 1))
    ]
    assert np.array_equal(matrices[0], matrices[1])
    assert np.array_equal(matrices[0], fit(stream, epochs=1, loader_workers=0))  # from scratch
    assert not np.array_equal(matrices[0], fit(digits(), epochs=1))  # augmentation mattered
    assert not np.array_equal(matrices[0], fit(stream, seed=1, epochs=1, loader_workers=0))


def test_augmented_batches_keep_the_order_and_labels_and_spare_the_test_data() -> None:
    stream = digits(augment=AUGMENT)
    host = stream[0]
    learner = Learner(stream, MODEL, [], training(loader_workers=1), 0)
    exp = learner.experiences[0]
    assert isinstance(exp, StreamedExperience)
    perm = torch.randperm(
        host.n_train, generator=torch.Generator().manual_seed(0)
    )  # what the learner's generator draws first
    aug = learner.augment
    assert aug is not None
    with ExperienceLoader(exp, learner.training, learner.generator, 0, aug) as loader:
        batches = list(loader.epoch())
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert torch.equal(y, host.y_train[perm])  # labels follow the same permutation
    assert x.shape == host.x_train.shape and not torch.equal(x, host.x_train[perm])
    assert loader.batches == len(batches) and loader.wait_s > 0
    # evaluation scores the untouched test tensors
    model = learner.model.eval()
    with torch.no_grad():
        expected = (model(host.x_test).argmax(1) == host.y_test).double().mean().item()
    assert learner.evaluate([0])[0] == pytest.approx(expected)


def test_resuming_an_augmented_run_continues_exactly() -> None:
    stream, config = digits(augment=AUGMENT), training(epochs=1, loader_workers=0)
    whole = Learner(stream, MODEL, [build_strategy("ewc")], config, 0)
    whole.fit()
    first = Learner(stream, MODEL, [build_strategy("ewc")], config, 0)
    first.evaluate_untrained()
    first.run_experience(0)
    state = first.state_dict()
    resumed = Learner(stream, MODEL, [build_strategy("ewc")], config, 0)
    resumed.load_state_dict(state)
    assert np.array_equal(resumed.fit(), whole.R)


def test_augment_steps_are_validated_with_the_known_names() -> None:
    assert parse_step({"color_jitter": {"brightness": 0.2}}) == {
        "color_jitter": {"brightness": 0.2}
    }
    with pytest.raises(ValueError, match="unknown augmentation 'flip'; known: random_crop, "):
        parse_step("flip")
    with pytest.raises(ValueError, match="random_crop: unknown parameter 'pad'; its parameters"):
        parse_step({"random_crop": {"pad": 4}})
    with pytest.raises(ValueError, match="random_rotation.degrees: Field required"):
        parse_step("random_rotation")
    with pytest.raises(ValueError, match="larger than input image size"):
        build_augment([{"random_crop": {"size": 9}}], (1, 8, 8))
    for name in AUGMENTATIONS:  # every entry builds and keeps the image shape
        params = {"degrees": 10} if name == "random_rotation" else {}
        aug = build_augment([{name: params}], (3, 8, 8))
        assert aug is not None and aug(torch.rand(3, 8, 8)).shape == (3, 8, 8)


GOOD = """\
name: t
seeds: 1
scenario:
  source: digits
  n_experiences: 2
  augment:
    - flip
training:
  epochs: 1
strategies: [naive]
"""


@pytest.mark.parametrize(
    "text, pattern, line",
    [
        (GOOD, r":7: scenario.augment\[0\]: .*unknown augmentation 'flip'; known: random_crop", 7),
        (
            GOOD.replace("digits", "gaussian").replace("- flip", "- horizontal_flip"),
            r":6: scenario.augment: needs image inputs shaped \(C, H, W\); source 'gaussian'",
            6,
        ),
    ],
    ids=["unknown name", "not images"],
)
def test_bad_augment_exits_2_naming_the_field(
    text: str, pattern: str, line: int, in_tmp: Path
) -> None:
    path = in_tmp / "exp.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(pattern, result.stderr.replace("\n", " ")), result.stderr
    with pytest.raises(SpecError) as info:
        parse_experiment(text, file="x.yaml")
    assert any(ln == line for _, ln, _ in info.value.problems)


def test_avalanche_strategies_refuse_augment_before_anything_starts() -> None:
    text = """\
name: a
scenario:
  source: digits
  augment: [horizontal_flip]
strategies:
  - avalanche.Naive
"""
    with pytest.raises(SpecError, match="Avalanche's own loader, which would not apply"):
        parse_experiment(text, file="x.yaml")


# ------------------------------------------------------------------ workers


def private_and_shared_mib(pid: int, address: int, nbytes: int) -> tuple[float, float]:
    """Resident MiB of ``pid``'s pages in ``[address, address + nbytes)``: private, shared.

    Per page, from ``/proc/PID/pagemap`` (bit 63: present; bit 56: mapped by this
    process only, i.e. a private copy). Only the tensor's own pages count: the
    per-mapping totals of ``smaps`` would also count the worker's batches when the
    kernel merges their allocations into the tensor's mapping.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    first, last = address // page, (address + nbytes - 1) // page
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = np.frombuffer(f.read((last - first + 1) * 8), dtype="<u8")
    present = (entries >> np.uint64(63)) & np.uint64(1)
    exclusive = (entries >> np.uint64(56)) & np.uint64(1)
    private = int((present & exclusive).sum())
    shared = int(present.sum()) - private
    return private * page / 2**20, shared * page / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/pagemap"), reason="needs Linux /proc")
def test_workers_read_the_data_in_place_without_copying_it() -> None:
    n = 8192
    x = torch.rand(n, 1, 32, 32)  # 32 MiB, written here: the pages exist before the fork
    y = torch.randint(0, 10, (n,))
    host = Experience(0, 0, tuple(range(10)), x, y, x[:10], y[:10])
    exp = StreamedExperience(host, torch.device("cpu"))
    config = training(loader_workers=2, batch_size=512)
    before = {p.pid for p in psutil.Process().children()}  # e.g. the session's Ray processes
    with ExperienceLoader(exp, config, torch.Generator().manual_seed(0), 0, None) as loader:
        seen = sum(int(b[1].shape[0]) for b in loader.epoch())  # every sample read once
        workers = [p for p in psutil.Process().children() if p.pid not in before]
        assert len(workers) == 2
        for w in workers:
            private, shared = private_and_shared_mib(w.pid, x.data_ptr(), x.nbytes)
            assert private < 8, (private, shared)  # not a copy of the 32 MiB
            assert shared > 16, (private, shared)  # the parent's pages, read in place
    assert seen == n


# ---------------------------------------------------------------------- Ray

SPEC = {
    "name": "streaming",
    "seeds": [0],
    "scenario": {"source": "digits", "n_experiences": 2, "augment": AUGMENT},
    "model": {"hidden": [16]},
    "training": {
        "epochs": 1,
        "batch_size": 32,
        "lr": 0.05,
        "accelerator": "cpu",
        "data_on_device": "never",
        "loader_workers": 1,
    },
    "strategies": ["naive"],
}


def test_a_streaming_sweep_runs_on_ray_and_matches_this_process(
    ray_instance: str, in_tmp: Path
) -> None:
    path = in_tmp / "streaming.yaml"
    path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    uri = f"sqlite:///{in_tmp / 'streaming.db'}"
    result = CliRunner().invoke(app, ["run", str(path), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("streaming")
    (kid,) = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("lifelong.role") == "trial"
    ]
    assert kid.info.status == "FINISHED"
    swept = read_accuracy_matrix_csv(
        client.download_artifacts(kid.info.run_id, "accuracy_matrix.csv")
    )[0]
    experiment = load_experiment(path)
    (trial,) = experiment.trials()
    config = {
        "trial": trial.to_dict(),
        "model": experiment.spec.model.model_dump(mode="json"),
        "training": experiment.spec.training.model_dump(mode="json"),
    }
    here = build_learner(config, build_checked_stream(experiment)).fit()
    np.testing.assert_allclose(swept, here, atol=1e-6)  # the CSV keeps 6 digits
