"""Tiny synthetic datasets on disk, for tests of this package and of the recipes.

Random pixels, fixed seed: enough to exercise every loading path (ImageFolder,
parquet in the Hub schema) in milliseconds without the real CIFAR-10 files.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ["fake_pixels", "make_fake_imagefolder", "make_fake_parquet"]


def _random_images(n: int, size: int | tuple[int, int], seed: int) -> np.ndarray:
    h, w = (size, size) if isinstance(size, int) else size
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def make_fake_imagefolder(path: str | os.PathLike, classes: Sequence[str] = ("cat", "dog"), per_class: int = 4,
                          size: int | tuple[int, int] = 32, *, split: str | None = None, seed: int = 0,
                          fmt: str = "png") -> Path:
    """Write ``per_class`` random images per class to ``path/[split/]<class>/<i>.<fmt>``; return ``path``.

    PNG is lossless, so tests can compare decoded pixels with the arrays written
    (see :func:`fake_pixels`).
    """
    root = Path(path)
    base = root / split if split else root
    images = _random_images(len(classes) * per_class, size, seed)
    for c, name in enumerate(classes):
        (base / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(images[c * per_class + i]).save(base / name / f"{i:04d}.{fmt}")
    return root


def fake_pixels(n: int, size: int | tuple[int, int] = 32, seed: int = 0) -> np.ndarray:
    """The (n, H, W, 3) uint8 pixels the fake writers use for ``seed`` (in writing order)."""
    return _random_images(n, size, seed)


def make_fake_parquet(path: str | os.PathLike, n: int = 16, classes: Sequence[str] = ("cat", "dog"),
                      size: int | tuple[int, int] = 32, *, image_column: str = "img", label_column: str = "label",
                      seed: int = 0, fmt: str = "PNG") -> Path:
    """Write a parquet file in the Hub image-classification schema (Image + ClassLabel); return its path.

    Labels cycle through the classes (row i has label i % len(classes)).
    """
    import datasets

    images = _random_images(n, size, seed)
    encoded = []
    for arr in images:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        encoded.append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features({image_column: datasets.Image(),
                                  label_column: datasets.ClassLabel(names=list(classes))})
    ds = datasets.Dataset.from_dict({image_column: encoded, label_column: [i % len(classes) for i in range(n)]},
                                    features=features)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(out))
    return out
