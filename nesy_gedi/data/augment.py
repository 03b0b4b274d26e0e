"""Batched data augmentations with per-sample random parameters.

Every augmentation takes a batch `x` and a `torch.Generator` (or None for torch's global
RNG) and returns a new tensor; the input is never modified. All random parameters of a
batch are drawn in a few tensor calls, so there are no per-sample Python loops and the
same code runs on CPU and GPU. Random numbers are drawn on the generator's device and
moved to `x`'s device, so for speed pass a generator on the same device as `x`
(`torch.Generator(device=x.device)`). Same generator state -> same output.

Images follow the project's convention: float in [-1, 1] (see `nesy_gedi.data.images.to_float`),
`[N, C, H, W]`. Image augmentations clamp their output back to [-1, 1].
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "AUGMENT_NAMES",
    "build_augment",
    "digit_augment",
    "natural_image_augment",
    "point_augment",
]

Augment = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


# --------------------------------------------------------------------------- random helpers


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) numbers of `shape` on `like`'s device, float32."""
    if generator is None:
        return torch.rand(shape, device=like.device, dtype=torch.float32)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32).to(like.device)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=torch.float32)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(like.device)


def _uniform(n: int, low: float, high: float, generator, like: torch.Tensor) -> torch.Tensor:
    return low + (high - low) * _rand((n,), generator, like)


def _check_images(x: torch.Tensor, fn: str) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"{fn} expects float images [N, C, H, W] in [-1, 1], got {tuple(x.shape)} {x.dtype}")


def _warp(x: torch.Tensor, theta: torch.Tensor, fill: float | None) -> torch.Tensor:
    """Resample `x` with per-sample affine maps `theta` [N, 2, 3] (output -> input coords,
    normalised to [-1, 1]). Outside the image: `fill`, or the border pixel if None."""
    theta = theta.to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if fill is None:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # grid_sample pads with zeros; shift so that zero means `fill` (e.g. -1 = black background
    # in [-1, 1], which plain zero-padding would turn into mid-grey).
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


# --------------------------------------------------------------------------- augmentations


def digit_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    max_rotation: float = 15.0,
    max_translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
    noise_std: float = 0.05,
    fill: float = -1.0,
    stroke: float = 0.0,
) -> torch.Tensor:
    """Random stroke width, affine warp and Gaussian noise for digit images (MNIST-like).
    No flips: a mirrored digit is a different (or no) digit.

    Per sample: with `stroke` > 0, the strokes are thickened or thinned (a 3x3 grey-level
    dilation or erosion, blended in with a weight uniform in [0, stroke]); then rotation
    uniform in [-max_rotation, max_rotation] degrees, translation uniform in
    [-max_translate, max_translate] of the image size along each axis, zoom uniform in
    `scale` (>1 enlarges the digit), then N(0, noise_std^2) noise; result clamped to
    [-1, 1]. Pixels moved in from outside get `fill` (-1: black background). With all
    magnitudes 0 (and scale (1, 1)) the output equals the input.

    Why stroke width: a clustering objective (invariance + uniform prior) is satisfied by
    ANY balanced partition that the augmentations leave unchanged. An affine warp keeps a
    digit's ink amount and stroke width, so "thick / thin writing" is as good a cluster as
    "3 / 8" unless the views also differ in it.
    """
    _check_images(x, "digit_augment")
    n = x.shape[0]
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi:
        raise ValueError(f"digit_augment: scale must satisfy 0 < low <= high, got {scale}")
    if not 0.0 <= stroke <= 1.0:
        raise ValueError(f"digit_augment: stroke must be in [0, 1], got {stroke}")
    if stroke > 0:
        # Grey-level morphology on bright strokes: dilation = 3x3 max, erosion = 3x3 min.
        dilated = F.max_pool2d(x, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
        weight = (_rand((n,), generator, x) * stroke).view(n, 1, 1, 1).to(x.dtype)
        thicker = (_rand((n,), generator, x) < 0.5).view(n, 1, 1, 1)
        x = x + weight * (torch.where(thicker, dilated, eroded) - x)
    angle = _uniform(n, -1.0, 1.0, generator, x) * math.radians(max_rotation)
    zoom = _uniform(n, lo, hi, generator, x)
    shift = (_rand((n, 2), generator, x) * 2.0 - 1.0) * (2.0 * max_translate)  # [-1,1] coords span 2
    out = x
    if max_rotation != 0 or max_translate != 0 or lo != 1.0 or hi != 1.0:
        # Output -> input map: rotate by the angle and divide by the zoom. (For non-square
        # images the rotation is in normalised coordinates, i.e. slightly anisotropic.)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
        )
        out = _warp(out, theta, fill)
    if noise_std != 0:
        out = out + noise_std * _randn(tuple(x.shape), generator, x).to(x.dtype)
    return out.clamp(-1.0, 1.0)


def natural_image_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    flip_prob: float = 0.5,
    brightness: float = 0.4,
    contrast: float = 0.4,
    noise_std: float = 0.0,
) -> torch.Tensor:
    """Random resized crop + horizontal flip + brightness/contrast jitter (CIFAR, SVHN).

    Per sample: a crop covering a fraction uniform in `crop_scale` of the image area with
    aspect ratio log-uniform in `crop_ratio`, placed uniformly inside the image and resized
    back to the full size (one affine resampling); a horizontal flip with probability
    `flip_prob`; brightness factor uniform in [1-brightness, 1+brightness] and contrast
    factor uniform in [1-contrast, 1+contrast] (applied in [0, 1] pixel space as in
    torchvision's ColorJitter); optional Gaussian noise. Output clamped to [-1, 1].

    Note: SVHN digits are not mirror-symmetric; pass flip_prob=0 if that matters.
    """
    _check_images(x, "natural_image_augment")
    n = x.shape[0]
    if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(f"natural_image_augment: crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    if not 0 < crop_ratio[0] <= crop_ratio[1]:
        raise ValueError(f"natural_image_augment: crop_ratio must satisfy 0 < low <= high, got {crop_ratio}")
    area = _uniform(n, float(crop_scale[0]), float(crop_scale[1]), generator, x)
    log_ratio = _uniform(n, math.log(crop_ratio[0]), math.log(crop_ratio[1]), generator, x)
    ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * ratio).clamp(max=1.0)  # fractions of the image size
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    centre = _rand((n, 2), generator, x) * 2.0 - 1.0
    cx, cy = centre[:, 0] * (1.0 - width), centre[:, 1] * (1.0 - height)  # crop stays inside
    flip = torch.where(_rand((n,), generator, x) < flip_prob, -1.0, 1.0)
    b = _uniform(n, max(0.0, 1.0 - brightness), 1.0 + brightness, generator, x).view(n, 1, 1, 1)
    c = _uniform(n, max(0.0, 1.0 - contrast), 1.0 + contrast, generator, x).view(n, 1, 1, 1)

    out = x
    if crop_scale != (1.0, 1.0) or crop_ratio[0] != crop_ratio[1] or flip_prob > 0:
        zero = torch.zeros_like(width)
        theta = torch.stack(
            [torch.stack([width * flip, zero, cx], dim=1), torch.stack([zero, height, cy], dim=1)], dim=1
        )
        out = _warp(out, theta, fill=None)  # crop lies inside the image; border only for rounding
    if brightness != 0 or contrast != 0:
        y = (out + 1.0) * 0.5  # [0, 1]
        if brightness != 0:
            y = (y * b.to(y.dtype)).clamp(0.0, 1.0)
        if contrast != 0:
            if y.shape[1] == 3:  # luminance, as torchvision's rgb_to_grayscale
                weights = torch.tensor([0.299, 0.587, 0.114], device=y.device, dtype=y.dtype).view(1, 3, 1, 1)
                grey = (y * weights).sum(dim=1, keepdim=True)
            else:
                grey = y.mean(dim=1, keepdim=True)
            mean = grey.mean(dim=(1, 2, 3), keepdim=True)
            y = ((y - mean) * c.to(y.dtype) + mean).clamp(0.0, 1.0)
        out = y * 2.0 - 1.0
    if noise_std != 0:
        out = out + noise_std * _randn(tuple(x.shape), generator, x).to(x.dtype)
    return out.clamp(-1.0, 1.0)


def point_augment(x: torch.Tensor, generator: torch.Generator | None = None, noise_std: float = 0.1) -> torch.Tensor:
    """Gaussian jitter N(0, noise_std^2) for low-dimensional toy data (e.g. 2-D moons); no clamping."""
    if not x.is_floating_point():
        raise ValueError(f"point_augment expects float points, got {x.dtype}")
    if noise_std == 0:
        return x.clone()
    return x + noise_std * _randn(tuple(x.shape), generator, x).to(x.dtype)


def _no_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Identity (returns the input unchanged)."""
    return x


_REGISTRY: dict[str, Callable[..., torch.Tensor]] = {
    "digits": digit_augment,
    "natural": natural_image_augment,
    "points": point_augment,
    "none": _no_augment,
}
AUGMENT_NAMES = tuple(_REGISTRY)


def build_augment(name: str, **kwargs) -> Augment:
    """The augmentation `name` ("digits", "natural", "points", "none") as a callable
    `(x, generator) -> x`; keyword arguments override its defaults, e.g.
    `build_augment("digits", noise_std=0.0)`."""
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown augmentation '{name}'; valid names: {', '.join(AUGMENT_NAMES)}")
    fn = _REGISTRY[key]
    if not kwargs:
        return fn
    params = list(inspect.signature(fn).parameters)[2:]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = ", ".join(params) if params else "none"
        raise ValueError(f"augmentation '{key}' has no option(s) {', '.join(unknown)}; valid options: {valid}")
    return functools.partial(fn, **kwargs)
