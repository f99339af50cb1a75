"""The fggp-hub console script through subprocess, on a tiny exported model."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import timm
import torch

import fggp_hub
from fggp_hub.pruning import Pruner


def _cli(*args, env_home):
    exe = shutil.which("fggp-hub") or None
    cmd = [exe] if exe else [sys.executable, "-m", "fggp_hub.cli"]
    env = dict(os.environ, FGGP_HUB_HOME=str(env_home), HF_HUB_OFFLINE="1")
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = timm.create_model("fggp_resnet20_cifar")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = Pruner(model, opt, final_sparsity=0.8, total_steps=2, interval=1, method="gmp")
    for _ in range(2):
        torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
        opt.step()
        opt.zero_grad()
    folder = fggp_hub.export(model, root / "export", pruning=pruner.config(), results={"top1": 10.0})
    return root, folder, pruner


def test_push_pull_info_roundtrip_with_json(exported):
    root, folder, pruner = exported
    hub = root / "hub"
    out = _cli("push", str(folder), "me/tiny", "--hub", str(hub), "--json", env_home=root)
    assert out.returncode == 0, out.stderr
    revision = json.loads(out.stdout)["revision"]
    out = _cli("pull", "me/tiny", "--hub", str(hub), "--json", env_home=root)
    assert out.returncode == 0, out.stderr
    assert (os.path.isdir(json.loads(out.stdout)["folder"]))
    out = _cli("info", f"me/tiny@{revision}", "--hub", str(hub), "--json", env_home=root)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["architecture"] == "fggp_resnet20_cifar"
    assert info["sparsity"] == pytest.approx(pruner.sparsity, abs=1e-9)
    assert set(info["layers"]) == set(pruner.params)


def test_errors_are_one_line_with_exit_codes(exported):
    root, folder, _ = exported
    out = _cli("info", "me/does-not-exist", "--hub", str(root / "hub"), env_home=root)
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    out = _cli("push", str(root / "missing"), "me/x", "--hub", str(root / "hub"), env_home=root)
    assert out.returncode == 1 and "export the model first" in out.stderr
    out = _cli("bogus", env_home=root)
    assert out.returncode == 2
    out = _cli("list", "--json", env_home=root)
    assert out.returncode == 0 and isinstance(json.loads(out.stdout), list)
