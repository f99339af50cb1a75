"""The decoded dataset as tensors, and its on-disk cache (one safetensors file per split).

Why a cache: decoding 50,000 JPEGs costs seconds on every run; reading 150 MB of
uint8 back costs a fraction of one. Why safetensors: no pickle (a cache file is never
code), a checked header, and a memory-mapped, copy-on-write load. A CRC32 of the
tensors sits in the header so silent corruption is caught, not trained on.
Files are written under a temporary name and renamed into place, so readers see
either no file or a complete one.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .._io import atomic_path
from ..constants import ENV_DATA_CACHE as CACHE_DIR_ENV
from ..constants import home_dir
from ..errors import FggpHubError

__all__ = ["CACHE_DIR_ENV", "CacheCorruptedError", "ImageTensors", "default_cache_dir", "read_cache", "write_cache"]

#: Environment variable overriding the cache folder (per-call ``cache_dir`` wins over it).
_FORMAT = "fggp-hub-image-cache"
_VERSION = "1"


class CacheCorruptedError(FggpHubError, RuntimeError):
    """A cache file exists but cannot be trusted (truncated, altered, other format)."""


@dataclass(frozen=True)
class ImageTensors:
    """A decoded image-classification split: ``images`` (N, 3, H, W) uint8, ``labels`` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str = ""
    split: str = ""
    cache_file: Path | None = None
    #: True when the tensors were read from the cache (nothing was decoded).
    from_cache: bool = False

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be (N,) int64 matching images, got {tuple(self.labels.shape)} "
                             f"{self.labels.dtype}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, index: slice | torch.Tensor | list[int]) -> ImageTensors:
        """Rows ``index`` (e.g. ``slice(0, 512)`` for a quick CPU run), same classes."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        return replace(self, images=self.images[index], labels=self.labels[index])

    def to(self, device: torch.device | str) -> ImageTensors:
        """Both tensors on ``device`` (e.g. the whole uint8 cache on the GPU: 150 MB for CIFAR)."""
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))


def default_cache_dir() -> Path:
    """``$FGGP_DATA_CACHE``, else ``data`` under the home directory (``~/.cache/fggp_hub/data``)."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return home_dir() / "data"


def _crc(t: torch.Tensor) -> str:
    return format(zlib.crc32(t.contiguous().view(torch.uint8).numpy()) & 0xFFFFFFFF, "08x")


def write_cache(path: Path, data: ImageTensors, extra: dict[str, Any] | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images, labels = data.images.contiguous().cpu(), data.labels.contiguous().cpu()
    meta = {
        "format": _FORMAT,
        "version": _VERSION,
        "classes": json.dumps(list(data.classes)),
        "source": data.source,
        "split": data.split,
        "images_crc32": _crc(images),
        "labels_crc32": _crc(labels),
        "extra": json.dumps(extra or {}, default=str),
    }
    # No fsync: a file torn by a crash fails its checksum on the next read and is rebuilt.
    with atomic_path(path) as tmp:
        save_file({"images": images, "labels": labels}, str(tmp), metadata=meta)


def read_cache(path: Path) -> ImageTensors:
    """Read and verify a cache file; raise ``CacheCorruptedError`` if it cannot be trusted.

    The tensors are memory-mapped copy-on-write: writing to them never alters the file.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in ("images", "labels")}
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise CacheCorruptedError(f"not a version-{_VERSION} {_FORMAT} file")
        images, labels = tensors["images"], tensors["labels"]
        if _crc(images) != meta["images_crc32"] or _crc(labels) != meta["labels_crc32"]:
            raise CacheCorruptedError("checksum mismatch")
        return ImageTensors(images, labels, tuple(json.loads(meta["classes"])), source=meta["source"],
                            split=meta["split"], cache_file=path, from_cache=True)
    except CacheCorruptedError as e:
        raise CacheCorruptedError(f"Cache file {path} is unusable: {e}") from None
    except Exception as e:  # safetensors header errors, missing keys, bad JSON, wrong shapes
        raise CacheCorruptedError(f"Cache file {path} is unusable: {type(e).__name__}: {e}") from e
