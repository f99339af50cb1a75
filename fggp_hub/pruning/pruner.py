"""Pruner: FGGP (or a baseline) added to any PyTorch training loop with one line.

    pruner = Pruner(model, optimizer, final_sparsity=0.95, total_steps=len(loader) * epochs)

The pruner hooks the optimizer's step (``register_step_pre_hook`` and
``register_step_post_hook``), so the training loop is unchanged: it counts
optimizer steps (skipped GradScaler steps and accumulation micro-steps never
reach the optimizer and are not counted), scores on pruning steps with the
current gradients and the pre-step effective weights, and keeps pruned
weights, their gradients and their optimizer state at exactly zero. Masks are
multiplied into the weights in place once per step, never in the forward pass.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .erk import erk_masks
from .schedule import CubicSchedule, annealed_rate
from .select import _resolve_method, count_active, prune_step
from .targets import prunable_parameters, unwrap_model

__all__ = ["Pruner", "min_feasible_rate"]

# Guards floor(N_tot * (1 - d) - Z) against float rounding (e.g. 1000 * 0.9 = 899.999...).
# A deliberate deviation from the authors' code, which can land one weight short.
_FLOOR_EPS = 1e-6


def _n_prune(n_total: int, n_zero: int, density: float) -> int:
    """N_p = floor(N_tot * (1 - d(t)) - Z) (spec section 3)."""
    return math.floor(n_total * (1.0 - density) - n_zero + _FLOOR_EPS)


def min_feasible_rate(schedule: CubicSchedule, n_total: int, n_zero: int = 0) -> float:
    """Smallest fixed rate r for which every pruning step of ``schedule`` is feasible.

    Replays the schedule's integer bookkeeping: at each pruning step
    K = int(r * N) must be at least N_p.
    """
    worst = 0.0
    for t in schedule.pruning_steps():
        n_p = _n_prune(n_total, n_zero, schedule.density(t))
        if n_p <= 0:
            continue
        n_active = n_total - n_zero
        worst = max(worst, n_p / n_active)
        n_zero += n_p
    return worst


def _base_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The innermost torch optimizer (accelerate's AcceleratedOptimizer wraps one)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class Pruner:
    """Gradual global pruning driven by the optimizer's steps.

    Args:
        model: the model to prune (DDP / torch.compile wrappers are unwrapped).
        optimizer: its optimizer, possibly wrapped by ``accelerator.prepare``.
        final_sparsity: target sparsity over prunable weights (0.9 / 0.95 / 0.98).
        total_steps: T, optimizer steps of the whole run (builds the cubic schedule).
        schedule: a ready :class:`CubicSchedule` instead of the three arguments above.
            With neither, masks are fixed (sparse fine-tuning, no further pruning).
        interval: dt, optimizer steps between pruning steps.
        end_fraction: t_fin / T.
        initial_sparsity: 0 for a dense start, 0.5 for the ERK sparse start.
        method: selection rule, one of :data:`fggp_hub.pruning.METHODS`.
        rate: r of the fixed-rate rules.
        anneal_initial, anneal_final: a_0 and the floor of the annealed rules' a_t.
        include_first_conv: prune the input convolution too (kept dense by default).
        exclude: further module names to keep dense.
        masks: initial masks by parameter name (e.g. from a checkpoint); otherwise
            all-ones, ERK for a sparse start, or the weights' nonzeros when fixed.
        seed: seeds the ERK draw.
        check_sync: after each pruning step, assert all distributed processes hold
            identical masks (a debug check; costs a hash and an all-gather).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        final_sparsity: float | None = None,
        total_steps: int | None = None,
        *,
        schedule: CubicSchedule | None = None,
        interval: int = 2000,
        end_fraction: float = 0.8,
        initial_sparsity: float = 0.0,
        method: str = "fggp",
        rate: float = 0.5,
        anneal_initial: float = 0.5,
        anneal_final: float = 0.005,
        include_first_conv: bool = False,
        exclude: tuple[str, ...] | list[str] = (),
        masks: dict[str, Tensor] | None = None,
        seed: int = 0,
        check_sync: bool = False,
    ) -> None:
        if schedule is None and final_sparsity is not None:
            if total_steps is None:
                raise ValueError("Pruner needs total_steps (T) together with final_sparsity")
            schedule = CubicSchedule(
                total_steps=total_steps,
                final_density=1.0 - final_sparsity,
                initial_density=1.0 - initial_sparsity,
                interval=interval,
                end_fraction=end_fraction,
            )
        self.model = unwrap_model(model)
        self.optimizer = _base_optimizer(optimizer)
        self.schedule = schedule
        self.method = _resolve_method(method)
        self.rate = float(rate)
        self.anneal_initial = float(anneal_initial)
        self.anneal_final = float(anneal_final)
        self.include_first_conv = include_first_conv
        self.seed = seed
        self.check_sync = check_sync
        self.step = 0
        self.params = prunable_parameters(self.model, include_first_conv=include_first_conv, exclude=exclude)
        if not self.params:
            raise ValueError("the model has no prunable Conv2d/Linear weights")
        self.n_total = sum(p.numel() for p in self.params.values())
        self._pruned_last_step = False

        if masks is not None:
            self.masks = self._checked_masks(masks)
        elif schedule is None:  # fixed masks: keep what is already zero pruned
            self.masks = {n: p.detach() != 0 for n, p in self.params.items()}
        elif schedule.initial_density < 1.0:
            # As the authors do, ERK spreads the budget d_ini * N over every conv/linear weight, the
            # first conv included even when it is not prunable (spec 5). It is kept dense either way
            # (its ERK density is 1 on the paper's backbones), so the prunable layers start with its
            # share fewer active weights (864 fewer on VGG-19 and ResNet-50) than an ERK over them alone.
            budget = prunable_parameters(self.model, include_first_conv=True, exclude=exclude)
            drawn = dict(zip(budget, erk_masks(list(budget.values()), schedule.initial_density, seed=seed)))
            self.masks = {n: drawn[n].to(p.device) for n, p in self.params.items()}
        else:
            self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.params.items()}
        self._refresh_multipliers()
        self._check_rate()
        self.apply_masks(zero_optimizer_state=True)
        self._hooks = [
            self.optimizer.register_step_pre_hook(self._before_optimizer_step),
            self.optimizer.register_step_post_hook(self._after_optimizer_step),
        ]

    # ------------------------------------------------------------------ setup
    def _checked_masks(self, masks: dict[str, Tensor]) -> dict[str, Tensor]:
        missing = sorted(set(self.params) - set(masks))
        if missing:
            raise ValueError(f"masks are missing for prunable weights {missing[:3]}{'...' if len(missing) > 3 else ''}")
        out = {}
        for name, p in self.params.items():
            m = masks[name]
            if tuple(m.shape) != tuple(p.shape):
                raise ValueError(f"mask for {name} has shape {tuple(m.shape)}, the weight has {tuple(p.shape)}")
            mask = torch.empty_like(p, dtype=torch.bool)
            mask.copy_(m.to(device=p.device, dtype=torch.bool))
            out[name] = mask
        return out

    def _check_rate(self) -> None:
        if self.schedule is None or self.method not in ("fggp", "magnitude_first_fixed"):
            return
        needed = min_feasible_rate(self.schedule, self.n_total, self.n_total - count_active(self.masks.values()))
        if self.rate < needed:
            raise ValueError(
                f"r={self.rate} is too small for this schedule: one pruning step removes "
                f"{needed:.2%} of the remaining weights; use rate >= {needed:.4f} or a shorter interval"
            )

    def _refresh_multipliers(self) -> None:
        # Masks in the weights' dtype, for one fused in-place multiply per step.
        self._multipliers = [self.masks[n].to(p.dtype) for n, p in self.params.items()]

    def _follow_device(self) -> None:
        # accelerator.prepare may move the model after the pruner was built.
        first = next(iter(self.params.values()))
        if self._multipliers[0].device != first.device:
            self.masks = {n: m.to(self.params[n].device) for n, m in self.masks.items()}
            self._refresh_multipliers()

    # ------------------------------------------------------------------ hooks
    def _before_optimizer_step(self, optimizer, args, kwargs) -> None:
        self._follow_device()
        t = self.step + 1
        self._pruned_last_step = False
        if self.schedule is not None and self.schedule.is_pruning_step(t):
            self._pruned_last_step = self._update_masks(t)
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if grads:
            if len(grads) == len(self._multipliers):
                torch._foreach_mul_(grads, self._multipliers)
            else:
                for p, m in zip(self.params.values(), self._multipliers):
                    if p.grad is not None:
                        p.grad.mul_(m)

    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        self.step += 1
        self.apply_masks(zero_optimizer_state=self._pruned_last_step)

    # --------------------------------------------------------------- pruning
    @torch.no_grad()
    def _update_masks(self, t: int) -> bool:
        """One global pruning step at optimizer step t; True if masks changed."""
        masks = list(self.masks.values())
        n_zero = self.n_total - count_active(masks)
        n_prune = _n_prune(self.n_total, n_zero, self.schedule.density(t))
        if n_prune <= 0:
            return False
        weights = [p.detach() for p in self.params.values()]
        grads = []
        for name, p in self.params.items():
            if p.grad is None:
                warnings.warn(f"{name} has no gradient at pruning step {t}; its |g| is taken as 0", stacklevel=3)
                grads.append(torch.zeros_like(p))
            else:
                grads.append(p.grad.detach())
        anneal = None
        if self.method.endswith("_annealed"):
            anneal = annealed_rate(t, self.schedule.total_steps, self.anneal_initial, self.anneal_final)
        new = prune_step(weights, grads, masks, n_prune, method=self.method, rate=self.rate, anneal=anneal)
        self.masks = dict(zip(self.masks, new))
        self._refresh_multipliers()
        if self.check_sync:
            self.assert_masks_in_sync()
        return True

    @torch.no_grad()
    def apply_masks(self, zero_optimizer_state: bool = False) -> None:
        """Multiply the masks into the weights in place (and into optimizer state)."""
        self._follow_device()
        weights = [p.data for p in self.params.values()]
        torch._foreach_mul_(weights, self._multipliers)
        if zero_optimizer_state:
            for p, m in zip(self.params.values(), self._multipliers):
                for value in self.optimizer.state.get(p, {}).values():
                    if isinstance(value, Tensor) and value.shape == p.shape:
                        value.mul_(m.to(value.dtype))

    # ------------------------------------------------------------- reporting
    def mask_fingerprint(self) -> str:
        """sha256 of all masks, to compare processes or runs."""
        h = hashlib.sha256()
        for name, m in self.masks.items():
            h.update(name.encode())
            h.update(m.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def assert_masks_in_sync(self) -> None:
        """Raise if distributed processes hold different masks (no-op when not distributed)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        mine = self.mask_fingerprint()
        everyone: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everyone, mine)
        if len(set(everyone)) != 1:
            raise RuntimeError(f"masks differ across processes at step {self.step + 1}: {everyone}")

    @property
    def sparsity(self) -> float:
        """Fraction of prunable weights that are pruned."""
        return 1.0 - count_active(self.masks.values()) / self.n_total

    @property
    def target_sparsity(self) -> float:
        """What the schedule asks for at the current step."""
        if self.schedule is None:
            return self.sparsity
        return self.schedule.sparsity(self.step)

    def layer_sparsity(self) -> dict[str, float]:
        """Sparsity of each prunable weight, by parameter name."""
        return {n: 1.0 - int(m.count_nonzero()) / m.numel() for n, m in self.masks.items()}

    def sparsity_all_params(self) -> float:
        """Pruned entries over all model parameters (biases and norms included)."""
        total = sum(p.numel() for p in self.model.parameters())
        return (self.n_total - count_active(self.masks.values())) / total

    def report(self) -> dict[str, Any]:
        """Step, target and actual sparsity, and the per-layer breakdown."""
        return {
            "step": self.step,
            "method": self.method,
            "target_sparsity": self.target_sparsity,
            "sparsity": self.sparsity,
            "sparsity_all_params": self.sparsity_all_params(),
            "layers": self.layer_sparsity(),
        }

    def config(self) -> dict[str, Any]:
        """The pruning settings, for logs and model cards."""
        return {
            "method": self.method,
            "rate": self.rate,
            "anneal_initial": self.anneal_initial,
            "anneal_final": self.anneal_final,
            "include_first_conv": self.include_first_conv,
            "seed": self.seed,
            "schedule": self.schedule.to_dict() if self.schedule is not None else None,
        }

    # ---------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Step counter and masks (plain tensors and ints: safe for ``weights_only`` loading)."""
        return {"step": self.step, "masks": {n: m.detach().cpu().clone() for n, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore step and masks, and re-apply the masks to the weights."""
        self.step = int(state["step"])
        self.masks = self._checked_masks(state["masks"])
        self._refresh_multipliers()
        self.apply_masks(zero_optimizer_state=True)

    def remove(self) -> None:
        """Detach the optimizer hooks (masks stay applied)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def __repr__(self) -> str:
        return (
            f"Pruner(method={self.method!r}, rate={self.rate}, step={self.step}, "
            f"sparsity={self.sparsity:.4f}, tensors={len(self.params)}, weights={self.n_total})"
        )

