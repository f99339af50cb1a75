"""Fixtures for the data tests: small slices of the shared CIFAR-10 parquet, caches in tmp dirs."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# The shared offline copy (see shared/data/cifar10/SOURCE.md); FGGP_CIFAR10_PATH wins when set.
_DEFAULT_CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10" / "plain_text"


@pytest.fixture(autouse=True)
def _data_cache_in_tmp(tmp_path_factory, monkeypatch):
    """No test may write a cache outside a temporary folder, even when it forgets cache_dir=."""
    monkeypatch.setenv("FGGP_DATA_CACHE", str(tmp_path_factory.mktemp("default-cache")))


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The full CIFAR-10 parquet folder (train + test); skips when it is not on this machine."""
    path = Path(os.environ.get("FGGP_CIFAR10_PATH") or _DEFAULT_CIFAR)
    if not (path.is_dir() and any(path.glob("train-*.parquet")) and any(path.glob("test-*.parquet"))):
        pytest.skip(f"CIFAR-10 parquet folder not found at {path} (set FGGP_CIFAR10_PATH)")
    return path


def _head(src: Path, dst: Path, rows: int) -> None:
    pf = pq.ParquetFile(src)
    batch = next(pf.iter_batches(batch_size=rows))
    pq.write_table(pa.Table.from_batches([batch], schema=pf.schema_arrow), dst)  # keeps the HF schema metadata


@pytest.fixture(scope="session")
def cifar_slice(cifar_dir: Path, tmp_path_factory) -> Path:
    """A CIFAR-10 folder in the Hub layout with the first 512 train and 256 test rows."""
    out = tmp_path_factory.mktemp("cifar_slice") / "plain_text"
    out.mkdir()
    _head(next(cifar_dir.glob("train-*.parquet")), out / "train-00000-of-00001.parquet", 512)
    _head(next(cifar_dir.glob("test-*.parquet")), out / "test-00000-of-00001.parquet", 256)
    return out
