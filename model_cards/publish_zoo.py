#!/usr/bin/env python
"""Bundle trained runs into the zoo that ships with fggp-hub, and publish the same folders to a Hub.

    # 1. bundle: check an export folder's card on the whole test set, then copy the repo
    #    folder (no dense model.safetensors) to model_cards/<name>/ and pin it in the index
    python model_cards/publish_zoo.py bundle runs/zoo/resnet20-cifar10-s95/export/resnet20-cifar10-s95 ...

    # 2. push: the bundled folders, byte for byte, to their Hub repos + one collection
    python model_cards/publish_zoo.py push --hub hf                 # huggingface.co (HF_TOKEN)
    python model_cards/publish_zoo.py push --hub http://127.0.0.1:8080 --collection "fggp-hub zoo"

``bundle`` runs ``fggp-hub eval FOLDER --check`` (all 10,000 test images; it fails if any
number on the card does not reproduce), writes ``eval_check.json``, pins the sha256 of
``config.json`` and ``model.sparse.safetensors`` in ``fggp_hub/hub/zoo_index.json`` together
with the Hub repo id the entry is published under (``fggp-hub/<name>``), and regenerates
``model_cards/ZOO.md``. A bundled copy and a pushed copy hold the same bytes, so they have
the same hashes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import fggp_hub  # noqa: E402
from fggp_hub.hub.integrity import COMPACT_WEIGHTS, CONFIG_NAME, DENSE_WEIGHTS, read_config, sha256_file  # noqa: E402
from fggp_hub.hub.zoo import package_index_path  # noqa: E402

ORG = "fggp-hub"
PINNED = (CONFIG_NAME, COMPACT_WEIGHTS)  # what the index pins: config.json in turn pins the card's weights


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fggp_hub.cli", *args], cwd=ROOT, capture_output=True, text=True)


#: Big backbones also carry a result on the first N test images, so CI can check them without a full pass.
SUBSET_IMAGES = {"vgg": 1017, "resnet50": 1017}


def subset_images(architecture: str | None) -> int | None:
    return next((n for key, n in SUBSET_IMAGES.items() if architecture and key in architecture), None)


def bundle_one(export: Path, zoo_dir: Path, *, check: bool = True) -> dict:
    """Copy one export folder into ``zoo_dir/<name>/`` (atomically) and return its index entry."""
    config = read_config(export)
    block = config["sparsity"]
    name = block.get("name") or export.name
    if check:
        proc = _cli("eval", str(export), "--check", "--json", "--no-progress", "--no-latency")
        if proc.returncode != 0:
            raise SystemExit(f"error: fggp-hub eval {export} --check failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        measured = json.loads(proc.stdout)
        n = subset_images(config.get("architecture"))
        if n is not None:  # recorded in the card as "test[:n]", next to the full test split's figures
            sub = _cli("eval", str(export), "--num-images", str(n), "--update-card", "--no-progress", "--no-latency")
            if sub.returncode != 0:
                raise SystemExit(f"error: fggp-hub eval {export} --num-images {n} failed: {sub.stderr[-2000:]}")
    else:
        measured = None
    zoo_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=zoo_dir))
    for path in sorted(export.iterdir()):
        if path.is_file() and path.name != DENSE_WEIGHTS:  # load() rebuilds the dense weights from the compact file
            shutil.copy2(path, staging / path.name)
            os.chmod(staging / path.name, 0o644)
    if measured is not None:
        (staging / "eval_check.json").write_text(json.dumps(measured, indent=2, sort_keys=True) + "\n")
    target = zoo_dir / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    results = block.get("results") or {}  # what config.json records: load() checks the index against exactly this
    files = block.get("files") or {}
    return {
        "name": name,
        "repo_id": f"{ORG}/{name}",
        "hub": "hf",
        "architecture": config.get("architecture"),
        "dataset": block.get("dataset"),
        "sparsity": block.get("sparsity"),
        "method": (block.get("pruning") or {}).get("method"),
        "metrics": {k: v for k, v in {
            "top1": results.get("top1"), "top5": results.get("top5"),
            "compact_bytes": (files.get(COMPACT_WEIGHTS) or {}).get("size"),
            "dense_bytes": (files.get(DENSE_WEIGHTS) or {}).get("size"),
        }.items() if v is not None},
        "bundled": {f: sha256_file(target / f) for f in PINNED},
    }


def write_index(entries: list[dict], path: Path | None = None) -> Path:
    """Replace (or add) these entries in the packaged index, atomically."""
    path = path or package_index_path()
    index = json.loads(path.read_text()) if path.is_file() else {"schema_version": 1, "models": []}
    names = {e["name"] for e in entries}
    index["models"] = sorted([m for m in index.get("models", []) if m["name"] not in names] + entries,
                             key=lambda m: m["name"])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def push_bundled(hub: str, names: list[str] | None, zoo_dir: Path, *, collection: str | None,
                 namespace: str = ORG) -> list[tuple[str, str]]:
    """Push each bundled folder unchanged to its Hub repo; add them all to one collection."""
    pushed = []
    for entry in fggp_hub.list_models():
        if not entry.bundled or (names and entry.name not in names):
            continue
        folder = zoo_dir / entry.name
        revision = fggp_hub.push(folder, entry.repo_id, hub=hub, commit_message=f"{entry.name} (bundled zoo copy)")
        pushed.append((entry.repo_id, revision))
    if collection and pushed:
        from huggingface_hub import HfApi

        from fggp_hub.hub.hubs import HfHub, get_hub

        hub_obj = get_hub(hub)
        if not isinstance(hub_obj, HfHub):
            raise SystemExit(f"error: collections need a Hugging Face-style hub, not {hub_obj.describe()}")
        api = HfApi(endpoint=hub_obj.endpoint)
        made = api.create_collection(collection, namespace=namespace, exists_ok=True,
                                     description="Sparse CIFAR checkpoints pruned with FGGP (fggp-hub)")
        for repo_id, _ in pushed:
            api.add_collection_item(made.slug, repo_id, "model", exists_ok=True)
        print(f"collection {made.slug}: {len(pushed)} models")
    return pushed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bundle", help="check export folders and copy them into the bundled zoo")
    b.add_argument("exports", nargs="+", type=Path)
    b.add_argument("--no-check", action="store_true", help="skip fggp-hub eval --check (tests only)")
    b.add_argument("--zoo-dir", type=Path, default=ROOT / "model_cards")
    b.add_argument("--index", type=Path, default=None, help="zoo index to update (default: the packaged one)")
    p = sub.add_parser("push", help="push the bundled folders to a Hub and collect them")
    p.add_argument("--hub", required=True, help="'hf' or an http(s) endpoint")
    p.add_argument("--collection", default="fggp-hub zoo", help="collection title ('' for none)")
    p.add_argument("--namespace", default=ORG)
    p.add_argument("--zoo-dir", type=Path, default=ROOT / "model_cards")
    p.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "push":
        for repo_id, revision in push_bundled(args.hub, args.names, args.zoo_dir, collection=args.collection or None,
                                              namespace=args.namespace):
            print(f"pushed {repo_id}@{revision[:12]}")
        return 0
    entries = []
    for export in args.exports:
        entry = bundle_one(export, args.zoo_dir, check=not args.no_check)
        entries.append(entry)
        print(f"bundled {entry['name']}: top1 {entry['metrics'].get('top1')} at sparsity {entry['sparsity']:.4f}")
    write_index(entries, args.index)
    if args.index is None:
        zoo = _cli("list", "--leaderboard", "--output", str(args.zoo_dir / "ZOO.md"))
        if zoo.returncode != 0:
            raise SystemExit(f"error: writing ZOO.md failed: {zoo.stderr.strip()}")
        print(f"wrote {args.zoo_dir / 'ZOO.md'} and {package_index_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
