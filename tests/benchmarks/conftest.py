"""Fixtures of the benchmark smoke tests: a small CIFAR-10 slice, caches and hubs in tmp dirs."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# The shared offline copy (see shared/data/cifar10/SOURCE.md); FGGP_CIFAR10_PATH wins when set.
_DEFAULT_CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10" / "plain_text"


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """No benchmark run in a test may write outside temporary folders."""
    monkeypatch.setenv("FGGP_DATA_CACHE", str(tmp_path_factory.mktemp("data-cache")))
    monkeypatch.setenv("FGGP_HUB_HOME", str(tmp_path_factory.mktemp("hub-home")))


def _head(src: Path, dst: Path, rows: int) -> None:
    pf = pq.ParquetFile(src)
    batch = next(pf.iter_batches(batch_size=rows))
    pq.write_table(pa.Table.from_batches([batch], schema=pf.schema_arrow), dst)  # keeps the HF schema metadata


@pytest.fixture(scope="session")
def cifar_slice(tmp_path_factory) -> Path:
    """A CIFAR-10 folder in the Hub layout with the first 256 train and 64 test rows of the real data."""
    src = Path(os.environ.get("FGGP_CIFAR10_PATH") or _DEFAULT_CIFAR)
    if not (src.is_dir() and any(src.glob("train-*.parquet")) and any(src.glob("test-*.parquet"))):
        pytest.skip(f"CIFAR-10 parquet folder not found at {src} (set FGGP_CIFAR10_PATH)")
    out = tmp_path_factory.mktemp("cifar_slice") / "plain_text"
    out.mkdir()
    _head(next(src.glob("train-*.parquet")), out / "train-00000-of-00001.parquet", 256)
    _head(next(src.glob("test-*.parquet")), out / "test-00000-of-00001.parquet", 64)
    return out
