"""Erdos-Renyi-Kernel (ERK) random masks for the 50 %-sparse start (spec section 5)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["erk_densities", "erk_masks"]


def erk_densities(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    """Per-tensor densities whose parameter-weighted mean is ``density``.

    Raw score per tensor = sum(shape) / prod(shape) (kernel dims included);
    eps is scaled so the total density is ``density``; any tensor whose
    eps * raw exceeds 1 becomes dense and eps is recomputed (as in RigL/GraNet).
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"ERK density must be in (0, 1], got {density}")
    sizes = [math.prod(s) for s in shapes]
    raw = [sum(s) / n for s, n in zip(shapes, sizes)]
    dense: set[int] = set()
    while True:
        budget = 0.0  # parameters to keep in the non-dense tensors
        divisor = 0.0
        for i, n in enumerate(sizes):
            if i in dense:
                budget -= n * (1.0 - density)
            else:
                budget += n * density
                divisor += raw[i] * n
        if divisor == 0.0:  # everything dense
            return [1.0] * len(sizes)
        eps = budget / divisor
        too_dense = [i for i in range(len(sizes)) if i not in dense and eps * raw[i] > 1.0]
        if not too_dense:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(sizes))]
        top = max(raw[i] for i in too_dense)
        dense.update(i for i in too_dense if raw[i] == top)


def erk_masks(
    like: Sequence[Tensor], density: float, generator: torch.Generator | None = None, seed: int | None = None
) -> list[Tensor]:
    """Random boolean masks with ERK densities, one per tensor in ``like``.

    Deliberate deviation from the authors' Bernoulli draw (``rand < p``): each
    tensor keeps exactly ``round(p * n)`` entries chosen uniformly at random, so
    the start is exactly at the target density and equally seeded runs agree.
    Drawn on the CPU from ``generator`` (or ``seed``) for device independence.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    densities = erk_densities([tuple(t.shape) for t in like], density)
    masks = []
    for t, p in zip(like, densities):
        n = t.numel()
        keep = int(round(p * n))
        flat = torch.zeros(n, dtype=torch.bool)
        flat[torch.randperm(n, generator=generator)[:keep]] = True
        mask = torch.empty_like(t, dtype=torch.bool)
        mask.copy_(flat.view(t.shape))
        masks.append(mask)
    return masks
