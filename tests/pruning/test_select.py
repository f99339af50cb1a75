import numpy as np
import pytest
import torch

from fggp_hub.pruning import METHODS, count_active, prune_step, smallest_k


def _hand_example():
    # Tensor A (2x3), entry 3 already pruned (weight 0); tensor B (4,) all active. N = 9.
    wa = torch.tensor([[0.1, -0.5, 0.3], [0.0, -0.2, 0.05]])
    ga = torch.tensor([[0.4, 0.01, -0.02], [0.03, 0.5, 0.6]])
    ma = torch.tensor([[True, True, True], [False, True, True]])
    wb = torch.tensor([0.7, -0.01, 0.25, 0.6])
    gb = torch.tensor([0.001, 0.9, -0.002, 0.003])
    mb = torch.ones(4, dtype=torch.bool)
    return [wa, wb], [ga, gb], [ma, mb]


def _pruned_positions(old, new):
    out = set()
    for t, (o, n) in enumerate(zip(old, new)):
        for i in torch.nonzero((o & ~n).reshape(-1)).reshape(-1).tolist():
            out.add((t, i))
    return out


@pytest.mark.parametrize(
    "method, kwargs, expected",
    [
        # K = int(0.5*9) = 4 smallest |g|: B0, B2, B3, A1 -> 2 smallest |w| of those: B2 (.25), A1 (.5)
        ("fggp", dict(rate=0.5), {(1, 2), (0, 1)}),
        # 2 smallest |w| among active: B1 (.01), A5 (.05)
        ("gmp", {}, {(1, 1), (0, 5)}),
        # K = 4 smallest |w|: B1, A5, A0, A4 -> 2 smallest |g| of those: A0 (.4), A4 (.5)
        ("magnitude_first_fixed", dict(rate=0.5), {(0, 0), (0, 4)}),
        # a=.5: m = int(.5*7) = 3, 5 smallest |w|: B1 A5 A0 A4 B2; keep 3 largest |g| -> prune B2, A0
        ("magnitude_first_annealed", dict(anneal=0.5), {(1, 2), (0, 0)}),
        # 5 smallest |g|: B0 B2 B3 A1 A2; keep 3 largest |w| -> prune B2 (.25), A2 (.3)
        ("gradient_first_annealed", dict(anneal=0.5), {(1, 2), (0, 2)}),
    ],
)
def test_hand_worked_example(method, kwargs, expected):
    w, g, m = _hand_example()
    new = prune_step(w, g, m, 2, method=method, **kwargs)
    assert _pruned_positions(m, new) == expected
    assert count_active(new) == 7
    # inputs untouched
    assert torch.equal(m[0], _hand_example()[2][0])


def _reference(weights, grads, masks, n_prune, method, rate=0.5, anneal=None):
    """Direct set definition of spec section 8 with ties broken by flat index."""
    w = np.concatenate([x.reshape(-1).abs().numpy() for x in weights]).astype(np.float64)
    g = np.concatenate([x.reshape(-1).abs().numpy() for x in grads]).astype(np.float64)
    act = np.flatnonzero(np.concatenate([x.reshape(-1).numpy() for x in masks]))
    n = len(act)

    def smallest(idx, key, k):
        order = np.lexsort((idx, key[idx]))  # by key, then by index
        return idx[order[:k]]

    if method == "gmp":
        pruned = smallest(act, w, n_prune)
    else:
        if method in ("fggp", "magnitude_first_fixed"):
            k = int(rate * n)
        else:
            k = n_prune + int(anneal * (n - n_prune))
        first, second = (g, w) if method in ("fggp", "gradient_first_annealed") else (w, g)
        cand = smallest(act, first, k)
        pruned = smallest(np.sort(cand), second, n_prune)
    return set(pruned.tolist())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_random_tensors_match_the_definition(method, seed, ties):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(16, 3, 3, 3), (32, 16, 3, 3), (10, 32)]
    if ties:  # coarse values: many equal keys, broken by position
        weights = [torch.randint(-4, 5, s, generator=gen).float() for s in shapes]
        grads = [torch.randint(-3, 4, s, generator=gen).float() for s in shapes]
    else:
        weights = [torch.randn(s, generator=gen) for s in shapes]
        grads = [torch.randn(s, generator=gen) for s in shapes]
    masks = [torch.rand(s, generator=gen) > 0.3 for s in shapes]
    weights = [w * m for w, m in zip(weights, masks)]
    n_active = count_active(masks)
    n_prune = n_active // 5
    kwargs = dict(rate=0.5, anneal=0.3)
    new = prune_step(weights, grads, masks, n_prune, method=method, **kwargs)
    assert count_active(new) == n_active - n_prune  # exactly N_p removed
    for old, n in zip(masks, new):
        assert not bool((n & ~old).any())  # never regains an entry
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    got = {int(offsets[t]) + i for t, i in _pruned_positions(masks, new)}
    assert got == _reference(weights, grads, masks, n_prune, method, **kwargs)


def test_fggp_differs_from_gmp_when_gradients_disagree():
    gen = torch.Generator().manual_seed(0)
    w = [torch.randn(200, 50, generator=gen)]
    # gradients largest exactly where magnitudes are smallest
    g = [1.0 / (w[0].abs() + 1e-3)]
    m = [torch.ones(200, 50, dtype=torch.bool)]
    a = prune_step(w, g, m, 1000, method="fggp")
    b = prune_step(w, g, m, 1000, method="gmp")
    overlap = len(_pruned_positions(m, a) & _pruned_positions(m, b))
    assert overlap == 0
    # with gradients that agree with magnitudes the two rules coincide
    c = prune_step(w, [w[0].abs()], m, 1000, method="fggp")
    assert torch.equal(c[0], b[0])


def test_infeasible_rate_raises_clearly():
    w, g, m = _hand_example()
    with pytest.raises(ValueError, match=r"r=0\.2.*K=int\(r\*N\)=1.*N_p=2.*N=9"):
        prune_step(w, g, m, 2, method="fggp", rate=0.2)
    with pytest.raises(ValueError, match="N_p=20"):
        prune_step(w, g, m, 20, method="gmp")
    with pytest.raises(ValueError, match="anneal"):
        prune_step(w, g, m, 2, method="magnitude_first_annealed")
    with pytest.raises(ValueError, match="unknown pruning method 'foo'"):
        prune_step(w, g, m, 2, method="foo")


def test_nothing_to_prune_and_non_finite_gradients():
    w, g, m = _hand_example()
    same = prune_step(w, g, m, 0)
    assert all(torch.equal(a, b) and a is not b for a, b in zip(same, m))
    g[1][0] = float("nan")
    with pytest.raises(ValueError, match="inf/NaN"):
        prune_step(w, g, m, 2)


def test_masks_keep_channels_last_layout():
    w = torch.randn(8, 4, 3, 3).to(memory_format=torch.channels_last)
    m = torch.ones_like(w, dtype=torch.bool)
    assert m.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn(8, 4, 3, 3)
    (new,) = prune_step([w], [g], [m], 100, method="fggp")
    assert new.is_contiguous(memory_format=torch.channels_last)
    (ref,) = prune_step([w.contiguous()], [g], [m.contiguous()], 100, method="fggp")
    assert torch.equal(new, ref)


def test_smallest_k_exact_with_ties():
    v = torch.tensor([3.0, 1.0, 1.0, 2.0, 1.0])
    assert smallest_k(v, 2).tolist() == [False, True, True, False, False]
    assert smallest_k(v, 0).sum() == 0 and smallest_k(v, 5).all()
