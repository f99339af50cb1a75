"""Shared pieces of the benchmark scripts: machine description, round-robin timing,
median/spread summaries, the paper's first pruning step, real CIFAR-10 batches,
Markdown tables and atomic JSON records.

Every script records the exact command, the machine and the time with its results,
so a number in ``benchmarks/README.md`` can always be traced back to how it was made.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# The paper's protocol (spec sections 2 and 9): 160 epochs of 50,000 images at batch 64,
# dt = 2000, t_fin = 0.8 T, r = 0.5.
PAPER_EPOCHS = 160
PAPER_TRAIN_IMAGES = 50_000
PAPER_BATCH = 64
PAPER_INTERVAL = 2000
PAPER_RATE = 0.5


# --------------------------------------------------------------------------- command line
def base_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser with the options every benchmark has: --quick, --json, --threads."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny repeats, numbers are not meaningful")
    parser.add_argument("--json", default=None,
                        help="where to write the JSON record (default: benchmarks/results/<benchmark>.json, "
                             "<benchmark>.quick.json with --quick, so a smoke run never overwrites a measurement)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    return parser


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces this run, relative to the repository root."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *args])


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, usable cores, torch threads and versions, load average: what the numbers depend on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        mem_gib = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        mem_gib = None
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": mem_gib,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        pass
    return info


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line for the printed header."""
    load = info.get("loadavg_start")
    text = f"{info['cpu_model']}, {info['usable_cores']} cores, torch {info['torch']} ({info['torch_threads']} threads)"
    return text + (f", load avg {load[0]:.2f}" if load else "")


def new_record(benchmark: str, script: str, argv: Sequence[str] | None, args: argparse.Namespace) -> dict[str, Any]:
    """The JSON record's header: what ran, where and when. Sets ``args.json`` when it was not given."""
    if args.json is None:
        args.json = str(RESULTS_DIR / f"{benchmark}{'.quick' if args.quick else ''}.json")
    return {
        "benchmark": benchmark,
        "command": command_line(script, argv),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(getattr(args, "quick", False)),
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
    }


def write_json(path: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``record`` atomically (temp file in the same folder, fsync, os.replace)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = dict(record)
    if isinstance(record.get("machine"), dict) and hasattr(os, "getloadavg"):
        record["machine"] = {**record["machine"], "loadavg_end": list(os.getloadavg())}
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------- timing
def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def round_robin(
    variants: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    prepare: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each variant, the variants interleaved round by round.

    The machine drifts (about +-10 % here, more under load); interleaving makes the drift
    hit all variants alike, and :func:`paired_ratios` compares them within each round.
    Rounds alternate direction and every second round starts one variant later, so no
    variant always runs first or always follows the same neighbour. ``prepare[name]`` runs untimed before each call.
    """
    names = list(variants)
    prepare = prepare or {}
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + repeats):
        shift = (r // 2) % len(names)
        order = names[shift:] + names[:shift]
        if r % 2:
            order.reverse()
        for name in order:
            if name in prepare:
                prepare[name]()
            dt = _timed(variants[name])
            if r >= warmup:
                times[name].append(dt)
    return times


def _quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(xs: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, extremes and ``spread`` = interquartile range / median."""
    if not xs:
        raise ValueError("nothing to summarize: run at least one repeat")
    med = statistics.median(xs)
    p25, p75 = _quantile(xs, 0.25), _quantile(xs, 0.75)
    return {"median": med, "p25": p25, "p75": p75, "min": min(xs), "max": max(xs), "n": len(xs),
            "spread": (p75 - p25) / med if med else float("nan")}


def paired_ratios(times: Mapping[str, Sequence[float]], base: str) -> dict[str, dict[str, float]]:
    """For every variant, the summary of ``time / time[base]`` taken round by round."""
    out = {}
    for name, xs in times.items():
        out[name] = summarize([x / b for x, b in zip(xs, times[base])])
    return out


# --------------------------------------------------------------------------- the paper's schedule
def paper_total_steps(batch_size: int = PAPER_BATCH) -> int:
    """T of the paper's run: 160 epochs of 50,000 images (125,120 at batch 64)."""
    return PAPER_EPOCHS * math.ceil(PAPER_TRAIN_IMAGES / batch_size)


def paper_schedule(final_sparsity: float = 0.95, interval: int = PAPER_INTERVAL, batch_size: int = PAPER_BATCH):
    """The paper's cubic schedule from a dense start."""
    from fggp_hub.pruning import CubicSchedule

    return CubicSchedule(total_steps=paper_total_steps(batch_size), final_density=1.0 - final_sparsity, interval=interval)


def first_pruning_step(n_total: int, method: str, final_sparsity: float = 0.95,
                       interval: int = PAPER_INTERVAL) -> dict[str, Any]:
    """Arguments of the run's first (most expensive: every weight still active) selection.

    Returns ``t``, ``n_prune`` (N_p at t) and the ``anneal`` rate a_t for the annealed rules.
    """
    from fggp_hub.pruning import annealed_rate

    schedule = paper_schedule(final_sparsity, interval)
    t = schedule.pruning_steps()[0]
    n_prune = math.floor(n_total * (1.0 - schedule.density(t)) + 1e-6)
    anneal = annealed_rate(t, schedule.total_steps) if method.endswith("_annealed") else None
    return {"t": t, "n_prune": n_prune, "anneal": anneal, "total_steps": schedule.total_steps}


# --------------------------------------------------------------------------- models and data
def make_model(name: str, channels_last: bool, seed: int = 0, lr: float = 0.01):
    """A timm model in train mode and its SGD-Nesterov optimizer (the paper's optimizer)."""
    import timm

    import fggp_hub  # noqa: F401  (registers the CIFAR backbones)

    torch.manual_seed(seed)
    model = timm.create_model(name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return model.train(), opt


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One step of the paper's training: label-smoothed cross-entropy, backward, optimizer step."""
    loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def cifar_batches(n_batches: int, batch_size: int, *, source: str | None = None, channels_last: bool = False,
                  seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` augmented CIFAR-10 training batches (the real data, through the real loader).

    Decodes the train split on first use (a few seconds), then reads the uint8 cache.
    """
    from fggp_hub.data import load_cifar10, make_loader

    train = load_cifar10("train", source=source)
    loader = make_loader(train, batch_size, train=True, seed=seed, channels_last=channels_last, drop_last=True)
    if len(loader) < n_batches:
        raise ValueError(f"the CIFAR-10 source holds {len(loader)} batches of {batch_size}; ask for at most that many")
    out = []
    for i, batch in enumerate(loader):
        if i == n_batches:
            break
        out.append(batch)
    return out


# --------------------------------------------------------------------------- output
def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    """Print (and return) an aligned Markdown table, ready to paste into the README."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    text = "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])
    if title:
        print(f"\n{title}\n")
    print(text)
    return text


def fmt_s(seconds: float) -> str:
    """Seconds with 3 significant digits (ms below 0.1 s)."""
    return f"{seconds * 1e3:.3g} ms" if seconds < 0.1 else f"{seconds:.3g} s"


def fmt_ratio(summary: Mapping[str, float], digits: int = 3) -> str:
    """``median (IQR lo-hi)`` of a ratio summary."""
    return f"{summary['median']:.{digits}f} ({summary['p25']:.{digits}f}-{summary['p75']:.{digits}f})"


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"
