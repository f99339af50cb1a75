"""load(), the local hub, the zoo, and every error load/push/pull can raise."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import fggp_hub
from fggp_hub.hub import LocalHub, get_hub, register
from fggp_hub.hub.errors import (
    ArchitectureNotRegisteredError,
    CorruptCheckpointError,
    FggpHubError,
    FolderNotFoundError,
    InvalidNameError,
    RepoNotFoundError,
    RevisionNotFoundError,
    SparsityMismatchError,
    UnknownModelError,
)
from fggp_hub.hub.integrity import sha256_file
from fggp_hub.hub.zoo import is_zoo_name, make_name

REPO = "fggp-test/resnet20-cifar10-s90"


def _config(folder):
    return json.loads((folder / "config.json").read_text())


def _write_config(folder, config):
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


def test_public_api():
    for name in ("export", "push", "pull", "load", "list_models"):
        assert name in fggp_hub.__all__ and callable(getattr(fggp_hub, name))
    assert issubclass(fggp_hub.UnknownModelError, LookupError)
    assert issubclass(fggp_hub.CorruptCheckpointError, ValueError)


# --------------------------------------------------------------------------- local hub
def test_local_hub_round_trip_with_history(exported, pruned_resnet20, tmp_path, inputs):
    model, folder = exported
    first = fggp_hub.push(folder, REPO)  # default hub: the local folder under $FGGP_HUB_HOME
    hub = get_hub()
    assert isinstance(hub, LocalHub) and hub.root == tmp_path / "fggp_home" / "hub"
    commit = hub.root / "fggp-test" / "resnet20-cifar10-s90" / "commits" / first
    assert sorted(p.name for p in commit.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert fggp_hub.push(folder, REPO) == first  # nothing changed: no new commit

    fggp_hub.export(pruned_resnet20, folder, pruning="gmp", results={"top1": 5.0})
    second = fggp_hub.push(folder, REPO, commit_message="gmp")
    assert [c["sha"] for c in hub.history(REPO)] == [second, first]
    assert fggp_hub.pull(REPO).name == second
    assert fggp_hub.pull(f"{REPO}@{first[:10]}").name == first  # unique prefix
    old = fggp_hub.load(REPO, revision=first)
    assert old.hub_info["results"]["top1"] == 71.25 and old.hub_info["revision"] == first
    with torch.no_grad():
        assert torch.equal(old(inputs), model(inputs))
    assert not fggp_hub.load(REPO).training


def test_hub_choice(monkeypatch, tmp_path):
    assert isinstance(get_hub("local"), LocalHub)
    assert get_hub(tmp_path).root == tmp_path
    assert get_hub(str(tmp_path)).root == tmp_path
    assert get_hub("hf").kind == "hf" and get_hub("http://127.0.0.1:1/").endpoint == "http://127.0.0.1:1"
    monkeypatch.setenv("FGGP_HUB", str(tmp_path / "team"))
    assert get_hub().root == tmp_path / "team"
    with pytest.raises(InvalidNameError, match="unknown hub"):
        get_hub("hff")


def test_compact_and_dense_files_give_identical_weights(exported):
    model, folder = exported
    compact = fggp_hub.load(folder)
    dense = fggp_hub.load(folder, compact=False)
    assert compact.hub_info["weights"] == "model.sparse.safetensors"
    for (name, a), (_, b) in zip(compact.state_dict().items(), dense.state_dict().items()):
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), name


# --------------------------------------------------------------------------- zoo
def test_packaged_zoo_index_matches_the_committed_cards(monkeypatch):
    """Every shipped zoo name pins its bundled files and its expected top-1 is the one on its committed card."""
    from importlib.resources import files

    from fggp_hub.eval import card_metrics
    from fggp_hub.hub.zoo import NAME_PATTERN

    index = json.loads(files("fggp_hub.hub").joinpath("zoo_index.json").read_text())
    assert index["schema_version"] == 1 and "naming" in index
    monkeypatch.delenv("FGGP_ZOO_PACKAGE_INDEX")
    assert sorted(e.name for e in fggp_hub.list_models()) == sorted(m["name"] for m in index["models"])
    cards = Path(__file__).resolve().parents[2] / "model_cards"
    for entry in index["models"]:
        assert NAME_PATTERN.match(entry["name"])
        for filename, digest in entry["bundled"].items():
            assert hashlib.sha256((cards / entry["name"] / filename).read_bytes()).hexdigest() == digest
        card = card_metrics(cards / entry["name"])
        assert card["top1"] == entry["metrics"]["top1"] and card["sparsity"] == pytest.approx(entry["sparsity"], abs=1e-6)
        config = json.loads((cards / entry["name"] / "config.json").read_text())
        assert config["architecture"] == entry["architecture"]


def test_zoo_names_resolve_to_pinned_revisions(exported, pruned_resnet20):
    _, folder = exported
    sha = fggp_hub.push(folder, REPO)
    register("resnet20-cifar10-s90", REPO, revision=sha, metrics={"top1": 71.25})
    fggp_hub.export(pruned_resnet20, folder, pruning="gmp", results={"top1": 5.0})
    fggp_hub.push(folder, REPO)  # main moves on; the zoo name stays pinned
    model = fggp_hub.load("resnet20-cifar10-s90")
    assert model.hub_info["revision"] == sha and model.hub_info["results"]["top1"] == 71.25
    assert [e.name for e in fggp_hub.list_models("resnet20-*")] == ["resnet20-cifar10-s90"]
    with pytest.raises(InvalidNameError, match="already registered"):
        register("resnet20-cifar10-s90", REPO)
    register("resnet20-cifar10-s90", REPO, metrics={"top1": 99.0}, overwrite=True)
    with pytest.raises(CorruptCheckpointError, match="zoo entry resnet20-cifar10-s90 expects top1=99.0"):
        fggp_hub.load("resnet20-cifar10-s90")


def test_zoo_naming():
    assert make_name("fggp_vgg19_bn_cifar", "CIFAR-10 (JPEG-q75 copy)", 0.95) == "vgg19-cifar10-s95"
    assert make_name("fggp_resnet50_cifar", "CIFAR-10 (JPEG-q75 copy)", 0.98, "erk") == "resnet50-cifar10-s98-erk"
    assert make_name("fggp_resnet20_cifar", "cifar100", 0.995) == "resnet20-cifar100-s99p5"
    assert is_zoo_name("vgg19-cifar10-s95") and not is_zoo_name("VGG19-cifar10-95")
    with pytest.raises(InvalidNameError, match="invalid zoo name"):
        register("my model", REPO)


def test_unknown_name_suggests_close_matches(exported):
    _, folder = exported
    register("vgg19-cifar10-s95", "fggp-test/vgg19-cifar10-s95")
    register("vgg19-cifar10-s98", "fggp-test/vgg19-cifar10-s98")
    with pytest.raises(UnknownModelError) as info:
        fggp_hub.load("vgg19-cifar10-s59")
    message = one_line(info)
    assert "did you mean" in message and "vgg19-cifar10-s95" in message
    with pytest.raises(UnknownModelError, match="unknown model 'vgg19': did you mean vgg19-cifar10-s95, vgg19-cifar10-s98"):
        fggp_hub.load("vgg19")
    with pytest.raises(UnknownModelError, match="unknown model 'resnet'"):
        fggp_hub.load("resnet")


# --------------------------------------------------------------------------- errors
def test_repo_and_revision_not_found(exported):
    _, folder = exported
    with pytest.raises(RepoNotFoundError) as info:
        fggp_hub.load("fggp-test/nothing-here")
    assert "push it first, or pass hub='hf'" in one_line(info)
    fggp_hub.push(folder, REPO)
    with pytest.raises(RevisionNotFoundError) as info:
        fggp_hub.load(REPO, revision="v2")
    assert "use a branch (main)" in one_line(info)
    with pytest.raises(FolderNotFoundError) as info:
        fggp_hub.load("./no/such/folder")
    one_line(info)


def test_corrupt_truncated_and_mismatched_files(exported):
    _, folder = exported
    dense = folder / "model.safetensors"
    original = dense.read_bytes()

    dense.write_bytes(original[:-100])
    with pytest.raises(CorruptCheckpointError) as info:
        fggp_hub.load(folder, compact=False)
    assert "truncated" in one_line(info)

    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    dense.write_bytes(bytes(flipped))
    with pytest.raises(CorruptCheckpointError) as info:
        fggp_hub.load(folder, compact=False)
    assert "does not match config.json" in one_line(info)
    fggp_hub.load(folder)  # the compact file is intact and is what load reads by default

    (folder / "model.sparse.safetensors").unlink()
    with pytest.raises(CorruptCheckpointError) as info:
        fggp_hub.load(folder)
    assert "missing" in one_line(info)

    (folder / "config.json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError) as info:
        fggp_hub.load(folder)
    assert "not valid JSON" in one_line(info)


def test_sparsity_must_match_the_card(exported):
    model, folder = exported
    config = _config(folder)
    config["sparsity"]["sparsity"] += 1e-4
    _write_config(folder, config)
    with pytest.raises(SparsityMismatchError) as info:
        fggp_hub.load(folder)
    assert "config.json says" in one_line(info)
    config["sparsity"]["sparsity"] -= 1e-4
    _write_config(folder, config)

    card = folder / "README.md"
    text = card.read_text()
    card.write_text(text.replace(f"sparsity: {config['sparsity']['sparsity']}", "sparsity: 0.5"))
    with pytest.raises(SparsityMismatchError) as info:
        fggp_hub.load(folder)
    assert "model card says" in one_line(info)
    card.write_text(text)

    # weights rewritten (denser) with a matching hash: the recomputed sparsity catches it
    weights = load_file(str(folder / "model.safetensors"))
    weights["layer3.0.conv1.weight"] = torch.ones_like(weights["layer3.0.conv1.weight"])
    save_file(weights, str(folder / "model.safetensors"))
    config["sparsity"]["files"]["model.safetensors"] = {
        "sha256": sha256_file(folder / "model.safetensors"),
        "size": (folder / "model.safetensors").stat().st_size,
    }
    _write_config(folder, config)
    with pytest.raises(SparsityMismatchError):
        fggp_hub.load(folder, compact=False)


def test_architecture_not_registered(exported):
    _, folder = exported
    config = _config(folder)
    config["architecture"] = "fggp_mobilenet_cifar"
    _write_config(folder, config)
    with pytest.raises(ArchitectureNotRegisteredError) as info:
        fggp_hub.load(folder)
    assert "'fggp_mobilenet_cifar' is not registered with timm" in one_line(info)


def test_newer_block_version_asks_for_an_upgrade(exported):
    _, folder = exported
    config = _config(folder)
    config["sparsity"]["format_version"] = 2
    _write_config(folder, config)
    with pytest.raises(CorruptCheckpointError, match="upgrade fggp-hub"):
        fggp_hub.load(folder)


def test_not_an_export(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(json.dumps({"architecture": "resnet18"}))
    with pytest.raises(CorruptCheckpointError, match="no 'sparsity' block"):
        fggp_hub.load(tmp_path / "plain")


# --------------------------------------------------------------------------- security
@pytest.mark.parametrize(
    "repo_id",
    ["../etc", "/abs/name", "org/..", "org/na me", "org//x", "a/b/c", "org/x;rm -rf", "org/../x", "org/x\n", "", "org/.hidden", "org/a--b"],
)
def test_bad_repo_ids_are_refused(repo_id, exported):
    _, folder = exported
    for call in (lambda: fggp_hub.pull(repo_id), lambda: fggp_hub.push(folder, repo_id)):
        with pytest.raises(InvalidNameError) as info:
            call()
        one_line(info)


@pytest.mark.parametrize("revision", ["../../etc", "/main", "ma in", "main/../x", "a//b"])
def test_bad_revisions_are_refused(revision):
    with pytest.raises(InvalidNameError):
        fggp_hub.pull(REPO, revision=revision)


@pytest.mark.parametrize("text", ["org/na me", "hf-hub:../etc", "hf-hub:/abs/x", "org/x@../main"])
def test_bad_repo_id_in_load_is_refused(text):
    with pytest.raises(InvalidNameError):
        fggp_hub.load(text)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights.pt", "evil.pkl", "../config.json", "sub/x.json", ".hidden.json", "a b.json"])
def test_bad_file_names_are_refused(name, exported):
    _, folder = exported
    config = _config(folder)
    config["sparsity"]["files"][name] = {"sha256": "0" * 64, "size": 1}
    _write_config(folder, config)
    with pytest.raises(InvalidNameError) as info:
        fggp_hub.load(folder)
    assert "refusing file" in one_line(info)


def test_pulled_repo_with_pickles_or_subfolders_is_refused(exported):
    _, folder = exported
    sha = fggp_hub.push(folder, REPO)
    commit = get_hub().root / "fggp-test" / "resnet20-cifar10-s90" / "commits" / sha
    (commit / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(InvalidNameError, match="pytorch_model.bin"):
        fggp_hub.pull(REPO)
    (commit / "pytorch_model.bin").unlink()
    (commit / "nested").mkdir()
    with pytest.raises(InvalidNameError, match="sub-folder"):
        fggp_hub.load(REPO)


def test_push_refuses_damaged_or_unsafe_folders(exported):
    _, folder = exported
    (folder / "optimizer.pt").write_bytes(b"pickle")
    with pytest.raises(InvalidNameError, match="optimizer.pt"):
        fggp_hub.push(folder, REPO)
    (folder / "optimizer.pt").unlink()
    with open(folder / "model.safetensors", "ab") as f:
        f.write(b"tail")
    with pytest.raises(CorruptCheckpointError, match="larger than recorded"):
        fggp_hub.push(folder, REPO)
    assert not get_hub().exists(REPO)


def test_every_error_is_an_fggp_hub_error_of_the_usual_builtin_kind():
    assert issubclass(RepoNotFoundError, (FggpHubError, LookupError))
    assert issubclass(FolderNotFoundError, FileNotFoundError)
    assert issubclass(InvalidNameError, ValueError)
    assert str(InvalidNameError("a\nb   c")) == "a b c"


def test_loading_a_copy_of_the_folder_elsewhere_works(exported, tmp_path):
    _, folder = exported
    copy = tmp_path / "moved"
    shutil.copytree(folder, copy)
    assert fggp_hub.load(f"local-dir:{copy}").hub_info["folder"] == str(copy)


def test_weights_of_another_shape_are_refused(exported):
    _, folder = exported
    config = _config(folder)
    config["model_args"]["num_classes"] = config["num_classes"] = 100  # config no longer matches the weights
    _write_config(folder, config)
    with pytest.raises(CorruptCheckpointError) as info:
        fggp_hub.load(folder)
    assert "does not fit fggp_resnet20_cifar" in one_line(info)


def test_hub_commit_adds_files_and_keeps_the_rest(exported, tmp_path):
    """Hub.commit: a partial commit (eval writes a card's results through it, without hub internals)."""
    from fggp_hub.hub.errors import InvalidNameError, RepoNotFoundError
    from fggp_hub.hub.hubs import Hub, LocalHub

    _, folder = exported
    hub = LocalHub(tmp_path / "hub")
    first = fggp_hub.push(folder, "me/commit", hub=hub)
    (tmp_path / "notes.txt").write_text("measured later\n", encoding="utf-8")
    sha = hub.commit("me/commit", {"README.md": b"# new card\n", "notes.txt": tmp_path / "notes.txt"}, "Update the card")
    assert sha != first and hub.resolve("me/commit") == sha and hub.history("me/commit")[0]["message"] == "Update the card"
    snapshot = hub.pull("me/commit")
    assert (snapshot / "README.md").read_bytes() == b"# new card\n" and (snapshot / "notes.txt").is_file()
    assert (snapshot / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert (hub.pull("me/commit", first) / "README.md").read_bytes() == (folder / "README.md").read_bytes()
    with pytest.raises(InvalidNameError):
        hub.commit("me/commit", {"../escape.md": b"x"}, "bad")
    with pytest.raises(RepoNotFoundError):
        hub.commit("me/nothing-here", {"README.md": b"x"}, "no repo")
    assert hub.resolve("me/commit") == sha

    class PushOnly(Hub):  # a hub that implements only the abstract methods
        push = pull = resolve = None

    with pytest.raises(NotImplementedError):
        PushOnly().commit("me/commit", {}, "x")


# --------------------------------------------------------------------------- loading cost (issue 14)
def _load_module():
    import importlib

    return importlib.import_module("fggp_hub.hub.load")  # fggp_hub.hub.load is also the function's name


def _timm_reference(folder):
    """What timm gives for the export: a normal build, then the dense file's weights."""
    import timm

    model = timm.create_model("fggp_resnet20_cifar")
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval()


def _bitwise_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k].reshape(-1).view(torch.uint8), sb[k].reshape(-1).view(torch.uint8)) for k in sa)


@pytest.mark.parametrize("compact", [True, False])
def test_load_builds_the_architecture_once_without_random_init(exported, monkeypatch, compact):
    """The meta-device skeleton that sizes the model gets the weights: no second build, no random init to overwrite."""
    _, folder = exported
    module = _load_module()
    builds, inits = [], []
    real_build = module.build_model
    monkeypatch.setattr(module, "build_model", lambda config: builds.append(1) or real_build(config))
    real_init = torch.nn.init.kaiming_normal_
    monkeypatch.setattr(torch.nn.init, "kaiming_normal_", lambda t, *a, **k: inits.append(t.device.type) or real_init(t, *a, **k))
    model = fggp_hub.load(folder, compact=compact)
    assert len(builds) == 1 and set(inits) <= {"meta"}  # the only build is on the meta device
    assert _bitwise_equal(model, _timm_reference(folder))
    assert not model.training and all(p.device.type == "cpu" and p.requires_grad for p in model.parameters())
    assert all(b.device.type == "cpu" for b in model.buffers())
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_a_model_with_state_outside_its_state_dict_is_built_normally(exported, monkeypatch):
    _, folder = exported
    module = _load_module()
    builds = []
    real_build = module.build_model
    monkeypatch.setattr(module, "build_model", lambda config: builds.append(1) or real_build(config))
    monkeypatch.setattr(module, "_filled_by_state_dict", lambda model: False)
    model = fggp_hub.load(folder)
    assert len(builds) == 2  # the skeleton, then a normal build
    assert _bitwise_equal(model, _timm_reference(folder))


def test_filled_by_state_dict():
    from torch import nn

    filled = _load_module()._filled_by_state_dict
    assert filled(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)))

    class NonPersistent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.register_buffer("table", torch.arange(4.0), persistent=False)

    class Attribute(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.value = value

    tied = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    tied[1].weight = tied[0].weight
    assert not filled(NonPersistent())
    assert not filled(nn.Sequential(Attribute(torch.ones(2))))
    assert not filled(Attribute([torch.ones(2)])) and not filled(Attribute({"a": torch.ones(2)}))
    assert not filled(tied)
    assert filled(Attribute([1, 2])) and filled(Attribute("text"))


@pytest.mark.parametrize("compact", [True, False])
def test_a_weight_file_without_one_tensor_is_refused(exported, compact):
    """No tensor of the model is left with uninitialised memory: a file that lacks one is refused."""
    _, folder = exported
    state = load_file(str(folder / "model.safetensors"))
    del state["fc.bias"]
    name = "model.sparse.safetensors" if compact else "model.safetensors"
    path = folder / name
    if compact:
        fggp_hub.hub.sparse_format.save_file(state, path)
    else:
        save_file(state, str(path))
    config = _config(folder)
    config["sparsity"]["files"][name].update(sha256=sha256_file(path), size=path.stat().st_size)
    _write_config(folder, config)
    with pytest.raises(CorruptCheckpointError) as info:
        fggp_hub.load(folder, compact=compact)
    assert "missing ['fc.bias']" in one_line(info)


def test_all_finite():
    finite = _load_module()._all_finite
    assert finite(torch.randn(100)) and finite(torch.zeros(0))
    assert finite(torch.full((4,), 3e38))  # the sum overflows: the exact check decides
    assert finite(torch.full((100,), 60000.0, dtype=torch.float16)) and finite(torch.full((100,), 3e38, dtype=torch.bfloat16))
    for bad in (float("inf"), float("-inf"), float("nan")):
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            t = torch.ones(1000, dtype=dtype)
            t[517] = bad
            assert not finite(t), (bad, dtype)
    t = torch.ones(10)
    t[1], t[2] = float("inf"), float("-inf")  # the sum is NaN, still not finite
    assert not finite(t)


@pytest.mark.parametrize("compact", [True, False])
def test_loaded_weights_do_not_map_the_file(exported, monkeypatch, compact):
    """The compact file's decoded tensors are adopted (no storage allocated, nothing copied), the dense file's copied;
    either way a later write to the file does not reach the model (safetensors may memory-map it)."""
    _, folder = exported
    empties = []
    real = torch.nn.Module.to_empty
    monkeypatch.setattr(torch.nn.Module, "to_empty", lambda self, **k: empties.append(1) or real(self, **k))
    model = fggp_hub.load(folder, compact=compact)
    assert len(empties) == (0 if compact else 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = folder / ("model.sparse.safetensors" if compact else "model.safetensors")
    with open(path, "r+b") as f:  # in place: same inode, every byte after the header changed
        header = 8 + int.from_bytes(f.read(8), "little")
        f.seek(header)
        f.write(b"\x7f" * (path.stat().st_size - header))
    assert _bitwise_equal(model, _timm_reference_from(before))


def _timm_reference_from(state):
    import timm

    model = timm.create_model("fggp_resnet20_cifar")
    model.load_state_dict(state)
    return model
