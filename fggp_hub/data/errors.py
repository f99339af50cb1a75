"""Typed errors of the data package: what went wrong, and in the message what to do.

Callers catch ``DataSourceError`` for any data problem; the two subclasses also
derive from the builtin a caller would expect (``OSError`` for "cannot reach it",
``ValueError`` for "reached it, but cannot use it").
"""
from __future__ import annotations

from ..errors import FggpHubError

__all__ = ["DataSourceError", "DatasetFormatError", "DatasetUnavailableError"]


class DataSourceError(FggpHubError):
    """Base class: a data source could not be turned into image tensors."""


class DatasetUnavailableError(DataSourceError, OSError):
    """Neither the local path nor the Hub dataset could be reached (missing path, offline, unknown id)."""


class DatasetFormatError(DataSourceError, ValueError):
    """The source was reached but is not a usable image-classification split.

    For example: no image or label column, an unknown split, or images of
    different sizes without ``image_size``.
    """
