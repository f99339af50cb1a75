"""Fixtures of the CLI tests: an isolated environment, a CIFAR-10 slice and one tiny exported model per session.

Every command runs as a subprocess (``python -m fggp_hub.cli``), offline, with the hub,
the zoo index, the data cache and the huggingface_hub cache under a temporary folder.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # cli_helpers (also under --import-mode=importlib)
from cli_helpers import _DEFAULT_CIFAR, NAME, REPO, TEST_IMAGES, TRAIN_IMAGES, Cli, _head, direct_metrics  # noqa: E402


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> Cli:
    """Environment of every CLI call: offline, everything under one temporary folder."""
    cifar = Path(os.environ.get("FGGP_CIFAR10_PATH") or _DEFAULT_CIFAR)
    if not (any(cifar.glob("train-*.parquet")) and any(cifar.glob("test-*.parquet"))):
        pytest.skip(f"CIFAR-10 parquet folder not found at {cifar} (set FGGP_CIFAR10_PATH)")
    root = tmp_path_factory.mktemp("cli")
    data = root / "cifar10"
    data.mkdir()
    _head(next(cifar.glob("train-*.parquet")), data / "train-00000-of-00001.parquet", TRAIN_IMAGES)
    _head(next(cifar.glob("test-*.parquet")), data / "test-00000-of-00001.parquet", TEST_IMAGES)
    env = {k: v for k, v in os.environ.items() if k not in ("FGGP_HUB", "FGGP_ZOO_INDEX", "HF_TOKEN", "HF_ENDPOINT")}
    (root / "no-packaged-zoo.json").write_text('{"schema_version": 1, "models": []}')
    env.update(
        FGGP_ZOO_PACKAGE_INDEX=str(root / "no-packaged-zoo.json"),  # only the names the tests register
        FGGP_HUB_HOME=str(root / "home"),
        FGGP_CIFAR10_PATH=str(data),
        FGGP_DATA_CACHE=str(root / "data-cache"),
        HF_HUB_CACHE=str(root / "hf-cache"),
        HF_HOME=str(root / "hf-home"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS="2",
    )
    return Cli(root, env)


@pytest.fixture(scope="session")
def tiny(cli_env):
    """A fggp_resnet20_cifar with ~90% of its prunable weights zeroed, saved as a plain safetensors
    state_dict with its true results, exported with ``fggp-hub export`` and pushed with ``fggp-hub push``."""
    import timm
    from safetensors.torch import save_file

    import fggp_hub
    from fggp_hub.pruning import prunable_parameters

    root = cli_env.root
    torch.manual_seed(0)
    model = timm.create_model("fggp_resnet20_cifar")
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # BN statistics as after training, so predictions vary between images
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    params = prunable_parameters(model)
    with torch.no_grad():
        scores = torch.cat([p.abs().flatten() for p in params.values()])
        threshold = torch.kthvalue(scores, int(0.9 * scores.numel())).values
        for p in params.values():
            p.mul_((p.abs() > threshold).to(p.dtype))
    model.eval()
    weights = root / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    results = {**direct_metrics(model, cli_env), "split": "test"}
    (root / "results.json").write_text(json.dumps(results))

    exported = cli_env.json("export", weights, root / "export", "--model", "fggp_resnet20_cifar", "--method", "gmp",
                            "--results", root / "results.json", "--name", NAME, "--repo-id", REPO)
    pushed = cli_env.json("push", exported["folder"], REPO, "--hub", root / "hub")
    return {
        "model": model,
        "folder": Path(exported["folder"]),
        "export": exported,
        "revision": pushed["revision"],
        "results": results,
        "stats": fggp_hub.sparsity_stats(model),
        "hub": root / "hub",
    }
