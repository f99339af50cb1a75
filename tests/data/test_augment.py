"""Batched augmentation against torchvision's per-image pipeline, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from fggp_hub.constants import CIFAR10_MEAN, CIFAR10_STD
from fggp_hub.data import BatchAugment, BatchNormalize, crop_flip, normalize, sample_crop_flip


def _batch(n: int = 16, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def _torchvision_reference(img: torch.Tensor, top: int, left: int, flip: bool, padding: int = 4,
                           crop: tuple[int, int] | None = None) -> torch.Tensor:
    """RandomCrop(padding=4) -> RandomHorizontalFlip -> ToTensor -> Normalize, one PIL image, given parameters."""
    ch, cw = crop or img.shape[1:]
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    pil = TF.pad(pil, padding, fill=0)  # black, before normalisation
    pil = TF.crop(pil, top, left, ch, cw)
    if flip:
        pil = TF.hflip(pil)
    return TF.normalize(TF.to_tensor(pil), CIFAR10_MEAN, CIFAR10_STD)


def test_output_shape_dtype_device():
    out = BatchAugment()(_batch(8), torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.is_contiguous()
    cl = BatchAugment(channels_last=True)(_batch(8), torch.Generator().manual_seed(0))
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl, out)  # same values, other layout


def test_matches_torchvision_per_image_bitwise():
    x = _batch(64)
    offsets, flips = sample_crop_flip(64, 32, torch.Generator().manual_seed(3))
    assert flips.any() and (~flips).any()
    assert offsets.min() == 0 and offsets.max() == 8  # the whole 9x9 range is reachable
    ours = normalize(crop_flip(x, offsets, flips))
    for i in range(64):
        ref = _torchvision_reference(x[i], int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]))
        assert torch.equal(ours[i], ref), i


def test_module_uses_the_sampled_parameters():
    """BatchAugment(g) == crop_flip + normalize with sample_crop_flip(g) from the same seed."""
    x = _batch(32)
    out = BatchAugment()(x, torch.Generator().manual_seed(11))
    offsets, flips = sample_crop_flip(32, 32, torch.Generator().manual_seed(11))
    for i in range(32):
        ref = _torchvision_reference(x[i], int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]))
        assert torch.equal(out[i], ref)


def test_crop_and_flip_geometry():
    x = _batch(2)
    centre = torch.tensor([[4, 4], [4, 4]])
    assert torch.equal(crop_flip(x, centre, torch.tensor([False, False])), x)  # no shift, no flip
    assert torch.equal(crop_flip(x, centre, torch.tensor([True, False]))[0], x[0].flip(-1))
    corner = crop_flip(x, torch.tensor([[0, 0], [8, 8]]), torch.tensor([False, False]))
    assert (corner[0, :, :4, :] == 0).all() and (corner[0, :, :, :4] == 0).all()  # padded rows/cols
    assert torch.equal(corner[0, :, 4:, 4:], x[0, :, :28, :28])
    assert torch.equal(corner[1, :, :28, :28], x[1, :, 4:, 4:]) and (corner[1, :, 28:, :] == 0).all()
    # Flip after crop: a crop from the left edge, mirrored, has its padding on the right.
    mirrored = crop_flip(x, torch.tensor([[4, 0], [4, 0]]), torch.tensor([True, True]))
    assert (mirrored[:, :, :, 28:] == 0).all() and torch.equal(mirrored[0, :, :, :28], x[0, :, :, :28].flip(-1))


def test_normalisation_values():
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    x[0, :, 0, 0] = 255
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    out = normalize(x)
    assert torch.allclose(out[0, :, 0, 0], (1 - mean) / std)
    assert torch.allclose(out[0, :, 5, 5], -mean / std)
    # A padded pixel is a black pixel normalised: (0 - mean) / std, not 0.
    padded = normalize(crop_flip(x, torch.tensor([[0, 0]]), torch.tensor([False])))
    assert torch.allclose(padded[0, :, 0, 0], -mean / std)
    assert torch.allclose(padded[0, :, 4, 4], (1 - mean) / std)
    assert torch.equal(BatchNormalize()(x), out)


def test_same_seed_same_output_different_seed_differs():
    x = _batch(32)
    aug = BatchAugment()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_flip_probability_and_offsets_are_uniform_enough():
    offsets, flips = sample_crop_flip(20_000, 32, torch.Generator().manual_seed(0))
    assert abs(flips.float().mean().item() - 0.5) < 0.02
    counts = torch.bincount(offsets[:, 0], minlength=9).float() / 20_000
    assert counts.shape == (9,) and (counts - 1 / 9).abs().max() < 0.02
    assert not sample_crop_flip(100, 32, torch.Generator().manual_seed(0), flip_p=0.0)[1].any()


def test_other_sizes_and_options():
    x = _batch(4, 40, 48)
    out = BatchAugment(padding=2, crop_size=(36, 44))(x, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 36, 44)
    offsets, flips = sample_crop_flip(4, (40, 48), torch.Generator().manual_seed(0), padding=2, crop_size=(36, 44))
    ref = _torchvision_reference(x[1], int(offsets[1, 0]), int(offsets[1, 1]), bool(flips[1]), padding=2,
                                 crop=(36, 44))
    assert torch.equal(out[1], ref)
    with pytest.raises(TypeError, match="uint8"):
        BatchAugment()(x.float())
    with pytest.raises(ValueError, match="larger"):
        sample_crop_flip(1, 32, padding=0, crop_size=40)


def test_generator_none_uses_global_rng():
    torch.manual_seed(5)
    a = BatchAugment()(_batch(8))
    torch.manual_seed(5)
    b = BatchAugment()(_batch(8))
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu():
    x = _batch(64)
    cpu = BatchAugment()(x, torch.Generator().manual_seed(0))
    gpu = BatchAugment().cuda()(x.cuda(), torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-6)
    assert np.isfinite(gpu.cpu().numpy()).all()
