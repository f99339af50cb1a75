#!/usr/bin/env python
"""Publish the study's seed-0 runs as zoo entries: push, evaluate with --check, commit the cards.

    python model_cards/publish_zoo.py                       # FGGP and GMP at 90/95/98 %, seed 0
    python model_cards/publish_zoo.py --methods fggp --hub /data/fggp-hub

For each recorded run of ``benchmarks/results/study.jsonl`` (made by
``benchmarks/comparison_study.py``) it
1. pushes the run's export folder to the hub as ``fggp-hub/<name>`` (the local hub by default),
2. runs ``fggp-hub eval fggp-hub/<name> --check`` (all 10,000 test images; exits non-zero
   if any number on the card does not reproduce),
3. copies the card (README.md, plots, config.json, eval results, recipe; no weights) to
   ``model_cards/<name>/``,
4. pins the name in the packaged zoo index (``fggp_hub/hub/zoo_index.json``) to the pushed
   revision, with the measured metrics,
and finally regenerates ``model_cards/ZOO.md``. Weight files are never committed: on another
machine, re-run the study (or ``recipes/prune.py`` with the card's command) to rebuild them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from comparison_study import export_name, read_results  # noqa: E402

import fggp_hub  # noqa: E402
from fggp_hub.hub.zoo import _PACKAGE_INDEX  # noqa: E402

CARD_FILES = ("README.md", "config.json", "eval_results.json", "recipe.yaml")
ORG = "fggp-hub"


def _fggp_hub_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fggp_hub.cli", *args], cwd=ROOT, capture_output=True, text=True)


def publish_one(record: dict, hub: str | None) -> dict:
    name = export_name(record["method"], record["target_sparsity"], record["seed"])
    folder = ROOT / "runs" / "study" / record["key"] / "export" / name
    if not (folder / "config.json").is_file():
        raise SystemExit(f"error: {folder} is missing: re-run benchmarks/comparison_study.py for {record['key']}")
    repo_id = f"{ORG}/{name}"
    revision = fggp_hub.push(folder, repo_id, hub=hub, commit_message=f"{name}: {record['key']} of the study")
    hub_args = ["--hub", hub] if hub else []
    check = _fggp_hub_cli("eval", repo_id, "--revision", revision, "--check", "--json", "--no-progress", "--no-latency", *hub_args)
    if check.returncode != 0:
        raise SystemExit(f"error: fggp-hub eval {repo_id} --check failed:\n{check.stdout[-2000:]}{check.stderr[-2000:]}")
    measured = json.loads(check.stdout)
    out = ROOT / "model_cards" / name
    out.mkdir(parents=True, exist_ok=True)
    for f in list(CARD_FILES) + [p.name for p in folder.glob("*.png")]:
        if (folder / f).is_file():
            shutil.copy2(folder / f, out / f)
    (out / "eval_check.json").write_text(json.dumps(measured, indent=2, sort_keys=True) + "\n")
    config = json.loads((folder / "config.json").read_text())
    results = measured.get("measured", measured)
    return {
        "name": name, "repo_id": repo_id, "revision": revision, "hub": "local" if hub is None else hub,
        "architecture": config.get("architecture"), "dataset": results.get("dataset"),
        "sparsity": results.get("sparsity"), "method": record["method"],
        "metrics": {"top1": results.get("top1"), "top5": results.get("top5"),
                    "compact_bytes": (folder / "model.sparse.safetensors").stat().st_size,
                    "dense_bytes": (folder / "model.safetensors").stat().st_size},
    }


def write_index(entries: list[dict]) -> None:
    index = json.loads(_PACKAGE_INDEX.read_text())
    keep = [m for m in index.get("models", []) if m["name"] not in {e["name"] for e in entries}]
    index["models"] = sorted(keep + entries, key=lambda m: m["name"])
    tmp = _PACKAGE_INDEX.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, _PACKAGE_INDEX)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["fggp", "gmp"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hub", default=None, help="hub folder or endpoint (default: the local hub)")
    args = parser.parse_args(argv)
    records = [r for r in read_results() if r["method"] in args.methods and r["seed"] == args.seed]
    if not records:
        raise SystemExit("error: no matching runs in benchmarks/results/study.jsonl: run benchmarks/comparison_study.py")
    entries = []
    for record in records:
        entry = publish_one(record, args.hub)
        entries.append(entry)
        print(f"published {entry['name']} -> {entry['repo_id']}@{entry['revision'][:12]}: "
              f"top1 {entry['metrics']['top1']:.2f}% at sparsity {entry['sparsity']:.4f} (eval --check passed)")
    write_index(entries)
    hub_args = ["--hub", args.hub] if args.hub else []
    zoo = _fggp_hub_cli("list", "--leaderboard", "--output", str(ROOT / "model_cards" / "ZOO.md"), *hub_args)
    if zoo.returncode != 0:
        raise SystemExit(f"error: writing model_cards/ZOO.md failed: {zoo.stderr.strip()}")
    print("wrote model_cards/ZOO.md and fggp_hub/hub/zoo_index.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
