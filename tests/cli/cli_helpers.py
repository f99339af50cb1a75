"""Helpers of the CLI tests (a module of its own: importing ``conftest`` is fragile)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[2]
_DEFAULT_CIFAR = ROOT.parent / "shared" / "data" / "cifar10" / "plain_text"
TEST_IMAGES = 256
TRAIN_IMAGES = 256
REPO = "me/tiny"
NAME = "resnet20-cifar10-s90"


def _head(src: Path, dst: Path, rows: int) -> None:
    pf = pq.ParquetFile(src)
    batch = next(pf.iter_batches(batch_size=rows))
    pq.write_table(pa.Table.from_batches([batch], schema=pf.schema_arrow), dst)  # keeps the HF schema metadata


class Cli:
    """Runs ``fggp-hub`` in a subprocess with the session's environment."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def __call__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "fggp_hub.cli", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, env={**self.env, **(env or {})}, cwd=cwd or self.root, timeout=600)

    def json(self, *args: str, **kwargs) -> dict | list:
        out = self(*args, "--json", **kwargs)
        assert out.returncode == 0, f"fggp-hub {' '.join(map(str, args))} failed ({out.returncode}): {out.stderr[-2000:]}"
        return json.loads(out.stdout)


def _test_split(cli: Cli):
    from fggp_hub.data import load_cifar10

    return load_cifar10("test", source=cli.env["FGGP_CIFAR10_PATH"], cache_dir=cli.env["FGGP_DATA_CACHE"])


def direct_metrics(model: torch.nn.Module, cli: Cli) -> dict:
    """Top-1 (%) and mean cross-entropy on the slice's test images, computed here with plain torch."""
    test = _test_split(cli)
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    model.eval()
    with torch.no_grad():
        x = (test.images.float() / 255.0 - mean) / std
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, test.labels, reduction="sum").item()
        correct = int((logits.argmax(1) == test.labels).sum())
    n = int(test.labels.numel())
    return {"top1": 100.0 * correct / n, "loss": loss / n, "num_images": n}
