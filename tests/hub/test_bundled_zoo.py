"""The bundled zoo: zoo names load offline from model_cards/, verified, in the documented order."""
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import fggp_hub
from fggp_hub.hub.errors import CorruptCheckpointError, FggpHubError, NotInCacheError

ROOT = Path(__file__).resolve().parents[2]
NAME = "resnet20-cifar10-s90"


def _publish_zoo():
    spec = importlib.util.spec_from_file_location("publish_zoo", ROOT / "model_cards" / "publish_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bundled(exported, tmp_path, monkeypatch):
    """The shared export bundled as a zoo entry in a private model_cards/ and index."""
    model, folder = exported
    zoo_dir = tmp_path / "model_cards"
    publish = _publish_zoo()
    entry = publish.bundle_one(folder, zoo_dir, check=False)
    index = Path(os.environ["FGGP_ZOO_PACKAGE_INDEX"])
    publish.write_index([entry], index)
    monkeypatch.setenv("FGGP_BUNDLED_ZOO", str(zoo_dir))
    return model, folder, zoo_dir / NAME, entry


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundled_copy_is_the_repo_folder_without_dense_weights(bundled):
    _, export, copy, entry = bundled
    assert not (copy / "model.safetensors").exists()
    assert {"config.json", "model.sparse.safetensors", "README.md"} <= {p.name for p in copy.iterdir()}
    for name, digest in entry["bundled"].items():
        assert digest == _sha(copy / name) == _sha(export / name)
    assert entry["repo_id"] == f"fggp-hub/{NAME}" and entry["hub"] == "hf"
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in copy.iterdir())


def test_zoo_name_loads_offline_from_the_bundled_copy(bundled, inputs):
    model, _, copy, _ = bundled
    loaded = fggp_hub.load(NAME)
    assert loaded.hub_info["origin"] == "bundled" and loaded.hub_info["folder"] == str(copy)
    assert loaded.hub_info["weights"] == "model.sparse.safetensors"
    with torch.no_grad():
        assert torch.equal(loaded(inputs), model(inputs))


def test_a_changed_bundled_file_is_refused(bundled):
    _, _, copy, _ = bundled
    card = copy / "config.json"
    card.write_text(card.read_text().replace('"fggp_resnet20_cifar"', '"fggp_resnet20_cifar" '))
    with pytest.raises(CorruptCheckpointError, match="pinned in the zoo index"):
        fggp_hub.load(NAME)


def test_the_local_hub_comes_before_the_bundled_copy(bundled):
    _, export, _, entry = bundled
    fggp_hub.push(export, entry["repo_id"], hub="local")
    loaded = fggp_hub.load(NAME)
    assert loaded.hub_info["origin"] == "local hub" and loaded.hub_info["hub"].startswith("local")


def test_an_asked_revision_skips_the_bundled_copy(bundled):
    with pytest.raises(FggpHubError):  # the Hub repo, offline and not cached
        fggp_hub.load(NAME, revision="main")


def test_without_a_bundled_zoo_offline_says_where_to_get_it(bundled, monkeypatch, tmp_path):
    monkeypatch.setenv("FGGP_BUNDLED_ZOO", str(tmp_path / "nowhere"))
    with pytest.raises(NotInCacheError) as err:
        fggp_hub.load(NAME)
    message = str(err.value)
    assert "\n" not in message and "FGGP_BUNDLED_ZOO" in message and f"fggp-hub/{NAME}" in message


def test_a_bare_name_finds_your_own_published_run(exported):
    model, folder = exported
    fggp_hub.push(folder, "local/resnet20-custom-s90", hub="local")
    assert fggp_hub.load("resnet20-custom-s90").hub_info["repo_id"] == "local/resnet20-custom-s90"


def test_list_shows_bundled_entries_available_without_warnings(bundled, capsys):
    from fggp_hub.cli import main

    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    row = next(line for line in out.splitlines() if line.startswith(NAME))
    assert row.rstrip().endswith("yes") and "bundled" not in out.split(NAME, 2)[-1].splitlines()[1:2]


def test_pull_of_a_bundled_name_points_at_it(bundled, capsys):
    from fggp_hub.cli import main

    assert main(["pull", NAME]) == 1
    assert "ships with fggp-hub" in capsys.readouterr().err


def test_push_sends_the_same_bytes_and_fills_a_collection(bundled, online):
    _, _, copy, entry = bundled
    publish = _publish_zoo()
    pushed = publish.push_bundled(online.url, None, copy.parent, collection="fggp-hub zoo")
    assert [repo for repo, _ in pushed] == [entry["repo_id"]]
    pulled = fggp_hub.pull(entry["repo_id"], hub=online.url)
    for f in copy.iterdir():
        assert _sha(pulled / f.name) == _sha(f)
    (collection,) = online.state.collections.values()
    assert [item["id"] for item in collection["items"]] == [entry["repo_id"]]
    publish.push_bundled(online.url, None, copy.parent, collection="fggp-hub zoo")  # again: same collection
    assert len(online.state.collections) == 1 and len(collection["items"]) == 1


@pytest.mark.timeout(300)
def test_a_wheel_install_says_in_one_line_where_the_zoo_is(bundled, tmp_path):
    import shutil

    source = tmp_path / "source"  # build from a copy: pip would leave build/ and *.egg-info in the checkout
    shutil.copytree(ROOT / "fggp_hub", source / "fggp_hub", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(source)], check=True, capture_output=True)
    site = tmp_path / "site"
    with zipfile.ZipFile(next(wheels.glob("fggp_hub-*.whl"))) as wheel:
        wheel.extractall(site)
    assert not (site / "model_cards").exists()
    assert (site / "fggp_hub" / "hub" / "templates" / "model_card.md").is_file()  # cards render the same from a wheel
    env = {k: v for k, v in os.environ.items() if k != "FGGP_BUNDLED_ZOO"}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    code = (f"import fggp_hub, sys; assert fggp_hub.__file__.startswith({str(site)!r}), fggp_hub.__file__\n"
            f"from fggp_hub.hub.errors import FggpHubError\n"
            f"try:\n    fggp_hub.load({NAME!r})\nexcept FggpHubError as e:\n    print(e); sys.exit(3)")
    elsewhere = tmp_path / "elsewhere"  # not next to the export folder of the same name
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stdout.count("\n") == 1 and "FGGP_BUNDLED_ZOO" in proc.stdout
    index = json.loads(Path(env["FGGP_ZOO_PACKAGE_INDEX"]).read_text())
    assert index["models"][0]["bundled"]
