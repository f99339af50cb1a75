"""Typed errors of the evaluation: one line each, saying what was wrong and what to do.

:class:`CardError` belongs to the card module (:mod:`fggp_hub.hub.card`, which reads and
writes cards) and is re-exported here, where it was first defined.
"""
from __future__ import annotations

from ..errors import FggpHubError
from ..hub.errors import CardError

__all__ = ["EvalError", "CardError"]


class EvalError(FggpHubError, ValueError):
    """The model, the data or the arguments cannot be evaluated as asked."""
