#!/usr/bin/env python
"""The comparison study: FGGP against its baselines on the CIFAR ResNet-20, on this CPU.

    python benchmarks/comparison_study.py                 # run what is missing, then report
    python benchmarks/comparison_study.py --report-only   # table + plot from the recorded runs
    python benchmarks/comparison_study.py --methods fggp gmp --sparsities 0.9 --seeds 0

Every run is ``recipes/prune.py --recipe recipes/study_resnet20_cifar10.yaml`` with only
``pruning.method``, ``pruning.final_sparsity`` and ``seed`` changed, so every method gets the
same budget and the same seeds. Each finished run is appended as one JSON line to
``benchmarks/results/study.jsonl``; runs already recorded there are skipped, and a run that
was interrupted continues from its last checkpoint (``--resume auto``), so the study can be
carried across sessions. Seed 0 of every setting runs before seed 1, so a partial study is
still a balanced comparison.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "study_resnet20_cifar10.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "study.jsonl"
PLOT = ROOT / "benchmarks" / "results" / "study_accuracy_vs_sparsity.png"
README = ROOT / "benchmarks" / "README.md"
_BEGIN, _END = "<!-- study:begin", "<!-- study:end -->"
DEFAULT_METHODS = ("fggp", "gmp", "magnitude_first_annealed")
DEFAULT_SPARSITIES = (0.9, 0.95, 0.98)
DEFAULT_SEEDS = (0, 1)


def run_key(method: str, sparsity: float, seed: int) -> str:
    return f"{method}-s{round(sparsity * 100)}-seed{seed}"


def export_name(method: str, sparsity: float, seed: int) -> str:
    """Zoo-style names: seed 0 is the published entry, other seeds say their seed."""
    variant = [method] if method != "fggp" else []
    if seed:
        variant.append(f"seed{seed}")
    # a zoo name has one variant field: its parts are joined with "_" (e.g. gmp_seed1)
    return f"resnet20-cifar10-s{round(sparsity * 100)}" + ("-" + "_".join(variant) if variant else "")


def read_results(path: Path = RESULTS) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_result(record: dict, path: Path = RESULTS) -> None:
    """One line per finished run, flushed and fsynced (a crash never leaves half a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def run_one(method: str, sparsity: float, seed: int, runs_dir: Path, extra: list[str]) -> dict:
    key = run_key(method, sparsity, seed)
    out_dir = runs_dir / key
    overrides = ["--pruning.method", method, "--pruning.final_sparsity", str(sparsity), "--seed", str(seed),
                 "--output-dir", str(out_dir), "--export.name", export_name(method, sparsity, seed), *extra]
    if any((out_dir / "checkpoints").glob("checkpoint_*")):
        overrides += ["--resume", "auto"]  # an interrupted run continues exactly where it stopped
    command = [sys.executable, str(ROOT / "recipes" / "prune.py"), "--recipe", str(RECIPE), *overrides]
    print(f"\n=== {key}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    results = json.loads((out_dir / "results.json").read_text())
    return {
        "key": key, "method": method, "target_sparsity": sparsity, "seed": seed,
        "top1": results["top1"], "best_top1_after_pruning": results["best_top1_after_pruning"],
        "loss": results["loss"], "num_images": results["num_images"],
        "sparsity": results["sparsity"], "sparsity_all_params": results["sparsity_all_params"],
        "optimizer_steps": results["optimizer_steps"], "train_wall_s": results["train_wall_s"],
        # older runner versions timed only the last segment of a resumed run
        "train_wall_complete": "resumed" in results or "--resume" not in overrides,
        "command_wall_s": time.perf_counter() - started, "mask_sha256": results["mask_sha256"],
        "recipe": str(RECIPE.relative_to(ROOT)), "overrides": overrides, "commit": _git_commit(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}",
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dataset": "CIFAR-10 (JPEG-q75 copy)",
    }


def _wall_complete(record: dict) -> bool:
    return record.get("train_wall_complete", "--resume" not in record.get("overrides", []))


def _mean_or_none(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(records: list[dict]) -> list[dict]:
    """Mean and spread (sample std, min, max) of the final top-1 per method and sparsity."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["target_sparsity"]), []).append(r)
    rows = []
    for (method, sparsity), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        top1 = [r["top1"] for r in runs]
        best = [r["best_top1_after_pruning"] for r in runs if r["best_top1_after_pruning"] is not None]
        rows.append({
            "method": method, "target_sparsity": sparsity, "runs": len(runs),
            "seeds": sorted(r["seed"] for r in runs),
            "top1_mean": statistics.fmean(top1), "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "top1_min": min(top1), "top1_max": max(top1),
            "best_after_pruning_mean": statistics.fmean(best) if best else None,
            "sparsity_mean": statistics.fmean(r["sparsity"] for r in runs),
            "train_min_mean": _mean_or_none([r["train_wall_s"] / 60 for r in runs if _wall_complete(r)]),
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| sparsity | method | runs (seeds) | final top-1 % mean ± std | min–max | best after pruning % | measured sparsity | train min/run |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = f"{r['best_after_pruning_mean']:.2f}" if r["best_after_pruning_mean"] is not None else "—"
        minutes = f"{r['train_min_mean']:.1f}" if r["train_min_mean"] is not None else "—"
        lines.append(
            f"| {r['target_sparsity']:.0%} | {r['method']} | {r['runs']} ({','.join(map(str, r['seeds']))}) | "
            f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {r['top1_min']:.2f}–{r['top1_max']:.2f} | {best} | "
            f"{r['sparsity_mean']:.4f} | {minutes} |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path = PLOT) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, row_method in enumerate(sorted({r["method"] for r in records})):
        runs = [r for r in records if r["method"] == row_method]
        xs = sorted({r["target_sparsity"] for r in runs})
        means = [statistics.fmean(r["top1"] for r in runs if r["target_sparsity"] == x) for x in xs]
        offset = (i - 1) * 0.002  # keep the seed dots of different methods apart
        ax.plot([x * 100 for x in xs], means, marker="o", label=row_method)
        ax.scatter([r["target_sparsity"] * 100 + offset * 100 for r in runs], [r["top1"] for r in runs],
                   s=10, alpha=0.5, color=ax.lines[-1].get_color())
    ax.set_xlabel("sparsity of prunable weights (%)")
    ax.set_ylabel("test top-1 (%), 10,000 images")
    ax.set_title("ResNet-20, CIFAR-10 (JPEG-q75 copy), scaled-down schedule")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def readme_section(records: list[dict], rows: list[dict]) -> str:
    """The study's section of benchmarks/README.md: setting, table, plot, how to reproduce."""
    seeds = sorted({r["seed"] for r in records})
    methods = sorted({r["method"] for r in records})
    wall = [r["train_wall_s"] for r in records if _wall_complete(r)] or [float("nan")]
    return "\n".join([
        f"{len(records)} runs recorded in `results/study.jsonl` (methods: {', '.join(methods)}; seeds: "
        f"{', '.join(map(str, seeds))}); every run is `recipes/prune.py --recipe recipes/study_resnet20_cifar10.yaml` "
        "with only `pruning.method`, `pruning.final_sparsity` and `seed` changed.",
        "",
        "Setting: CIFAR ResNet-20 (0.27M parameters) on the first 10,000 training images of CIFAR-10 "
        "(JPEG-q75 copy), 10 epochs at batch 64 (T = 1,560 steps), dt = 20, t_fin = 0.8 T, r = 0.5, "
        "SGD Nesterov lr 0.1 with steps at epochs 5 and 8, label smoothing 0.1; test top-1 on all 10,000 "
        f"test images. One run trains in {min(wall) / 60:.1f}–{max(wall) / 60:.1f} min on this 2-core CPU "
        "(the longer ones shared the CPU with other work; runs resumed by an older runner, which timed only "
        "their last segment, show —).",
        "",
        markdown_table(rows),
        "",
        "![accuracy vs sparsity](results/study_accuracy_vs_sparsity.png)",
        "",
        "Reproduce (skips recorded runs, resumes an interrupted one): `python benchmarks/comparison_study.py`; "
        "redraw this section: `python benchmarks/comparison_study.py --report-only --readme`.",
    ])


def write_readme(section: str, path: Path = README) -> None:
    text = path.read_text()
    start, end = text.index(_BEGIN), text.index(_END)
    start = text.index("\n", start) + 1  # keep the marker line itself
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text[:start] + section + "\n" + text[end:])
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(DEFAULT_SPARSITIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "study")
    parser.add_argument("--report-only", action="store_true", help="only print the table and redraw the plot")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs")
    parser.add_argument("--readme", action="store_true", help="also rewrite the study section of benchmarks/README.md")
    args, extra = parser.parse_known_args(argv)

    done = {r["key"] for r in read_results()}
    if not args.report_only:
        todo = [(m, s, seed) for seed in args.seeds for s in args.sparsities for m in args.methods
                if run_key(m, s, seed) not in done]
        print(f"{len(done)} runs recorded in {RESULTS.relative_to(ROOT)}, {len(todo)} to go")
        for n, (method, sparsity, seed) in enumerate(todo):
            if args.max_runs is not None and n >= args.max_runs:
                break
            record = run_one(method, sparsity, seed, args.runs_dir, extra)
            append_result(record)
            print(f"recorded {record['key']}: top1 {record['top1']:.2f}% at sparsity {record['sparsity']:.4f}")

    records = read_results()
    if not records:
        print("no runs recorded yet")
        return 0
    rows = summarize(records)
    print("\n" + markdown_table(rows))
    print(f"\nplot: {plot(records).relative_to(ROOT)}")
    if args.readme:
        write_readme(readme_section(records, rows))
        print(f"updated {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
