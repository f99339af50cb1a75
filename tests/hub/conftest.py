"""Fixtures of the hub tests: an isolated home, small pruned models, a loopback Hugging Face hub.

Nothing here may reach the network: a socket guard refuses every address but the
loopback one, huggingface_hub stays offline (HF_HUB_OFFLINE) except inside the
``online`` fixture, which points it at the loopback server only.
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import timm
import torch

import fggp_hub  # noqa: F401  (registers the fggp_* architectures)

sys.path.insert(0, str(Path(__file__).parent))  # hub_server, hub_helpers (also under --import-mode=importlib)
from hub_helpers import magnitude_prune_, randomise_bn_  # noqa: E402
from hub_server import LoopbackHub  # noqa: E402

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Refuse any connection that is not to the loopback interface."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    blocked: list = []

    def _check(address):
        if isinstance(address, tuple) and address and address[0] not in _LOOPBACK:
            blocked.append(address)
            raise ConnectionRefusedError(f"test tried to reach {address[0]}: only 127.0.0.1 is allowed")

    def connect(self, address):
        _check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield
    assert not blocked, f"the test tried to reach {blocked} (even if the caller swallowed the error)"


@pytest.fixture(autouse=True)
def _isolated_home(monkeypatch, tmp_path):
    """Local hub, zoo index and huggingface_hub cache under tmp_path; offline like CI."""
    from huggingface_hub import constants

    monkeypatch.setenv("FGGP_HUB_HOME", str(tmp_path / "fggp_home"))
    monkeypatch.delenv("FGGP_HUB", raising=False)
    monkeypatch.delenv("FGGP_ZOO_INDEX", raising=False)
    empty_zoo = tmp_path / "no-packaged-zoo.json"  # only the names a test registers
    empty_zoo.write_text('{"schema_version": 1, "models": []}')
    monkeypatch.setenv("FGGP_ZOO_PACKAGE_INDEX", str(empty_zoo))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    return tmp_path


@pytest.fixture
def pruned_resnet20():
    """A 0.27M-parameter CIFAR ResNet-20 pruned to 90% (global magnitude), eval mode."""
    torch.manual_seed(0)
    model = timm.create_model("fggp_resnet20_cifar")
    randomise_bn_(model, 0)
    magnitude_prune_(model, 0.9)
    return model.eval()


@pytest.fixture
def inputs():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def _session_export(tmp_path_factory):
    """One export shared by read-only tests (exporting costs about a second)."""
    from fggp_hub.pruning import CubicSchedule

    torch.manual_seed(0)
    model = timm.create_model("fggp_resnet20_cifar")
    randomise_bn_(model, 0)
    magnitude_prune_(model, 0.9)
    model.eval()
    out = tmp_path_factory.mktemp("export") / "resnet20-cifar10-s90"
    schedule = CubicSchedule(total_steps=1000, final_density=0.1, interval=100)
    fggp_hub.export(
        model,
        out,
        pruning={"method": "fggp", "rate": 0.5, "include_first_conv": False, "schedule": schedule.to_dict()},
        recipe={"model": "fggp_resnet20_cifar", "epochs": 2, "lr": 0.1},
        results={"top1": 71.25, "split": "test", "num_images": 10000},
        dense_top1=74.5,
        command="accelerate launch recipes/prune.py --config recipes/resnet20_s90.yaml",
    )
    return model, out


@pytest.fixture
def exported(_session_export, tmp_path):
    """(model, folder): a fresh copy of the shared export that a test may modify."""
    import shutil

    model, out = _session_export
    copy = tmp_path / out.name
    shutil.copytree(out, copy)
    return model, copy


@pytest.fixture
def hub_server():
    with LoopbackHub() as server:
        yield server


@pytest.fixture
def online(monkeypatch, hub_server):
    """huggingface_hub online, with HF_ENDPOINT = the loopback server (nothing else reachable)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub_server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)  # no agent-registry fetch
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return hub_server
