"""recipes/campaign.py on CPU: two tiny runs side by side, stopped at the budget, resumed exactly, packed, unpacked.

The GPU campaigns are fired where a GPU is lent; here the same code runs ResNet-20 on a few
hundred CIFAR-10 images, so the budget stop, the resume and the packing are checked in CI.
"""
import importlib.util
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "recipes" / "quick_cpu.yaml"
# 256 CIFAR-10 images at batch 64, 2 epochs: T = 8 steps, pruned to 90 % by step 6 (dt = 1)
TINY = {"tracker": None, "data.train_subset": None, "data.test_subset": None, "train.epochs": 2,
        "train.eval_every": 1, "train.log_every": 1, "pruning.interval": 1}


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


campaign = _load_module("fggp_campaign", ROOT / "recipes" / "campaign.py")


def _straight_run(run, out_dir: Path) -> dict:
    """The run uninterrupted, by the runner's main() in this process (one thread, like each worker):
    a third worker process would spend most of its time importing."""
    import torch
    from accelerate.state import AcceleratorState, GradientState

    runner = _load_module("fggp_prune_runner", ROOT / "recipes" / "prune.py")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert runner.main(["--recipe", str(run.recipe), f"--output-dir={out_dir}", *run.override_args(),
                            "--export.enabled=false"]) == 0
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    return json.loads((out_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def cifar_slice(tmp_path_factory):
    """The first 256 training and 200 test images of the shared CIFAR-10 copy, same files and schema:
    decoding them takes a moment, where the whole set takes half a minute on two busy cores."""
    import pyarrow.parquet as pq

    source = Path(os.environ.get("FGGP_CIFAR10_PATH", ROOT.parent / "shared" / "data" / "cifar10" / "plain_text"))
    folder = tmp_path_factory.mktemp("cifar10-slice")
    for split, n in (("train", 256), ("test", 200)):
        path = next(source.glob(f"{split}-*.parquet"))
        pq.write_table(pq.read_table(path).slice(0, n), folder / path.name)
    return folder


@pytest.fixture
def env(tmp_path, monkeypatch, cifar_slice):
    """Workers inherit this process's environment: offline, the CIFAR slice, one thread each, a private hub."""
    monkeypatch.setenv("FGGP_CIFAR10_PATH", str(cifar_slice))
    monkeypatch.setenv("FGGP_DATA_CACHE", str(cifar_slice.parent / "data-cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same in every run, so resumed and straight runs compare bit for bit
    monkeypatch.setenv("FGGP_HUB_HOME", str(tmp_path / "fggp-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write(path: Path, root: Path, budget_s: float, **extra) -> Path:
    data = {
        "name": "ctest", "output_root": str(root), "workers": 2, "budget_s": budget_s,
        "grace_s": 600, "start_cutoff_s": 0, "stop_timeout_s": 300, "defaults": dict(TINY),
        "runs": [
            {"name": "fggp-a", "recipe": str(QUICK), "overrides": {"seed": 0, "export.name": "resnet20-cifar10-s90-ctesta"}},
            {"name": "gmp-b", "recipe": str(QUICK),
             "overrides": {"seed": 1, "pruning.method": "gmp", "export.name": "resnet20-cifar10-s90-ctestb"}},
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _results(root: Path, run: str) -> dict:
    return json.loads((root / "runs" / run / "results.json").read_text())


def test_budget_stop_then_exact_resume_then_pack_and_unpack(env):
    spec = _write(env / "c1.yaml", env / "c1", budget_s=1)
    c = campaign.load_campaign(spec)

    # 1. Fired detached, as on a GPU machine; `status --wait` only polls. The budget (1 s) is
    #    spent during start-up: each worker is stopped once it trains, and checkpoints.
    assert campaign.main(["start", str(spec)]) == 0
    assert campaign.main(["status", str(spec), "--wait", "900"]) == 0
    report = campaign.campaign_status(c)
    assert not report["running"]
    assert [r["state"] for r in report["runs"]] == ["interrupted", "interrupted"]
    state = json.loads((env / "c1" / "campaign.json").read_text())
    assert state["invocations"][-1]["stop_reason"] == "budget"
    first = [state["runs"][name]["segments"][0] for name in ("fggp-a", "gmp-b")]
    assert all(s["rc"] == 130 for s in first)  # the runner's "interrupted, checkpoint written"
    assert max(s["started_unix"] for s in first) < min(s["ended_unix"] for s in first)  # side by side
    for name in ("fggp-a", "gmp-b"):
        assert campaign._complete_checkpoints(env / "c1" / "runs" / name)
        assert not (env / "c1" / "runs" / name / "results.json").exists()
    #    `collect --checkpoints` carries unfinished runs to another machine: unpacked, they resume there.
    campaign.collect(c, env / "midpack", checkpoints=True)
    campaign.unpack(sorted((env / "midpack").glob("*.tar.gz")), env / "moved", verify=False)
    moved = campaign.load_campaign(spec, output_root=env / "moved" / "ctest")
    assert [campaign.disk_state(run) for run in moved.runs] == ["resumable", "resumable"]

    # 2. The same campaign again: both resume from their checkpoints and finish.
    assert campaign.main(["run", str(spec), "--budget-s", "0"]) == 0
    assert [r["state"] for r in campaign.campaign_status(c)["runs"]] == ["finished", "finished"]
    #    ... and a third invocation has nothing to do.
    assert campaign.main(["run", str(spec)]) == 0
    assert len(json.loads((env / "c1" / "campaign.json").read_text())["runs"]["fggp-a"]["segments"]) == 2

    # 3. Uninterrupted reference: the resumed runs end with the same masks, loss and accuracy.
    for run in c.runs:
        resumed, straight = _results(env / "c1", run.name), _straight_run(run, env / "straight" / run.name)
        assert resumed["resumed"] and not straight["resumed"]
        assert resumed["optimizer_steps"] == straight["optimizer_steps"] == 8
        assert resumed["mask_sha256"] == straight["mask_sha256"]
        assert resumed["loss"] == straight["loss"] and resumed["top1"] == straight["top1"]
    assert _results(env / "c1", "fggp-a")["mask_sha256"] != _results(env / "c1", "gmp-b")["mask_sha256"]

    # 4. Packed into few small files; unpacked into folders fggp_hub.load accepts.
    out = env / "pack"
    summary = campaign.collect(c, out)
    shards = sorted(out.glob("*.tar.gz"))
    assert 1 <= len(shards) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in shards)
    names = [n for p in shards for n in tarfile.open(p).getnames()]
    assert "ctest/summary.json" in names and "ctest/summary.md" in names and "ctest/logs/gmp-b.log" in names
    assert not any(n.endswith("/model.safetensors") for n in names)  # the dense copy stays behind
    assert summary["left_out"] == [] and [r["state"] for r in summary["runs"]] == ["finished", "finished"]
    assert all(r["steps_per_s"] and r["top1"] is not None for r in summary["runs"])
    assert "| fggp-a | fggp | 0.90 | 0 | finished |" in (env / "c1" / "summary.md").read_text()

    folders = campaign.unpack(shards, env / "restored")
    assert [f.name for f in folders] == ["resnet20-cifar10-s90-ctesta", "resnet20-cifar10-s90-ctestb"]
    import fggp_hub

    for folder, name in zip(folders, ("fggp-a", "gmp-b")):
        assert not (folder / "model.safetensors").exists()
        assert {"config.json", "model.sparse.safetensors", "README.md", "eval_results.json"} <= {p.name for p in folder.iterdir()}
        model = fggp_hub.load(folder)
        assert fggp_hub.sparsity_stats(model)["sparsity"] == pytest.approx(_results(env / "c1", name)["sparsity"], abs=1e-9)
    assert (env / "restored" / "ctest" / "runs" / "fggp-a" / "results.json").is_file()


def test_shipped_campaign_files_expand_and_validate():
    from fggp_hub.hub.zoo import is_zoo_name

    zoo = campaign.load_campaign(ROOT / "recipes" / "campaigns" / "gpu_zoo_vgg19.yaml")
    assert [r.name for r in zoo.runs] == ["vgg19-cifar10-s90", "vgg19-cifar10-s95", "vgg19-cifar10-s98"]
    for run, sparsity in zip(zoo.runs, (0.9, 0.95, 0.98)):
        cfg = run.cfg
        assert (cfg.model, cfg.seed, cfg.pruning.method, cfg.pruning.final_sparsity) == ("fggp_vgg19_bn_cifar", 0, "fggp", sparsity)
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.pruning.interval, cfg.pruning.end_fraction, cfg.pruning.rate) == (160, 64, 2000, 0.8, 0.5)
        assert cfg.train.mixed_precision == "bf16" and cfg.data.train_subset is None
        assert cfg.export.name == run.name

    study = campaign.load_campaign(ROOT / "recipes" / "campaigns" / "gpu_study_resnet20.yaml")
    assert len(study.runs) == 45 and len({r.name for r in study.runs}) == 45
    assert [r.cfg.seed for r in study.runs[:15]] == [0] * 15  # seed 0 of every cell first: a partial study is balanced
    assert {r.cfg.pruning.method for r in study.runs} == {"fggp", "gmp", "magnitude_first_annealed",
                                                         "gradient_first_annealed", "magnitude_first_fixed"}
    assert {r.cfg.pruning.final_sparsity for r in study.runs} == {0.9, 0.95, 0.98}
    for run in study.runs:
        cfg = run.cfg
        assert (cfg.model, cfg.train.epochs, cfg.train.batch_size, cfg.data.train_subset) == ("fggp_resnet20_cifar", 160, 64, None)
        assert cfg.train.mixed_precision == "bf16" and cfg.train.lr_milestones == [80, 120]
        assert is_zoo_name(cfg.export.name), cfg.export.name
    assert study.runs[0].name == "fggp-s90-seed0"  # the comparison study's run keys

    smoke = campaign.load_campaign(ROOT / "recipes" / "campaigns" / "cpu_smoke.yaml")
    assert smoke.workers == 2 and len(smoke.runs) == 2
    argv = smoke.runs[1].argv(resume=True)
    assert argv[:2] == ["--recipe", str(QUICK)] and argv[-2:] == ["--resume", "auto"]
    assert "--pruning.method=gmp" in argv and "--tracker=null" in argv
    assert "--resume" not in smoke.runs[1].argv(resume=False)  # fresh runs start without it


def test_bad_campaign_files_fail_with_one_clear_line(tmp_path):
    bad_key = _write(tmp_path / "a.yaml", tmp_path / "a", 0)
    data = yaml.safe_load(bad_key.read_text())
    data["runs"][1]["overrides"]["train.epoch"] = 3
    bad_key.write_text(yaml.safe_dump(data))
    with pytest.raises(campaign.CampaignError, match=r"runs\[1\].*unknown recipe key 'train.epoch'"):
        campaign.load_campaign(bad_key)
    data["runs"][1]["overrides"].pop("train.epoch")
    data["runs"][1]["name"] = "fggp-a"
    bad_key.write_text(yaml.safe_dump(data))
    with pytest.raises(campaign.CampaignError, match="unique"):
        campaign.load_campaign(bad_key)
    assert campaign.main(["status", str(tmp_path / "missing.yaml")]) == 2


def test_collect_keeps_to_the_file_limits_and_names_what_is_left_out(tmp_path):
    """Incompressible fake exports, 4 runs of ~60 kB each, shards of at most 100 kB, 2 files: room for 2 runs."""
    spec = _write(tmp_path / "c.yaml", tmp_path / "root", 0)
    data = yaml.safe_load(spec.read_text())
    data["runs"] = [dict(data["runs"][0], name=f"r{i}", overrides={"seed": i, "export.name": f"resnet20-cifar10-s90-r{i}"})
                    for i in range(4)]
    spec.write_text(yaml.safe_dump(data))
    c = campaign.load_campaign(spec)
    for run in c.runs:
        export = run.export_dir
        export.mkdir(parents=True)
        (export / "config.json").write_text("{}")
        (export / "model.sparse.safetensors").write_bytes(os.urandom(60_000))
        (export / "model.safetensors").write_bytes(os.urandom(200_000))  # dense: never packed
        (run.out_dir / "results.json").write_text(json.dumps({"top1": 10.0, "sparsity": 0.9, "optimizer_steps": 8,
                                                               "train_wall_s": 2.0, "total_steps": 8}))
    summary = campaign.collect(c, tmp_path / "out", max_files=2, max_bytes=100_000, max_total=10**6, margin=2_000)
    shards = sorted((tmp_path / "out").glob("*.tar.gz"))
    assert len(shards) == 2 and all(p.stat().st_size <= 100_000 for p in shards)
    packed = {n.split("/")[2] for p in shards for n in tarfile.open(p).getnames() if n.startswith("ctest/runs/")}
    assert packed == {"r0", "r1"} and summary["left_out"] == ["r2", "r3"]  # in campaign order
    assert not packed & set(summary["left_out"])
    assert "Left out of the pack" in (tmp_path / "root" / "summary.md").read_text()


def test_probe_worker_times_the_runner_step_on_cpu(capsys):
    """One probe process, as `campaign.py probe` starts it (in this process: no second import of torch)."""
    from accelerate.state import AcceleratorState

    config = {"model": "fggp_resnet20_cifar", "device": "cpu", "batch_size": 8, "steps": 2, "warmup": 1,
              "precision": "auto", "method": "fggp", "compile_mode": "eager", "channels_last": True, "barrier": None}
    try:
        assert campaign.main(["_probe_worker", json.dumps(config)]) == 0
    finally:
        AcceleratorState._reset_state(True)
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["precision"] == "no" and row["compile"] == "eager" and row["steps"] == 2
    assert row["steps_per_s"] > 0 and row["ms_per_step"] > 0
