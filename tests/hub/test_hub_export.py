"""export(): the folder timm and fggp_hub read, the card, and atomic writing."""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from timm.models import PretrainedCfg

import fggp_hub
from hub_helpers import magnitude_prune_, randomise_bn_
from fggp_hub.constants import CIFAR10_JPEG_LABEL
from fggp_hub.hub.errors import ExportError
from fggp_hub.hub.integrity import sha256_file
from fggp_hub.pruning import Pruner, sparsity_stats

export_module = importlib.import_module("fggp_hub.hub.export")  # the package attribute is the function


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


def test_folder_layout_and_timm_config(exported):
    model, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "eval_results.json",
        "model.safetensors",
        "model.sparse.safetensors",
        "recipe.yaml",
        "sparsity_per_layer.png",
        "sparsity_schedule.png",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "fggp_resnet20_cifar" and config["num_classes"] == 10
    assert set(config["pretrained_cfg"]) <= {f.name for f in dataclasses.fields(PretrainedCfg)}  # else timm raises
    assert config["model_args"]["num_classes"] == 10
    block = config["sparsity"]
    stats = sparsity_stats(model)
    assert block["method"] == "fggp" and block["dataset"] == CIFAR10_JPEG_LABEL
    assert abs(block["sparsity"] - stats["sparsity"]) < 1e-12 and abs(block["sparsity"] - 0.9) < 1e-4
    assert block["sparsity_all_params"] == stats["sparsity_all_params"]
    assert block["layers"].keys() == stats["layers"].keys()
    assert block["schedule"]["final_density"] == 0.1 and block["recipe"]["epochs"] == 2
    assert block["results"]["top1"] == 71.25 and block["dense_baseline"] == {"top1": 74.5}
    assert block["name"] == "resnet20-cifar10-s90"
    for name, info in block["files"].items():
        assert sha256_file(folder / name) == info["sha256"] and (folder / name).stat().st_size == info["size"]
    assert block["files"]["model.sparse.safetensors"]["format"] == "fggp-sparse/1"
    assert json.loads((folder / "eval_results.json").read_text())["dataset"] == CIFAR10_JPEG_LABEL


def test_weights_have_standard_keys_and_exact_zeros(exported):
    model, folder = exported
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        weights = {k: f.get_tensor(k) for k in keys}
    assert keys == set(timm.create_model("fggp_resnet20_cifar").state_dict())
    assert not any(k.endswith(("_orig", "_mask")) or "parametrizations" in k for k in keys)
    for name, p in model.state_dict().items():
        assert torch.equal(weights[name], p), name
    zero = weights["layer3.0.conv1.weight"] == 0
    assert zero.float().mean() > 0.5 and not torch.signbit(weights["layer3.0.conv1.weight"][zero]).any()  # +0.0 only


def test_plain_timm_loads_the_folder_with_identical_outputs(exported, inputs):
    model, folder = exported
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded(inputs), model(inputs))
    assert tuple(loaded.pretrained_cfg["mean"]) == tuple(model.pretrained_cfg["mean"])


def test_channels_last_and_wrapped_model_exports(pruned_resnet20, tmp_path, inputs):
    model = pruned_resnet20.to(memory_format=torch.channels_last)
    wrapped = torch.nn.DataParallel(model)  # unwrapped by export
    out = fggp_hub.export(wrapped, tmp_path / "cl", pruning="gmp")
    loaded = fggp_hub.load(out)
    reference = model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        assert torch.equal(loaded(inputs), reference(inputs))


def test_pruner_trained_model_round_trips(tmp_path, inputs):
    torch.manual_seed(0)
    model = timm.create_model("fggp_resnet20_cifar")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    pruner = Pruner(model, optimizer, final_sparsity=0.8, total_steps=6, interval=2, end_fraction=0.67, rate=0.9)
    for _ in range(6):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), torch.arange(4)).backward()
        optimizer.step()
    model.eval()
    out = fggp_hub.export(model, tmp_path / "trained", pruning=pruner, results={"top1": 10.0})
    block = json.loads((out / "config.json").read_text())["sparsity"]
    assert abs(block["sparsity"] - pruner.sparsity) < 1e-12 and block["target_sparsity"] == pytest.approx(0.8)
    assert block["pruning"]["method"] == "fggp" and block["schedule"]["total_steps"] == 6
    loaded = fggp_hub.load(out)
    with torch.no_grad():
        assert torch.equal(loaded(inputs), model(inputs))


def test_torch_prune_and_parametrize_masks_are_folded(pruned_resnet20, tmp_path, inputs):
    from torch.nn.utils import parametrize, prune

    model = pruned_resnet20
    prune.l1_unstructured(model.layer1[0].conv1, "weight", amount=0.5)

    class Mask(torch.nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, w):
            return w * self.mask

    fc = model.fc
    parametrize.register_parametrization(fc, "weight", Mask((torch.rand_like(fc.weight) > 0.5).float()))
    with torch.no_grad():
        reference = model(inputs)
    out = fggp_hub.export(model, tmp_path / "folded")
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "layer1.0.conv1.weight" in keys and "fc.weight" in keys
    assert not any("_orig" in k or "_mask" in k or "parametrizations" in k for k in keys)
    with torch.no_grad():
        assert torch.allclose(fggp_hub.load(out)(inputs), reference, atol=1e-6)


def test_model_card(exported):
    model, folder = exported
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "timm" and data.pipeline_tag == "image-classification"
    assert {"pruning", "sparse", "fggp", "cifar10", "sparsity-90"} <= set(data.tags)
    assert data.datasets == ["uoft-cs/cifar10"] and data.metrics == ["accuracy"]
    (result,) = data.eval_results
    assert result.metric_value == 71.25 and result.dataset_name == CIFAR10_JPEG_LABEL and result.dataset_split == "test"
    assert abs(data.to_dict()["sparsity"] - sparsity_stats(model)["sparsity"]) < 1e-12
    text = card.text
    for needle in (
        "74.50%",  # dense baseline in the summary
        "71.25%",
        'fggp_hub.load("resnet20-cifar10-s90")',
        "timm.create_model(\"hf-hub:",
        "local-dir:",
        'load_compact("model.sparse.safetensors")',
        "![Per-layer sparsity](sparsity_per_layer.png)",
        "![Sparsity schedule](sparsity_schedule.png)",
        "epochs: 2",
        "accelerate launch recipes/prune.py",
        "## Evaluation",
        "## Limitations",
        "JPEG-degraded",
        "@inproceedings{zhu2025fggp",
    ):
        assert needle in text, needle
    for layer in sparsity_stats(model)["layers"]:
        assert f"| `{layer}` |" in text
    for png in ("sparsity_per_layer.png", "sparsity_schedule.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recipe_yaml_is_copied_verbatim(pruned_resnet20, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# resnet20 at 90%\nmodel: fggp_resnet20_cifar\nepochs: 3  # short\n")
    out = fggp_hub.export(pruned_resnet20, tmp_path / "r", recipe=recipe, dataset="shared", compact=False)
    assert (out / "recipe.yaml").read_text() == recipe.read_text()
    block = json.loads((out / "config.json").read_text())["sparsity"]
    assert block["recipe"] == {"model": "fggp_resnet20_cifar", "epochs": 3} and block["dataset"] == CIFAR10_JPEG_LABEL
    assert "model.sparse.safetensors" not in block["files"]
    assert fggp_hub.load(out).hub_info["weights"] == "model.safetensors"  # compact falls back to dense


# --------------------------------------------------------------------------- atomicity
def test_interrupted_export_keeps_the_old_folder(exported, pruned_resnet20, monkeypatch):
    _, folder = exported
    before = _tree(folder)
    siblings = _siblings(folder)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C while the card is written

    monkeypatch.setattr(export_module, "make_card", boom)
    with pytest.raises(KeyboardInterrupt):
        fggp_hub.export(pruned_resnet20, folder, pruning="gmp")
    assert _tree(folder) == before and _siblings(folder) == siblings
    with pytest.raises(KeyboardInterrupt):
        fggp_hub.export(pruned_resnet20, folder.parent / "new", pruning="gmp")
    assert not (folder.parent / "new").exists() and _siblings(folder) == siblings


def test_replacing_without_renameat2_leaves_nothing_behind(exported, pruned_resnet20, monkeypatch):
    _, folder = exported
    monkeypatch.setattr(export_module, "_exchange", lambda a, b: False)
    siblings = _siblings(folder)
    fggp_hub.export(pruned_resnet20, folder, pruning="gmp", results={"top1": 1.0})
    assert json.loads((folder / "config.json").read_text())["sparsity"]["method"] == "gmp"
    assert _siblings(folder) == siblings


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_leftovers_of_a_crash_are_recovered(exported):
    _, folder = exported
    before = _tree(folder)
    pid = _dead_pid()
    aside = folder.parent / f".{folder.name}.old-{pid}-0a1b2c3d"
    os.rename(folder, aside)  # a crash between the two renames of the portable fallback
    half = folder.parent / f".{folder.name}.tmp-{pid}-deadbeef"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"half written")
    export_module._cleanup_stale(folder)
    assert _tree(folder) == before and not aside.exists() and not half.exists()


def test_killed_export_leaves_the_old_folder(exported, tmp_path):
    """A real crash (os._exit in the middle of writing the weights) in a child process."""
    _, folder = exported
    before = _tree(folder)
    script = textwrap.dedent(
        f"""
        import os, timm, fggp_hub, safetensors.torch
        from fggp_hub.hub import sparse_format
        real = sparse_format.canonical_header
        def crash(data):
            out = real(data)
            os._exit(9)  # power cut while the compact file is being written
        sparse_format.canonical_header = crash
        model = timm.create_model("fggp_resnet20_cifar")
        fggp_hub.export(model, {str(folder)!r}, pruning="gmp")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert _tree(folder) == before  # the old export, untouched
    leftovers = [n for n in _siblings(folder) if n.startswith(f".{folder.name}.tmp-")]
    assert len(leftovers) == 1  # hidden, and removed by the next export
    fggp_hub.load(folder)
    fggp_hub.export(fggp_hub.load(folder), folder, pruning="fggp")
    assert not [n for n in _siblings(folder) if n.startswith(".")]


def test_refuses_to_overwrite_what_is_not_an_export(pruned_resnet20, tmp_path, exported):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ExportError, match="not an fggp-hub export"):
        fggp_hub.export(pruned_resnet20, precious)
    assert (precious / "thesis.tex").read_text() == "years of work"
    _, folder = exported
    with pytest.raises(ExportError, match="overwrite=True"):
        fggp_hub.export(pruned_resnet20, folder, overwrite=False)


def test_non_timm_models_are_refused(tmp_path):
    with pytest.raises(ExportError, match="timm.create_model"):
        fggp_hub.export(torch.nn.Sequential(torch.nn.Linear(2, 2)), tmp_path / "x")


def test_vgg19_export_is_at_least_12x_smaller_at_95(tmp_path):
    torch.manual_seed(0)
    model = magnitude_prune_(randomise_bn_(timm.create_model("fggp_vgg19_bn_cifar"), 0), 0.95).eval()
    out = fggp_hub.export(model, tmp_path / "vgg", pruning="gmp", name="vgg19-cifar10-s95")
    files = json.loads((out / "config.json").read_text())["sparsity"]["files"]
    ratio = files["model.safetensors"]["size"] / files["model.sparse.safetensors"]["size"]
    assert ratio >= 12.0, ratio


def test_a_top_1_accuracy_card_metric_is_read_by_every_consumer(exported):
    """One metric-type map: a card written with metric type top_1_accuracy is compared by eval --check too."""
    from fggp_hub.eval import card_metrics
    from fggp_hub.hub.records import record_from_folder

    _, folder = exported
    card = folder / "README.md"
    text = card.read_text()
    assert "    - type: accuracy\n      value: 71.25" in text
    card.write_text(text.replace("    - type: accuracy\n      value: 71.25", "    - type: top_1_accuracy\n      value: 70.5"))
    assert card_metrics(folder)["top1"] == 70.5  # the card's model-index wins over config.json's record
    assert record_from_folder(folder).top1 == 70.5


def test_card_has_model_stats_protocol_note_and_world_readable_files(pruned_resnet20, tmp_path):
    from fggp_hub.recipes import load_recipe, recipe_to_dict

    root = Path(__file__).resolve().parents[2] / "recipes"
    short = recipe_to_dict(load_recipe(root / "resnet20_cifar10_zoo_cpu.yaml"))
    folder = fggp_hub.export(pruned_resnet20, tmp_path / "resnet20-cifar10-s90", recipe=short,
                             results={"top1": 50.0, "train_wall_s": 1800.0, "hardware": "AMD EPYC, 2 cores"})
    card = (folder / "README.md").read_text()
    assert "## Model stats" in card and "GMACs per image (32x32), effective" in card
    assert "Reduced-budget run, not the paper's protocol" in card and "15 epochs at batch 128" in card
    assert "trained in 0.50 h on AMD EPYC, 2 cores" in card
    macs = json.loads((folder / "config.json").read_text())["sparsity"]["macs"]
    assert 0 < macs["effective"] < macs["dense"]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in folder.iterdir())
    paper = recipe_to_dict(load_recipe(root / "vgg19_cifar10_s90.yaml"))
    again = fggp_hub.export(pruned_resnet20, tmp_path / "paper" / "resnet20-cifar10-s90", recipe=paper)
    assert "Reduced-budget" not in (again / "README.md").read_text()


def test_sparsity_info_is_the_typed_block_and_writes_back_byte_identically(exported, tmp_path):
    """config.json's "sparsity" block as a SparsityInfo: made by export, validated on read, on the loaded model,
    and written back exactly as read (only replaced fields change)."""
    import dataclasses
    import json

    from fggp_hub.hub.card import record_dense_baseline
    from fggp_hub.hub.errors import CorruptCheckpointError
    from fggp_hub.hub.integrity import read_export
    from fggp_hub.hub.sparsity_info import FileInfo, LayerInfo, SparsityInfo

    _, folder = exported
    raw = (folder / "config.json").read_text(encoding="utf-8")
    config, info = read_export(folder)
    assert isinstance(info, SparsityInfo) and info.name == "resnet20-cifar10-s90" and info.method == "fggp"
    assert info.top1 == 71.25 and info.dense_top1 == 74.5 and info.schedule_settings["total_steps"] == 1000
    assert isinstance(info.files["model.safetensors"], FileInfo) and info.files["model.safetensors"].size > 0
    assert all(isinstance(layer, LayerInfo) and 0 <= layer.sparsity <= 1 for layer in info.layers.values())
    assert json.dumps(info.into_config(config), indent=2) + "\n" == raw  # read -> write: the same bytes
    made = SparsityInfo(**{f.name: getattr(info, f.name) for f in dataclasses.fields(SparsityInfo) if f.init})
    assert made.to_dict() == json.loads(raw)["sparsity"] and list(made.to_dict()) == list(json.loads(raw)["sparsity"])

    model = fggp_hub.load(folder)
    assert model.sparsity_info == info and model.hub_info["sparsity"] == info.sparsity  # hub_info stays a dict

    changed = info.replace(dense_baseline={"top1": 80.0})
    assert changed.dense_top1 == 80.0 and info.dense_top1 == 74.5  # frozen: a copy
    record_dense_baseline(folder, 80.0)
    after = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    before = json.loads(raw)
    assert after["sparsity"].pop("dense_baseline") == {"top1": 80.0}
    before["sparsity"].pop("dense_baseline")
    assert after == before  # nothing else in config.json changed

    bad = json.loads(raw)
    bad["sparsity"]["pruning"] = "fggp"
    (folder / "config.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(CorruptCheckpointError, match="sparsity.pruning"):
        read_export(folder)
