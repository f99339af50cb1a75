"""Repeat loads skip re-hashing unchanged files inside the hub's caches; any change is re-hashed."""
from __future__ import annotations

import os

import pytest

import fggp_hub
from fggp_hub.hub import integrity
from fggp_hub.hub.errors import CorruptCheckpointError

from .test_sparse import _pruned


@pytest.fixture()
def hashes(monkeypatch, tmp_path):
    monkeypatch.setenv("FGGP_HUB_HOME", str(tmp_path / "home"))
    calls = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda path, *a, **k: calls.append(str(path)) or real(path, *a, **k))
    return calls


def test_unchanged_file_in_the_hub_cache_is_hashed_once(tmp_path, hashes):
    folder = fggp_hub.export(_pruned("fggp_resnet20_cifar", 0.9, "global"), tmp_path / "home" / "hub" / "m")
    hashes.clear()
    fggp_hub.load(folder)
    assert len(hashes) == 1
    fggp_hub.load(folder)
    fggp_hub.load(folder)
    assert len(hashes) == 1  # trusted by the record
    weights = folder / "model.sparse.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, new content (the last byte is tensor data)
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="does not match"):
        fggp_hub.load(folder)
    assert len(hashes) == 2


def test_touched_back_file_is_still_rehashed(tmp_path, hashes):
    folder = fggp_hub.export(_pruned("fggp_resnet20_cifar", 0.9, "global"), tmp_path / "home" / "hub" / "m")
    fggp_hub.load(folder)
    weights = folder / "model.sparse.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back: ctime still moved
    with pytest.raises(CorruptCheckpointError):
        fggp_hub.load(folder)


def test_files_outside_the_hub_cache_are_always_hashed(tmp_path, hashes):
    folder = fggp_hub.export(_pruned("fggp_resnet20_cifar", 0.9, "global"), tmp_path / "elsewhere" / "m")
    hashes.clear()
    fggp_hub.load(folder)
    fggp_hub.load(folder)
    assert len(hashes) == 2
    assert not (tmp_path / "home" / "verified").exists()
