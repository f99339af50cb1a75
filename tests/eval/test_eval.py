"""fggp_hub.eval on a real exported ResNet-20 and the shared CIFAR-10 test images (first rows only)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import fggp_hub
from fggp_hub.constants import CIFAR10_JPEG_LABEL, CIFAR10_MEAN, CIFAR10_STD
from fggp_hub.eval import (
    METRICS_DIR,
    card_metrics,
    compare_with_card,
    count_macs,
    evaluate_model,
    save_results,
    write_results_to_card,
)
from fggp_hub.pruning import prunable_parameters, sparsity_stats

_CIFAR = Path(os.environ.get("FGGP_CIFAR10_PATH") or Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10" / "plain_text")
ROWS = 300  # rows of the CIFAR-10 slice; the evaluations score the first N_EVAL
N_EVAL = 256


@pytest.fixture(scope="module")
def cifar_slice(tmp_path_factory) -> Path:
    """The first ROWS test images of the shared copy as a parquet folder in the uoft-cs/cifar10 layout."""
    files = sorted(_CIFAR.glob("test-*.parquet"))
    if not files:
        pytest.skip(f"CIFAR-10 parquet not found at {_CIFAR} (set FGGP_CIFAR10_PATH)")
    pf = pq.ParquetFile(files[0])
    out = tmp_path_factory.mktemp("cifar") / "plain_text"
    out.mkdir()
    pq.write_table(pa.Table.from_batches([next(pf.iter_batches(batch_size=ROWS))], schema=pf.schema_arrow), out / "test-00000-of-00001.parquet")
    return out


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory, cifar_slice):
    monkeypatch.setenv("FGGP_HUB_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("FGGP_HUB", raising=False)
    monkeypatch.setenv("FGGP_CIFAR10_PATH", str(cifar_slice))
    monkeypatch.setenv("FGGP_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data-cache"))


def _random_prune_(model: nn.Module, sparsity: float, seed: int) -> nn.Module:
    """Zero a random ``sparsity`` share of every prunable weight; give BN non-trivial statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in prunable_parameters(model).values():
            w.mul_((torch.rand(w.shape, generator=g) >= sparsity).to(w.dtype))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = _random_prune_(timm.create_model("fggp_resnet20_cifar"), 0.9, seed=0)
    folder = fggp_hub.export(model, tmp_path_factory.mktemp("export") / "resnet20-cifar10-s90", pruning="random")
    return model, folder


def _torch_reference(model: nn.Module, n: int, batch_size: int) -> dict:
    """Top-1/top-5 (%) and mean cross-entropy computed by hand: same images, same normalisation."""
    from fggp_hub.data import load_cifar10

    data = load_cifar10("test").subset(slice(0, n))
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = torch.cat([model((data.images[i:i + batch_size].float() / 255 - mean) / std) for i in range(0, n, batch_size)])
    labels = data.labels
    top5 = logits.topk(5, dim=1).indices
    return {
        "top1": 100.0 * int((logits.argmax(1) == labels).sum()) / n,
        "top5": 100.0 * int((top5 == labels[:, None]).any(1).sum()) / n,
        "loss": float(F.cross_entropy(logits.double(), labels)),
    }


@pytest.fixture(scope="module")
def measured(exported, cifar_slice, tmp_path_factory):
    """evaluate_model on the exported folder (computed once: the other tests reuse it)."""
    _, folder = exported
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FGGP_CIFAR10_PATH", str(cifar_slice))
        mp.setenv("FGGP_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data-cache"))
        return evaluate_model(str(folder), num_images=N_EVAL, batch_size=100, device="cpu",
                              latency_batch_sizes=(1, 2), latency_repeats=1, progress=False)


# --------------------------------------------------------------------------- metric modules
def test_metric_modules_load_offline_and_compute_hand_values():
    import evaluate

    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # nothing may come from the Hub
    logits = [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]
    refs = [2, 0, 1]
    top_k = evaluate.load(str(METRICS_DIR / "top_k_accuracy"))
    # row 0: 2 is second; row 1: 0 first; row 2: ranks 2, then the tie 0/1 goes to 0: 1 is third
    assert top_k.compute(predictions=logits, references=refs, k=[1, 2, 3]) == {"top1": 1 / 3, "top2": 2 / 3, "top3": 1.0}
    ranked = evaluate.load(str(METRICS_DIR / "top_k_accuracy" / "top_k_accuracy.py"), "indices")
    assert ranked.compute(predictions=[[1, 2], [0, 1], [2, 0]], references=refs, k=(1, 2), percent=True) == pytest.approx({"top1": 100 / 3, "top2": 200 / 3})
    with pytest.raises(ValueError, match="k must be"):
        top_k.compute(predictions=logits, references=refs, k=4)

    ce = evaluate.load(str(METRICS_DIR / "mean_cross_entropy"))
    ce.add_batch(predictions=[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], references=[1, 0])
    ce.add(predictions=[1000.0, 0.0, -1000.0], references=0)  # large logits: no overflow
    want = (math.log(3) + (math.log(math.e + math.e**2 + math.e**3) - 1.0) + 0.0) / 3
    assert ce.compute()["loss"] == pytest.approx(want, abs=1e-12)


# --------------------------------------------------------------------------- MACs
def test_count_macs_matches_hand_count_with_grouped_conv_and_zeros():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),                       # 8x8 out: 8*3*3*3 = 216 weights x 64
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4),   # 4x4 out: 8*2*3*3 = 144 weights x 16
        nn.Flatten(),
        nn.Linear(128, 10),                                  # 1280 weights x 1
    )
    with torch.no_grad():
        net[0].weight[0].zero_()        # one whole filter: 27 weights
        net[2].weight[:, 0, 0, 0] = 0   # 8 weights of the grouped conv
        net[4].weight[3].zero_()        # one output row: 128 weights
    dense = 216 * 64 + 144 * 16 + 1280
    effective = (216 - 27) * 64 + (144 - 8) * 16 + (1280 - 128)
    assert count_macs(net, (1, 3, 8, 8)) == (dense, effective)
    assert count_macs(net, (3, 3, 8, 8)) == (dense, effective)  # per image, whatever the batch


# --------------------------------------------------------------------------- evaluate_model
def test_evaluate_folder_equals_direct_torch_computation(exported, measured):
    model, folder = exported
    ref = _torch_reference(model, N_EVAL, batch_size=100)
    assert measured["num_images"] == N_EVAL and measured["dataset_size"] == ROWS
    assert measured["top1"] == pytest.approx(ref["top1"], abs=1e-6)
    assert measured["top5"] == pytest.approx(ref["top5"], abs=1e-6)
    assert measured["loss"] == pytest.approx(ref["loss"], abs=1e-6)
    stats = sparsity_stats(model)
    for key in ("sparsity", "sparsity_all_params", "nonzero_params", "total_params"):
        assert measured[key] == stats[key], key
    assert 0.89 < measured["sparsity"] < 0.91
    assert (measured["dense_macs"], measured["effective_macs"]) == count_macs(model)
    assert measured["effective_macs"] < 0.2 * measured["dense_macs"]
    assert measured["dataset"] == CIFAR10_JPEG_LABEL and measured["split"] == "test"
    assert measured["folder"] == str(folder) and measured["model"] == str(folder)
    for key in ("latency_ms_batch1", "throughput_img_s_batch1", "latency_ms_batch2", "throughput_img_s_batch2"):
        assert measured[key] > 0, key
    assert measured["device"] == "cpu" and measured["torch_threads"] >= 1 and measured["torch_version"] == torch.__version__
    json.dumps(measured)  # flat and JSON-able


def test_one_process_accelerator_scores_exactly_n_images(exported, measured):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    model, _ = exported
    try:
        accelerator = Accelerator(cpu=True)
        got = evaluate_model(model, num_images=N_EVAL, batch_size=96, accelerator=accelerator, measure_latency=False, progress=False)
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    assert got["num_images"] == N_EVAL and got["num_processes"] == 1
    assert got["top1"] == pytest.approx(measured["top1"], abs=1e-6)
    assert got["loss"] == pytest.approx(measured["loss"], abs=1e-6)
    assert got["latency_ms_batch1"] is None and got["throughput_img_s_batch64"] is None
    assert got["model"] == "fggp_resnet20_cifar"


# --------------------------------------------------------------------------- cards
def _export_with(model, out: Path, results: dict) -> Path:
    keep = {k: results[k] for k in ("top1", "top5", "loss", "split", "num_images")}
    return fggp_hub.export(model, out, pruning="random", results=keep)


def test_compare_with_card_identical_then_doctored(exported, measured, tmp_path):
    model, _ = exported
    folder = _export_with(model, tmp_path / "card", measured)
    card = card_metrics(folder)
    assert card["top1"] == measured["top1"] and card["sparsity"] == measured["sparsity"]
    rows = compare_with_card(measured, card)
    assert {r["metric"] for r in rows} >= {"top1", "top5", "loss", "sparsity", "num_images", "dataset"}
    assert all(r["ok"] for r in rows), rows

    readme = folder / "README.md"
    text = readme.read_text(encoding="utf-8")
    old = f"value: {measured['top1']}"
    assert text.count(old) == 1
    readme.write_text(text.replace(old, f"value: {measured['top1'] + 1.0}"), encoding="utf-8")
    bad = {r["metric"]: r for r in compare_with_card(measured, card_metrics(folder))}
    assert not bad["top1"]["ok"] and bad["top1"]["diff"] == pytest.approx(-1.0)
    assert bad["top5"]["ok"] and bad["sparsity"]["ok"]
    assert compare_with_card(measured, card_metrics(folder), tolerances={"top1": 1.5})[0]["ok"]


def test_write_results_to_card_folder_and_local_hub(exported, measured, tmp_path):
    model, _ = exported
    folder = _export_with(model, tmp_path / "w", {**measured, "top1": 1.0, "top5": 2.0, "loss": 9.0})
    # a result on 256 of 300 images is written next to, not over, the card's figures
    write_results_to_card(folder, measured)
    assert card_metrics(folder)["top1"] == 1.0
    assert sum("test[:256]" in line for line in (folder / "README.md").read_text().splitlines()) == 1
    assert json.loads((folder / "eval_results.json").read_text())["top1"] == 1.0  # the headline figures stay
    full = {**measured, "dataset_size": measured["num_images"]}
    write_results_to_card(folder, full)
    card = card_metrics(folder)
    assert (card["top1"], card["top5"], card["loss"]) == (measured["top1"], measured["top5"], measured["loss"])
    assert json.loads((folder / "eval_results.json").read_text())["top1"] == measured["top1"]

    hub = tmp_path / "hub"
    first = fggp_hub.push(folder, "me/tiny", hub=str(hub))
    sha = write_results_to_card("me/tiny", {**full, "top1": 42.0}, hub=str(hub))
    assert sha != first
    assert card_metrics("me/tiny", hub=str(hub))["top1"] == 42.0
    assert card_metrics("me/tiny", hub=str(hub), revision=first)["top1"] == measured["top1"]
    fggp_hub.load("me/tiny", hub=str(hub))  # the new commit still verifies


# --------------------------------------------------------------------------- saving
def test_save_results_round_trip_has_evaluate_save_keys(measured, tmp_path, monkeypatch):
    import evaluate

    monkeypatch.chdir(tmp_path)  # evaluate.save records the git commit of the working directory
    path = save_results(measured, tmp_path / "out" / "eval.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    reference = json.loads(Path(evaluate.save(str(tmp_path / "ref.json"), **measured)).read_text())
    assert set(data) == set(reference)
    assert {k: data[k] for k in measured} == json.loads(json.dumps(measured))
    assert data["_evaluate_version"] == evaluate.__version__ and data["_git_commit_hash"] == reference["_git_commit_hash"]
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]  # no temporary file left
    assert save_results(measured, tmp_path / "folder").name.startswith("result-")


def test_write_results_to_card_on_a_remote_hub(exported, measured, tmp_path, monkeypatch):
    """The same merge on a Hugging Face-style endpoint (the loopback server of the hub tests)."""
    import socket
    import sys

    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))
    from hub_server import LoopbackHub

    model, _ = exported
    folder = _export_with(model, tmp_path / "r", measured)
    real_connect = socket.socket.connect

    def loopback_only(sock, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"the test tried to reach {address[0]}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)  # no agent-registry fetch
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with LoopbackHub() as server:
        first = fggp_hub.push(folder, "me/remote", hub=server.url)
        sha = write_results_to_card("me/remote", {**measured, "dataset_size": N_EVAL, "top1": 55.5}, hub=server.url)
        assert sha != first
        assert card_metrics("me/remote", hub=server.url)["top1"] == 55.5
        assert card_metrics(f"me/remote@{first}", hub=server.url)["top1"] == measured["top1"]
        files, before = server.files("me/remote"), server.files("me/remote", first)
        assert set(files) == set(before)
        assert {n for n in files if files[n] != before[n]} == {"README.md", "eval_results.json"}
