"""Typed errors of the hub: one line each, saying what was wrong and what to do.

All derive from :class:`fggp_hub.errors.FggpHubError` (re-exported here). Each class also derives from the built-in exception a caller would expect
(``LookupError`` for things that are not there, ``ValueError`` for bad input or
bad files, ``FileNotFoundError`` for a missing cache), so generic handlers work.
"""
from __future__ import annotations

from ..errors import FggpHubError

__all__ = [
    "FggpHubError",
    "InvalidNameError",
    "UnknownModelError",
    "RepoNotFoundError",
    "RevisionNotFoundError",
    "NotInCacheError",
    "FolderNotFoundError",
    "HubUnreachableError",
    "HubAccessError",
    "CorruptCheckpointError",
    "SparsityMismatchError",
    "ArchitectureNotRegisteredError",
    "ExportError",
    "UnsafePathError",
    "RepoExistsError",
    "HubResponseError",
    "ZooIndexError",
    "CardError",
]


class InvalidNameError(FggpHubError, ValueError):
    """A repo id, revision or file name that is malformed or unsafe (``..``, absolute, odd characters)."""


class UnknownModelError(FggpHubError, LookupError):
    """A zoo name, repo id or folder that matches nothing (close zoo names are suggested)."""


class RepoNotFoundError(FggpHubError, LookupError):
    """The hub has no repo of that id."""


class RevisionNotFoundError(FggpHubError, LookupError):
    """The repo exists but not at that revision."""


class NotInCacheError(FggpHubError, FileNotFoundError):
    """Offline (``HF_HUB_OFFLINE=1``) and the requested files are not in the local cache."""


class FolderNotFoundError(FggpHubError, FileNotFoundError):
    """A local folder that was named does not exist."""


class HubUnreachableError(FggpHubError, ConnectionError):
    """The hub endpoint could not be reached and nothing is cached."""


class HubAccessError(FggpHubError, PermissionError):
    """The hub refused the request (missing or insufficient token)."""


class CorruptCheckpointError(FggpHubError, ValueError):
    """A file is missing, truncated, not safetensors, or does not match config.json."""


class SparsityMismatchError(CorruptCheckpointError):
    """The weights' measured sparsity differs from the one recorded in config.json / the card."""


class ArchitectureNotRegisteredError(FggpHubError, LookupError):
    """config.json names an architecture that timm does not know in this process."""


class ExportError(FggpHubError, ValueError):
    """The model or the arguments cannot be exported as asked."""


class UnsafePathError(FggpHubError, PermissionError):
    """A path that leads outside where it must stay (a symbolic link, a crafted ref file), or a link where plain files belong."""


class RepoExistsError(FggpHubError, FileExistsError):
    """Publishing would replace another model already published under that repo and branch (pass overwrite=True)."""


class HubResponseError(FggpHubError, ConnectionError):
    """The hub answered, but with an error (HTTP 5xx) or something that is not the Hub API (an HTML page)."""


class ZooIndexError(FggpHubError, ValueError):
    """A zoo index file holds a malformed entry (wrong types, NaN, bad names)."""


class CardError(FggpHubError, ValueError):
    """A model card (README.md front matter, eval_results.json, config.json) cannot be read or updated."""
