"""Cost of pruning during training: a plain training step vs the same step with the Pruner.

Round-robin: the variants alternate step by step in one process, so the machine's
drift (+-10 % here) hits them alike; medians are compared. Also times one global
selection (FGGP and GMP) over all prunable weights.

    python benchmarks/pruning_overhead.py                      # VGG-19 CIFAR, batch 64
    python benchmarks/pruning_overhead.py --model fggp_resnet20_cifar --batch-size 128
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

import fggp_hub  # noqa: F401
from fggp_hub.pruning import Pruner, count_active, prune_step


def _make(model_name: str, channels_last: bool, seed: int):
    torch.manual_seed(seed)
    model = timm.create_model(model_name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return model.train(), opt


def _step(model, opt, x, y) -> float:
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def _summary(xs: list[float]) -> dict:
    return {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs), "n": len(xs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fggp_vgg19_bn_cifar")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--selection-repeats", type=int, default=5)
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--json", default="benchmarks/results/pruning_overhead.json")
    args = parser.parse_args()
    channels_last = not args.no_channels_last

    plain, plain_opt = _make(args.model, channels_last, 0)
    pruned, pruned_opt = _make(args.model, channels_last, 0)
    # Schedule whose pruning steps never come: measures the every-step cost (masking
    # gradients and weights in place), starting from a 50 % ERK mask.
    pruner = Pruner(pruned, pruned_opt, final_sparsity=0.95, total_steps=10**7, interval=10**6, initial_sparsity=0.5)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,), generator=gen)

    times: dict[str, list[float]] = {"plain": [], "pruner": []}
    variants = [("plain", plain, plain_opt), ("pruner", pruned, pruned_opt)]
    for i in range(args.warmup + args.repeats):
        order = variants if i % 2 == 0 else variants[::-1]
        for name, model, opt in order:
            dt = _step(model, opt, x, y)
            if i >= args.warmup:
                times[name].append(dt)
    assert pruner.step == args.warmup + args.repeats

    # One global selection over every prunable weight, with the gradients of the last step.
    weights = [p.detach() for p in pruner.params.values()]
    grads = [p.grad.detach() for p in pruner.params.values()]
    masks = list(pruner.masks.values())
    n_active = count_active(masks)
    n_prune = n_active // 50
    for method in ("fggp", "gmp"):
        key = f"select_{method}"
        times[key] = []
        for _ in range(args.selection_repeats):
            start = time.perf_counter()
            prune_step(weights, grads, masks, n_prune, method=method, rate=0.5)
            times[key].append(time.perf_counter() - start)

    summary = {k: _summary(v) for k, v in times.items()}
    base = summary["plain"]["median_s"]
    n_weights = pruner.n_total
    print(f"\nmodel {args.model}  batch {args.batch_size}  channels_last {channels_last}  "
          f"prunable weights {n_weights:,}  threads {torch.get_num_threads()}  {platform.processor() or platform.machine()}")
    print(f"{'variant':<22}{'median s':>10}{'min s':>10}{'max s':>10}{'vs plain step':>15}")
    for k, s in summary.items():
        print(f"{k:<22}{s['median_s']:>10.4f}{s['min_s']:>10.4f}{s['max_s']:>10.4f}{s['median_s'] / base:>14.3f}x")
    overhead = summary["pruner"]["median_s"] / base - 1
    print(f"\nnon-pruning step overhead: {overhead:+.2%} (floor: within 3%)")
    print(f"FGGP selection / training step: {summary['select_fggp']['median_s'] / base:.3f} (floor: <= 1)")

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "pruning_overhead",
        "model": args.model,
        "batch_size": args.batch_size,
        "channels_last": channels_last,
        "prunable_weights": n_weights,
        "selected_per_step": n_prune,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "results": summary,
        "step_overhead": overhead,
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out)


if __name__ == "__main__":
    main()
