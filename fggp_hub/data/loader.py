"""Batches straight from the in-memory uint8 tensors: no DataLoader workers, no per-image Python.

A CIFAR epoch is a permutation and a few hundred ``index_select`` calls; with the
augmentation vectorised over the batch this outruns any CPU model, so worker
processes would only add start-up time and nondeterminism.

Determinism and resume:
* epoch order: ``torch.randperm`` from a generator seeded with ``seed + epoch``,
  identical on every rank;
* augmentation: a fresh generator per batch, seeded from (seed, epoch, rank, batch
  index), so skipping the first k batches reproduces the tail of a full epoch exactly;
* distributed: like ``DistributedSampler`` - rank r takes positions r, r+W, r+2W, ...
  of the epoch order, padded by wrap-around to equal shards (training), or unpadded
  (evaluation: every image exactly once, shard sizes differ by at most one).
"""
from __future__ import annotations

import copy
import hashlib
import math
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from ..constants import CIFAR10_MEAN, CIFAR10_STD
from .augment import BatchAugment, BatchNormalize
from .cache import ImageTensors

__all__ = ["BatchLoader", "Transform", "make_loader"]

#: ``transform(uint8_batch, generator) -> batch``: BatchAugment, BatchNormalize or your own.
Transform = Callable[[Tensor, torch.Generator], Tensor]


def _batch_seed(*parts: int) -> int:
    """A 63-bit seed mixing (seed, epoch, rank, batch): unrelated streams for nearby tuples."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class BatchLoader:
    """Iterable of ``(images, labels)`` batches on ``device`` from uint8 ``images`` and int64 ``labels``.

    Args:
        data: an :class:`ImageTensors` or an ``(images, labels)`` pair.
        batch_size: per rank.
        shuffle: new order every epoch (``seed + epoch``); else the stored order.
        transform: applied to each uint8 batch on ``device`` with a per-batch generator.
        device: where batches (and, with ``preload``, the whole uint8 set) live.
        seed: base seed of order and augmentation.
        drop_last: drop this rank's last short batch.
        rank, world_size: this process's shard of every epoch.
        even_shards: pad by wrap-around so all ranks get the same number of samples
            (default: ``shuffle``). Without it every sample is used exactly once.
        preload: copy the whole uint8 set to ``device`` once (150 MB for CIFAR-10).

    ``len()`` is the number of batches in a full epoch on this rank. Iterating to the
    end advances ``epoch`` by one; ``set_epoch`` sets it (as with DistributedSampler).
    ``state_dict``/``load_state_dict`` save and restore (epoch, batches done), so an
    accelerate ``register_for_checkpointing`` resume continues mid-epoch exactly.
    """

    def __init__(
        self,
        data: ImageTensors | tuple[Tensor, Tensor],
        batch_size: int,
        *,
        shuffle: bool,
        transform: Transform | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool | None = None,
        preload: bool = True,
    ) -> None:
        images, labels = (data.images, data.labels) if isinstance(data, ImageTensors) else data
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        self.device = torch.device(device)
        self.images = images.to(self.device) if preload else images
        self.labels = labels.to(self.device) if preload else labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.transform = transform
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.even_shards = shuffle if even_shards is None else even_shards
        self.epoch = 0
        self._skip = 0  # batches to skip at the start of the next iteration (resume)
        self._done = 0  # batches yielded so far in the current epoch

    # -- sizes -------------------------------------------------------------------------------
    @property
    def dataset_size(self) -> int:
        return int(self.images.shape[0])

    @property
    def total_size(self) -> int:
        """Samples per epoch over all ranks, padding included."""
        n, w = self.dataset_size, self.world_size
        return math.ceil(n / w) * w if self.even_shards else n

    @property
    def num_padded(self) -> int:
        """Duplicated samples added so shards are equal (0 without ``even_shards``)."""
        return self.total_size - self.dataset_size

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return len(range(self.rank, self.total_size, self.world_size))

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    # -- order -------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and augmentation) the next iteration uses.

        A pending resume skip (``load_state_dict``) is kept if ``epoch`` is the resumed one.
        """
        if int(epoch) != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)
        self._done = self._skip

    def indices(self, epoch: int | None = None) -> Tensor:
        """This rank's sample indices for ``epoch`` (default: the current one), in batch order."""
        epoch = self.epoch if epoch is None else epoch
        n = self.dataset_size
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(n)
        pad = self.total_size - n
        if pad:  # wrap around, repeating the order if the padding exceeds it (tiny datasets)
            order = torch.cat([order, order.repeat(math.ceil(pad / n))[:pad]])
        return order[self.rank:self.total_size:self.world_size]

    def batch_generator(self, epoch: int, batch: int) -> torch.Generator:
        """The generator the transform gets for ``batch`` of ``epoch`` on this rank (CPU, seeded)."""
        return torch.Generator().manual_seed(_batch_seed(self.seed, epoch, self.rank, batch))

    # -- iteration ---------------------------------------------------------------------------
    def skip_first_batches(self, num_batches: int) -> BatchLoader:
        """A copy whose next iteration starts at batch ``num_batches`` of the current epoch.

        The batches it yields equal the tail of a full iteration (same order, same
        augmentation); later epochs are whole. Like ``accelerator.skip_first_batches``.
        """
        other = copy.copy(self)
        other._skip = int(num_batches)
        return other

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.epoch, self._skip
        self._skip = 0
        self._done = start
        order = self.indices(epoch)
        b = self.batch_size
        for i in range(start, len(self)):
            idx = order[i * b:(i + 1) * b].to(self.images.device, non_blocking=True)
            x = self.images.index_select(0, idx).to(self.device, non_blocking=True)
            y = self.labels.index_select(0, idx).to(self.device, non_blocking=True)
            if self.transform is not None:
                x = self.transform(x, self.batch_generator(epoch, i))
            self._done = i + 1
            yield x, y
        self.epoch, self._done = epoch + 1, 0

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands: ``{"epoch", "batch"}`` (batches already yielded this epoch)."""
        return {"epoch": self.epoch, "batch": self._done, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration continues ``state["epoch"]`` at batch ``state["batch"]``."""
        if "seed" in state and state["seed"] != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this loader has seed {self.seed}")
        self.epoch = int(state["epoch"])
        self._done = self._skip = int(state["batch"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={self.dataset_size}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"rank={self.rank}/{self.world_size}, batches={len(self)}, device={self.device}, "
                f"transform={self.transform})")


def make_loader(
    data: ImageTensors | tuple[Tensor, Tensor],
    batch_size: int,
    *,
    train: bool,
    device: torch.device | str = "cpu",
    seed: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    mean: tuple[float, ...] = CIFAR10_MEAN,
    std: tuple[float, ...] = CIFAR10_STD,
    padding: int = 4,
    flip_p: float = 0.5,
) -> BatchLoader:
    """The FGGP protocol's loaders: float normalised batches on ``device``.

    ``train=True``: shuffled per epoch, pad-4 random crop + horizontal flip, equal
    shards (wrap-around padding) across ranks.

    ``train=False``: stored order, normalise only, last short batch kept, no padding:
    across ranks every image is seen exactly once. Count on each rank and sum once at
    the end (``accelerator.reduce(torch.tensor([correct, seen]), "sum")``) to score
    exactly all 10,000 test images; shards may differ by one image, so do not run a
    collective per batch (``gather_for_metrics`` is for accelerate's own loaders).
    """
    if train:
        transform: Transform = BatchAugment(mean, std, padding=padding, flip_p=flip_p, channels_last=channels_last)
    else:
        transform = BatchNormalize(mean, std, channels_last=channels_last)
    transform = transform.to(device)
    return BatchLoader(data, batch_size, shuffle=train, transform=transform, device=device, seed=seed,
                       drop_last=drop_last, rank=rank, world_size=world_size, even_shards=train)
