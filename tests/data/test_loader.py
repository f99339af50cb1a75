"""The batch loader: seeded order and augmentation, epochs, sharding, exact eval, mid-epoch resume."""
from __future__ import annotations

import pytest
import torch

from fggp_hub.data import BatchLoader, ImageTensors, make_loader


def _data(n: int = 100) -> ImageTensors:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) % 256  # make images distinguishable
    return ImageTensors(images, torch.arange(n, dtype=torch.int64), tuple(str(i) for i in range(n)))


def _ids(loader) -> list[int]:
    """Sample ids in iteration order (labels are the row indices)."""
    return [int(i) for _, y in loader for i in y]


def test_train_batches_shapes_and_len():
    loader = make_loader(_data(100), 32, train=True, seed=0)
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (32, 3, 32, 32) and y.dtype == torch.int64
    assert len(make_loader(_data(100), 32, train=True, drop_last=True)) == 3
    assert [len(y) for _, y in make_loader(_data(100), 32, train=True, drop_last=True)] == [32, 32, 32]


def test_same_seed_same_order_and_augmentation():
    a = [(x.clone(), y.clone()) for x, y in make_loader(_data(), 16, train=True, seed=7)]
    b = [(x.clone(), y.clone()) for x, y in make_loader(_data(), 16, train=True, seed=7)]
    c = [(x.clone(), y.clone()) for x, y in make_loader(_data(), 16, train=True, seed=8)]
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert [int(i) for _, y in a for i in y] != [int(i) for _, y in c for i in y]


def test_augmentation_differs_with_seed_for_the_same_images():
    data = _data(64)
    loaders = [BatchLoader(data, 64, shuffle=False, transform=make_loader(data, 64, train=True).transform, seed=s)
               for s in (1, 2)]
    (xa, ya), (xb, yb) = next(iter(loaders[0])), next(iter(loaders[1]))
    assert torch.equal(ya, yb) and not torch.equal(xa, xb)


def test_epochs_differ_and_each_is_a_permutation():
    loader = make_loader(_data(), 10, train=True, seed=0)
    e0, e1 = _ids(loader), _ids(loader)  # a finished pass advances the epoch
    assert loader.epoch == 2
    assert sorted(e0) == sorted(e1) == list(range(100)) and e0 != e1
    loader.set_epoch(0)
    assert _ids(loader) == e0
    # the order is randperm(seed + epoch)
    assert e1 == torch.randperm(100, generator=torch.Generator().manual_seed(1)).tolist()


def test_distributed_shards_disjoint_equal_and_covering():
    data = _data(100)
    shards = [_ids(make_loader(data, 8, train=True, seed=3, rank=r, world_size=4)) for r in range(4)]
    assert [len(s) for s in shards] == [25] * 4
    assert sorted(sum(shards, [])) == list(range(100))
    full = make_loader(data, 8, train=True, seed=3).indices(0).tolist()
    assert shards[1] == full[1::4]  # DistributedSampler layout over the same epoch permutation


def test_distributed_uneven_pads_by_wraparound():
    data = _data(10)
    loaders = [make_loader(data, 2, train=True, seed=0, rank=r, world_size=4) for r in range(4)]
    shards = [_ids(ld) for ld in loaders]
    assert [len(s) for s in shards] == [3] * 4 and {len(ld) for ld in loaders} == {2}
    assert loaders[0].total_size == 12 and loaders[0].num_padded == 2
    order = loaders[0].indices(0).tolist()
    padded = torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    padded += padded[:2]
    assert sorted(sum(shards, [])) == sorted(padded)
    assert set(sum(shards, [])) == set(range(10)) and order == padded[0::4]


def test_eval_loader_exact_fixed_order_no_drop():
    data = _data(103)
    loader = make_loader(data, 10, train=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 11 and len(batches[-1][1]) == 3
    assert _ids(loader) == list(range(103))  # fixed order, twice the same
    x, _ = batches[0]
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    assert torch.allclose(x, (data.images[:10].float() / 255 - mean) / std)  # no augmentation
    # Distributed evaluation: every image exactly once, no padding.
    shards = [make_loader(data, 10, train=False, rank=r, world_size=2) for r in range(2)]
    ids = [_ids(s) for s in shards]
    assert sorted(ids[0] + ids[1]) == list(range(103)) and not set(ids[0]) & set(ids[1])
    assert [s.num_samples for s in shards] == [52, 51] and shards[0].num_padded == 0


def test_skip_first_batches_equals_tail_of_full_epoch():
    loader = make_loader(_data(), 16, train=True, seed=5)
    loader.set_epoch(3)
    full = [(x.clone(), y.clone()) for x, y in loader]
    loader.set_epoch(3)
    tail = [(x.clone(), y.clone()) for x, y in loader.skip_first_batches(4)]
    assert len(tail) == len(full) - 4
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[4:], tail))


def test_state_dict_resume_mid_epoch():
    data = _data()
    reference = make_loader(data, 16, train=True, seed=9)
    reference.set_epoch(2)
    expected = [(x.clone(), y.clone()) for x, y in reference]

    run = make_loader(data, 16, train=True, seed=9)
    run.set_epoch(2)
    it = iter(run)
    for _ in range(3):
        next(it)
    state = run.state_dict()
    assert state == {"epoch": 2, "batch": 3, "seed": 9}

    resumed = make_loader(data, 16, train=True, seed=9)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the training loop's usual call keeps the pending skip
    got = [(x.clone(), y.clone()) for x, y in resumed]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(expected[3:], got))
    assert len(got) == len(expected) - 3 and resumed.epoch == 3 and resumed.state_dict()["batch"] == 0
    assert len(list(resumed)) == len(expected)  # the next epoch is whole
    with pytest.raises(ValueError, match="seed"):
        make_loader(data, 16, train=True, seed=1).load_state_dict(state)


def test_channels_last_and_validation():
    x, _ = next(iter(make_loader(_data(8), 4, train=True, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="rank"):
        make_loader(_data(8), 4, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(_data(8), 0, train=True)


def test_plain_tensor_pair_and_no_transform():
    images, labels = _data(12).images, _data(12).labels
    loader = BatchLoader((images, labels), 5, shuffle=False)
    x, y = next(iter(loader))
    assert x.dtype == torch.uint8 and torch.equal(x, images[:5]) and torch.equal(y, labels[:5])
