"""The input pipeline a pre-trained backbone expects, run on the device per batch.

Image sources give float32 ``(C, H, W)`` tensors in ``[0, 1]`` at their own size
(28 x 28 for Fashion-MNIST). A backbone was trained on 3-channel images of one
size, normalised with its own per-channel mean and standard deviation. So that
the stream stays small on the host, the conversion is the first layer of the
body: grey images are repeated to 3 channels, resized bilinearly to
``size x size`` (antialiased when shrinking), then normalised,
``(x - mean) / std``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Preprocess(nn.Module):
    """Grey to RGB, resize to ``size``, normalise by ``mean`` and ``std`` (no parameters).

    Args:
        input_shape: one sample's shape, ``(1 | 3, H, W)``.
        size: the side length the backbone expects.
        mean, std: per-channel normalisation of the backbone's training data, on
            the ``[0, 1]`` scale.
    """

    def __init__(
        self, input_shape: Sequence[int], size: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        if len(input_shape) != 3 or input_shape[0] not in (1, 3):
            raise ValueError(
                "a pre-trained backbone needs images shaped (1 or 3, H, W), "
                f"got inputs shaped {tuple(input_shape)}"
            )
        self.channels = int(input_shape[0])
        self.size = (int(size), int(size))
        self.resize = tuple(input_shape[1:]) != self.size
        self.antialias = min(input_shape[1:]) > size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Return the normalised ``(N, 3, size, size)`` batch for ``x`` ``(N, C, H, W)``."""
        if self.channels == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resize:
            x = F.interpolate(
                x, size=self.size, mode="bilinear", align_corners=False, antialias=self.antialias
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"channels={self.channels}, size={self.size}"
