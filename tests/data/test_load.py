"""Loading: parquet folder/files/glob, ImageFolder, Hub-id errors, the uint8 cache and its failure modes."""
from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import fggp_hub.data.load as load_mod
from fggp_hub.constants import CIFAR10_CLASSES
from fggp_hub.data import (
    DataSourceError,
    DatasetFormatError,
    DatasetUnavailableError,
    detect_columns,
    load_cifar10,
    load_image_dataset,
    make_loader,
    resolve_source,
)
from fggp_hub.data.testing import fake_pixels, make_fake_imagefolder, make_fake_parquet


def _parquet_rows(path: Path) -> tuple[list[bytes], list[int]]:
    table = pq.read_table(path)
    return table.column("img").combine_chunks().field("bytes").to_pylist(), table.column("label").to_pylist()


def _pil_rgb(b: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


# -- CIFAR-10 from the shared parquet -----------------------------------------------------------

def test_parquet_folder_pixels_labels_classes(cifar_slice, tmp_path):
    data = load_image_dataset(cifar_slice, "train", cache_dir=tmp_path)
    raw, labels = _parquet_rows(cifar_slice / "train-00000-of-00001.parquet")
    assert data.images.shape == (512, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == labels
    assert data.classes == CIFAR10_CLASSES == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                "horse", "ship", "truck")
    # CIFAR-10's first training images are frog, truck, truck, deer, automobile (official order).
    assert data.labels[:5].tolist() == [6, 9, 9, 4, 1]
    for i in (0, 1, 255, 511):  # the exact pixels PIL (and so datasets.Image) decodes
        assert np.array_equal(data.images[i].permute(1, 2, 0).numpy(), _pil_rgb(raw[i]))
    test = load_image_dataset(cifar_slice, "test", cache_dir=tmp_path)
    assert len(test) == 256 and test.labels[:3].tolist() == [3, 8, 8]  # cat, ship, ship


def test_pixels_equal_datasets_own_decoding(cifar_slice, tmp_path):
    data = load_image_dataset(cifar_slice, "test", cache_dir=tmp_path)
    ds = datasets.load_dataset(str(cifar_slice), split="test", streaming=True, cache_dir=str(tmp_path / "hf"))
    for i, row in enumerate(ds.take(8)):
        assert np.array_equal(np.asarray(row["img"].convert("RGB")), data.images[i].permute(1, 2, 0).numpy())
        assert row["label"] == int(data.labels[i])


def test_parquet_file_list_and_glob(cifar_slice, tmp_path):
    file = cifar_slice / "test-00000-of-00001.parquet"
    a = load_image_dataset(file, "test", cache_dir=tmp_path / "a")
    b = load_image_dataset([str(file)], "validation", cache_dir=tmp_path / "b")
    c = load_image_dataset(str(cifar_slice / "test-*.parquet"), "test", cache_dir=tmp_path / "c")
    assert torch.equal(a.images, b.images) and torch.equal(a.images, c.images)
    assert a.labels.tolist() == b.labels.tolist() == _parquet_rows(file)[1]
    assert a.classes == CIFAR10_CLASSES


def test_full_test_split_is_exact_10000(cifar_dir, tmp_path):
    data = load_cifar10("test", source=cifar_dir, cache_dir=tmp_path)
    assert data.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(data.labels).tolist() == [1000] * 10
    # Evaluation sees exactly the 10,000 images, on one rank or three (no padding, last batch kept).
    for world in (1, 3):
        seen = [y for r in range(world) for _, y in make_loader(data, 128, train=False, rank=r, world_size=world)]
        assert sum(len(y) for y in seen) == 10_000
        assert torch.equal(torch.sort(torch.cat(seen)).values, torch.sort(data.labels).values)


def test_pool_decoding_equals_serial(cifar_slice, tmp_path):
    serial = load_image_dataset(cifar_slice, "train", cache_dir=tmp_path, use_cache=False, num_workers=1)
    pooled = load_image_dataset(cifar_slice, "train", cache_dir=tmp_path, use_cache=False, num_workers=2,
                                chunk_size=100)
    assert torch.equal(serial.images, pooled.images) and torch.equal(serial.labels, pooled.labels)
    assert not list(tmp_path.glob("*.safetensors"))  # use_cache=False writes nothing


# -- load_cifar10: source precedence and errors ---------------------------------------------------

def test_cifar10_env_var(cifar_slice, tmp_path, monkeypatch):
    monkeypatch.setenv("FGGP_CIFAR10_PATH", str(cifar_slice))
    data = load_cifar10("test", cache_dir=tmp_path)
    assert len(data) == 256 and data.source == str(cifar_slice.resolve())


def test_cifar10_missing_path_error(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "cifar10"
    monkeypatch.setenv("FGGP_CIFAR10_PATH", str(missing))
    with pytest.raises(DatasetUnavailableError) as info:
        load_cifar10("train", cache_dir=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and str(missing) in msg and "$FGGP_CIFAR10_PATH" in msg and "Fix:" in msg
    assert isinstance(info.value, OSError) and isinstance(info.value, DataSourceError)


def test_offline_hub_id_fails_fast_with_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("FGGP_CIFAR10_PATH", raising=False)
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as info:
        load_cifar10("train", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5  # no retries
    msg = str(info.value)
    assert "\n" not in msg
    assert "uoft-cs/cifar10" in msg and "offline" in msg and "FGGP_CIFAR10_PATH" in msg
    with pytest.raises(DatasetUnavailableError, match="fggp-test/no-such-dataset.*offline"):
        load_image_dataset("fggp-test/no-such-dataset", cache_dir=tmp_path)


def test_relative_env_path_is_a_path_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FGGP_CIFAR10_PATH", "cifar10")  # relative, missing: must not be tried on the Hub
    with pytest.raises(DatasetUnavailableError, match="'cifar10' from \\$FGGP_CIFAR10_PATH.*does not exist"):
        load_cifar10("train", cache_dir=tmp_path)


def test_hub_branch_keys_cache_by_fingerprint(cifar_slice, tmp_path, monkeypatch):
    """A Hub id goes through load_dataset (non-streaming); simulated here with the local parquet."""
    import fggp_hub.data.sources as sources_mod

    calls, real_load_dataset = [], datasets.load_dataset

    def fake_load_dataset(path, name=None, revision=None, split=None, **kwargs):
        calls.append((path, split, kwargs))
        assert path == "someone/cifar-like" and "streaming" not in kwargs
        files = {split: str(cifar_slice / f"{split}-00000-of-00001.parquet")}
        return real_load_dataset("parquet", data_files=files, split=split, cache_dir=str(tmp_path / "hf"))

    monkeypatch.setattr(sources_mod.datasets, "load_dataset", fake_load_dataset)
    first = load_image_dataset("someone/cifar-like", "test", cache_dir=tmp_path / "cache")
    assert not first.from_cache and len(first) == 256 and first.classes == CIFAR10_CLASSES
    assert first.cache_file.name.startswith("someone--cifar-like-test-")
    second = load_image_dataset("someone/cifar-like", "test", cache_dir=tmp_path / "cache")
    assert second.from_cache and torch.equal(first.images, second.images) and len(calls) == 2


def test_not_cifar_is_rejected(tmp_path):
    folder = make_fake_imagefolder(tmp_path / "pets", ("cat", "dog"), per_class=2)
    with pytest.raises(DatasetFormatError, match="not CIFAR-10"):
        load_cifar10("train", source=folder, cache_dir=tmp_path / "cache")


def test_unknown_split_lists_available(cifar_slice, tmp_path):
    with pytest.raises(DatasetFormatError, match="validation.*train.*test"):
        load_image_dataset(cifar_slice, "validation", cache_dir=tmp_path)


def test_resolve_source_kinds(cifar_slice, tmp_path):
    assert resolve_source(cifar_slice).kind == "dir"
    assert resolve_source(cifar_slice / "train-00000-of-00001.parquet").kind == "files"
    assert resolve_source("uoft-cs/cifar10").kind == "hub"
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        resolve_source(str(tmp_path / "missing.parquet"))
    with pytest.raises(DatasetUnavailableError, match="not found"):
        resolve_source([tmp_path / "a.parquet"])
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DatasetFormatError, match="parquet"):
        resolve_source(tmp_path / "x.csv")


# -- other datasets: ImageFolder, other column names, resizing ----------------------------------

def test_imagefolder_classes_pixels_and_splits(tmp_path):
    classes = ("zebra", "ant", "cat")  # written unsorted: class ids follow sorted folder names
    make_fake_imagefolder(tmp_path / "folder", classes, per_class=3, size=(20, 24), split="train")
    make_fake_imagefolder(tmp_path / "folder", classes, per_class=2, size=(20, 24), split="test", seed=1)
    data = load_image_dataset(tmp_path / "folder", "train", cache_dir=tmp_path / "cache")
    assert data.classes == ("ant", "cat", "zebra")
    assert data.images.shape == (9, 3, 20, 24)
    pixels = fake_pixels(9, (20, 24))
    order = sorted((name, i) for name in classes for i in range(3))  # files as datasets lists them
    for row, (name, i) in enumerate(order):
        written = pixels[classes.index(name) * 3 + i]  # PNG: lossless
        assert np.array_equal(data.images[row].permute(1, 2, 0).numpy(), written)
        assert data.classes[int(data.labels[row])] == name
    test = load_image_dataset(tmp_path / "folder", "test", cache_dir=tmp_path / "cache")
    assert len(test) == 6 and test.classes == data.classes


def test_other_column_names_and_resize(tmp_path):
    file = make_fake_parquet(tmp_path / "fine.parquet", n=6, classes=("a", "b", "c"), size=(40, 28),
                             image_column="image", label_column="fine_label")
    data = load_image_dataset(file, "train", image_size=32, cache_dir=tmp_path / "cache")
    assert data.images.shape == (6, 3, 32, 32) and data.classes == ("a", "b", "c")
    assert data.labels.tolist() == [0, 1, 2, 0, 1, 2]
    expected = np.asarray(Image.fromarray(fake_pixels(6, (40, 28))[4]).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(data.images[4].permute(1, 2, 0).numpy(), expected)
    native = load_image_dataset(file, "train", cache_dir=tmp_path / "cache")
    assert native.images.shape == (6, 3, 40, 28)


@pytest.mark.parametrize("num_workers, chunk_size", [(1, 2048), (2, 1)])  # in one chunk; across pool chunks
def test_mixed_sizes_need_image_size(tmp_path, num_workers, chunk_size):
    folder = tmp_path / "mixed"
    make_fake_imagefolder(folder, ("a",), per_class=2, size=16)
    make_fake_imagefolder(folder, ("b",), per_class=2, size=24, seed=3)
    with pytest.raises(DatasetFormatError, match="different sizes.*image_size"):
        load_image_dataset(folder, cache_dir=tmp_path / "cache", num_workers=num_workers, chunk_size=chunk_size)
    data = load_image_dataset(folder, image_size=(8, 12), cache_dir=tmp_path / "cache")
    assert data.images.shape == (4, 3, 8, 12)


def test_detect_columns():
    f = datasets.Features
    img, lbl, names = detect_columns(f({"image": datasets.Image(), "labels": datasets.ClassLabel(names=["x", "y"]),
                                        "id": datasets.Value("int64")}))
    assert (img, lbl, names) == ("image", "labels", ("x", "y"))
    img, lbl, names = detect_columns(f({"pic": datasets.Image(), "y": datasets.ClassLabel(names=["p"])}))
    assert (img, lbl) == ("pic", "y")
    img, lbl, names = detect_columns(f({"img": datasets.Image(), "label": datasets.Value("int32")}))
    assert names is None
    with pytest.raises(DatasetFormatError, match="label_column"):
        detect_columns(f({"img": datasets.Image(), "a": datasets.Value("int64"), "b": datasets.Value("int64")}))
    with pytest.raises(DatasetFormatError, match="image"):
        detect_columns(f({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["p"])}))
    assert detect_columns(f({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["p"]),
                             "coarse_label": datasets.ClassLabel(names=["q"])}), label_column="coarse_label")[1] \
        == "coarse_label"


# -- the cache ---------------------------------------------------------------------------------

def test_cache_created_then_reused_without_decoding(cifar_slice, tmp_path, monkeypatch):
    first = load_image_dataset(cifar_slice, "train", cache_dir=tmp_path)
    assert not first.from_cache and first.cache_file is not None and first.cache_file.is_file()
    assert first.cache_file.parent == tmp_path and first.cache_file.suffix == ".safetensors"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    def boom(*args, **kwargs):
        raise AssertionError("a cache hit must not decode or open the dataset")

    monkeypatch.setattr(load_mod, "decode_chunks", boom)
    monkeypatch.setattr(load_mod, "open_split", boom)
    second = load_image_dataset(cifar_slice, "train", cache_dir=tmp_path)
    assert second.from_cache and second.cache_file == first.cache_file
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.classes == CIFAR10_CLASSES
    # Options that change the pixels get their own file.
    monkeypatch.undo()
    resized = load_image_dataset(cifar_slice, "train", image_size=16, cache_dir=tmp_path)
    assert not resized.from_cache and resized.cache_file != first.cache_file


def test_cache_follows_source_changes(tmp_path):
    file = make_fake_parquet(tmp_path / "src" / "train.parquet", n=4)
    a = load_image_dataset(file, cache_dir=tmp_path / "cache")
    make_fake_parquet(file, n=6, seed=5)  # same path, new contents (size/mtime change)
    b = load_image_dataset(file, cache_dir=tmp_path / "cache")
    assert not b.from_cache and len(b) == 6 and b.cache_file != a.cache_file


@pytest.mark.parametrize("damage", ["garbage", "truncate", "bitflip"])
def test_corrupt_cache_is_rebuilt_with_warning(cifar_slice, tmp_path, damage):
    good = load_image_dataset(cifar_slice, "test", cache_dir=tmp_path)
    blob = bytearray(good.cache_file.read_bytes())
    if damage == "garbage":
        blob = bytearray(b"not a safetensors file at all")
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:  # one pixel byte near the end: header intact, only the checksum can tell
        blob[-3000] ^= 0xFF
    good.cache_file.write_bytes(bytes(blob))
    with pytest.warns(RuntimeWarning, match="unusable.*rebuilding"):
        rebuilt = load_image_dataset(cifar_slice, "test", cache_dir=tmp_path)
    assert not rebuilt.from_cache
    assert torch.equal(rebuilt.images, good.images) and torch.equal(rebuilt.labels, good.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_image_dataset(cifar_slice, "test", cache_dir=tmp_path)
    assert again.from_cache and torch.equal(again.images, good.images)


def test_cache_file_is_not_pickle(cifar_slice, tmp_path):
    data = load_image_dataset(cifar_slice, "test", cache_dir=tmp_path)
    blob = data.cache_file.read_bytes()
    n = int.from_bytes(blob[:8], "little")  # safetensors: u64 header length, then a JSON header
    header = json.loads(blob[8:8 + n])
    assert header["__metadata__"]["format"] == "fggp-hub-image-cache"
    assert header["images"]["dtype"] == "U8" and header["images"]["shape"] == [256, 3, 32, 32]
    assert b"__reduce__" not in blob and b"torch._utils" not in blob  # nothing pickled
    from safetensors import safe_open

    with safe_open(str(data.cache_file), framework="pt") as f:
        assert set(f.keys()) == {"images", "labels"}


def test_cached_tensors_are_copy_on_write(cifar_slice, tmp_path):
    load_image_dataset(cifar_slice, "test", cache_dir=tmp_path)
    cached = load_image_dataset(cifar_slice, "test", cache_dir=tmp_path)
    before = int(cached.images[0, 0, 0, 0])
    cached.images[0, 0, 0, 0] = (before + 1) % 256  # must not reach the file
    assert int(load_image_dataset(cifar_slice, "test", cache_dir=tmp_path).images[0, 0, 0, 0]) == before


def test_subset(cifar_slice, tmp_path):
    data = load_image_dataset(cifar_slice, "train", cache_dir=tmp_path)
    head = data.subset(slice(0, 10))
    assert len(head) == 10 and head.classes == data.classes and torch.equal(head.labels, data.labels[:10])
    picked = data.subset([5, 1])
    assert torch.equal(picked.images[1], data.images[1])


def test_undecodable_image_names_the_row(tmp_path):
    folder = make_fake_imagefolder(tmp_path / "broken", ("a", "b"), per_class=2)
    (folder / "b" / "0001.png").write_bytes(b"definitely not a png")
    with pytest.raises(DatasetFormatError, match="Row 3: cannot decode image"):
        load_image_dataset(folder, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.safetensors"))
