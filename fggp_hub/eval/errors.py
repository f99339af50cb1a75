"""Typed errors of the evaluation: one line each, saying what was wrong and what to do."""
from __future__ import annotations

from ..errors import FggpHubError

__all__ = ["EvalError", "CardError"]


class EvalError(FggpHubError, ValueError):
    """The model, the data or the arguments cannot be evaluated as asked."""


class CardError(FggpHubError, ValueError):
    """A model card (README.md front matter, eval_results.json, config.json) cannot be read or updated."""
