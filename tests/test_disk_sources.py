"""Data sets read from disk (scenarios/disk.py): tiny files in every format, exact contents, errors.

Every test writes its own files into ``tmp_path`` (torchvision's raw MNIST
layout, CIFAR pickle batches, SVHN ``.mat``, PNG trees), except the one that
reads the real Debian Fashion-MNIST package. No Ray, no MLflow.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from lifelong.platform.cli import app
from lifelong.scenarios import SOURCES, ScenarioConfig, ScenarioError, build_stream, check_scenario
from lifelong.scenarios._idx import idx_header, mnist_dir, read_idx
from lifelong.scenarios.disk import ImageFolderSource

Key = tuple[bytes, int]
FASHION = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- writers


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """An IDX file of uint8 ``array`` (gzip-compressed when ``path`` ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x0800 + array.ndim if magic is None else magic
    head = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(head + array.tobytes())
    return path


def balanced(rng: np.random.Generator, n_classes: int, per_class: int, shape: tuple[int, ...]):
    """Random uint8 images with ``per_class`` samples of each class, shuffled."""
    y = rng.permutation(np.repeat(np.arange(n_classes), per_class))
    return rng.integers(0, 256, (len(y), *shape), dtype=np.uint8), y


def write_mnist_dir(directory: Path, seed: int = 0, gz: bool = False) -> dict[str, Any]:
    """The four MNIST-format files: 3 train and 2 test images of each of 10 classes."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, prefix, per_class in (("train", "train", 3), ("test", "t10k", 2)):
        x, y = balanced(rng, 10, per_class, (28, 28))
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", x)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", y)
        out[split] = (x[:, None], y)
    return out


def write_cifar(root: Path, n_classes: int, bytes_keys: bool) -> dict[str, Any]:
    """CIFAR-10 (5 batches) or CIFAR-100 pickles with the real dict keys."""
    rng = np.random.default_rng(n_classes)

    def key(k: str) -> Any:
        return k.encode() if bytes_keys else k

    def dump(path: Path, entry: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps({key(k): v for k, v in entry.items()}, protocol=2))

    ten = n_classes == 10
    base = root / ("cifar-10-batches-py" if ten else "cifar-100-python")
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    label_key = "labels" if ten else "fine_labels"
    out: dict[str, Any] = {}
    for split, files, per_class in (
        ("train", train_files, 2),
        ("test", ["test_batch" if ten else "test"], 1),
    ):
        x, y = balanced(rng, n_classes, per_class * len(files), (3, 32, 32))
        for i, name in enumerate(files):
            part = slice(i * len(y) // len(files), (i + 1) * len(y) // len(files))
            entry = {"data": x[part].reshape(-1, 3072), label_key: y[part].tolist()}
            if not ten:
                entry["coarse_labels"] = (y[part] // 5).tolist()
            dump(base / name, entry)
        out[split] = (x, y)
    names = [f"class{i}" for i in range(n_classes)]
    dump(
        base / ("batches.meta" if ten else "meta"),
        {"label_names" if ten else "fine_label_names": names},
    )
    return out


def write_svhn(root: Path) -> dict[str, Any]:
    """``train_32x32.mat`` / ``test_32x32.mat``: X shaped (32, 32, 3, N), y (N, 1) in 1..10."""
    import scipy.io

    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, per_class in (("train", 2), ("test", 1)):
        x, y = balanced(rng, 10, per_class, (3, 32, 32))  # y: digit 0..9
        stored = np.where(y == 0, 10, y).astype(np.uint8)[:, None]  # SVHN stores digit 0 as 10
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": stored})
        out[split] = (x, y)
    return out


def write_png(path: Path, array: np.ndarray) -> None:
    """``array`` (H, W) or (H, W, 3) uint8 as a PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_tree(root: Path, classes: dict[str, int], seed: int = 0, size=(6, 5)) -> dict[str, list]:
    """``root/<class>/<k>.png`` RGB images; returns class -> list of (3, H, W) arrays."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for name, n in classes.items():
        for k in range(n):
            img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            write_png(root / name / f"{k}.png", img)
            out.setdefault(name, []).append(img.transpose(2, 0, 1))
    return out


# --------------------------------------------------------------------------- checks


def keyed(x: torch.Tensor, y: torch.Tensor) -> Counter[Key]:
    """Samples as a multiset of (uint8 image bytes, label), checking x is exactly u8 / 255."""
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    u8 = torch.round(x * 255)
    assert torch.equal(x, u8 / 255), "inputs are not uint8 values scaled to [0, 1]"
    u8 = u8.to(torch.uint8).numpy()
    return Counter((u8[i].tobytes(), int(y[i])) for i in range(len(y)))


def expected(x: np.ndarray, y: np.ndarray) -> Counter[Key]:
    """The multiset of (bytes, label) of uint8 images ``x`` (N, C, H, W)."""
    x = np.ascontiguousarray(x, dtype=np.uint8)
    return Counter((x[i].tobytes(), int(y[i])) for i in range(len(y)))


def stream_samples(stream) -> tuple[Counter[Key], Counter[Key]]:
    """All train and test samples of a split stream, checking each experience's labels."""
    train, test = Counter(), Counter()
    for e in stream:
        assert set(e.y_train.tolist()) == set(e.classes) >= set(e.y_test.tolist())
        train += keyed(e.x_train, e.y_train)
        test += keyed(e.x_test, e.y_test)
    return train, test


def scenario(source: str, **kw: Any) -> ScenarioConfig:
    options = kw.pop("options", {})
    return ScenarioConfig(source=source, options=options, **kw)


def error_of(cfg: ScenarioConfig, build: bool = False) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        build_stream(cfg) if build else check_scenario(cfg)
    return info.value


# --------------------------------------------------------------------------- idx


def test_sources_are_registered() -> None:
    assert {"torchvision", "fashion_mnist", "image_folder"} <= set(SOURCES.names())


def test_idx_plain_and_gz_parse_to_the_same_read_only_cached_array(tmp_path: Path) -> None:
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    plain, gz = write_idx(tmp_path / "a-idx3-ubyte", x), write_idx(tmp_path / "b.gz", x)
    for path in (plain, gz):
        header = idx_header(path)
        assert (header.magic, header.shape) == (2051, (2, 3, 4))
        array = read_idx(path)
        assert np.array_equal(array, x) and not array.flags.writeable
        assert read_idx(path) is array  # cached per (path, mtime, size)
    write_idx(plain, x + 1)
    os.utime(plain, ns=(1, 1))  # a changed file is read again
    assert np.array_equal(read_idx(plain), x + 1)


def test_idx_truncated_file_names_it(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x-idx1-ubyte", np.zeros(10, np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ScenarioError, match=r"x-idx1-ubyte.*7 bytes.*needs 10"):
        read_idx(path)


# --------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize(
    ("folder", "written"),
    [("MNIST", "mnist"), ("FashionMNIST", "fashion-MNIST"), ("KMNIST", "kMnIsT")],
)
def test_torchvision_mnist_family_yields_exactly_the_files(
    tmp_path: Path, folder: str, written: str
) -> None:
    data = write_mnist_dir(tmp_path / folder / "raw")
    cfg = scenario(
        "torchvision", n_experiences=5, options={"dataset": written, "root": str(tmp_path)}
    )
    stream = build_stream(cfg)
    assert (stream.n_classes, stream.input_shape, len(stream)) == (10, (1, 28, 28), 5)
    train, test = stream_samples(stream)
    assert train == expected(*data["train"]) and test == expected(*data["test"])
    assert sum(train.values()) == 30 and sum(test.values()) == 20


@pytest.mark.parametrize("bytes_keys", [True, False], ids=["bytes-keys", "str-keys"])
def test_torchvision_cifar10_yields_exactly_the_batches(tmp_path: Path, bytes_keys: bool) -> None:
    data = write_cifar(tmp_path, 10, bytes_keys)
    stream = build_stream(
        scenario("torchvision", options={"dataset": "cifar10", "root": str(tmp_path)})
    )
    assert (stream.n_classes, stream.input_shape) == (10, (3, 32, 32))
    train, test = stream_samples(stream)
    assert train == expected(*data["train"]) and test == expected(*data["test"])
    assert sum(train.values()) == 100 and sum(test.values()) == 10


def test_torchvision_cifar100_has_100_classes(tmp_path: Path) -> None:
    data = write_cifar(tmp_path, 100, bytes_keys=True)
    cfg = scenario(
        "torchvision", n_experiences=10, options={"dataset": "CIFAR100", "root": str(tmp_path)}
    )
    stream = build_stream(cfg)
    assert (stream.n_classes, len(stream)) == (100, 10)
    assert all(len(e.classes) == 10 for e in stream)
    train, test = stream_samples(stream)
    assert train == expected(*data["train"]) and test == expected(*data["test"])


def test_torchvision_svhn_maps_label_10_to_digit_0(tmp_path: Path) -> None:
    data = write_svhn(tmp_path)
    stream = build_stream(
        scenario("torchvision", options={"dataset": "SVHN", "root": str(tmp_path)})
    )
    assert (stream.n_classes, stream.input_shape) == (10, (3, 32, 32))
    train, test = stream_samples(stream)
    assert train == expected(*data["train"]) and test == expected(*data["test"])
    assert 0 in {label for _, label in train} and 10 not in {label for _, label in train}


def test_per_class_limits_are_seeded_subsets(tmp_path: Path) -> None:
    data = write_mnist_dir(tmp_path / "MNIST" / "raw")
    opts = {"dataset": "MNIST", "root": str(tmp_path), "train_per_class": 2, "test_per_class": 1}

    def samples(seed: int) -> tuple[Counter[Key], Counter[Key]]:
        return stream_samples(build_stream(scenario("torchvision", seed=seed, options=opts)))

    train, test = samples(0)
    assert Counter(label for _, label in train.elements()) == Counter({c: 2 for c in range(10)})
    assert Counter(label for _, label in test.elements()) == Counter({c: 1 for c in range(10)})
    assert not train - expected(*data["train"]) and not test - expected(*data["test"])
    assert samples(0) == (train, test)  # deterministic from the seed
    assert any(samples(s)[0] != train for s in range(1, 6))  # and drawn from it
    opts["train_per_class"] = 50  # more than a class holds: all of it
    assert samples(0)[0] == expected(*data["train"])


# --------------------------------------------------------------------------- fashion_mnist


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_fashion_mnist_reads_an_mnist_format_dir(tmp_path: Path, gz: bool) -> None:
    data = write_mnist_dir(tmp_path, seed=3, gz=gz)
    stream = build_stream(scenario("fashion_mnist", options={"root": str(tmp_path)}))
    train, test = stream_samples(stream)
    assert train == expected(*data["train"]) and test == expected(*data["test"])


def test_real_debian_fashion_mnist() -> None:
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        msg = f"Debian's dataset-fashion-mnist is not installed ({FASHION}); run `make datasets`"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    files = mnist_dir(FASHION)
    assert files.counts == {"train": 60_000, "test": 10_000} and files.image_shape == (28, 28)
    cfg = scenario("fashion_mnist", options={"train_per_class": 20, "test_per_class": 5})
    stream = build_stream(cfg)
    assert (stream.n_classes, stream.input_shape, len(stream)) == (10, (1, 28, 28), 5)
    y_train = torch.cat([e.y_train for e in stream])
    y_test = torch.cat([e.y_test for e in stream])
    assert torch.bincount(y_train).tolist() == [20] * 10
    assert torch.bincount(y_test).tolist() == [5] * 10
    x = torch.cat([e.x_train for e in stream])
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.max()) > 0.5


# --------------------------------------------------------------------------- image_folder


def test_image_folder_split_is_stratified_and_exact(tmp_path: Path) -> None:
    images = write_tree(tmp_path, {"cat": 5, "dog": 5, "emu": 10})
    cfg = scenario("image_folder", n_experiences=3, options={"root": str(tmp_path)})
    stream = build_stream(cfg)
    assert (stream.n_classes, stream.input_shape) == (3, (3, 6, 5))
    train, test = stream_samples(stream)
    labels = {"cat": 0, "dog": 1, "emu": 2}  # sorted folder names
    everything = Counter({(a.tobytes(), labels[c]): 1 for c, arrs in images.items() for a in arrs})
    assert train + test == everything and not train & test
    assert Counter(label for _, label in test.elements()) == {0: 1, 1: 1, 2: 2}  # 20 %
    source = SOURCES.get("image_folder")(ImageFolderSource.Config(root=str(tmp_path)))
    assert source.class_names == ["cat", "dog", "emu"]
    assert stream_samples(build_stream(cfg)) == (train, test)  # seeded


def test_image_folder_train_test_trees_and_greyscale(tmp_path: Path) -> None:
    train = write_tree(tmp_path / "train", {"a": 3, "b": 2}, seed=1)
    test = write_tree(tmp_path / "test", {"a": 1, "b": 2}, seed=2)
    cfg = scenario("image_folder", n_experiences=2, options={"root": str(tmp_path), "mode": "L"})
    stream = build_stream(cfg)
    assert stream.input_shape == (1, 6, 5)
    got_train, got_test = stream_samples(stream)
    from PIL import Image

    def grey(tree: dict[str, list]) -> Counter[Key]:
        out = Counter()
        for label, name in enumerate(sorted(tree)):
            for a in tree[name]:
                g = np.asarray(Image.fromarray(a.transpose(1, 2, 0)).convert("L"))
                out[(g[None].tobytes(), label)] += 1
        return out

    assert got_train == grey(train) and got_test == grey(test)


def test_image_folder_resizes_to_size(tmp_path: Path) -> None:
    write_tree(tmp_path / "a", {"x": 2}, size=(6, 5))
    write_tree(tmp_path / "b", {"y": 2}, size=(9, 9))
    cfg = scenario("image_folder", n_experiences=2, options={"root": str(tmp_path), "size": [4, 3]})
    stream = build_stream(cfg)
    assert stream.input_shape == (3, 4, 3) and stream[0].x_train.shape[1:] == (3, 4, 3)
    square = scenario("image_folder", n_experiences=2, options={"root": str(tmp_path), "size": 7})
    assert build_stream(square).input_shape == (3, 7, 7)


def test_rotated_domain_incremental_on_an_image_folder(tmp_path: Path) -> None:
    write_tree(tmp_path, {"a": 4, "b": 4, "c": 4}, size=(8, 8))
    cfg = scenario(
        "image_folder",
        protocol="domain_incremental",
        transform="rotated",
        n_experiences=3,
        max_angle=90,
        options={"root": str(tmp_path)},
    )
    stream = build_stream(cfg)
    assert stream.name == "rotated_image_folder" and len(stream) == 3
    first, second = stream[0], stream[1]
    assert torch.equal(first.y_train, second.y_train) and first.classes == (0, 1, 2)
    assert first.x_train.shape == second.x_train.shape == (len(first.y_train), 3, 8, 8)
    assert not torch.equal(first.x_train, second.x_train)
    keyed(first.x_train, first.y_train)  # experience 0 is the images as read


def write_domains(root: Path) -> dict[str, dict[str, list]]:
    return {
        "photo": write_tree(root / "photo", {"dog": 3, "cat": 3}, seed=1),
        "sketch": write_tree(root / "sketch", {"dog": 3, "cat": 3, "owl": 3}, seed=2),
        "art": write_tree(root / "art" / "train", {"cat": 2, "owl": 2}, seed=3)
        | {"test": write_tree(root / "art" / "test", {"cat": 1, "owl": 1}, seed=4)},
    }


def test_domains_are_experiences_over_the_union_of_classes(tmp_path: Path) -> None:
    trees = write_domains(tmp_path)
    cfg = scenario(
        "image_folder", options={"root": str(tmp_path), "domains": ["sketch", "photo", "art"]}
    )
    stream = build_stream(cfg)
    assert (stream.protocol, len(stream), stream.n_classes) == ("domain_incremental", 3, 3)
    assert stream.info["class_names"] == ["cat", "dog", "owl"]
    assert stream.info["domains"] == ["sketch", "photo", "art"]
    assert [e.classes for e in stream] == [(0, 1, 2), (0, 1), (0, 2)]
    assert all(e.task_id == 0 for e in stream)
    labels = {"cat": 0, "dog": 1, "owl": 2}
    for e, domain in zip(stream, ["sketch", "photo"], strict=False):
        train, test = keyed(e.x_train, e.y_train), keyed(e.x_test, e.y_test)
        written = trees[domain]
        assert train + test == Counter(
            {(a.tobytes(), labels[c]): 1 for c, arrs in written.items() for a in arrs}
        )
        assert sum(test.values()) == len(written)  # one test image per class (20 % of 3)
    art = stream[2]
    assert keyed(art.x_test, art.y_test) == Counter(
        {(a.tobytes(), labels[c]): 1 for c, arrs in trees["art"]["test"].items() for a in arrs}
    )
    again = build_stream(cfg.model_copy(update={"n_experiences": 3}))
    assert torch.equal(again[0].x_test, stream[0].x_test)


def test_domain_mode_scenario_field_errors(tmp_path: Path) -> None:
    write_domains(tmp_path)
    opts = {"root": str(tmp_path), "domains": ["photo", "sketch"]}
    e = error_of(scenario("image_folder", n_experiences=3, options=opts))
    assert e.field == "n_experiences" and "2 domains" in e.message
    # written out, even at the default value, a mismatch is an error (never logged wrong)
    e = error_of(scenario("image_folder", n_experiences=5, options=opts))
    assert e.field == "n_experiences" and "2 domains" in e.message
    e = error_of(scenario("image_folder", protocol="task_incremental", options=opts))
    assert e.field == "protocol"
    e = error_of(scenario("image_folder", protocol="class_incremental", options=opts))
    assert e.field == "protocol"
    e = error_of(scenario("image_folder", transform="rotated", options=opts))
    assert e.field == "transform"
    e = error_of(scenario("image_folder", options={**opts, "domains": ["photo", "clipart"]}))
    assert e.field == "options.domains"
    assert "unknown domain 'clipart'" in e.message and str(tmp_path / "clipart") in e.message
    assert "'art', 'photo', 'sketch'" in e.message


def test_domain_mode_through_an_experiment_file_and_its_trials(tmp_path: Path) -> None:
    """Trials carry resolved scenario configs (every field set): domain mode still builds."""
    from lifelong.platform.spec import build_checked_streams, parse_experiment

    write_domains(tmp_path)
    text = EXPERIMENT.replace("  n_experiences: 2\n", "").format(
        source="image_folder", root=tmp_path
    )
    text = text.replace("  options:\n", "  options:\n    domains: [photo, sketch]\n")
    experiment = parse_experiment(text, file="x.yaml")
    streams = build_checked_streams(experiment)
    (stream,) = streams.values()
    assert len(stream) == 2 and stream.info["domains"] == ["photo", "sketch"]
    # what the file leaves out is not logged with a default the stream does not have
    (trial, *_) = experiment.trials()
    assert "n_experiences" not in trial.scenario and "protocol" not in trial.scenario


# --------------------------------------------------------------------------- errors


def test_missing_root_and_file_root(tmp_path: Path) -> None:
    missing, file = tmp_path / "nope", tmp_path / "file"
    file.write_text("x")
    for source, extra in (
        ("image_folder", {}),
        ("fashion_mnist", {}),
        ("torchvision", {"dataset": "MNIST"}),
    ):
        e = error_of(scenario(source, options={"root": str(missing), **extra}))
        assert (e.field, e.message) == ("options.root", f"directory not found: {str(missing)!r}")
        e = error_of(scenario(source, options={"root": str(file), **extra}))
        assert e.field == "options.root" and "is a file, not a directory" in e.message
        assert str(file) in e.message


def test_image_folder_layout_errors(tmp_path: Path) -> None:
    def check(root: Path, pattern: str, build: bool = False, **opts: Any) -> None:
        e = error_of(
            scenario("image_folder", n_experiences=2, options={"root": str(root), **opts}), build
        )
        assert e.field.startswith("options."), e
        assert re.search(pattern, e.message), e.message

    (tmp_path / "empty_root").mkdir()
    check(tmp_path / "empty_root", r"no class folders in '.*empty_root'")
    write_tree(tmp_path / "empty_class", {"a": 2})
    (tmp_path / "empty_class" / "b").mkdir()
    check(tmp_path / "empty_class", r"class folder '.*empty_class/b' holds no image files")
    write_tree(tmp_path / "sizes" / "a", {"x": 2}, size=(4, 4))
    write_tree(tmp_path / "sizes" / "b", {"y": 2}, size=(5, 4))
    check(
        tmp_path / "sizes", r"images differ in size: .*4x4.*sizes/b/y/0.png' is 5x4.*options.size"
    )
    write_tree(tmp_path / "corrupt", {"a": 2, "b": 2})
    (tmp_path / "corrupt" / "b" / "1.png").write_bytes(b"not a png")
    check(tmp_path / "corrupt", r"cannot read image file '.*corrupt/b/1.png'")
    check(tmp_path / "corrupt", r"cannot read image file '.*corrupt/b/1.png'", build=True, size=4)
    write_tree(tmp_path / "split" / "train", {"a": 2, "b": 2})
    write_tree(tmp_path / "split" / "test", {"a": 1})
    check(tmp_path / "split", r"class folder '.*split/test/b' is missing")
    write_tree(tmp_path / "half" / "train", {"a": 2, "b": 2})
    check(tmp_path / "half", r"either class folders or exactly train/ and test/")
    write_tree(tmp_path / "fixed" / "train", {"a": 2, "b": 2})
    write_tree(tmp_path / "fixed" / "test", {"a": 1, "b": 1})
    check(tmp_path / "fixed", r"fix the split; leave test_fraction out", test_fraction=0.5)


def test_idx_errors(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path / "count", gz=True)
    write_idx(tmp_path / "count" / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    e = error_of(scenario("fashion_mnist", options={"root": str(tmp_path / "count")}))
    assert e.field == "options.root"
    assert re.search(
        r"label file '.*t10k-labels.*' holds 19 labels but image file .* 20", e.message
    )
    write_mnist_dir(tmp_path / "magic")
    images = tmp_path / "magic" / "train-images-idx3-ubyte"
    write_idx(images, np.zeros((30, 28, 28), np.uint8), magic=0x0B03)
    e = error_of(scenario("fashion_mnist", options={"root": str(tmp_path / "magic")}))
    assert re.search(
        r"'.*train-images-idx3-ubyte' has IDX magic number 2819, expected 2051", e.message
    )
    images.write_bytes(b"\x12\x34\x56\x78" + images.read_bytes()[4:])
    e = error_of(scenario("fashion_mnist", options={"root": str(tmp_path / "magic")}))
    assert "is not an IDX file: bad magic number 305419896" in e.message
    (tmp_path / "lacking").mkdir()
    e = error_of(scenario("fashion_mnist", options={"root": str(tmp_path / "lacking")}))
    assert "train-images-idx3-ubyte' (or train-images-idx3-ubyte.gz) not found" in e.message
    write_mnist_dir(tmp_path / "MNIST" / "raw")
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.zeros(29, np.uint8))
    e = error_of(scenario("torchvision", options={"dataset": "MNIST", "root": str(tmp_path)}))
    assert "holds 29 labels" in e.message


def test_torchvision_missing_files_say_where_and_never_download(tmp_path: Path) -> None:
    for dataset, looked_for in (
        ("MNIST", "MNIST/raw/train-images-idx3-ubyte"),
        ("KMNIST", "KMNIST/raw/train-images-idx3-ubyte"),
        ("CIFAR10", "cifar-10-batches-py/data_batch_1"),
        ("CIFAR100", "cifar-100-python/train"),
        ("SVHN", "train_32x32.mat"),
    ):
        e = error_of(scenario("torchvision", options={"dataset": dataset, "root": str(tmp_path)}))
        assert e.field == "options.root"
        assert f"torchvision's {dataset} looks for {str(tmp_path / looked_for)!r}" in e.message
        assert "lifelong never downloads" in e.message and "download=True" in e.message
    write_svhn(tmp_path / "svhn")
    (tmp_path / "svhn" / "test_32x32.mat").unlink()
    e = error_of(
        scenario("torchvision", options={"dataset": "svhn", "root": str(tmp_path / "svhn")})
    )
    assert "test_32x32.mat" in e.message


def test_torchvision_unknown_dataset_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(
        ValidationError,
        match=r"unknown torchvision dataset 'ImageNet'; "
        r"known: MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, SVHN",
    ):
        check_scenario(scenario("torchvision", options={"dataset": "ImageNet", "root": "x"}))
    write_cifar(tmp_path, 10, bytes_keys=True)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    e = error_of(
        scenario("torchvision", options={"dataset": "CIFAR10", "root": str(tmp_path)}), build=True
    )
    assert e.field == "options.root" and "data_batch_3" in e.message
    assert e.message.startswith("cannot read CIFAR10 train data")
    write_svhn(tmp_path / "s")
    (tmp_path / "s" / "train_32x32.mat").write_bytes(b"garbage")
    e = error_of(
        scenario("torchvision", options={"dataset": "SVHN", "root": str(tmp_path / "s")}),
        build=True,
    )
    assert "cannot read SVHN train data" in e.message and "train_32x32.mat" in e.message


EXPERIMENT = """\
name: disk
scenario:
  source: {source}
  n_experiences: 2
  options:
    root: {root}
strategies:
  - naive
"""


@pytest.mark.parametrize("case", ["missing root", "corrupt image", "good"])
def test_cli_dry_run_reports_file_line_and_field(in_tmp: Path, case: str) -> None:
    root = in_tmp / "data"
    if case != "missing root":
        write_tree(root, {"a": 2, "b": 2})
    if case == "corrupt image":
        (root / "a" / "0.png").write_bytes(b"\x89PNG broken")
    path = in_tmp / "exp.yaml"
    path.write_text(EXPERIMENT.format(source="image_folder", root=root))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    if case == "good":
        assert result.exit_code == 0, result.output
        assert "dry run: nothing was started" in result.output
        return
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = {
        "missing root": f"directory not found: '{root}'",
        "corrupt image": f"cannot read image file '{root / 'a' / '0.png'}'",
    }[case]
    assert f"{path}:6: scenario.options.root: {message}" in result.stderr.replace("\n", " ")
    assert not (in_tmp / "mlflow.db").exists() and not (in_tmp / ".lifelong").exists()
