"""Train-time augmentation named in the experiment, built from ``torchvision.transforms.v2``.

.. code-block:: yaml

    scenario:
      source: fashion_mnist
      augment: [horizontal_flip, {random_crop: {padding: 4}}]

Each step of ``scenario.augment`` is a name, or a one-key mapping from a name to
its parameters. :data:`AUGMENTATIONS` maps every name to its ``transforms.v2``
class and a pydantic config of the parameters it accepts (typed, with bounds);
an unknown name lists the known ones, an unknown parameter lists the step's.
The steps are kept as plain data (``{name: {parameter: value}}``), which is
what a resolved experiment and MLflow record.

The built stream carries the validated steps in ``Stream.info["augment"]``
(plain data: it travels to Ray workers with the stream, and no
:class:`~lifelong.scenarios.stream.Experience` changes). The learner builds the
transform there with :func:`build_augment` and streams every experience's
training data through ``lifelong.platform.loader``, whose workers apply it to
each sample separately. Test data are never augmented.

The inputs must be images shaped ``(C, H, W)`` with values in ``[0, 1]`` (what
the image sources produce); ``color_jitter`` clamps to that range.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

Step = dict[str, dict[str, Any]]
"""One validated step: ``{name: {parameter: value}}`` (parameters as given)."""

_Pair = tuple[float, float]


class _Params(BaseModel):
    """Base of every augmentation's parameters: typed, bounded, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(self, shape: tuple[int, ...]) -> Any:
        """The ``transforms.v2`` object for images shaped ``shape``."""
        raise NotImplementedError


def _image_size(size: int | tuple[int, int] | None, shape: tuple[int, ...]) -> list[int]:
    """``size`` as ``[h, w]``; ``None`` is the image's own ``(H, W)``."""
    if size is None:
        return [int(shape[-2]), int(shape[-1])]
    return [size, size] if isinstance(size, int) else list(size)


class RandomCrop(_Params):
    """``random_crop``: pad, then crop a random window (Krizhevsky et al. 2012)."""

    padding: int = Field(0, ge=0, le=4096, description="pixels added on every side first")
    size: int | tuple[int, int] | None = Field(
        None, description="crop height and width (default: the image's own size)"
    )
    padding_mode: Literal["constant", "edge", "reflect", "symmetric"] = "constant"
    fill: float = Field(0.0, allow_inf_nan=False, description="value of constant padding")

    def build(self, shape: tuple[int, ...]) -> Any:
        """The ``transforms.v2`` object for images shaped ``shape``."""
        from torchvision.transforms import v2

        size = _image_size(self.size, shape)
        return v2.RandomCrop(
            size, padding=self.padding or None, fill=self.fill, padding_mode=self.padding_mode
        )


class HorizontalFlip(_Params):
    """``horizontal_flip``: mirror left-right with probability ``p``."""

    p: float = Field(0.5, ge=0, le=1, description="probability of flipping")

    def build(self, shape: tuple[int, ...]) -> Any:
        """The ``transforms.v2`` object."""
        from torchvision.transforms import v2

        return v2.RandomHorizontalFlip(self.p)


class VerticalFlip(_Params):
    """``vertical_flip``: mirror top-bottom with probability ``p``."""

    p: float = Field(0.5, ge=0, le=1, description="probability of flipping")

    def build(self, shape: tuple[int, ...]) -> Any:
        """The ``transforms.v2`` object."""
        from torchvision.transforms import v2

        return v2.RandomVerticalFlip(self.p)


class RandomRotation(_Params):
    """``random_rotation``: rotate by an angle drawn uniformly from ``[-degrees, degrees]``."""

    degrees: float = Field(gt=0, le=180, description="largest rotation, in degrees")
    fill: float = Field(0.0, allow_inf_nan=False, description="value outside the rotated image")

    def build(self, shape: tuple[int, ...]) -> Any:
        """The ``transforms.v2`` object (bilinear)."""
        from torchvision.transforms import v2

        return v2.RandomRotation(
            self.degrees, interpolation=v2.InterpolationMode.BILINEAR, fill=self.fill
        )


class RandomAffine(_Params):
    """``random_affine``: a random rotation, translation, scaling and shear."""

    degrees: float = Field(0.0, ge=0, le=180, description="largest rotation, in degrees")
    translate: tuple[float, float] | None = Field(
        None, description="largest shift as fractions of (width, height), each in [0, 1]"
    )
    scale: _Pair | None = Field(None, description="range of the scale factor, e.g. [0.9, 1.1]")
    shear: float | None = Field(None, ge=0, le=90, description="largest shear, in degrees")

    @model_validator(mode="after")
    def _ranges(self) -> RandomAffine:
        if self.translate is not None and not all(0 <= t <= 1 for t in self.translate):
            raise ValueError(f"translate must be fractions in [0, 1], got {list(self.translate)}")
        if self.scale is not None and not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be [low, high] with 0 < low <= high, got {self.scale}")
        return self

    def build(self, shape: tuple[int, ...]) -> Any:
        """The ``transforms.v2`` object (bilinear)."""
        from torchvision.transforms import v2

        return v2.RandomAffine(
            self.degrees,
            translate=self.translate,
            scale=self.scale,
            shear=self.shear,
            interpolation=v2.InterpolationMode.BILINEAR,
        )


class ColorJitter(_Params):
    """``color_jitter``: random brightness, contrast, saturation and hue factors."""

    brightness: float = Field(0.0, ge=0, le=10, description="factor drawn from [1-b, 1+b]")
    contrast: float = Field(0.0, ge=0, le=10, description="factor drawn from [1-c, 1+c]")
    saturation: float = Field(0.0, ge=0, le=10, description="factor drawn from [1-s, 1+s]")
    hue: float = Field(0.0, ge=0, le=0.5, description="shift drawn from [-h, h]")

    def build(self, shape: tuple[int, ...]) -> Any:
        """The ``transforms.v2`` object (saturation and hue leave 1-channel images alone)."""
        from torchvision.transforms import v2

        return v2.ColorJitter(
            brightness=self.brightness or None,
            contrast=self.contrast or None,
            saturation=self.saturation or None,
            hue=self.hue or None,
        )


def _check_scale_and_ratio(scale: tuple[float, float], ratio: tuple[float, float]) -> None:
    """The area-fraction and aspect-ratio ranges shared by resized crops and erasing."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must be [low, high] in (0, 1], got {list(scale)}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must be [low, high] with 0 < low <= high, got {ratio}")


class RandomResizedCrop(_Params):
    """``random_resized_crop``: crop a random area and aspect ratio, resize to ``size``."""

    size: int | tuple[int, int] | None = Field(
        None, description="output height and width (default: the image's own size)"
    )
    scale: _Pair = Field((0.08, 1.0), description="range of the cropped area's fraction")
    ratio: _Pair = Field((3 / 4, 4 / 3), description="range of the crop's aspect ratio")

    @model_validator(mode="after")
    def _ranges(self) -> RandomResizedCrop:
        _check_scale_and_ratio(self.scale, self.ratio)
        return self

    def build(self, shape: tuple[int, ...]) -> Any:
        """The ``transforms.v2`` object (bilinear, antialiased)."""
        from torchvision.transforms import v2

        return v2.RandomResizedCrop(
            _image_size(self.size, shape), scale=self.scale, ratio=self.ratio, antialias=True
        )


class RandomErasing(_Params):
    """``random_erasing``: blank a random rectangle (Zhong et al. 2020, arXiv:1708.04896)."""

    p: float = Field(0.5, ge=0, le=1, description="probability of erasing")
    scale: _Pair = Field((0.02, 0.33), description="range of the erased area's fraction")
    ratio: _Pair = Field((0.3, 3.3), description="range of the rectangle's aspect ratio")
    value: float = Field(0.0, allow_inf_nan=False, description="value written in the rectangle")

    @model_validator(mode="after")
    def _ranges(self) -> RandomErasing:
        _check_scale_and_ratio(self.scale, self.ratio)
        return self

    def build(self, shape: tuple[int, ...]) -> Any:
        """The ``transforms.v2`` object."""
        from torchvision.transforms import v2

        return v2.RandomErasing(self.p, scale=self.scale, ratio=self.ratio, value=self.value)


class GaussianBlur(_Params):
    """``gaussian_blur``: blur with a Gaussian whose sigma is drawn from ``sigma``."""

    kernel_size: int = Field(3, ge=1, le=255, description="odd kernel width and height")
    sigma: _Pair = Field((0.1, 2.0), description="range the standard deviation is drawn from")

    @model_validator(mode="after")
    def _ranges(self) -> GaussianBlur:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if not 0 < self.sigma[0] <= self.sigma[1]:
            raise ValueError(f"sigma must be [low, high] with 0 < low <= high, got {self.sigma}")
        return self

    def build(self, shape: tuple[int, ...]) -> Any:
        """The ``transforms.v2`` object."""
        from torchvision.transforms import v2

        return v2.GaussianBlur(self.kernel_size, sigma=self.sigma)


AUGMENTATIONS: dict[str, type[_Params]] = {
    "random_crop": RandomCrop,
    "horizontal_flip": HorizontalFlip,
    "vertical_flip": VerticalFlip,
    "random_rotation": RandomRotation,
    "random_affine": RandomAffine,
    "color_jitter": ColorJitter,
    "random_resized_crop": RandomResizedCrop,
    "random_erasing": RandomErasing,
    "gaussian_blur": GaussianBlur,
}
"""Augmentation name -> its parameters (each builds one ``transforms.v2`` object)."""


def parse_step(value: Any) -> Step:
    """Validate one step of ``scenario.augment``; return it as ``{name: {parameter: value}}``.

    ``value`` is a name (``horizontal_flip``) or a one-key mapping from a name to
    its parameters (``{random_crop: {padding: 4}}``; ``None`` for none).

    Raises:
        ValueError: an unknown name or parameter, or a parameter out of range.
    """
    if isinstance(value, str):
        name, params = value, None
    elif isinstance(value, Mapping) and len(value) == 1:
        ((name, params),) = value.items()
    else:
        raise ValueError(
            "a step is a name or a one-key mapping {name: {parameter: value}}, got "
            f"{str(value)[:60]!r}"
        )
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"unknown augmentation {str(name)[:60]!r}; known: {', '.join(AUGMENTATIONS)}"
        )
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ValueError(f"{name}: parameters must be a mapping, got {str(params)[:60]!r}")
    config = AUGMENTATIONS[name]
    try:
        config.model_validate(params)
    except ValidationError as e:
        raise ValueError(_explain(name, config, e)) from None
    return {name: dict(params)}


def _explain(name: str, config: type[_Params], error: ValidationError) -> str:
    """The first problem of a step's parameters, naming the parameter."""
    err = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return (
            f"{name}: unknown parameter {where!r}; its parameters: {', '.join(config.model_fields)}"
        )
    message = err["msg"].removeprefix("Value error, ")
    given = where and err["type"] != "missing" and "input" in err  # a model check says it
    shown = f" (got {repr(err['input'])[:60]})" if given else ""
    return f"{name}{'.' + where if where else ''}: {message}{shown}"


@dataclass(frozen=True)
class Augment:
    """The augmentation of one stream: a ``transforms.v2.Compose`` applied to each sample.

    Attributes:
        steps: the validated steps it was built from (plain data).
        transform: the composed ``transforms.v2`` object; it takes one ``(C, H, W)``
            tensor and draws its randomness from torch's global generator.
    """

    steps: tuple[Step, ...]
    transform: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, sample: torch.Tensor) -> torch.Tensor:
        """``sample`` augmented (a new tensor; the input is not modified)."""
        return self.transform(sample)


def build_augment(steps: Sequence[Any] | None, input_shape: tuple[int, ...]) -> Augment | None:
    """The augmentation ``steps`` describe for samples shaped ``input_shape``; None if empty.

    Raises:
        ValueError: a step is invalid, the inputs are not images shaped
            ``(C, H, W)``, or a step cannot run on such an image (a crop larger
            than the padded image); the message names the step.
    """
    if not steps:
        return None
    if len(input_shape) != 3:
        raise ValueError(f"needs image inputs shaped (C, H, W), got inputs shaped {input_shape}")
    from torchvision.transforms import v2

    parsed = [parse_step(s) for s in steps]
    built = [
        AUGMENTATIONS[name].model_validate(params).build(input_shape)
        for step in parsed
        for name, params in step.items()
    ]
    probe = torch.zeros(input_shape)
    with torch.random.fork_rng(devices=[]):  # the probe must not move the caller's RNG
        for i, (step, transform) in enumerate(zip(parsed, built, strict=True)):
            name = next(iter(step))
            try:
                probe = transform(probe)
            except Exception as e:  # e.g. a crop larger than the padded image
                raise ValueError(
                    f"step {i} ({name}) fails on an image shaped {input_shape}: {e}"
                ) from None
            if tuple(probe.shape) != tuple(input_shape):
                raise ValueError(
                    f"step {i} ({name}) turns images shaped {input_shape} into "
                    f"{tuple(probe.shape)}; the model needs the stream's input shape (set size)"
                )
    return Augment(tuple(parsed), v2.Compose(built))


AugmentStep = Annotated[Step, BeforeValidator(parse_step)]
"""The type of one ``scenario.augment`` entry: validated by :func:`parse_step`."""
