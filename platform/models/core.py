"""The model every learner trains: a body (feature extractor) and a head.

The body is a built-in (an MLP, a small CNN, a transformer) or a pre-trained
backbone (:mod:`lifelong.platform.models.pretrained`). Every model exposes
``features(x)`` (the penultimate representation ``h(x)``, used by
feature-space strategies such as center loss) and
``classify(h, task_id)`` (the head). In a multi-head model the head's logits
outside the task's classes are masked to ``-inf``, so each head scores only its
own task's classes and receives gradient only for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)
from torch import Tensor, nn

from lifelong.platform._registry import Registry
from lifelong.platform.transformer import transformer

from .language import LANGUAGE_NAMES, build_language_model

DEFAULT_HIDDEN = [256, 256]
"""``model.hidden`` when not given."""

PRETRAINED_NAMES = ("timm", "torchvision", "efficientnet_lite0")
"""Model names whose body is a pre-trained (or pre-trainable) backbone."""


class ModelConfig(BaseModel):
    """Which model to build: a built-in or a backbone with a fresh head.

    Attributes:
        name: registry ID: a built-in (``mlp``, ``cnn``, ``transformer``), a plugin
            model, a backbone source (``timm``, ``torchvision``, ``efficientnet_lite0``)
            or a pre-trained causal language model (``hf_causal_lm``, ``smollm2_135m``).
        hidden: hidden layer widths (MLP) or channel counts (CNN); built-ins only.
        multi_head: mask the head per task (default: on for task-incremental streams).
        arch: the ``timm`` or ``torchvision`` architecture, e.g. ``resnet18``.
        weights: a local weights file (a state dict, ``.pt``/``.pth`` or
            ``.safetensors``); ``efficientnet_lite0`` defaults to its packaged ImageNet
            weights, ``timm``/``torchvision`` without it start from random weights.
        freeze: which parameters do not train: ``none``, ``backbone`` (the whole body,
            which then runs in eval mode) or a list of name patterns (``fnmatch``, e.g.
            ``body.net.blocks.0.*``).
        input_size: the side images are resized to (default: the weights' own, e.g. 224).
        mean, std: per-channel normalisation (default: what the weights were trained with).
        path: ``hf_causal_lm`` only: the local Hugging Face model directory (its
            ``config.json``, weights and tokenizer).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "mlp"
    hidden: list[int] = Field(default_factory=lambda: list(DEFAULT_HIDDEN), min_length=1)
    multi_head: bool | None = None
    arch: str | None = None
    weights: str | None = None
    freeze: Literal["none", "backbone"] | list[str] = "none"
    input_size: int | None = Field(None, ge=8)
    mean: list[float] | None = Field(None, min_length=3, max_length=3)
    std: list[float] | None = Field(None, min_length=3, max_length=3)
    path: str | None = Field(None, min_length=1)

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        """Make a relative ``path`` (the working directory's) absolute when read.

        A Ray worker runs in another directory; it must load the same folder.
        """
        return None if path is None else str(Path(path).expanduser().absolute())

    def model_post_init(self, _: object) -> None:
        """Reject non-positive widths and fields that do not apply to ``name``."""
        if any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden widths must be positive, got {self.hidden}")
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.language:
            self._check_language()
            return
        if self.path is not None:
            raise ValueError(f"path: only for model 'hf_causal_lm', not {self.name!r}")
        if self.pretrained:
            if self.hidden != DEFAULT_HIDDEN:  # (a dumped config carries the default)
                raise ValueError(f"model {self.name!r} takes no `hidden` (its body is given)")
            if self.name == "efficientnet_lite0" and self.arch is not None:
                raise ValueError("model 'efficientnet_lite0' takes no `arch`")
            if self.name != "efficientnet_lite0" and not self.arch:
                raise ValueError(f"model {self.name!r} needs `arch`, e.g. arch: resnet18")
            return
        backbone_only = ("arch", "weights", "input_size", "mean", "std")
        given = [f for f in backbone_only if getattr(self, f) is not None]
        if given or self.freeze != "none":
            what = ", ".join(given + (["freeze"] if self.freeze != "none" else []))
            raise ValueError(
                f"{what}: only for the backbone models ({', '.join(PRETRAINED_NAMES)}), "
                f"not {self.name!r}"
            )

    def _check_language(self) -> None:
        """A language model takes ``path`` (``hf_causal_lm``) and ``freeze`` patterns only."""
        image = ("arch", "weights", "input_size", "mean", "std")
        given = [f for f in image if getattr(self, f) is not None]
        if self.hidden != DEFAULT_HIDDEN:
            given.insert(0, "hidden")
        if self.multi_head:
            given.append("multi_head")
        if given:
            raise ValueError(f"{', '.join(given)}: not for the language model {self.name!r}")
        if self.freeze == "backbone":
            raise ValueError(
                f"freeze: 'backbone' would freeze all of {self.name!r} but its LM head; "
                "give name patterns (e.g. ['body.layers.0.*'])"
            )
        if self.name == "hf_causal_lm" and self.path is None:
            raise ValueError("model 'hf_causal_lm' needs `path`, a local model directory")
        if self.name != "hf_causal_lm" and self.path is not None:
            raise ValueError(f"path: model {self.name!r} is packaged; it takes no path")

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave out the fields that do not apply, so params and dumps name only real settings.

        A built-in's dump has no backbone fields (``arch``... ``freeze: none``) and a
        backbone's has no ``hidden``: runs logged before the backbone fields existed
        keep the same params, and ``lifelong compare`` groups them as before.
        """
        data = handler(self)
        if self.language:  # name, path (hf_causal_lm) and freeze are its only settings
            data = {k: v for k, v in data.items() if k in ("name", "path", "freeze")}
            if data.get("path") is None:
                data.pop("path", None)
            return data
        data.pop("path", None)
        if self.pretrained:
            data.pop("hidden", None)
            return data
        for key in ("arch", "weights", "input_size", "mean", "std"):
            if data.get(key) is None:
                data.pop(key, None)
        if data.get("freeze") == "none":
            data.pop("freeze")
        return data

    @property
    def pretrained(self) -> bool:
        """Whether the body is a backbone source (``timm``, ``torchvision``, ...)."""
        return self.name in PRETRAINED_NAMES

    @property
    def language(self) -> bool:
        """Whether the model is a pre-trained causal language model (``hf_causal_lm``...)."""
        return self.name in LANGUAGE_NAMES

    @property
    def fixed_backbone(self) -> bool:
        """The body is frozen and the same for every seed: its features can be cached."""
        if not self.pretrained or self.freeze != "backbone":
            return False
        return self.weights is not None or self.name == "efficientnet_lite0"


class Head(nn.Module):
    """A linear classifier over all classes, optionally masked per task."""

    def __init__(self, in_features: int, n_classes: int, task_classes: Sequence[Sequence[int]]):
        super().__init__()
        self.linear = nn.Linear(in_features, n_classes)
        mask = torch.zeros(max(len(task_classes), 1), n_classes, dtype=torch.bool)
        for t, classes in enumerate(task_classes):
            mask[t, list(classes)] = True
        self.multi_head = len(task_classes) > 0
        self.register_buffer("task_mask", mask, persistent=False)

    def forward(self, h: Tensor, task_id: int = 0) -> Tensor:
        """Return logits; in multi-head mode, classes outside ``task_id`` get ``-inf``."""
        logits = self.linear(h)
        if self.multi_head:
            logits = logits.masked_fill(~self.task_mask[task_id], float("-inf"))
        return logits


class ContinualModel(nn.Module):
    """A feature extractor followed by a (possibly multi-head) classifier."""

    def __init__(
        self,
        body: nn.Module,
        out_features: int,
        n_classes: int,
        task_classes: Sequence[Sequence[int]],
    ):
        super().__init__()
        self.body = body
        self.head = Head(out_features, n_classes, task_classes)

    def train(self, mode: bool = True) -> ContinualModel:
        """Set training mode, except where frozen parts must stay in eval mode.

        A body frozen whole (``freeze: backbone``) stays in eval mode: BatchNorm uses
        and keeps its running statistics, dropout is off, so the body is a fixed
        function. Elsewhere a BatchNorm layer whose parameters are all frozen stays in
        eval mode too; every other layer follows ``mode``.
        """
        super().train(mode)
        if mode:
            for module in frozen_modules(self):
                module.eval()
        return self

    def features(self, x: Tensor) -> Tensor:
        """Return the penultimate features ``h(x)``."""
        return self.body(x)

    def classify(self, h: Tensor, task_id: int = 0) -> Tensor:
        """Return logits for features ``h`` under task ``task_id``."""
        return self.head(h, task_id)

    def forward(self, x: Tensor, task_id: int = 0) -> Tensor:
        """Return logits for inputs ``x`` under task ``task_id``."""
        return self.head(self.body(x), task_id)


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """The modules that run in eval mode even while ``model`` trains (see ``train``).

    A whole body with no trainable parameter, else each BatchNorm layer (any
    ``_NormBase``) whose parameters are all frozen.
    """
    body = getattr(model, "body", None)
    params = list(body.parameters()) if body is not None else []
    if params and not any(p.requires_grad for p in params):
        return [body]
    out = []
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if isinstance(m, nn.modules.batchnorm._NormBase) and own:
            if not any(p.requires_grad for p in own):
                out.append(m)
    return out


def mlp(input_shape: Sequence[int], hidden: Sequence[int]) -> tuple[nn.Module, int]:
    """Build an MLP body (flatten, then Linear-ReLU per hidden width)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers), width


def cnn(input_shape: Sequence[int], hidden: Sequence[int]) -> tuple[nn.Module, int]:
    """Build a small CNN body: Conv-ReLU-(pool) blocks, global average pooling.

    Inputs of shape (C, H, W) use 2-D convolutions, (C, L) 1-D ones.
    """
    if len(input_shape) == 3:
        conv, pool, gap = nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d
    elif len(input_shape) == 2:
        conv, pool, gap = nn.Conv1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d
    else:
        raise ValueError(
            f"model 'cnn' needs inputs shaped (C, L) or (C, H, W), got {tuple(input_shape)}"
        )
    layers: list[nn.Module] = []
    channels = input_shape[0]
    size = min(input_shape[1:])
    for h in hidden:
        layers += [conv(channels, h, kernel_size=3, padding=1), nn.ReLU()]
        if size >= 4:
            layers.append(pool(2))
            size //= 2
        channels = h
    layers += [gap(1), nn.Flatten()]
    return nn.Sequential(*layers), channels


MODELS: Registry = Registry("model")
MODELS.register("mlp", mlp)
MODELS.register("cnn", cnn)
MODELS.register("transformer", transformer)
for _name in LANGUAGE_NAMES:  # built in build_model (they bring their own head)
    MODELS.register(_name, build_language_model)


def build_model(
    config: ModelConfig,
    input_shape: Sequence[int],
    n_classes: int,
    task_classes: Sequence[Sequence[int]] = (),
    *,
    encoded: bool = False,
) -> ContinualModel:
    """Build model ``config.name`` for the given input shape and label space.

    ``task_classes`` (one class tuple per task) turns on the multi-head mask. A
    backbone source gets a fresh head sized for the stream and ``config.freeze``
    applied. ``encoded``: the inputs are already the frozen backbone's features
    (:mod:`~lifelong.platform.models.feature_cache`), so the body is the identity
    and only the head is built; its parameter names are those of the full model.
    """
    if encoded:
        (width,) = tuple(input_shape)
        return ContinualModel(nn.Identity(), width, n_classes, task_classes)
    if config.language:
        from .freeze import apply_freeze

        language_model = build_language_model(config.name, config.path)
        apply_freeze(language_model, config.freeze)
        return language_model  # type: ignore[return-value]  (features/classify, as ContinualModel)
    builder = MODELS.get(config.name)
    if config.pretrained:
        # Building the backbone leaves the global RNG where it was, so the fresh head
        # starts from the same weights as over cached features (encoded=True).
        with torch.random.fork_rng(devices=[]):
            body, width = builder(config, tuple(input_shape))
    else:
        body, width = builder(tuple(input_shape), config.hidden)
    model = ContinualModel(body, width, n_classes, task_classes)
    if config.pretrained:
        from .freeze import apply_freeze

        apply_freeze(model, config.freeze)
    return model
