"""Models: built-in bodies, pre-trained backbones by name, a fresh head, frozen features.

- :mod:`.core`: :class:`ModelConfig`, the head, :class:`ContinualModel`, the built-ins
  and :func:`build_model`.
- :mod:`.pretrained`: ``timm``, ``torchvision`` and ``efficientnet_lite0`` backbones
  from local weights; :mod:`.preprocess`: the input pipeline they expect.
- :mod:`.freeze`: ``model.freeze``; :mod:`.feature_cache`: a frozen backbone's
  features, computed once per stream.
"""

from . import pretrained as _pretrained  # noqa: F401  (registers the backbone sources)
from .core import (
    MODELS,
    PRETRAINED_NAMES,
    ContinualModel,
    Head,
    ModelConfig,
    build_model,
    cnn,
    frozen_modules,
    mlp,
)

__all__ = [
    "MODELS",
    "PRETRAINED_NAMES",
    "ContinualModel",
    "Head",
    "ModelConfig",
    "build_model",
    "cnn",
    "frozen_modules",
    "mlp",
]
