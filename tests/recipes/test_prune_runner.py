"""recipes/prune.py end to end on CPU with a tiny CIFAR-10 slice (subprocesses, as users run it)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "recipes" / "prune.py"
TINY = ["--data.train_subset", "512", "--data.test_subset", "500", "--train.epochs", "2",
        "--pruning.interval", "2", "--tracker", "null", "--train.log_every", "2"]


def _env(tmp_path):
    env = dict(os.environ)
    env.setdefault("FGGP_CIFAR10_PATH", str(ROOT.parent / "shared" / "data" / "cifar10" / "plain_text"))
    env["FGGP_DATA_CACHE"] = str(tmp_path.parent / "data-cache")  # shared by this module's tests
    env["FGGP_HUB_HOME"] = str(tmp_path / "fggp-home")
    env["HF_HUB_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = "1"
    return env


def _run(args, tmp_path, launcher=None, check=True):
    cmd = (launcher or [sys.executable]) + [str(RUNNER)] + args
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _results(folder):
    return json.loads((Path(folder) / "results.json").read_text())


def test_recipe_trains_prunes_exports_and_loads(tmp_path):
    hub = tmp_path / "hub"
    proc = _run(TINY + ["--output_dir", "run", "--export.hub", str(hub), "--export.name", "resnet20-cifar10-s90-test"], tmp_path)
    res = _results(tmp_path / "run")
    assert res["sparsity"] == pytest.approx(0.9, abs=1e-4)  # target reached (t_fin = 13 of 16 steps)
    assert res["num_images"] == 500 and res["optimizer_steps"] == 16
    assert "local/resnet20-cifar10-s90-test" in proc.stdout
    resolved = (tmp_path / "run" / "recipe.resolved.yaml").read_text()
    assert "train_subset: 512" in resolved and "interval: 2" in resolved

    import fggp_hub
    from fggp_hub.data import load_cifar10, make_loader

    model = fggp_hub.load("local/resnet20-cifar10-s90-test", hub=str(hub))
    assert not model.training
    assert fggp_hub.sparsity_stats(model)["sparsity"] == pytest.approx(res["sparsity"], abs=1e-9)
    test = load_cifar10("test", source=_env(tmp_path)["FGGP_CIFAR10_PATH"], cache_dir=_env(tmp_path)["FGGP_DATA_CACHE"])
    test = test.subset(slice(0, 500))
    correct = 0
    with torch.no_grad():
        for x, y in make_loader(test, 250, train=False):
            correct += int((model(x).argmax(1) == y).sum())
    assert 100.0 * correct / 500 == pytest.approx(res["top1"], abs=1e-9)  # the card's number reproduces

    # Running the same command again must not destroy the finished run.
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    again = _run(TINY + ["--output_dir", "run", "--export.hub", str(hub)], tmp_path, check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    no_value = _run(TINY + ["--output_dir", "run", "--resume"], tmp_path, check=False)
    assert no_value.returncode == 2 and "--resume needs a value" in no_value.stderr
    changed = _run(TINY + ["--output_dir", "run", "--resume", "auto", "--pruning.final_sparsity", "0.8"], tmp_path, check=False)
    assert changed.returncode == 2 and "pruning.final_sparsity" in changed.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


def test_resume_gives_the_same_masks_and_weights(tmp_path):
    args = TINY + ["--export.enabled", "false"]
    _run(args + ["--output_dir", "full"], tmp_path)
    _run(args + ["--output_dir", "split", "--train.max_steps", "5"], tmp_path)  # stops mid-epoch 1
    assert _results(tmp_path / "split")["optimizer_steps"] == 5
    _run(args + ["--output_dir", "split", "--resume", "auto"], tmp_path)
    full, split = _results(tmp_path / "full"), _results(tmp_path / "split")
    assert split["optimizer_steps"] == full["optimizer_steps"] == 16
    assert split["mask_sha256"] == full["mask_sha256"]
    assert split["loss"] == full["loss"] and split["top1"] == full["top1"]
    from safetensors.torch import load_file

    def ckpt(run):
        return sorted((tmp_path / run / "checkpoints").glob("step_*"))[-1] / "model.safetensors"

    a, b = load_file(ckpt("full")), load_file(ckpt("split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # A run that died before its first checkpoint (only its log and recipe left) starts over.
    import shutil

    for name in ("checkpoints", "results.json"):
        target = tmp_path / "split" / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    again = _run(args + ["--output_dir", "split", "--resume", "auto"], tmp_path)
    assert "stopped before its first checkpoint, starting it over" in again.stdout
    assert _results(tmp_path / "split")["mask_sha256"] == full["mask_sha256"]


def test_two_processes_hold_identical_masks_and_match_one_process(tmp_path):
    args = TINY + ["--export.enabled", "false", "--pruning.check_sync", "true"]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env_patch = {"ACCELERATE_USE_CPU": "1"}
    os.environ.update(env_patch)
    try:
        _run(args + ["--output_dir", "two"], tmp_path, launcher=launcher)
    finally:
        os.environ.pop("ACCELERATE_USE_CPU")
    _run(args + ["--output_dir", "one"], tmp_path)
    one, two = _results(tmp_path / "one"), _results(tmp_path / "two")
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["num_images"] == 500  # gather_for_metrics: exactly the test slice, no padding
    assert two["optimizer_steps"] == one["optimizer_steps"]
    assert two["sparsity"] == one["sparsity"]


def test_bad_recipe_input_is_one_clear_line(tmp_path):
    proc = _run(["--train.epoch", "2"], tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown recipe key 'train.epoch' (did you mean train.epochs?)"
    proc = _run(["--recipe", "nope.yaml"], tmp_path, check=False)
    assert proc.returncode == 2 and "recipe file 'nope.yaml' not found" in proc.stderr


def test_a_second_run_does_not_silently_replace_a_published_model(tmp_path):
    """Same recipe, other output folder, other seed: the export is kept, the published model is not replaced."""
    hub = tmp_path / "hub"
    base = TINY + ["--export.hub", str(hub), "--export.name", "resnet20-cifar10-s90-twice"]
    _run(base + ["--output_dir", "first"], tmp_path)
    second = _run(base + ["--output_dir", "second", "--seed", "1"], tmp_path, check=False)
    assert second.returncode == 1 and "not published" in second.stderr and "--export.overwrite true" in second.stderr
    assert (tmp_path / "second" / "export" / "resnet20-cifar10-s90-twice" / "config.json").is_file()
    import fggp_hub

    first = json.loads((tmp_path / "first" / "results.json").read_text())
    model = fggp_hub.load("local/resnet20-cifar10-s90-twice", hub=str(hub))
    assert model.hub_info["results"]["top1"] == first["top1"]
    _run(base + ["--output_dir", "third", "--seed", "1", "--export.overwrite", "true"], tmp_path)


def test_bad_model_data_and_image_size_are_one_line_and_the_card_records_the_trained_size(tmp_path):
    def one_line_error(proc, text):
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and text in errors[0], proc.stderr[-2000:]

    args = TINY + ["--export.enabled", "false"]
    one_line_error(_run(args + ["--output_dir", "a", "--model", "resnet20_nonexistent"], tmp_path, check=False),
                   "is not a timm architecture")
    one_line_error(_run(args + ["--output_dir", "b", "--data.dataset", str(tmp_path / "no-such-data")], tmp_path,
                        check=False), "data.dataset")
    one_line_error(_run(args + ["--output_dir", "c", "--model", "fggp_vgg19_bn_cifar", "--data.image_size", "8"],
                        tmp_path, check=False), "cannot take 8x8 images")
    _run(TINY + ["--output_dir", "d", "--data.image_size", "40", "--export.hub", str(tmp_path / "hub"),
                 "--export.name", "resnet20-cifar10-s90-px40"], tmp_path)
    config = json.loads((tmp_path / "d" / "export" / "resnet20-cifar10-s90-px40" / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [3, 40, 40]
