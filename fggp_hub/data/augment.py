"""Batched pad-crop-flip-normalise on whatever device the batch is on.

Reproduces torchvision's standard CIFAR pipeline

    RandomCrop(32, padding=4) -> RandomHorizontalFlip() -> ToTensor() -> Normalize(mean, std)

on a whole uint8 batch at once: zero padding happens on the uint8 pixels, before
normalisation, so a padded pixel becomes ``(0 - mean) / std`` exactly as there; the
arithmetic is ToTensor's ``x / 255`` then Normalize's ``(x - mean) / std`` in float32,
so outputs match the per-image torchvision reference bit for bit.

Vectorised: pad once, view every possible crop with ``unfold`` and gather each
image's crop with one advanced index; flip with ``torch.where``. Random parameters
are drawn from the caller's ``torch.Generator`` (on the generator's device, then
moved), so one seed gives one augmentation on CPU and GPU alike.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..constants import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["BatchAugment", "BatchNormalize", "crop_flip", "normalize", "sample_crop_flip"]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def sample_crop_flip(
    batch: int,
    image_size: int | Sequence[int],
    generator: torch.Generator | None = None,
    *,
    padding: int = 4,
    crop_size: int | Sequence[int] | None = None,
    flip_p: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Random crop corners and flip decisions for ``batch`` images.

    Returns ``offsets`` (batch, 2) int64, the (top, left) corner of each crop in the
    *padded* image (0 .. H + 2*padding - crop_h), and ``flips`` (batch,) bool, on the
    generator's device. Draw order: tops, lefts, flips.
    """
    h, w = _pair(image_size)
    ch, cw = _pair(crop_size) if crop_size is not None else (h, w)
    n_top, n_left = h + 2 * padding - ch + 1, w + 2 * padding - cw + 1
    if n_top < 1 or n_left < 1:
        raise ValueError(f"crop {ch}x{cw} larger than padded image {h + 2 * padding}x{w + 2 * padding}")
    device = generator.device if generator is not None else torch.device("cpu")
    tops = torch.randint(0, n_top, (batch,), generator=generator, device=device)
    lefts = torch.randint(0, n_left, (batch,), generator=generator, device=device)
    flips = torch.rand(batch, generator=generator, device=device) < flip_p
    return torch.stack([tops, lefts], dim=1), flips


def crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, *, padding: int = 4,
              crop_size: int | Sequence[int] | None = None) -> Tensor:
    """Zero-pad ``images`` (B, C, H, W) by ``padding``, crop at ``offsets``, mirror where ``flips``.

    Works on any dtype and device; returns (B, C, crop_h, crop_w) in the input dtype.
    """
    b, _, h, w = images.shape
    ch, cw = _pair(crop_size) if crop_size is not None else (h, w)
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    windows = padded.unfold(2, ch, 1).unfold(3, cw, 1)  # (B, C, nH, nW, ch, cw), a view
    offsets = offsets.to(images.device)
    rows = torch.arange(b, device=images.device)
    out = windows[rows, :, offsets[:, 0], offsets[:, 1]]  # (B, C, ch, cw), one gather
    return torch.where(flips.to(images.device).view(b, 1, 1, 1), out.flip(3), out)


def normalize(images: Tensor, mean: Sequence[float] | Tensor = CIFAR10_MEAN,
              std: Sequence[float] | Tensor = CIFAR10_STD, *, channels_last: bool = False) -> Tensor:
    """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std`` (torchvision's ToTensor + Normalize)."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    out = images.to(torch.float32).div_(255).sub_(mean_t).div_(std_t)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


class BatchNormalize(nn.Module):
    """Evaluation transform: uint8 batch -> normalised float batch (no randomness).

    Takes (and ignores) a generator so it is interchangeable with :class:`BatchAugment`.
    """

    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.channels_last = channels_last

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 batch, got {images.dtype}")
        return normalize(images, self.mean, self.std, channels_last=self.channels_last)

    def extra_repr(self) -> str:
        mean, std = (tuple(round(v, 4) for v in t.tolist()) for t in (self.mean, self.std))
        return f"mean={mean}, std={std}, channels_last={self.channels_last}"


class BatchAugment(BatchNormalize):
    """Training transform: random crop with zero padding, horizontal flip, normalise.

    ``augment(images_uint8, generator)`` -> float32 batch on the images' device.
    ``crop_size`` defaults to the input size (32 for CIFAR), as in the FGGP protocol.
    """

    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD, *,
                 padding: int = 4, crop_size: int | Sequence[int] | None = None, flip_p: float = 0.5,
                 channels_last: bool = False) -> None:
        super().__init__(mean, std, channels_last)
        self.padding = padding
        self.crop_size = crop_size
        self.flip_p = flip_p

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 batch, got {images.dtype}")
        offsets, flips = sample_crop_flip(images.shape[0], images.shape[2:], generator, padding=self.padding,
                                          crop_size=self.crop_size, flip_p=self.flip_p)
        crops = crop_flip(images, offsets, flips, padding=self.padding, crop_size=self.crop_size)
        return normalize(crops, self.mean, self.std, channels_last=self.channels_last)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, crop_size={self.crop_size}, flip_p={self.flip_p}, " + super().extra_repr()
