"""The fggp-hub console script end to end, on one tiny exported model.

The main paths run as subprocesses (``python -m fggp_hub.cli``), as users run them;
text output and the error matrix call the same ``main()`` in this process (``run_main``),
which saves an interpreter start (~4 s of CPU) per case.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import NAME, REPO, ROOT, TEST_IMAGES, direct_metrics  # noqa: E402


def _one_line_error(out) -> str:
    assert out.returncode == 1, (out.returncode, out.stdout[-500:], out.stderr[-2000:])
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    return out.stderr


@pytest.fixture
def run_main(cli_env, monkeypatch, capsys):
    """``main(argv)`` in this process with the session's environment; returns (exit code, stdout, stderr)."""
    from huggingface_hub import constants

    from fggp_hub.cli import main

    for key in ("FGGP_HUB_HOME", "FGGP_CIFAR10_PATH", "FGGP_DATA_CACHE", "FGGP_ZOO_PACKAGE_INDEX"):
        monkeypatch.setenv(key, cli_env.env[key])
    monkeypatch.delenv("FGGP_HUB", raising=False)
    monkeypatch.delenv("FGGP_ZOO_INDEX", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cli_env.env["HF_HUB_CACHE"])

    def call(*argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


@pytest.fixture(scope="module")
def zoo(cli_env, tiny):
    """Two names in the user's zoo index: the tiny model on the local hub, and an uncached remote one."""
    import os

    from fggp_hub.hub import register

    old = os.environ.get("FGGP_HUB_HOME")
    os.environ["FGGP_HUB_HOME"] = cli_env.env["FGGP_HUB_HOME"]
    try:
        register(NAME, REPO, revision=tiny["revision"], hub=str(tiny["hub"]), overwrite=True)
        register("vgg19-cifar10-s95", "fggp-test/vgg19-cifar10-s95", hub="http://127.0.0.1:9", method="fggp",
                 metrics={"top1": 93.1, "compact_bytes": 12345}, overwrite=True)
    finally:
        os.environ.pop("FGGP_HUB_HOME") if old is None else os.environ.__setitem__("FGGP_HUB_HOME", old)
    return [NAME, "vgg19-cifar10-s95"]


# --------------------------------------------------------------------------- export / push / pull / info
def test_export_push_pull_info(cli_env, tiny, run_main):
    folder, results = tiny["folder"], tiny["results"]
    assert tiny["export"]["name"] == NAME
    assert tiny["export"]["sparsity"] == pytest.approx(tiny["stats"]["sparsity"], abs=1e-12)
    config = json.loads((folder / "config.json").read_text())
    block = config["sparsity"]
    assert config["architecture"] == "fggp_resnet20_cifar" and block["method"] == "gmp"
    assert block["results"]["top1"] == results["top1"] and block["results"]["num_images"] == TEST_IMAGES
    assert f"hf-hub:{REPO}" in (folder / "README.md").read_text()

    code, text, _ = run_main("pull", f"{REPO}@{tiny['revision'][:10]}", "--hub", tiny["hub"], "--json")
    pulled = json.loads(text)
    assert code == 0 and pulled["revision"] == tiny["revision"]
    assert (Path(pulled["folder"]) / "model.sparse.safetensors").read_bytes() == (folder / "model.sparse.safetensors").read_bytes()

    info = cli_env.json("info", REPO, "--hub", tiny["hub"])
    assert info["architecture"] == "fggp_resnet20_cifar" and info["method"] == "gmp" and info["name"] == NAME
    assert info["revision"] == tiny["revision"] and info["verified"] == "model.sparse.safetensors"
    assert info["sparsity"] == pytest.approx(tiny["stats"]["sparsity"], abs=1e-12)
    assert info["top1"] == results["top1"] and info["accuracy_source"] == "card"
    assert info["files"]["model.safetensors"] == (folder / "model.safetensors").stat().st_size
    assert info["layers"].keys() == tiny["stats"]["layers"].keys()
    for name, layer in tiny["stats"]["layers"].items():
        assert info["layers"][name]["zeros"] == layer["zeros"] and info["layers"][name]["shape"] == layer["shape"]

    code, text, _ = run_main("info", folder, "--dense")  # an export folder, for people: essentials + per-layer table
    assert code == 0
    assert "method        gmp" in text and f"{results['top1']:.2f}%" in text and "model.safetensors: sha256" in text
    first = next(iter(tiny["stats"]["layers"]))
    row = next(line for line in text.splitlines() if line.startswith(first))
    assert f"{tiny['stats']['layers'][first]['zeros']:,}" in row and row.rstrip().endswith("%")


# --------------------------------------------------------------------------- list / leaderboard
def test_list_and_leaderboard_from_cards_and_offline_entries(cli_env, tiny, zoo, run_main):
    rows = {r["name"]: r for r in cli_env.json("list")}
    mine, remote = rows[NAME], rows["vgg19-cifar10-s95"]
    assert mine["available"] and mine["accuracy_source"] == "card" and mine["top1"] == tiny["results"]["top1"]
    assert mine["compact_bytes"] == (tiny["folder"] / "model.sparse.safetensors").stat().st_size
    assert mine["dense_bytes"] == (tiny["folder"] / "model.safetensors").stat().st_size
    assert mine["method"] == "gmp" and mine["backbone"] == "resnet20" and mine["revision"] == tiny["revision"]
    assert not remote["available"] and "not downloaded" in remote["status"]  # offline, nothing cached: index values
    assert remote["top1"] == 93.1 and remote["compact_bytes"] == 12345 and remote["accuracy_source"] == "zoo index"

    zoo_md = cli_env.root / "out" / "ZOO.md"
    code, text, _ = run_main("list", "--leaderboard", "--markdown", "--output", zoo_md, "--folder", tiny["folder"], "--json")
    out = json.loads(text)
    assert code == 0 and out["output"] == str(zoo_md) and out["models"] == 2  # the folder holds the zoo entry's weights
    md = zoo_md.read_text()
    assert f"`{NAME}`" in md and "| gmp |" in md and "| fggp |" in md and "JPEG-degraded" in md
    assert f"| gmp | **{tiny['results']['top1']:.2f}** |" in md
    assert "| fggp | **93.10** |" in md  # from the index alone; s95 read off the name
    assert not [p for p in zoo_md.parent.iterdir() if p.name != "ZOO.md"]  # atomic: no temporary left

    code, text, _ = run_main("list")
    assert code == 0 and text.splitlines()[0].split()[:3] == ["name", "backbone", "method"]
    assert f"{tiny['results']['top1']:.2f}" in text and "93.10 (index)" in text and "12.3 kB" in text
    assert "vgg19-cifar10-s95: not downloaded from http://127.0.0.1:9: run 'fggp-hub pull vgg19-cifar10-s95'" in text

    code, text, _ = run_main("list", "--leaderboard", "--json")
    board = json.loads(text)
    assert [(r["backbone"], r["method"], r["runs"], r["rank"]) for r in board] == [("resnet20", "gmp", 1, 1), ("vgg19", "fggp", 1, 1)]
    code, text, _ = run_main("list", "--leaderboard")
    assert code == 0 and "resnet20 on CIFAR-10 (JPEG-q75 copy), dense start" in text and "s=95%" in text
    code, text, _ = run_main("list", "nothing-*")
    assert code == 0 and "no zoo name matches" in text


def test_leaderboard_ranks_methods_per_backbone_and_sparsity(tmp_path):
    from fggp_hub.hub.leaderboard import leaderboard
    from fggp_hub.hub.records import ModelRecord, unique_records
    from fggp_hub.hub.render import leaderboard_markdown, write_zoo_markdown

    def rec(name, method, s, top1, start=0.0):
        return ModelRecord(name=name, backbone="vgg19", dataset="CIFAR-10", method=method, target_sparsity=s,
                           sparsity=s, top1=top1, initial_sparsity=start, compact_bytes=1000)

    records = [rec("a", "fggp", 0.95, 93.0), rec("b", "fggp", 0.95, 93.4), rec("c", "gmp", 0.95, 92.5),
               rec("d", "gmp", 0.98, 90.0), rec("e", "fggp", 0.98, 89.0), rec("f", "fggp", 0.95, 91.0, start=0.5)]
    rows = leaderboard(records)
    dense95 = [r for r in rows if r.start == "dense" and r.sparsity == 0.95]
    assert [(r.method, r.rank, r.runs) for r in dense95] == [("fggp", 1, 2), ("gmp", 2, 1)]
    assert dense95[0].top1 == pytest.approx(93.2) and dense95[0].top1_std == pytest.approx(0.2828427, abs=1e-6)
    assert dense95[1].delta_to_best == pytest.approx(-0.7)
    assert list(dense95[0].to_dict()) == [  # the keys of `fggp-hub list --leaderboard --json`, in order
        "backbone", "dataset", "start", "sparsity", "method", "top1", "top1_std", "runs", "best_top1",
        "measured_sparsity", "dense_top1", "compact_bytes", "models", "rank", "delta_to_best"]
    md = leaderboard_markdown(rows)
    assert "### vgg19 on CIFAR-10, dense start" in md and "sparse start (ERK 50%)" in md
    assert "| Method | 95% sparsity | 98% sparsity |" in md
    assert "| fggp | **93.20 ± 0.28 (n=2)** | 89.00 |" in md and "| gmp | 92.50 | **90.00** |" in md
    assert "mean ± sample standard deviation" in md
    single = leaderboard_markdown(leaderboard([rec("c", "gmp", 0.95, 92.5)]))
    assert "±" not in single and "one run per cell" in single  # the footer promises no spread that is not shown
    same = [ModelRecord(name="x", weights_sha256="ab"), ModelRecord(name="y", weights_sha256="ab"), ModelRecord(name="z")]
    assert [r.name for r in unique_records(same)] == ["x", "z"]
    path = write_zoo_markdown(tmp_path / "ZOO.md", records)
    assert path.read_text().startswith("# fggp-hub model zoo") and "| `f` | vgg19 | fggp | 95.00% |" in path.read_text()


# --------------------------------------------------------------------------- eval
def test_eval_matches_direct_torch_and_the_card(cli_env, tiny):
    out_file = cli_env.root / "eval" / "results.json"
    data = cli_env.json("eval", REPO, "--hub", tiny["hub"], "--no-latency", "--no-progress", "--check", "--output", out_file)
    measured, expected = data["measured"], direct_metrics(tiny["model"], cli_env)
    assert measured["num_images"] == TEST_IMAGES and measured["top1"] == expected["top1"]
    assert measured["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert measured["sparsity"] == pytest.approx(tiny["stats"]["sparsity"], abs=1e-12)
    assert data["ok"] and {"top1", "loss", "sparsity", "num_images"} <= {r["metric"] for r in data["comparison"]}
    assert all(r["ok"] for r in data["comparison"])
    assert json.loads(out_file.read_text())["top1"] == expected["top1"]


def test_eval_check_fails_on_a_doctored_card(cli_env, tiny, run_main):
    from huggingface_hub import ModelCard

    from fggp_hub.eval import card_metrics

    doctored = cli_env.root / "doctored"
    shutil.copytree(tiny["folder"], doctored)
    true_top1 = tiny["results"]["top1"]
    card = ModelCard.load(doctored / "README.md")
    card.data.eval_results[0].metric_value = true_top1 + 5.0
    card.save(doctored / "README.md")
    results = json.loads((doctored / "eval_results.json").read_text())
    (doctored / "eval_results.json").write_text(json.dumps({**results, "top1": true_top1 + 5.0}))
    assert card_metrics(doctored)["top1"] == true_top1 + 5.0

    code, text, err = run_main("eval", doctored, "--no-latency", "--no-progress", "--check", "--tolerance", "6")
    assert code == 0, err  # 5 points off, 6 allowed
    assert "all" in text.splitlines()[-1] and "agree with the card" in text

    code, text, err = run_main("eval", doctored, "--no-latency", "--no-progress", "--check", "--update-card")
    assert code == 1 and err.startswith("error: top1") and err.count("\n") == 1 and "DIFFERS" in text
    row = next(line for line in text.splitlines() if line.startswith("top1"))
    assert "-5" in row and "DIFFERS" in row  # measured - card
    assert card_metrics(doctored)["top1"] == true_top1  # --update-card wrote the measured value into the card


def test_update_card_updates_eval_results_written_by_a_run(cli_env, tiny, run_main):
    """A run records its recipe's dataset key ("cifar10"), eval the card's label: the headline is still updated."""
    folder = cli_env.root / "run-written"
    shutil.copytree(tiny["folder"], folder)
    results = json.loads((folder / "eval_results.json").read_text())
    (folder / "eval_results.json").write_text(json.dumps({**results, "dataset": "cifar10", "top1": 1.25}))
    code, text, err = run_main("eval", folder, "--no-latency", "--no-progress", "--update-card", "--json")
    assert code == 0, err
    measured = json.loads(text)["measured"]["top1"]
    assert json.loads((folder / "eval_results.json").read_text())["top1"] == measured != 1.25
    assert run_main("card", folder)[0] == 0  # a re-render shows the measured figure, not the stale one
    assert f"value: {measured}" in (folder / "README.md").read_text() and "value: 1.25" not in (folder / "README.md").read_text()


def test_eval_check_on_a_subset_compares_with_the_cards_subset_result(cli_env, tiny, run_main):
    """A card can carry a result on the first n test images (big models in CI): --num-images n checks that one."""
    from fggp_hub.eval import card_metrics

    folder = cli_env.root / "subset"
    shutil.copytree(tiny["folder"], folder)
    code, text, err = run_main("eval", folder, "--no-latency", "--no-progress", "--num-images", "100", "--update-card")
    assert code == 0, err
    assert card_metrics(folder)["num_images"] == TEST_IMAGES  # the full split's figures stay the headline
    subset = card_metrics(folder, num_images=100)
    assert subset["num_images"] == 100 and subset["split"] == "test"
    code, text, err = run_main("eval", folder, "--no-latency", "--no-progress", "--num-images", "100", "--check")
    assert code == 0, err + text
    code, text, err = run_main("eval", folder, "--no-latency", "--no-progress", "--num-images", "99", "--check")
    assert code == 1  # no result on exactly 99 images: the full split's figures do not match
    assert run_main("card", folder, "--dense-top1", "88")[0] == 0  # a re-rendered card keeps the subset result
    assert card_metrics(folder, num_images=100) == subset and card_metrics(folder)["num_images"] == TEST_IMAGES


# --------------------------------------------------------------------------- card
def test_card_rerenders_from_eval_results(cli_env, tiny, run_main):
    folder = cli_env.root / "recard"
    shutil.copytree(tiny["folder"], folder)
    assert run_main("card", folder)[0] == 0
    assert (folder / "README.md").read_text() == (tiny["folder"] / "README.md").read_text()  # nothing changed: same card
    results = json.loads((folder / "eval_results.json").read_text())
    (folder / "eval_results.json").write_text(json.dumps({**results, "top1": 42.125}))
    before = (folder / "README.md").read_text()
    code, text, _ = run_main("card", folder, "--json")
    assert code == 0 and json.loads(text)["card"] == str(folder / "README.md")
    after = (folder / "README.md").read_text()
    assert "value: 42.125" in after and "value: 42.125" not in before and "| Top-1 accuracy | n/a | 42.12%" in after
    assert f"hf-hub:{REPO}" in after  # the repo id of the earlier card is kept
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    import fggp_hub

    fggp_hub.load(folder)  # still a valid export: the card's sparsity agrees with the weights


def test_card_records_a_dense_baseline_measured_after_export(cli_env, tiny, run_main):
    folder = cli_env.root / "dense-later"
    shutil.copytree(tiny["folder"], folder)
    code, _, err = run_main("card", folder, "--dense-top1", "150")
    assert code == 1 and err.startswith("error: --dense-top1 150") and "[0, 100]" in err and err.count("\n") == 1
    assert "| Top-1 accuracy | n/a |" in (folder / "README.md").read_text()  # refused: nothing changed
    assert run_main("card", folder, "--dense-top1", "91.5")[0] == 0
    card = (folder / "README.md").read_text()
    assert "| Top-1 accuracy | 91.50% |" in card and "baseline was not recorded" not in card
    assert json.loads((folder / "config.json").read_text())["sparsity"]["dense_baseline"] == {"top1": 91.5}
    import fggp_hub

    assert fggp_hub.load(folder).hub_info["sparsity"] == pytest.approx(tiny["stats"]["sparsity"], abs=1e-12)  # the weights' hashes still hold


# --------------------------------------------------------------------------- export from a training run
def test_export_of_a_run_reproduces_the_runs_own_export(cli_env, run_main):
    run_args = ["--data.train_subset", "128", "--data.test_subset", "64", "--train.epochs", "2", "--train.batch_size", "32",
                "--pruning.interval", "1", "--tracker", "null", "--train.log_every", "2", "--output_dir", "run",
                "--export.name", "resnet20-cifar10-s90-run", "--export.hub", str(cli_env.root / "run-hub")]
    (cli_env.root / "runs").mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "prune.py"), *run_args], cwd=cli_env.root / "runs",
                          env=cli_env.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = cli_env.root / "runs" / "run"
    theirs = run / "export" / "resnet20-cifar10-s90-run"

    code, text, err = run_main("export", run, cli_env.root / "from-run", "--push-to", "me/from-run", "--hub", cli_env.root / "hub2", "--json")
    assert code == 0, err
    out = json.loads(text)
    ours = Path(out["folder"])
    a = json.loads((theirs / "config.json").read_text())
    b = json.loads((ours / "config.json").read_text())
    assert a["sparsity"].pop("command") == b["sparsity"].pop("command")  # run_info.json records what ran
    # the compact file's safetensors header keeps its metadata in a hash map: same content, key order may differ
    a["sparsity"]["files"]["model.sparse.safetensors"].pop("sha256")
    b["sparsity"]["files"]["model.sparse.safetensors"].pop("sha256")
    assert a == b  # same weights (dense sha256), sparsity, schedule, pruning config, recipe, results, dataset label
    for name in ("model.safetensors", "recipe.yaml", "eval_results.json"):
        assert (theirs / name).read_bytes() == (ours / name).read_bytes(), name
    from fggp_hub.hub.sparse_format import load_file

    x, y = load_file(theirs / "model.sparse.safetensors"), load_file(ours / "model.sparse.safetensors")
    assert x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x)
    assert out["revision"] and (cli_env.root / "hub2" / "me" / "from-run" / "refs" / "main").read_text().strip() == out["revision"]

    checkpoints = sorted((run / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[-1]))
    assert len(checkpoints) == 2
    code, text, err = run_main("export", checkpoints[0], cli_env.root / "older", "--json")
    assert code == 0 and "belongs to the end of the run" in err  # an earlier checkpoint: the run's results are not its own
    older = json.loads((cli_env.root / "older" / "config.json").read_text())["sparsity"]
    assert older["results"] is None and older["schedule"] == a["sparsity"]["schedule"]


# --------------------------------------------------------------------------- errors and exit codes
def test_offline_error_through_subprocess(cli_env, tiny):
    offline = _one_line_error(cli_env("info", REPO, "--hub", "http://127.0.0.1:9"))
    assert "HF_HUB_OFFLINE=1" in offline and "not in the local cache" in offline


def test_user_errors_are_one_line_with_exit_code_1(cli_env, tiny, run_main):
    root = cli_env.root
    cases = [
        (["info", "me/does-not-exist", "--hub", tiny["hub"]], "not found"),
        (["info", "../nowhere/x"], "does not exist"),
        (["eval", "resnet20-cifar10-s99", "--hub", tiny["hub"]], "unknown model 'resnet20-cifar10-s99'"),
        (["eval", REPO, "--tolerance", "lots"], "expected a number or METRIC=NUMBER"),
        (["pull", tiny["folder"]], "is a local folder"),
        (["pull", "me/tiny@no-such-branch", "--hub", tiny["hub"]], "revision 'no-such-branch' not found"),
        (["push", root / "missing", "me/x", "--hub", tiny["hub"]], "export the model first"),
        (["push", tiny["folder"], "not a repo id", "--hub", tiny["hub"]], "invalid repo id"),
        (["export", root / "nope.safetensors", root / "x"], "does not exist"),
        (["export", root / "weights.safetensors", root / "x"], "pass --model ARCH"),
        (["export", root / "results.json", root / "x", "--model", "fggp_resnet20_cifar"], "only safetensors"),
        (["export", root / "weights.safetensors", root / "x", "--model", "test_resnet"], "do not fit"),
        (["export", root / "weights.safetensors", root / "x", "--model", "no_such_arch"], "unknown timm architecture"),
        (["export", root / "weights.safetensors", tiny["folder"], "--model", "fggp_resnet20_cifar", "--no-overwrite"], "already exists"),
        (["export", root / "cifar10", root / "x"], "neither a run folder"),
        (["card", root / "missing"], "is not a folder"),
        (["card", root / "cifar10"], "has no config.json"),
        (["list", "--leaderboard", "--folder", root / "cifar10"], "no fggp-hub export"),
    ]
    for argv, message in cases:
        code, _, err = run_main(*argv)
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and message in err, (argv, err)
    assert not (root / "x").exists()
    for argv in (["bogus"], ["export"], ["list", "--no-such-option"], ["eval", REPO, "--num-images", "many"]):
        with pytest.raises(SystemExit) as exc:
            run_main(*argv)
        assert exc.value.code == 2


def test_every_subcommand_has_help_with_examples(run_main):
    from fggp_hub.cli import _parser

    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"list", "info", "pull", "push", "export", "eval", "card", "onnx"}
    for name, parser in sub.choices.items():
        text = parser.format_help()
        assert "examples:" in text and f"fggp-hub {name}" in text and "--hub" in text and "--json" in text, name


# --------------------------------------------------------------------------- a remote (loopback) hub
def test_remote_zoo_entry_offline_then_fetched_then_cached(cli_env, tiny, run_main, monkeypatch):
    """A zoo name on an http hub: listed from the index while not downloaded, from its card after
    ``list --fetch`` (small files only) and ``pull``, and still from the cache once offline."""
    sys.path.insert(0, str(ROOT / "tests" / "hub"))
    from hub_server import LoopbackHub
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    from fggp_hub.hub import register

    with LoopbackHub() as server:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        code, text, err = run_main("push", tiny["folder"], "org/remote-tiny", "--hub", server.url, "--json")
        assert code == 0, err
        sha = json.loads(text)["revision"]
        register("resnet20-cifar10-s90-remote", "org/remote-tiny", revision=sha, hub=server.url,
                 metrics={"top1": tiny["results"]["top1"], "compact_bytes": 999})

        def entry():
            return next(r for r in json.loads(run_main("list", "resnet20-*-remote", "--json")[1]))

        listed = entry()
        assert not listed["available"] and listed["compact_bytes"] == 999 and listed["accuracy_source"] == "zoo index"
        fetched = json.loads(run_main("list", "resnet20-*-remote", "--fetch", "--json")[1])[0]
        assert fetched["available"] and fetched["accuracy_source"] == "card" and fetched["revision"] == sha
        assert fetched["compact_bytes"] == (tiny["folder"] / "model.sparse.safetensors").stat().st_size
        snapshot = Path(fetched["folder"])
        assert not (snapshot / "model.safetensors").exists()  # --fetch takes the cards, not the weights

        code, text, err = run_main("pull", "resnet20-cifar10-s90-remote", "--json")
        assert code == 0 and (Path(json.loads(text)["folder"]) / "model.safetensors").is_file(), err

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the server is gone: everything from the cache
    offline = entry()
    assert offline["available"] and offline["accuracy_source"] == "card" and offline["top1"] == tiny["results"]["top1"]
    code, text, err = run_main("info", "resnet20-cifar10-s90-remote", "--json")
    assert code == 0 and json.loads(text)["revision"] == sha, err


def test_a_bug_is_a_traceback_not_a_one_line_user_error(run_main, monkeypatch, tmp_path):
    """The CLI's error table: only fggp-hub's own errors (and OSErrors naming a file) are one line; a KeyError is a bug."""
    import fggp_hub.cli as cli
    from fggp_hub.hub.errors import CorruptCheckpointError

    def raising(error):
        def command(args):
            raise error
        return command

    monkeypatch.setitem(cli._COMMANDS, "card", raising(KeyError("sparsity")))
    with pytest.raises(KeyError):
        run_main("card", tmp_path)
    monkeypatch.setitem(cli._COMMANDS, "card", raising(ValueError("a bug, not a user error")))
    with pytest.raises(ValueError):
        run_main("card", tmp_path)
    monkeypatch.setitem(cli._COMMANDS, "card", raising(CorruptCheckpointError("config.json is damaged")))
    assert run_main("card", tmp_path) == (1, "", "error: config.json is damaged\n")
    monkeypatch.setitem(cli._COMMANDS, "card", raising(FileNotFoundError(2, "No such file or directory", str(tmp_path / "t.md"))))
    code, _, err = run_main("card", tmp_path)
    assert code == 1 and err.startswith("error: ") and "t.md" in err and err.count("\n") == 1
