"""Source -> cached uint8 tensors: ``load_image_dataset`` (any image-classification data) and ``load_cifar10``.

The first call decodes every image once (all cores) and writes the cache; later
calls with unchanged source files read the cache back without touching ``datasets``
(local sources) or after a quick fingerprint lookup (Hub sources).
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import datasets
import numpy as np
import pyarrow as pa
import torch

from ..constants import CIFAR10_CLASSES
from .cache import CacheCorruptedError, ImageTensors, default_cache_dir, read_cache, write_cache
from .decode import Chunk, ImageItem, decode_chunks
from .errors import DatasetFormatError, DatasetUnavailableError
from .sources import (
    CIFAR10_HUB_ID,
    CIFAR10_PATH_ENV,
    ResolvedSource,
    SourceLike,
    cifar10_source,
    detect_columns,
    open_split,
    resolve_source,
)

__all__ = ["load_cifar10", "load_image_dataset"]

logger = logging.getLogger(__name__)

# Bump when the decoded pixels could change (decoder, resize rule): old cache files are then ignored.
_DECODE_VERSION = "pil-rgb-bilinear-1"


def _size_tuple(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return int(h), int(w)


def load_image_dataset(
    source: SourceLike,
    split: str = "train",
    *,
    image_size: int | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    name: str | None = None,
    revision: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    num_workers: int | None = None,
    use_cache: bool = True,
    chunk_size: int = 2048,
) -> ImageTensors:
    """Load one split of an image-classification dataset as (N, 3, H, W) uint8 + (N,) int64 tensors.

    Args:
        source: a Hub dataset id (``"uoft-cs/cifar10"``), a folder (parquet shards or
            an ImageFolder tree), or parquet/arrow file(s) or a glob (then they are ``split``).
        split: split name (``"train"``, ``"test"``, ...).
        image_size: resize every image to (H, W) (bilinear); required when sizes differ.
        cache_dir: where decoded tensors are cached; default ``$FGGP_DATA_CACHE`` or
            ``~/.cache/fggp-hub/data``.
        name, revision: Hub config name and revision.
        image_column, label_column: override the detected columns.
        num_workers: decoding processes (default: all usable cores).
        use_cache: False decodes from scratch and writes nothing.
        chunk_size: rows per decoding task.

    Raises:
        DatasetUnavailableError: the path does not exist or the Hub cannot be reached.
        DatasetFormatError: no image/label column, unknown split, mixed sizes, bad labels.
    """
    size = _size_tuple(image_size)
    src = resolve_source(source, split, name=name, revision=revision)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key_extra = (_DECODE_VERSION, size, image_column, label_column)

    key = cache_file = None
    if use_cache and src.kind != "hub":  # local: key known from file stats, no datasets call on a hit
        key = src.cache_key(*key_extra)
        cache_file = _cache_path(root, src, key, size)
        hit = _try_read(cache_file)
        if hit is not None:
            return hit

    # Local data is streamed; keep datasets' lock files next to our cache rather than in ~/.cache.
    ds = open_split(src, hf_cache_dir=root / "hf-datasets" if src.kind != "hub" else None)
    if use_cache and src.kind == "hub":
        key = src.cache_key(*key_extra, ds._fingerprint)
        cache_file = _cache_path(root, src, key, size)
        hit = _try_read(cache_file)
        if hit is not None:
            return hit

    data = _decode_split(ds, src, size, image_column, label_column, num_workers, chunk_size)
    if cache_file is not None:
        try:
            write_cache(cache_file, data, extra={"key": key, "kind": src.kind, "image_size": size,
                                                 "decoder": _DECODE_VERSION})
            data = replace(data, cache_file=cache_file)
        except OSError as e:
            warnings.warn(f"Could not write the data cache {cache_file} ({e}); continuing without it.",
                          RuntimeWarning, stacklevel=2)
    return data


def _cache_path(root: Path, src: ResolvedSource, key: str, size: tuple[int, int] | None) -> Path:
    size_tag = f"{size[0]}x{size[1]}" if size else "native"
    return root / f"{src.slug}-{src.split}-{size_tag}-{key}.safetensors"


def _try_read(path: Path) -> ImageTensors | None:
    """The cached tensors, or None (missing; or corrupt: then warn and remove it so it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        return read_cache(path)
    except CacheCorruptedError as e:
        warnings.warn(f"{e}; rebuilding it.", RuntimeWarning, stacklevel=3)
        try:
            path.unlink(missing_ok=True)
        except OSError:  # read-only cache folder: decode anyway; writing will warn
            pass
        return None


def _items(column: pa.ChunkedArray | pa.Array) -> list[ImageItem]:
    """Encoded images of an ``Image`` column (struct<bytes, path>): bytes when present, else the path."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_struct(column.type):
        raw, paths = column.field("bytes").to_pylist(), column.field("path").to_pylist()
    elif pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        raw, paths = column.to_pylist(), [None] * len(column)
    else:  # string storage: paths
        raw, paths = [None] * len(column), column.to_pylist()
    items: list[ImageItem] = []
    for b, p in zip(raw, paths):
        if b is None and p is None:
            raise DatasetFormatError("A row has no image (neither bytes nor path).")
        items.append(b if b is not None else p)
    return items


def _decode_split(ds, src: ResolvedSource, size: tuple[int, int] | None, image_column: str | None,
                  label_column: str | None, num_workers: int | None, chunk_size: int) -> ImageTensors:
    if ds.features is None:
        raise DatasetFormatError(f"{src.description}: unknown features (no datasets schema); "
                                 "write it with datasets, or use an ImageFolder tree.")
    img_col, lbl_col, classes = detect_columns(ds.features, image_column, label_column)
    ds = ds.select_columns([img_col, lbl_col]).cast_column(img_col, datasets.Image(decode=False))
    ds = ds.with_format("arrow")

    def chunks() -> Iterator[Chunk]:
        start = 0
        for table in ds.iter(batch_size=chunk_size):
            labels = table.column(lbl_col).to_pylist()
            yield start, _items(table.column(img_col)), labels
            start += len(labels)

    t0 = time.perf_counter()
    parts = list(decode_chunks(chunks(), size, num_workers))
    if not parts:
        raise DatasetFormatError(f"{src.description}: split {src.split!r} is empty.")
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0])
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    logger.info("decoded %d images from %s in %.1fs", len(labels), src.description, time.perf_counter() - t0)

    n_classes = len(classes) if classes is not None else int(labels.max()) + 1
    bad = (labels < 0) | (labels >= n_classes)
    if bool(bad.any()):
        raise DatasetFormatError(
            f"{src.description}: {int(bad.sum())} label(s) outside [0, {n_classes}) in split {src.split!r} "
            f"(e.g. {int(labels[bad][0])}); unlabeled splits cannot be used for classification.")
    if classes is None:
        classes = tuple(str(i) for i in range(n_classes))
    return ImageTensors(images, labels, classes, source=src.location, split=src.split)


def load_cifar10(split: str = "train", *, source: SourceLike | None = None, **kwargs) -> ImageTensors:
    """CIFAR-10 ``split`` as uint8 tensors, from ``source``, ``$FGGP_CIFAR10_PATH`` or ``uoft-cs/cifar10``.

    The local copy must use the ``uoft-cs/cifar10`` schema (``img``: Image, ``label``:
    ClassLabel). Other keyword arguments go to :func:`load_image_dataset`.

    Raises:
        DatasetUnavailableError: nothing reachable; the one-line message says what was
            tried and how to point at a local copy.
        DatasetFormatError: the data found is not CIFAR-10 (other class names).
    """
    chosen, how = cifar10_source(source)
    try:
        data = load_image_dataset(chosen, split, **kwargs)
    except DatasetUnavailableError as e:
        tried = os.fspath(chosen) if isinstance(chosen, (str, os.PathLike)) else [os.fspath(p) for p in chosen]
        raise DatasetUnavailableError(
            f"CIFAR-10 split {split!r} unavailable: tried {tried!r} from {how}: {e} "
            f"Fix: set {CIFAR10_PATH_ENV} (or pass source=) to a folder or parquet files in the {CIFAR10_HUB_ID} "
            "schema (e.g. shared/data/cifar10/plain_text), or go online to use the Hub."
        ) from None
    if data.classes != CIFAR10_CLASSES:
        raise DatasetFormatError(f"{chosen!r} is not CIFAR-10: classes {list(data.classes)[:12]}, "
                                 f"expected {list(CIFAR10_CLASSES)}.")
    return data
