"""Issue 13, hub side: bad inputs and faults, as a careless or hostile user would try them.

Each class of the issue has a test here, and one TABLE runs every bad input through the public
API (and a sample through the CLI): each must raise a typed FggpHubError in one line, change no
file outside its output, and finish in seconds.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

import fggp_hub
from fggp_hub.hub import LocalHub, get_hub
from fggp_hub.hub.errors import (
    CorruptCheckpointError,
    ExportError,
    FggpHubError,
    HubUnreachableError,
    InvalidNameError,
    RepoExistsError,
    UnsafePathError,
    ZooIndexError,
)
from fggp_hub.hub.integrity import sha256_file

REPO = "fggp-test/resnet20-cifar10-s90"


# --------------------------------------------------------------------------- helpers
def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _write_config(folder: Path, config: dict) -> None:
    (folder / "config.json").write_text(json.dumps(config))


def _set(config: dict, dotted: str, value) -> dict:
    node = config
    *path, last = dotted.split(".")
    for key in path:
        node = node[key]
    node[last] = value
    return config


def _snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` (not following links) with its size and sha256, except under ``skip``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if any(here == s or s in here.parents for s in skip):
            continue
        for name in filenames:
            path = here / name
            if path.is_symlink() or not path.is_file():
                out[str(path)] = (-1, os.readlink(path) if path.is_symlink() else "")
                continue
            out[str(path)] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


def _compact_with(folder: Path, index: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Replace the folder's compact file with a crafted one (config.json's sha256 and size updated: a consistent repo)."""
    meta = {"format": "fggp-sparse", "format_version": "1", "fggp_sparse_index": json.dumps(index)}
    path = folder / "model.sparse.safetensors"
    path.write_bytes(st_save(tensors, metadata=meta))
    config = _config(folder)
    config["sparsity"]["files"]["model.sparse.safetensors"].update(sha256=sha256_file(path), size=path.stat().st_size)
    _write_config(folder, config)


# --------------------------------------------------------------------------- class 2: export deletes nothing it did not write
def test_export_never_deletes_user_files_or_a_project_folder(exported, pruned_resnet20, tmp_path):
    _, folder = exported
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes.txt") as info:
        fggp_hub.export(pruned_resnet20, folder)
    _one_line(info.value)
    assert (folder / "notes.txt").read_text() == "mine"

    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print(1)")
    (project / "config.json").write_text(json.dumps({"architecture": "x", "sparsity": {"files": {}}}))
    with pytest.raises(ExportError, match="not an fggp-hub export"):
        fggp_hub.export(pruned_resnet20, project)
    assert (project / "src" / "main.py").read_text() == "print(1)"


def test_export_replaces_an_earlier_export_and_says_so(exported, pruned_resnet20, caplog):
    _, folder = exported
    with caplog.at_level("WARNING", logger="fggp_hub"):
        fggp_hub.export(pruned_resnet20, folder)
    assert any("replacing the earlier export" in r.getMessage() for r in caplog.records)


def test_nan_weights_are_refused_at_export(pruned_resnet20, tmp_path):
    with torch.no_grad():
        pruned_resnet20.fc.weight[0, 0] = float("nan")
    with pytest.raises(ExportError, match="NaN"):
        fggp_hub.export(pruned_resnet20, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- class 3: a silent endpoint
@pytest.fixture
def silent_endpoint(monkeypatch):
    """A loopback socket that accepts connections and never answers."""
    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("FGGP_HUB_TIMEOUT", "1")
    monkeypatch.setenv("FGGP_HUB_RETRIES", "2")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield url
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize("call", ["load", "pull", "push"])
def test_a_silent_endpoint_fails_within_seconds_naming_it(silent_endpoint, exported, call):
    _, folder = exported
    calls = {
        "load": lambda: fggp_hub.load(REPO, hub=silent_endpoint),
        "pull": lambda: fggp_hub.pull(REPO, hub=silent_endpoint),
        "push": lambda: fggp_hub.push(folder, REPO, hub=silent_endpoint),
    }
    start = time.monotonic()
    with pytest.raises(HubUnreachableError) as info:
        calls[call]()
    assert time.monotonic() - start < 30
    assert silent_endpoint in _one_line(info.value)


# --------------------------------------------------------------------------- class 4: NaN / inf / wrong types never switch a check off
@pytest.mark.parametrize("key,value", [
    ("sparsity.sparsity", float("nan")), ("sparsity.sparsity", float("inf")), ("sparsity.sparsity", "0.9"),
    ("sparsity.sparsity", True), ("sparsity.sparsity", 1.5), ("sparsity.sparsity", -0.1),
    ("sparsity.layers", []), ("sparsity.results", {"top1": float("nan")}), ("sparsity.results", "93"),
    ("sparsity.files.model.sparse.safetensors", "x"), ("num_classes", 20_000_000), ("num_classes", 2.5),
    ("sparsity.include_first_conv", "yes"), ("sparsity.target_sparsity", float("-inf")),
])
def test_bad_numbers_in_config_are_refused(exported, key, value):
    _, folder = exported
    config = _config(folder)
    if key.startswith("sparsity.files."):
        config["sparsity"]["files"]["model.sparse.safetensors"] = value
    else:
        _set(config, key, value)
    (folder / "config.json").write_text(json.dumps(config))  # json writes NaN / Infinity as Python does
    with pytest.raises(CorruptCheckpointError) as info:
        fggp_hub.load(folder)
    _one_line(info.value)


def test_nan_sparsity_of_every_layer_does_not_verify_an_unpruned_model(exported):
    model, folder = exported
    config = _config(folder)
    config["sparsity"]["sparsity"] = float("nan")
    for layer in config["sparsity"]["layers"].values():
        layer["sparsity"] = float("nan")
    _write_config(folder, config)
    with pytest.raises(CorruptCheckpointError, match="finite number"):
        fggp_hub.load(folder)


@pytest.mark.parametrize("entry", [
    {"name": "resnet20-cifar10-s90", "repo_id": REPO, "metrics": {"top1": float("nan")}},
    {"name": "resnet20-cifar10-s90", "repo_id": REPO, "metrics": {"top1": "93"}},
    {"name": "resnet20-cifar10-s90", "repo_id": REPO, "sparsity": float("inf")},
    {"name": "resnet20-cifar10-s90", "repo_id": REPO, "metrics": []},
    {"name": "resnet20-cifar10-s90", "repo_id": 5},
    {"name": 7, "repo_id": REPO},
    "not an entry",
])
def test_bad_zoo_index_values_are_refused(tmp_path, monkeypatch, entry):
    index = tmp_path / "zoo.json"
    index.write_text(json.dumps({"schema_version": 1, "models": [entry]}))
    monkeypatch.setenv("FGGP_ZOO_INDEX", str(index))
    with pytest.raises(ZooIndexError) as info:
        fggp_hub.list_models()
    _one_line(info.value)


# --------------------------------------------------------------------------- class 6: unknown hub schemes
@pytest.mark.parametrize("spec", ["s3://bucket/models", "ftp://host/x", "gs:bucket", "hdfs://nn/x", "file:///no/such/parent/x"])
def test_unknown_hub_schemes_are_refused(spec, exported, tmp_path, monkeypatch):
    _, folder = exported
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InvalidNameError) as info:
        fggp_hub.push(folder, REPO, hub=spec)
    _one_line(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no ./s3:/ folder


def test_hub_folders_still_accepted(tmp_path):
    assert get_hub(str(tmp_path)).root == tmp_path
    assert get_hub(str(tmp_path / "new-hub")).root == tmp_path / "new-hub"  # created on first push
    with pytest.raises(InvalidNameError, match="parent"):
        get_hub(str(tmp_path / "no" / "such" / "hub"))


# --------------------------------------------------------------------------- class 7: crafted sizes
def test_a_tiny_compact_file_cannot_declare_gigabytes(exported):
    _, folder = exported
    index = {"conv1.weight": {"encoding": "csr", "shape": [1, 2**40], "dtype": "float32"}}
    tensors = {"conv1.weight:row_ptr": torch.zeros(2, dtype=torch.int64), "conv1.weight:col_idx": torch.zeros(0, dtype=torch.int16),
               "conv1.weight:values": torch.zeros(0)}
    _compact_with(folder, index, tensors)
    assert (folder / "model.sparse.safetensors").stat().st_size < 1000
    start = time.monotonic()
    with pytest.raises(CorruptCheckpointError, match="does not fit") as info:
        fggp_hub.load(folder)
    _one_line(info.value)
    with pytest.raises(CorruptCheckpointError, match="declares"):  # the format alone: bounded by the file's size
        fggp_hub.hub.sparse_format.load_file(folder / "model.sparse.safetensors")
    assert time.monotonic() - start < 10


def test_a_huge_num_classes_is_refused_before_building(exported):
    _, folder = exported
    config = _config(folder)
    config["num_classes"] = config["model_args"]["num_classes"] = 90_000  # allowed by type, not by the file's size
    _write_config(folder, config)
    with pytest.raises(CorruptCheckpointError, match="refusing to allocate|does not fit"):
        fggp_hub.load(folder, compact=False)


# --------------------------------------------------------------------------- class 8: push refuses links
def test_push_refuses_symlinked_files(exported, tmp_path):
    _, folder = exported
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (folder / "notes.txt").symlink_to(secret)
    with pytest.raises(InvalidNameError, match="symbolic link"):
        fggp_hub.push(folder, REPO)
    assert not get_hub().exists(REPO)


# --------------------------------------------------------------------------- class 9: the local hub stays inside its root
def test_local_hub_cannot_be_walked_out_of(exported, tmp_path):
    _, folder = exported
    hub = LocalHub(tmp_path / "hub")
    sha = fggp_hub.push(folder, REPO, hub=hub)
    repo = tmp_path / "hub" / REPO
    outside = tmp_path / "outside"
    outside.mkdir()

    (repo / "refs" / "evil").write_text("../../../../outside\n")
    with pytest.raises(UnsafePathError):
        hub.pull(REPO, "evil")
    (repo / "refs" / "empty").write_text("")
    with pytest.raises(FggpHubError, match="empty"):
        hub.pull(REPO, "empty")

    (repo / "refs" / "linked").symlink_to(repo / "refs" / "main")
    with pytest.raises(UnsafePathError):
        hub.resolve(REPO, "linked")

    fake = "f" * 40
    (repo / "commits" / fake).symlink_to(outside, target_is_directory=True)
    (repo / "refs" / "fake").write_text(fake)
    with pytest.raises(UnsafePathError):
        hub.pull(REPO, "fake")

    commit = repo / "commits" / sha
    (commit / "notes.txt").symlink_to(outside / "x.txt")
    (outside / "x.txt").write_text("outside")
    with pytest.raises(InvalidNameError, match="symbolic link"):
        hub.pull(REPO)


def test_branch_collision_leaves_no_orphan_commit(exported, tmp_path):
    _, folder = exported
    hub = LocalHub(tmp_path / "hub")
    fggp_hub.push(folder, REPO, hub=hub)
    commits = sorted(p.name for p in (tmp_path / "hub" / REPO / "commits").iterdir())
    with pytest.raises(InvalidNameError, match="collides"):
        fggp_hub.push(folder, REPO, hub=hub, revision="main/x")
    assert sorted(p.name for p in (tmp_path / "hub" / REPO / "commits").iterdir()) == commits


def test_a_killed_push_leaves_no_staging_folder_forever(exported, tmp_path, pruned_resnet20):
    model, folder = exported
    hub = LocalHub(tmp_path / "hub")
    fggp_hub.push(folder, REPO, hub=hub)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / "hub" / REPO / "commits" / f".tmp-{'a' * 40}-{dead}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    fggp_hub.push(folder, REPO, hub=hub, commit_message="again")
    assert not stale.exists()


# --------------------------------------------------------------------------- class 10 + 12 on the loopback HTTP hub
def test_remote_push_keeps_files_it_did_not_write(online, exported):
    from huggingface_hub import HfApi

    _, folder = exported
    fggp_hub.push(folder, REPO, hub=online.url)
    HfApi(endpoint=online.url).upload_file(path_or_fileobj=b"MIT", path_in_repo="LICENSE", repo_id=REPO)
    (folder / "recipe.yaml").unlink()
    sha = fggp_hub.push(folder, REPO, hub=online.url)
    files = online.files(REPO, sha)
    assert "LICENSE" in files and "recipe.yaml" not in files
    sha = fggp_hub.push(folder, REPO, hub=online.url, delete_others=True)
    assert "LICENSE" not in online.files(REPO, sha)


def test_publishing_other_weights_over_a_repo_needs_overwrite(exported, pruned_resnet20, tmp_path, caplog):
    _, folder = exported
    first = fggp_hub.push(folder, REPO)
    with torch.no_grad():
        pruned_resnet20.fc.bias.add_(1.0)
    other = fggp_hub.export(pruned_resnet20, tmp_path / "other", results={"top1": 33.0}, name="resnet20-cifar10-s90")
    with pytest.raises(RepoExistsError) as info:
        fggp_hub.push(other, REPO)
    text = _one_line(info.value)
    assert "71.25%" in text and "33.00%" in text and "overwrite=True" in text
    assert get_hub().resolve(REPO) == first
    with caplog.at_level("WARNING", logger="fggp_hub"):
        second = fggp_hub.push(other, REPO, overwrite=True)
    assert second != first and any("publishing over it" in r.getMessage() for r in caplog.records)
    assert fggp_hub.load(REPO, revision=first).hub_info["results"]["top1"] == 71.25  # the old revision stays addressable


# --------------------------------------------------------------------------- class 11: model_args whitelist
@pytest.mark.parametrize("key,value", [("checkpoint_path", "/etc/passwd"), ("pretrained_cfg_overlay", {"file": "/etc/passwd"}),
                                       ("features_only", True), ("pretrained", True), ("widths", ["../x"])])
def test_model_args_are_whitelisted(exported, key, value):
    _, folder = exported
    config = _config(folder)
    config["model_args"][key] = value
    _write_config(folder, config)
    with pytest.raises(CorruptCheckpointError) as info:
        fggp_hub.load(folder)
    _one_line(info.value)


def test_nan_weights_are_refused_at_load(exported):
    _, folder = exported
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state["fc.bias"][0] = float("inf")
    save_file(state, str(folder / "model.safetensors"))
    config = _config(folder)
    path = folder / "model.safetensors"
    config["sparsity"]["files"]["model.safetensors"].update(sha256=sha256_file(path), size=path.stat().st_size)
    _write_config(folder, config)
    with pytest.raises(CorruptCheckpointError, match="NaN or infinite"):
        fggp_hub.load(folder, compact=False)


# --------------------------------------------------------------------------- the table
def _case_config(key, value):
    def mutate(folder: Path, tmp: Path):
        config = _config(folder)
        _set(config, key, value)
        _write_config(folder, config)
        return lambda: fggp_hub.load(folder)
    return mutate


def _first_layer(folder: Path, value):
    config = _config(folder)
    next(iter(config["sparsity"]["layers"].values()))["sparsity"] = value
    _write_config(folder, config)
    return lambda: fggp_hub.load(folder)


def _case(call):
    return lambda folder, tmp: (lambda: call(folder, tmp))


TABLE = {
    # class 4: numbers read from a repo
    "sparsity NaN": _case_config("sparsity.sparsity", float("nan")),
    "sparsity string": _case_config("sparsity.sparsity", "high"),
    "first layer sparsity inf": lambda folder, tmp: _first_layer(folder, float("inf")),
    "total_params negative": _case_config("sparsity.total_params", -5),
    "results top1 400": _case_config("sparsity.results", {"top1": 400}),
    "num_classes bool": _case_config("num_classes", True),
    "model_args list": _case_config("model_args", [1, 2]),
    "pretrained_cfg string": _case_config("pretrained_cfg", "x"),
    # class 11
    "model_args checkpoint_path": _case_config("model_args", {"num_classes": 10, "checkpoint_path": "/etc/passwd"}),
    "model_args in_chans huge": _case_config("model_args", {"num_classes": 10, "in_chans": 10**6}),
    # class 6
    "hub s3": _case(lambda folder, tmp: fggp_hub.push(folder, REPO, hub="s3://bucket/x")),
    "hub ftp": _case(lambda folder, tmp: fggp_hub.load(REPO, hub="ftp://host/x")),
    "hub is a file": _case(lambda folder, tmp: fggp_hub.push(folder, REPO, hub=str(folder / "config.json"))),
    "hub wrong type": _case(lambda folder, tmp: fggp_hub.pull(REPO, hub=3)),
    # class 8
    "push folder with link": lambda folder, tmp: ((folder / "extra.txt").symlink_to(folder / "config.json"),
                                                 lambda: fggp_hub.push(folder, REPO))[1],
    # names, misc
    "load empty name": _case(lambda folder, tmp: fggp_hub.load("   ")),
    "push to bad repo id": _case(lambda folder, tmp: fggp_hub.push(folder, "../etc")),
    "push bad revision": _case(lambda folder, tmp: fggp_hub.push(folder, REPO, revision="a..b")),
    "export into a file": _case(lambda folder, tmp: fggp_hub.export(fggp_hub.load(folder), folder / "config.json")),
    "export over user files": lambda folder, tmp: ((folder / "mine.txt").write_text("x"),
                                                  lambda: fggp_hub.export(fggp_hub.load(folder), folder))[1],
    "zoo index not a list": lambda folder, tmp: (os.environ.__setitem__("FGGP_ZOO_INDEX", str(tmp / "zoo.json")),
                                                (tmp / "zoo.json").write_text('{"models": {"a": 1}}'),
                                                lambda: fggp_hub.list_models())[2],
    "FGGP_HUB_TIMEOUT not a number": lambda folder, tmp: (os.environ.__setitem__("FGGP_HUB_TIMEOUT", "soon"),
                                                         lambda: fggp_hub.hub.hubs._timeout())[1],
}
_COUNTS_BY_CLASS = {"4": 8, "11": 2, "6": 4, "8": 1, "names/misc": 7}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_bad_input_table(name, exported, tmp_path, monkeypatch):
    _, folder = exported
    monkeypatch.setenv("FGGP_HUB_TIMEOUT", "")  # recorded even when unset: the case's os.environ write is undone
    monkeypatch.delenv("FGGP_HUB_TIMEOUT")
    monkeypatch.setenv("FGGP_ZOO_INDEX", str(tmp_path / "fggp_home" / "zoo_index.json"))
    call = TABLE[name](folder, tmp_path)
    before = _snapshot(tmp_path, skip=(tmp_path / "fggp_home",))
    start = time.monotonic()
    with pytest.raises(FggpHubError) as info:
        call()
    assert time.monotonic() - start < 20, name
    _one_line(info.value)
    assert _snapshot(tmp_path, skip=(tmp_path / "fggp_home",)) == before, f"{name} changed files"


CLI_TABLE = [
    (["push", "{folder}", REPO, "--hub", "s3://bucket/x"], "unsupported hub"),
    (["pull", REPO, "--hub", "ftp://host/x"], "unsupported hub"),
    (["info", "{folder}"], "expected a finite number"),
    (["export", "{weights}", "{project}", "--model", "fggp_resnet20_cifar"], "not an fggp-hub export"),
    (["list"], "zoo index"),
]


def test_bad_input_table_through_the_cli(exported, tmp_path):
    model, folder = exported
    from safetensors.torch import save_file

    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    config = _config(folder)
    config["sparsity"]["sparsity"] = float("nan")
    _write_config(folder, config)
    (tmp_path / "zoo.json").write_text('{"models": [{"name": "resnet20-cifar10-s90", "repo_id": "a/b", "metrics": {"top1": NaN}}]}')
    env = {**os.environ, "FGGP_HUB_HOME": str(tmp_path / "home"), "FGGP_ZOO_INDEX": str(tmp_path / "zoo.json"),
           "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf-cache")}
    script = "import sys\nfrom fggp_hub.cli import main\nfor argv in sys.argv[1:]:\n    import json; print(main(json.loads(argv)), flush=True)\n"
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"architecture": "x", "sparsity": {"files": {}}}')
    (project / "main.py").write_text("print(1)")
    argvs = [[a.format(folder=folder, weights=weights, project=project) for a in argv] for argv, _ in CLI_TABLE]
    before = _snapshot(tmp_path, skip=(tmp_path / "home", tmp_path / "hf-cache"))
    out = subprocess.run([sys.executable, "-c", script, *map(json.dumps, argvs)], capture_output=True, text=True, env=env, timeout=300)
    codes = out.stdout.split()
    lines = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert codes == ["1"] * len(CLI_TABLE) and len(lines) == len(CLI_TABLE), out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    for (_, expected), line in zip(CLI_TABLE, lines):
        assert expected in line, (expected, line)
    assert _snapshot(tmp_path, skip=(tmp_path / "home", tmp_path / "hf-cache")) == before
