"""Global selection rules: which active weights a pruning step removes (spec sections 3 and 8).

Everything here is a pure function of lists of tensors, one entry per prunable
tensor, so it can be tested by hand and reused outside the :class:`Pruner`.
Ranking is global over the concatenation of all tensors, on raw ``|g|`` and
``|theta|``, and only active (unmasked) entries are ever candidates.
"""
from __future__ import annotations

import math

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["METHODS", "prune_step", "count_active", "smallest_k"]

#: Selection rules, as named in the paper's 2x2 ablation plus GMP.
METHODS = (
    "fggp",  # gradient-first, fixed rate r (the paper's method)
    "gmp",  # magnitude only (Zhu & Gupta)
    "magnitude_first_annealed",  # GraNet's rule inside the FGGP framework
    "gradient_first_annealed",
    "magnitude_first_fixed",
)
_ALIASES = {"gradient_first_fixed": "fggp", "magnitude": "gmp"}


def count_active(masks: Sequence[Tensor]) -> int:
    """Number of active (True) entries over all masks."""
    return int(sum(int(m.count_nonzero()) for m in masks))


def _kth_smallest(values: Tensor, k: int) -> Tensor:
    """The k-th smallest value (1-based) of a 1-D tensor."""
    if values.device.type == "cpu":
        # numpy's introselect is ~2.5x faster than torch.kthvalue on CPU for 10^7 entries
        return torch.as_tensor(np.partition(values.numpy(), k - 1)[k - 1])
    return torch.kthvalue(values, k).values


def smallest_k(values: Tensor, k: int) -> Tensor:
    """Boolean mask of exactly ``k`` smallest entries of a 1-D tensor.

    Ties at the threshold are broken by position (lower index first), so the
    result is deterministic and independent of the selection algorithm.
    """
    n = values.numel()
    if k <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(values, dtype=torch.bool)
    threshold = _kth_smallest(values, k)
    selected = values < threshold
    missing = k - int(selected.count_nonzero())
    if missing > 0:
        ties = torch.nonzero(values == threshold).squeeze(1)[:missing]
        selected[ties] = True
    return selected


def _check_finite(scores: Tensor, active: Tensor, what: str) -> None:
    """Refuse inf/NaN at active entries (excluded entries may hold anything)."""
    nonfinite = torch.isfinite(scores).logical_not_()
    if bool(nonfinite.any()) and bool(nonfinite.logical_and_(active).any()):
        raise ValueError(f"{what} contain inf/NaN at active entries: skip pruning on overflowed steps")


def _flat_abs(tensors: Sequence[Tensor]) -> Tensor:
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    return flat.abs_()


def _resolve_method(method: str) -> str:
    method = _ALIASES.get(method, method)
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}: choose one of {', '.join(METHODS)}")
    return method


def _check_inputs(weights: Sequence[Tensor], grads: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
    if not (len(weights) == len(grads) == len(masks)) or not weights:
        raise ValueError(
            f"prune_step needs one weight, grad and mask per prunable tensor, "
            f"got {len(weights)} weights, {len(grads)} grads, {len(masks)} masks"
        )
    for i, (w, g, m) in enumerate(zip(weights, grads, masks)):
        if w.shape != g.shape or w.shape != m.shape:
            raise ValueError(
                f"tensor {i}: weight {tuple(w.shape)}, grad {tuple(g.shape)} and mask {tuple(m.shape)} must have one shape"
            )
        if m.dtype != torch.bool:
            raise ValueError(f"tensor {i}: masks must be torch.bool, got {m.dtype}")


def _candidate_count(method: str, n_active: int, n_prune: int, rate: float, anneal: float | None) -> int:
    """Size of the first-stage candidate set for the two-stage rules."""
    if method in ("fggp", "magnitude_first_fixed"):
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate r must be in (0, 1], got {rate}")
        k = int(rate * n_active)
        if k < n_prune:
            raise ValueError(
                f"r={rate} is too small for this pruning step: K=int(r*N)={k} candidates "
                f"< N_p={n_prune} to prune (N={n_active} active); use r >= {n_prune / n_active:.4f}"
            )
        return k
    if anneal is None:
        raise ValueError(f"method {method!r} needs the annealed rate a_t: pass anneal=annealed_rate(t, T)")
    if not 0.0 <= anneal <= 1.0:
        raise ValueError(f"annealed rate a_t must be in [0, 1], got {anneal}")
    return n_prune + int(anneal * (n_active - n_prune))


@torch.no_grad()
def prune_step(
    weights: Sequence[Tensor],
    grads: Sequence[Tensor],
    masks: Sequence[Tensor],
    n_prune: int,
    method: str = "fggp",
    rate: float = 0.5,
    anneal: float | None = None,
) -> list[Tensor]:
    """Remove exactly ``n_prune`` active entries, globally, and return the new masks.

    Args:
        weights: effective (masked) weights theta, one tensor per prunable layer.
        grads: current mini-batch gradients g of the loss (no weight decay).
        masks: current boolean masks (True = active); never modified.
        n_prune: N_p, entries to remove now; nothing happens when <= 0.
        method: one of :data:`METHODS`.
            ``fggp``: the K = int(r N) active entries with smallest |g|, then the
            N_p of them with smallest |theta|.
            ``magnitude_first_fixed``: the same with |theta| and |g| swapped.
            ``gmp``: the N_p active entries with smallest |theta|.
            ``magnitude_first_annealed``: the N_p + int(a_t (N - N_p)) smallest
            |theta|; of those keep the int(a_t (N - N_p)) with the largest |g|.
            ``gradient_first_annealed``: the same with |g| and |theta| swapped.
        rate: r for the fixed-rate rules.
        anneal: a_t for the annealed rules (see :func:`annealed_rate`).

    Returns:
        New boolean masks, same shapes and devices as ``masks``; masks only lose entries.

    Raises:
        ValueError: on an unknown method, mismatched shapes, non-finite scores,
            ``n_prune`` larger than the active count, or an infeasible rate.
    """
    method = _resolve_method(method)
    _check_inputs(weights, grads, masks)
    if n_prune <= 0:
        return [m.clone() for m in masks]

    active = torch.cat([m.reshape(-1) for m in masks])
    n_active = int(active.count_nonzero())
    if n_prune > n_active:
        raise ValueError(f"cannot prune N_p={n_prune} entries: only N={n_active} are active")

    # Selection works on whole flat score vectors with excluded entries set to +inf, so the
    # k smallest are always allowed ones: no gathers of active positions (3x faster on CPU at 20M).
    magnitude = _flat_abs(weights)
    if method == "gmp":
        pruned = smallest_k(magnitude.masked_fill_(~active, math.inf), n_prune)
    else:
        gradient = _flat_abs(grads)
        _check_finite(gradient, active, "gradients")
        first, second = (gradient, magnitude) if method.startswith(("fggp", "gradient")) else (magnitude, gradient)
        n_candidates = _candidate_count(method, n_active, n_prune, rate, anneal)
        candidates = smallest_k(first.masked_fill_(~active, math.inf), n_candidates)
        pruned = smallest_k(second.masked_fill_(~candidates, math.inf), n_prune)

    keep = active.logical_and_(~pruned)
    out, offset = [], 0
    for m in masks:
        n = m.numel()
        new = torch.empty_like(m)  # keeps the mask's memory format (e.g. channels_last)
        new.copy_(keep[offset : offset + n].view(m.shape))
        out.append(new)
        offset += n
    return out
