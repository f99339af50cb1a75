"""The root of fggp-hub's own errors (as huggingface_hub's ``errors.py``).

Every error this package raises on purpose derives from :class:`FggpHubError`, so a caller
(and the CLI's error table) can tell "the user has something to fix" from a bug with one
``except``. Subclasses keep a second, built-in base (``OSError``, ``ValueError``,
``LookupError``...) so generic handlers written before this root existed still work.
"""
from __future__ import annotations

import os

__all__ = ["FggpHubError"]


class FggpHubError(Exception):
    """Base class; the message is always a single line, saying what was wrong and what to do.

    The optional attributes name what the error is about, for callers that want more than
    the message: ``repo_id`` (a hub repo), ``path`` (a file or folder), ``key`` (a config or
    recipe key). They are None when not given.
    """

    repo_id: str | None
    path: str | None
    key: str | None

    def __init__(self, message: object = "", *, repo_id: str | None = None, path: str | os.PathLike | None = None,
                 key: str | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.repo_id = repo_id
        self.path = os.fspath(path) if path is not None else None
        self.key = key
