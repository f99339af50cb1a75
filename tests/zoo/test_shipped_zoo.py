"""The zoo as it ships: every bundled entry loads offline on a fresh machine and reproduces its card.

Nothing here is isolated from the packaged index: these tests read the real
``fggp_hub/hub/zoo_index.json`` and the real ``model_cards/<name>/`` folders, with an
empty local hub and huggingface_hub cache and ``HF_HUB_OFFLINE=1``, as a new user would.
ResNet-20 entries are re-evaluated on all 10,000 test images; VGG-19 entries on the exact
1,017-image subset their card records (a full VGG-19 pass is too slow for CI).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fggp_hub

ROOT = Path(__file__).resolve().parents[2]
_CIFAR = Path(os.environ.get("FGGP_CIFAR10_PATH") or ROOT.parent / "shared" / "data" / "cifar10" / "plain_text")
BUNDLED = [e for e in fggp_hub.list_models() if e.bundled] if "FGGP_ZOO_PACKAGE_INDEX" not in os.environ else []
VGG_SUBSET = 1017


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fresh-machine")
    env = {k: v for k, v in os.environ.items()
           if k not in ("FGGP_HUB", "FGGP_ZOO_INDEX", "FGGP_ZOO_PACKAGE_INDEX", "FGGP_BUNDLED_ZOO", "HF_TOKEN")}
    env.update(FGGP_HUB_HOME=str(root / "home"), HF_HOME=str(root / "hf-home"), HF_HUB_CACHE=str(root / "hf-cache"),
               FGGP_DATA_CACHE=str(root / "data-cache"), FGGP_CIFAR10_PATH=str(_CIFAR),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fggp_hub.cli", *args], capture_output=True, text=True, env=env,
                          cwd=env["FGGP_HUB_HOME"].rsplit("/", 1)[0], timeout=900)


def test_every_index_entry_is_bundled_and_pinned():
    entries = [e for e in fggp_hub.list_models() if e.source == "package"] if "FGGP_ZOO_PACKAGE_INDEX" not in os.environ else []
    for entry in entries:  # a packaged name without a bundled copy would not load on a fresh machine
        assert entry.bundled and set(entry.bundled) == {"config.json", "model.sparse.safetensors"}, entry.name
        assert entry.repo_id == f"fggp-hub/{entry.name}" and entry.hub == "hf"
        assert not (ROOT / "model_cards" / entry.name / "model.safetensors").exists()


@pytest.mark.skipif(not BUNDLED, reason="the packaged zoo has no bundled entries yet")
def test_list_shows_every_entry_available_without_warnings(fresh_env):
    proc = _cli(fresh_env, "list", "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    for entry in BUNDLED:
        assert rows[entry.name]["available"], rows[entry.name]


@pytest.mark.parametrize("name", [e.name for e in BUNDLED])
def test_entry_loads_offline_and_its_card_reproduces(name, fresh_env):
    if not any(_CIFAR.glob("test-*.parquet")):
        pytest.skip(f"CIFAR-10 parquet folder not found at {_CIFAR}")
    entry = next(e for e in BUNDLED if e.name == name)
    code = (f"import fggp_hub, json; m = fggp_hub.load({name!r}); "
            "print(json.dumps({'origin': m.hub_info['origin'], 'sparsity': m.hub_info['sparsity']}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=fresh_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    assert info["origin"] == "bundled" and info["sparsity"] == pytest.approx(entry.sparsity, abs=1e-9)
    subset = ["--num-images", str(VGG_SUBSET)] if entry.architecture and "vgg" in entry.architecture else []
    check = _cli(fresh_env, "eval", name, "--check", "--no-progress", "--no-latency", *subset)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]


def _card_top1(folder: Path, split: str) -> float:
    """The card's top-1 for ``split`` ("test" or "test[:N]"), read with huggingface_hub's own card parser."""
    from huggingface_hub import ModelCard

    for result in ModelCard.load(folder / "README.md").data.eval_results or []:
        if result.dataset_split == split and result.metric_type == "accuracy":
            return float(result.metric_value)
    raise AssertionError(f"{folder.name}: the card has no top-1 for split {split!r}")


# Independent of fggp_hub's eval code: pyarrow + PIL decode, torch normalisation, a plain loop.
PLAIN_CHECK = [e.name for e in BUNDLED if "vgg" in (e.architecture or "") or e.name == "resnet20-cifar10-s95"]


@pytest.mark.parametrize("name", PLAIN_CHECK)
def test_plain_timm_and_torch_reproduce_the_card(name):
    pq = pytest.importorskip("pyarrow.parquet")
    files = sorted(_CIFAR.glob("test-*.parquet"))
    if not files:
        pytest.skip(f"CIFAR-10 parquet folder not found at {_CIFAR}")
    import io

    import numpy as np
    import timm
    import torch
    from PIL import Image

    from fggp_hub.hub.sparse_format import load_file as load_compact

    folder = ROOT / "model_cards" / name
    config = json.loads((folder / "config.json").read_text())
    # exactly the card's "By hand" recipe (model_args also carries num_classes since timm's conventions)
    model = timm.create_model(config["architecture"], **{"num_classes": config["num_classes"], **config.get("model_args", {})})
    model.load_state_dict(load_compact(folder / "model.sparse.safetensors"))
    model.eval()
    # FGGP_ZOO_FULL_CHECK=1: VGG-19 on all 10,000 images too (minutes on a CPU; run before bundling)
    n = VGG_SUBSET if "vgg" in config["architecture"] and not os.environ.get("FGGP_ZOO_FULL_CHECK") else None
    table = pq.read_table(files).slice(0, n)  # the copy's order: the card's test[:N] is the first N rows
    images = np.stack([np.asarray(Image.open(io.BytesIO(item["bytes"])).convert("RGB"))
                       for item in table.column("img").to_pylist()])
    labels = torch.tensor(table.column("label").to_pylist())
    cfg = config["pretrained_cfg"]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        correct = sum(int((model(chunk).argmax(1) == y).sum()) for chunk, y in zip(x.split(250), labels.split(250)))
    top1 = 100.0 * correct / len(labels)
    assert top1 == pytest.approx(_card_top1(folder, "test" if n is None else f"test[:{n}]"), abs=0.3)
