"""Decode encoded images (bytes or file paths) into uint8 HWC arrays, on every core.

PIL is the decoder because it is what ``datasets.Image`` uses: the cache then holds
exactly the pixels ``ds[i]["img"]`` would give (converted to RGB). Small images are
cheap to decode but numerous, so work is split into chunks of rows and fanned out
to a fork-based process pool; a single chunk is decoded in-process (no pool start-up).
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
from itertools import chain
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
from PIL import Image

from .errors import DatasetFormatError

__all__ = ["ImageItem", "Chunk", "decode_chunks", "decode_image", "default_num_workers"]

#: One encoded image: its bytes, or a path to a file.
ImageItem = Union[bytes, str]
#: A chunk of rows: (first row index, encoded images, labels).
Chunk = tuple[int, Sequence[ImageItem], Sequence[int]]


def default_num_workers() -> int:
    """Cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def decode_image(item: ImageItem, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image -> (H, W, 3) uint8, resized (bilinear, PIL) to ``size`` = (H, W) if it differs."""
    with Image.open(io.BytesIO(item) if isinstance(item, (bytes, bytearray)) else item) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(im)


def _decode_chunk(task: tuple[Chunk, tuple[int, int] | None]) -> tuple[np.ndarray, np.ndarray]:
    (start, items, labels), size = task
    arrays = []
    for offset, item in enumerate(items):
        try:
            arrays.append(decode_image(item, size))
        except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
            raise DatasetFormatError(f"Row {start + offset}: cannot decode image ({e}).") from None
    shapes = sorted({a.shape[:2] for a in arrays})
    if len(shapes) > 1:
        raise DatasetFormatError(_mixed_sizes_message(shapes[0], shapes[-1]))
    # NCHW here, in the workers, so the parent only concatenates.
    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)), np.asarray(labels, dtype=np.int64)


def _mixed_sizes_message(a: tuple[int, ...], b: tuple[int, ...]) -> str:
    """``a``, ``b``: (H, W) of two images that differ."""
    return (f"Images have different sizes ({a[0]}x{a[1]} and {b[0]}x{b[1]}); "
            "pass image_size=(H, W) (or an int) to resize them all to one size.")


def decode_chunks(chunks: Iterable[Chunk], size: tuple[int, int] | None = None,
                  num_workers: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(images (n, 3, H, W) uint8, labels (n,) int64)`` per chunk, in order.

    Uses a pool of ``num_workers`` processes (default: all usable cores) when there is
    more than one chunk; raises ``DatasetFormatError`` for undecodable or mixed-size images.
    """
    first_shape = None
    for images, labels in _decode_all(chunks, size, num_workers):
        if first_shape is None:
            first_shape = images.shape[1:]
        elif images.shape[1:] != first_shape:
            raise DatasetFormatError(_mixed_sizes_message(first_shape[1:], images.shape[2:]))
        yield images, labels


def _decode_all(chunks: Iterable[Chunk], size: tuple[int, int] | None,
                num_workers: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    workers = default_num_workers() if num_workers is None else max(1, int(num_workers))
    it = iter(chunks)
    head = [c for c in (next(it, None), next(it, None)) if c is not None]
    if workers == 1 or len(head) < 2:
        for chunk in chain(head, it):
            yield _decode_chunk((chunk, size))
        return
    # fork: workers inherit the imported modules (no re-import of torch per worker); they
    # only run PIL and numpy, so forking a process that has torch loaded is safe.
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_decode_chunk, ((c, size) for c in chain(head, it)))
