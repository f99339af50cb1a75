"""Decode-on-the-fly data for datasets too large for the uint8 cache (ImageNet-1k).

The cached path (:func:`fggp_hub.data.make_loader`) holds a whole split in memory, which
is right for CIFAR (150 MB) and wrong for ImageNet (1.28M images of varying size). Here
images stay on disk and are decoded by DataLoader workers with timm's own ImageNet
transforms (random-resized crop + flip for training, resize + centre crop for
evaluation), returned as uint8 and normalised on the training device, as in timm's
prefetcher mode.

Determinism: the augmentation of sample ``i`` in epoch ``e`` is drawn from RNGs seeded
with ``(seed, e, i)``, whatever the number of workers or the batch it lands in, and the
order of an epoch is a permutation seeded with ``(seed, e)``; so a resumed run
(``skip_first_batches``) sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import copy
import math
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .augment import BatchNormalize
from .errors import DatasetFormatError
from .sources import detect_columns, open_split, resolve_source

__all__ = ["ImageSource", "open_image_source", "SeededTransformDataset", "StreamingLoader", "make_streaming_loaders"]

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class ImageSource(Dataset):
    """Random access to ``(PIL image, label)`` of one split, with its class names."""

    def __init__(self, get: Callable[[int], tuple[Any, int]], length: int, classes: tuple[str, ...], source: str):
        self._get, self._length, self.classes, self.source = get, length, classes, source

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self._get(index)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _image_folder(root: Path) -> ImageSource:
    """A class-per-subfolder tree read with torchvision (paths only: nothing is copied)."""
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(root), is_valid_file=lambda p: Path(p).suffix.lower() in _IMAGE_SUFFIXES)
    return ImageSource(lambda i: folder[i], len(folder), tuple(folder.classes), f"ImageFolder {root}")


def open_image_source(source: str | os.PathLike, split: str, *, name: str | None = None,
                      revision: str | None = None) -> ImageSource:
    """Open ``split`` of an ImageFolder tree (``source/split/<class>/...``), parquet files or a Hub id.

    ImageFolder trees are read in place by path (ImageNet's layout); other sources go
    through ``datasets`` as a map-style (random access) dataset.
    """
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir() and (path / split).is_dir() and not any((path / split).glob("*.parquet")):
        return _image_folder(path / split)
    # parquet shards sit at the top or one level down (data/); never walk a whole ImageFolder tree
    if path.is_dir() and not (path / split).exists() and not any(path.glob("*.parquet")) \
            and not any(path.glob("*/*.parquet")):
        raise DatasetFormatError(
            f"{path} has no '{split}' folder: an ImageFolder source needs {path}/{split}/<class>/<image> "
            f"(set data.train_split / data.test_split to the folder names, e.g. train and val).")
    src = resolve_source(source, split, name=name, revision=revision)
    if src.kind == "hub":
        ds = open_split(src)
    else:  # map-style, not streamed: shuffling needs random access
        import datasets

        try:
            if src.kind == "dir":
                ds = datasets.load_dataset(src.location, split=split)
            else:
                ds = datasets.load_dataset("parquet", data_files={split: list(src.files)}, split=split)
        except ValueError as e:
            raise DatasetFormatError(f"{src.description}: {str(e).splitlines()[0]}") from e
    image_column, label_column, classes = detect_columns(ds.features)
    ds = ds.select_columns([image_column, label_column])
    if classes is None:
        classes = tuple(str(c) for c in range(int(max(ds[label_column])) + 1))

    def get(i: int) -> tuple[Any, int]:
        row = ds[int(i)]
        return row[image_column].convert("RGB"), int(row[label_column])

    return ImageSource(get, len(ds), classes, src.description)


class SeededTransformDataset(Dataset):
    """Applies ``transform`` to sample ``i`` with RNGs seeded by ``(seed, epoch, i)``.

    timm's transforms draw from Python's ``random`` and torch's global generator; both are
    forked so the caller's RNG state is untouched (num_workers=0 is deterministic too).
    """

    def __init__(self, source: ImageSource, transform: Callable, seed: int = 0) -> None:
        self.source, self.transform, self.seed, self.epoch = source, transform, seed, 0

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.source[index]
        sample_seed = hash((self.seed, self.epoch, int(index))) & 0x7FFF_FFFF
        state = random.getstate()
        try:
            random.seed(sample_seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed)
                pixels = self.transform(image)
        finally:
            random.setstate(state)
        if not isinstance(pixels, Tensor) or pixels.dtype != torch.uint8:
            raise TypeError("the transform must return a uint8 CHW tensor (timm create_transform(use_prefetcher=True))")
        return pixels, label


def _collate(batch: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, labels


class StreamingLoader:
    """Training batches decoded by DataLoader workers: shuffled per epoch, sharded, normalised on ``device``.

    The interface of :class:`~fggp_hub.data.BatchLoader` that the runner uses:
    ``len()`` (batches per epoch on this rank), ``set_epoch``, ``skip_first_batches``.
    Shards are made equal by wrap-around padding, as DistributedSampler does.
    """

    def __init__(self, dataset: SeededTransformDataset, batch_size: int, *, device: torch.device | str = "cpu",
                 seed: int = 0, drop_last: bool = True, rank: int = 0, world_size: int = 1, num_workers: int = 4,
                 normalize: BatchNormalize | None = None, limit: int | None = None) -> None:
        self.dataset, self.batch_size, self.device = dataset, batch_size, torch.device(device)
        self.seed, self.drop_last, self.rank, self.world_size = seed, drop_last, rank, world_size
        self.num_workers, self.normalize = num_workers, normalize
        self.size = min(len(dataset), limit) if limit else len(dataset)
        self.epoch, self._skip = 0, 0

    @property
    def num_samples(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_first_batches(self, num_batches: int) -> StreamingLoader:
        other = copy.copy(self)
        other._skip = int(num_batches)
        return other

    def indices(self, epoch: int) -> Tensor:
        """This rank's sample order for ``epoch`` (same permutation on every rank)."""
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        total = self.num_samples * self.world_size
        if total > self.size:
            order = torch.cat([order, order[: total - self.size]])
        mine = order[self.rank:total:self.world_size]
        return mine[: len(self) * self.batch_size] if self.drop_last else mine

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.epoch, self._skip
        self._skip = 0
        self.dataset.epoch = epoch  # workers are started below, after this is set
        order = self.indices(epoch)[start * self.batch_size:].tolist()
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=order, num_workers=self.num_workers,
                            collate_fn=_collate, pin_memory=self.device.type == "cuda", drop_last=self.drop_last,
                            persistent_workers=False,
                            # its own generator: the caller's global RNG is neither used nor advanced
                            generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield (self.normalize(images) if self.normalize is not None else images), labels
        self.epoch = epoch + 1


def make_streaming_loaders(source: str | os.PathLike, *, train_split: str, test_split: str, batch_size: int,
                           image_size: int, device: torch.device | str, seed: int, rank: int, world_size: int,
                           num_workers: int, mean: tuple[float, ...], std: tuple[float, ...], channels_last: bool,
                           train_subset: int | None = None, test_subset: int | None = None,
                           augment: bool = True, eval_batch_size: int = 256) -> tuple[StreamingLoader, DataLoader, ImageSource]:
    """The runner's ImageNet-style data: a training :class:`StreamingLoader`, the test DataLoader, the train source.

    The test loader yields uint8 centre crops in order; let ``accelerator.prepare`` shard it
    (``gather_for_metrics`` then counts every image once).
    """
    from timm.data import create_transform

    train_source = open_image_source(source, train_split)
    test_source = open_image_source(source, test_split)
    if train_source.classes != test_source.classes:
        raise DatasetFormatError(f"{source}: the {train_split} and {test_split} splits have different classes")
    train_tf = create_transform(image_size, is_training=augment, use_prefetcher=True)
    test_tf = create_transform(image_size, is_training=False, use_prefetcher=True)
    train = SeededTransformDataset(train_source, train_tf, seed)
    test: Dataset = SeededTransformDataset(test_source, test_tf, seed)
    if test_subset:
        test = torch.utils.data.Subset(test, range(min(test_subset, len(test))))
    normalize = BatchNormalize(mean, std, channels_last=channels_last).to(device)
    loader = StreamingLoader(train, batch_size, device=device, seed=seed, drop_last=True, rank=rank,
                             world_size=world_size, num_workers=num_workers, normalize=normalize, limit=train_subset)
    test_loader = DataLoader(test, batch_size=eval_batch_size, num_workers=num_workers, collate_fn=_collate)
    return loader, test_loader, train_source
