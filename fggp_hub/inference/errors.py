"""Typed errors of sparse inference: one line each, saying what was wrong and what to do."""
from __future__ import annotations

from ..errors import FggpHubError

__all__ = ["SparseInferenceError", "TrainingModeError", "SparsifyArgumentError"]


class SparseInferenceError(FggpHubError):
    """Base class; the message is always a single line (FggpHubError collapses it)."""


class TrainingModeError(SparseInferenceError, RuntimeError):
    """The model is in training mode, or an input needs gradients: sparse inference is eval-only."""


class SparsifyArgumentError(SparseInferenceError, ValueError):
    """An argument of :func:`sparsify_for_inference` is invalid (batch sizes, input size, force)."""
