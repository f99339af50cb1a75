"""fggp-hub: FGGP gradual pruning for timm models, and a sparse checkpoint hub."""
from . import models as _models  # noqa: F401  (registers the CIFAR architectures with timm)
from .pruning import CubicSchedule, Pruner, prune_step, sparsity_stats

__version__ = "0.1.0"

__all__ = ["CubicSchedule", "Pruner", "prune_step", "sparsity_stats", "__version__"]
