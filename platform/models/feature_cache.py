"""A frozen backbone's features, computed once per stream and shared by every trial.

With ``model.freeze: backbone`` and weights that do not depend on the seed (a
``weights`` file, or EfficientNet-Lite0's packaged ones), the body is a fixed
function in eval mode: every trial of a sweep would compute the same features
of the same images. :func:`encode_stream` computes them once, before the sweep
starts, and returns a stream whose inputs are those features; the sweep ships
it through Ray's object store like any stream, so each node holds it once.
A learner given such a stream (:func:`is_encoded`) builds only the head; the
parameters, strategies and results are those of the full model, since nothing
upstream of the head trains. The first experience's features are spot-checked
against the full model's (:func:`check_encoding`).

Not cached (the body runs in each trial): a searched ``model`` field, train-time
augmentation (``scenario.augment`` changes the images every epoch), and a lazy
stream (built experience by experience; a cache would hold all of it).
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch
from torch import Tensor, nn

from lifelong.scenarios.stream import Experience, LazyExperiences, Stream

from .core import ModelConfig, build_model

KEY = "features_of"
"""``stream.info`` key: the :func:`feature_key` of the backbone that encoded the stream."""


def feature_key(config: ModelConfig) -> str:
    """What identifies a backbone's features: its config, less the head's settings."""
    text = config.model_dump_json(exclude={"multi_head"})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_encoded(stream: Stream, config: ModelConfig) -> bool:
    """Whether ``stream``'s inputs are the features of ``config``'s frozen backbone."""
    return stream.info.get(KEY) == feature_key(config)


def cacheable(stream: Stream, config: ModelConfig) -> bool:
    """Whether ``config``'s backbone is fixed and ``stream`` is one that can be encoded."""
    return (
        config.fixed_backbone
        and not stream.info.get("augment")
        and not isinstance(stream.experiences, LazyExperiences)
        and KEY not in stream.info
    )


@torch.no_grad()
def _encode(body: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    starts = range(0, len(x), batch_size)
    return torch.cat([body(x[s : s + batch_size].to(device)).float().cpu() for s in starts])


def encode_stream(
    stream: Stream,
    config: ModelConfig,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> Stream:
    """``stream`` with each input replaced by the frozen backbone's features (on the host)."""
    device = torch.device(device)
    model = build_model(config, stream.input_shape, stream.n_classes)
    body = model.body.to(device).eval()
    experiences = []
    for e in stream.experiences:
        experiences.append(
            Experience(
                e.index,
                e.task_id,
                e.classes,
                _encode(body, e.x_train, batch_size, device),
                e.y_train,
                _encode(body, e.x_test, batch_size, device),
                e.y_test,
            )
        )
    width = model.head.linear.in_features
    info = {**stream.info, KEY: feature_key(config), "encoded_from": list(stream.input_shape)}
    return dataclasses.replace(
        stream, experiences=tuple(experiences), input_shape=(width,), info=info
    )
