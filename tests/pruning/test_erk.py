import math

import pytest
import torch

from fggp_hub.pruning import erk_densities, erk_masks


def _weighted(shapes, densities):
    sizes = [math.prod(s) for s in shapes]
    return sum(d * n for d, n in zip(densities, sizes)) / sum(sizes)


def test_erk_densities_hit_the_total_and_follow_raw_scores():
    shapes = [(64, 3, 3, 3), (128, 64, 3, 3), (256, 128, 3, 3), (10, 256)]
    d = erk_densities(shapes, 0.5)
    assert _weighted(shapes, d) == pytest.approx(0.5, abs=1e-9)
    raw = [sum(s) / math.prod(s) for s in shapes]
    # the first conv and the classifier have the largest raw scores and saturate to dense;
    # the remaining layers share one eps: density = eps * raw
    assert d[0] == 1.0 and d[3] == 1.0
    sparse = [i for i, x in enumerate(d) if x < 1.0]
    assert sparse == [1, 2]
    eps = d[1] / raw[1]
    assert d[2] == pytest.approx(eps * raw[2])
    assert min(raw[i] for i in (0, 3)) > max(raw[i] for i in sparse)
    assert all(0 < x <= 1 for x in d)


def test_erk_hand_example():
    # Two layers, no saturation: eps = 0.5 * 200 / (raw1*100 + raw2*100)
    shapes = [(10, 10), (4, 25)]
    raw = [20 / 100, 29 / 100]
    eps = 0.5 * 200 / (raw[0] * 100 + raw[1] * 100)
    assert erk_densities(shapes, 0.5) == pytest.approx([eps * raw[0], eps * raw[1]])


def test_erk_masks_seeded_and_exact_counts():
    like = [torch.empty(128, 64, 3, 3), torch.empty(256, 128, 3, 3), torch.empty(10, 256)]
    a = erk_masks(like, 0.5, seed=3)
    b = erk_masks(like, 0.5, seed=3)
    c = erk_masks(like, 0.5, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    dens = erk_densities([t.shape for t in like], 0.5)
    for m, t, p in zip(a, like, dens):
        assert m.dtype == torch.bool and m.shape == t.shape
        assert int(m.sum()) == round(p * t.numel())
    total = sum(int(m.sum()) for m in a) / sum(t.numel() for t in like)
    assert total == pytest.approx(0.5, abs=1e-4)
