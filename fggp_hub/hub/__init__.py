"""Sparse checkpoints on the Hub: export, compact format, model cards, push/pull and load.

Depends on huggingface_hub, safetensors, timm and fggp_hub.pruning (for sparsity stats).
"""
from .errors import (
    ArchitectureNotRegisteredError,
    CardError,
    CorruptCheckpointError,
    ExportError,
    FggpHubError,
    FolderNotFoundError,
    ZooIndexError,
    UnsafePathError,
    RepoExistsError,
    HubResponseError,
    HubAccessError,
    HubUnreachableError,
    InvalidNameError,
    NotInCacheError,
    RepoNotFoundError,
    RevisionNotFoundError,
    SparsityMismatchError,
    UnknownModelError,
)
from .export import export
from .hubs import HfHub, Hub, LocalHub, get_hub, pull, push
from .load import load
from .zoo import ZooEntry, list_models, make_name, register

__all__ = [
    "ArchitectureNotRegisteredError",
    "CardError",
    "CorruptCheckpointError",
    "ExportError",
    "FggpHubError",
    "FolderNotFoundError",
    "ZooIndexError",
    "UnsafePathError",
    "RepoExistsError",
    "HubResponseError",
    "HfHub",
    "Hub",
    "HubAccessError",
    "HubUnreachableError",
    "InvalidNameError",
    "LocalHub",
    "NotInCacheError",
    "RepoNotFoundError",
    "RevisionNotFoundError",
    "SparsityMismatchError",
    "UnknownModelError",
    "ZooEntry",
    "export",
    "get_hub",
    "list_models",
    "load",
    "make_name",
    "pull",
    "push",
    "register",
]
