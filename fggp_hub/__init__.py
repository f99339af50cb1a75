"""fggp-hub: FGGP gradual pruning for timm models, and a sparse checkpoint hub."""
from . import models as _models  # noqa: F401  (registers the CIFAR architectures with timm)
from .pruning import CubicSchedule, Pruner, prune_step, sparsity_stats
from .inference import sparsify_for_inference
from .hub import (  # sparse checkpoints on the Hub
    CorruptCheckpointError,
    FggpHubError,
    SparsityMismatchError,
    UnknownModelError,
    export,
    list_models,
    load,
    pull,
    push,
)
from .eval import evaluate_model  # accuracy, sparsity, MACs and latency of a model
from .onnx import to_onnx  # ONNX file of a checkpoint (needs the onnx package at call time)

__version__ = "0.1.0"

__all__ = [
    "CorruptCheckpointError",
    "CubicSchedule",
    "FggpHubError",
    "Pruner",
    "SparsityMismatchError",
    "UnknownModelError",
    "evaluate_model",
    "export",
    "list_models",
    "load",
    "prune_step",
    "pull",
    "push",
    "sparsity_stats",
    "sparsify_for_inference",
    "to_onnx",
    "__version__",
]
