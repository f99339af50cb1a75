"""FGGP pruning core: schedule, selection rules, ERK masks and the optimizer-hooked Pruner.

Depends on torch only.
"""
from .erk import erk_densities, erk_masks
from .pruner import Pruner, min_feasible_rate
from .schedule import CubicSchedule, annealed_rate
from .select import METHODS, count_active, prune_step, smallest_k
from .targets import first_conv_name, prunable_parameters, sparsity_stats, unwrap_model

__all__ = [
    "METHODS",
    "CubicSchedule",
    "Pruner",
    "annealed_rate",
    "count_active",
    "erk_densities",
    "erk_masks",
    "first_conv_name",
    "min_feasible_rate",
    "prunable_parameters",
    "prune_step",
    "smallest_k",
    "sparsity_stats",
    "unwrap_model",
]
