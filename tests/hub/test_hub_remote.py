"""A Hugging Face-compatible hub on 127.0.0.1: the real huggingface_hub client and timm's loader."""
from __future__ import annotations

import json

import pytest
import timm
import torch

import fggp_hub
from fggp_hub.hub import HfHub
from fggp_hub.hub.errors import (
    CorruptCheckpointError,
    HubAccessError,
    NotInCacheError,
    RepoNotFoundError,
    RevisionNotFoundError,
)

REPO = "fggp-test/resnet20-cifar10-s90"


def test_push_is_one_commit_and_pull_gets_every_file(online, exported):
    model, folder = exported
    sha = fggp_hub.push(folder, REPO, hub=online.url)
    assert len(sha) == 40
    commits_before = [r for r in online.state.requests if r[1].endswith("/commit/main")]
    assert len(commits_before) == 1
    remote = online.files(REPO)
    local = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {k: v for k, v in remote.items() if k != ".gitattributes"} == local

    pulled = fggp_hub.pull(REPO, hub=online.url)
    assert pulled.name == sha  # the huggingface_hub cache snapshot of that commit
    assert {p.name: p.read_bytes() for p in pulled.iterdir()} == local


def test_hf_hub_round_trip_compact_and_dense_give_identical_models(online, exported, inputs):
    model, folder = exported
    fggp_hub.push(folder, REPO, hub=online.url)
    compact = fggp_hub.load(REPO, hub=online.url)
    dense = fggp_hub.load(REPO, hub=online.url, compact=False)
    assert not compact.training and compact.hub_info["weights"] == "model.sparse.safetensors"
    assert dense.hub_info["weights"] == "model.safetensors"
    for (k, a), (_, b) in zip(compact.state_dict().items(), dense.state_dict().items()):
        assert torch.equal(a, b), k
    with torch.no_grad():
        assert torch.equal(compact(inputs), model(inputs))


def test_load_fetches_only_the_weight_file_it_needs(online, exported):
    _, folder = exported
    fggp_hub.push(folder, REPO, hub=online.url)
    fggp_hub.load(REPO, hub=online.url)  # compact
    downloaded = {path.rsplit("/", 1)[-1] for verb, path in online.state.requests if verb == "GET" and "/resolve/" in path}
    assert downloaded == {"config.json", "README.md", "model.sparse.safetensors"}


def test_timm_hf_hub_loader_reads_our_export(online, exported, inputs):
    model, folder = exported
    fggp_hub.push(folder, REPO)  # no hub argument needed: FGGP_HUB below
    with torch.no_grad():
        reference = model(inputs)
    # timm uses HF_ENDPOINT (patched to the loopback server by the fixture)
    loaded = timm.create_model(f"hf-hub:{REPO}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded(inputs), reference)


@pytest.fixture(autouse=True)
def _remote_by_default(request, monkeypatch):
    if "online" in request.fixturenames:
        monkeypatch.setenv("FGGP_HUB", request.getfixturevalue("online").url)


def test_revisions_pin_old_commits(online, exported, pruned_resnet20):
    _, folder = exported
    first = fggp_hub.push(folder, REPO)
    fggp_hub.export(pruned_resnet20, folder, pruning="gmp", results={"top1": 12.5})
    second = fggp_hub.push(folder, REPO, commit_message="retrained")
    assert first != second
    assert fggp_hub.load(f"{REPO}@{first}").hub_info["results"]["top1"] == 71.25
    assert fggp_hub.load(REPO, revision=second).hub_info["results"]["top1"] == 12.5
    assert fggp_hub.load(REPO).hub_info["revision"] == second
    # files that vanished from the folder vanish from the repo
    assert "recipe.yaml" in online.files(REPO, first) and "recipe.yaml" not in online.files(REPO, second)


def test_remote_errors_are_one_readable_line(online, exported):
    _, folder = exported
    fggp_hub.push(folder, REPO)
    cases = [
        (RepoNotFoundError, lambda: fggp_hub.load("fggp-test/no-such-model"), "not found"),
        (RevisionNotFoundError, lambda: fggp_hub.load(REPO, revision="v9"), "revision 'v9' not found"),
        (RevisionNotFoundError, lambda: fggp_hub.pull(REPO, revision="0" * 40), "not found"),
    ]
    for error, call, text in cases:
        with pytest.raises(error) as info:
            call()
        message = str(info.value)
        assert text in message and "\n" not in message, message


def test_corrupt_remote_file_is_detected(online, exported):
    _, folder = exported
    fggp_hub.push(folder, REPO)
    data = bytearray(online.files(REPO)["model.sparse.safetensors"])
    data[-1] ^= 0xFF
    online.corrupt(REPO, "model.sparse.safetensors", bytes(data))
    with pytest.raises(CorruptCheckpointError, match="does not match config.json"):
        fggp_hub.load(REPO)


def test_offline_reload_comes_from_the_cache(online, exported, monkeypatch, inputs):
    from huggingface_hub import constants

    model, folder = exported
    sha = fggp_hub.push(folder, REPO)
    first = fggp_hub.load(REPO)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    requests = online.request_count()
    again = fggp_hub.load(REPO)
    assert online.request_count() == requests  # nothing asked of the server
    assert again.hub_info["revision"] == sha
    with torch.no_grad():
        assert torch.equal(again(inputs), first(inputs))
    # the dense file was never fetched: offline there is nothing to serve it from
    with pytest.raises(NotInCacheError) as info:
        fggp_hub.load(REPO, compact=False)
    assert "HF_HUB_OFFLINE=1" in str(info.value) and "\n" not in str(info.value)


def test_offline_without_cache_says_so(online, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(NotInCacheError, match="not in the local cache"):
        fggp_hub.pull(REPO)


def test_token_is_sent_and_never_printed(online, exported, capsys, caplog):
    _, folder = exported
    secret = "hf_loopbackSECRETtoken123"
    online.require_token(secret)
    with pytest.raises(HubAccessError) as info:
        fggp_hub.push(folder, REPO, token="hf_wrongTOKENvalue")
    assert "hf_wrong" not in str(info.value) and "HF_TOKEN" in str(info.value)
    hub = HfHub(endpoint=online.url, token=secret)
    assert secret not in repr(hub)
    sha = fggp_hub.push(folder, REPO, hub=hub)
    assert f"Bearer {secret}" in online.state.auth_headers
    assert fggp_hub.load(REPO, revision=sha).hub_info["revision"] == sha
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err + caplog.text


def test_pull_never_fetches_pickles(online, exported):
    from huggingface_hub import HfApi

    _, folder = exported
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    api = HfApi(endpoint=online.url)
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=str(folder))
    pulled = fggp_hub.pull(REPO)
    assert "pytorch_model.bin" not in {p.name for p in pulled.iterdir()}
    assert json.loads((pulled / "config.json").read_text())["sparsity"]["name"] == "resnet20-cifar10-s90"


def test_push_while_offline_says_so(hub_server, exported):
    from fggp_hub.hub.errors import HubUnreachableError

    _, folder = exported  # HF_HUB_OFFLINE is on outside the `online` fixture
    with pytest.raises(HubUnreachableError) as info:
        fggp_hub.push(folder, REPO, hub=hub_server.url)
    assert "HF_HUB_OFFLINE=1" in str(info.value) and "\n" not in str(info.value)
    assert hub_server.request_count() == 0


def test_hf_endpoint_and_hf_token_from_the_environment_are_used(online, exported, monkeypatch):
    """hub="hf" means HF_ENDPOINT (here the loopback server) with HF_TOKEN, as huggingface_hub reads them."""
    _, folder = exported
    secret = "hf_fromTHEenvironment42"
    online.require_token(secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.delenv("FGGP_HUB")
    sha = fggp_hub.push(folder, REPO, hub="hf")
    assert f"Bearer {secret}" in online.state.auth_headers
    assert fggp_hub.load(f"hf-hub:{REPO}").hub_info["revision"] == sha
    assert fggp_hub.load(REPO, hub="hf").hub_info["hub"] == online.url


@pytest.mark.parametrize("status, content_type, body, words", [
    (500, "application/json", b'{"error": "Internal Error"}', "HTTP 500"),
    (200, "text/html", b"<html><body>Sign in to continue</body></html>", "not the Hub API"),
])
def test_a_broken_endpoint_is_named_and_not_called_unreachable(online, exported, status, content_type, body, words):
    """An endpoint that answers badly (HTTP 5xx, an HTML page) is not "unreachable": one typed line, naming it."""
    from fggp_hub.hub.errors import HubResponseError

    _, folder = exported
    fggp_hub.push(folder, "me/broken", hub=online.url)
    online.state.broken = (status, content_type, body)
    with pytest.raises(HubResponseError) as err:
        fggp_hub.pull("me/broken", hub=online.url)
    message = str(err.value)
    assert "\n" not in message and online.url in message and words in message and "did not answer" not in message
