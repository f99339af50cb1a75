"""fggp-hub: FGGP gradual pruning for timm models, and a sparse checkpoint hub.

Importing the package registers the CIFAR architectures (``fggp_*``) with timm and nothing
more: the public names below are imported on first use (as ``huggingface_hub`` does), so
``import fggp_hub`` does not pull in ``datasets``/``pyarrow``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import models as _models  # noqa: F401  (registers the CIFAR architectures with timm)
from .version import __version__

#: Submodule -> the public names it provides.
_SUBMOD_ATTRS = {
    "pruning": ["CubicSchedule", "Pruner", "prune_step", "sparsity_stats"],
    "inference": ["sparsify_for_inference"],
    "errors": ["FggpHubError"],  # the root of every error fggp-hub raises on purpose
    "hub": [  # sparse checkpoints on the Hub
        "CorruptCheckpointError",
        "SparsityMismatchError",
        "UnknownModelError",
        "export",
        "list_models",
        "load",
        "pull",
        "push",
    ],
    "eval": ["evaluate_model"],  # accuracy, sparsity, MACs and latency of a model
    "onnx": ["to_onnx"],  # ONNX file of a checkpoint (needs the onnx package at call time)
}
_ATTR_TO_SUBMOD = {attr: mod for mod, attrs in _SUBMOD_ATTRS.items() for attr in attrs}
#: Subpackages reachable as attributes (``fggp_hub.hub``) without importing them first.
_SUBMODULES = {"constants", "data", "errors", "eval", "hub", "inference", "models", "onnx", "pruning", "recipes", "version"}

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


def __getattr__(name: str):
    if name in _ATTR_TO_SUBMOD:
        value = getattr(importlib.import_module(f".{_ATTR_TO_SUBMOD[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ATTR_TO_SUBMOD) | _SUBMODULES)


if TYPE_CHECKING:  # static type checkers and IDEs see the real imports
    from .errors import FggpHubError
    from .eval import evaluate_model
    from .hub import (
        CorruptCheckpointError,
        SparsityMismatchError,
        UnknownModelError,
        export,
        list_models,
        load,
        pull,
        push,
    )
    from .inference import sparsify_for_inference
    from .onnx import to_onnx
    from .pruning import CubicSchedule, Pruner, prune_step, sparsity_stats
