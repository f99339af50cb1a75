"""Selection cost: one global selection step vs one training step of the same model.

For VGG-19-BN CIFAR (20,022,272 prunable weights) and ResNet-50 CIFAR (23,465,984), one training
step (batch 64, real augmented CIFAR-10 batch, SGD Nesterov, channels_last) and one
``fggp_hub.prune_step`` per selection rule run round-robin. The selection is the first
pruning step of the paper's schedule (t = 2000 of T = 125,120, dense start: every weight
is still a candidate, the dearest selection of the run), on the model's real weights and
the gradients of the training step. The ratio is selection time over training-step time,
taken round by round (median and interquartile range).

    python benchmarks/selection_cost.py                   # both models, ~3 min on 2 cores
    python benchmarks/selection_cost.py --models fggp_vgg19_bn_cifar --repeats 15
    python benchmarks/selection_cost.py --quick           # smoke run
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    PAPER_RATE,
    apply_threads,
    base_parser,
    cifar_batches,
    describe_machine,
    first_pruning_step,
    fmt_ratio,
    fmt_s,
    make_model,
    new_record,
    paired_ratios,
    print_table,
    round_robin,
    summarize,
    train_step,
    write_json,
)

DEFAULT_MODELS = ("fggp_vgg19_bn_cifar", "fggp_resnet50_cifar")


def _measure_model(name: str, methods: Sequence[str], args, batch) -> dict:
    from fggp_hub.pruning import prunable_parameters, prune_step

    x, y = batch
    model, opt = make_model(name, args.channels_last)
    params = list(prunable_parameters(model).values())
    n_total = sum(p.numel() for p in params)
    masks = [torch.ones_like(p, dtype=torch.bool) for p in params]
    train_step(model, opt, x, y)  # gradients exist before the first selection

    variants = {"train step": lambda: train_step(model, opt, x, y)}
    firsts = {}
    for method in methods:
        first = first_pruning_step(n_total, method, args.final_sparsity)
        firsts[method] = first

        def select(method=method, first=first):
            weights = [p.detach() for p in params]
            grads = [p.grad.detach() for p in params]
            prune_step(weights, grads, masks, first["n_prune"], method=method, rate=PAPER_RATE, anneal=first["anneal"])

        variants[f"select {method}"] = select
    times = round_robin(variants, args.repeats, args.warmup)
    ratios = paired_ratios(times, "train step")
    return {
        "model": name,
        "prunable_weights": n_total,
        "first_pruning_step": firsts,
        "times_s": {k: summarize(v) for k, v in times.items()},
        "ratio_vs_train_step": ratios,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    from fggp_hub.pruning import METHODS

    parser = base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7, --quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 1, --quick 1)")
    parser.add_argument("--final-sparsity", type=float, default=0.95, help="sets N_p of the first pruning step")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--source", default=None, help="CIFAR-10 folder (default: $FGGP_CIFAR10_PATH)")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 7)
    args.warmup = args.warmup if args.warmup is not None else 1
    apply_threads(args.threads)

    record = new_record("selection_cost", __file__, argv, args)
    print(f"machine: {describe_machine(record['machine'])}")
    batch = cifar_batches(1, args.batch_size, source=args.source, channels_last=args.channels_last)[0]
    record["models"] = {}
    rows = []
    for name in args.models:
        result = _measure_model(name, args.methods, args, batch)
        record["models"][name] = result
        s, r = result["times_s"], result["ratio_vs_train_step"]
        n_prune = next(iter(result["first_pruning_step"].values()))["n_prune"] if args.methods else 0
        rows.append([name, f"{result['prunable_weights']:,}", f"train step (batch {args.batch_size})",
                     fmt_s(s["train step"]["median"]), f"{s['train step']['spread']:.1%}", "1"])
        for method in args.methods:
            key = f"select {method}"
            rows.append([name, f"{result['prunable_weights']:,}", f"{method} (N_p {n_prune:,})", fmt_s(s[key]["median"]),
                         f"{s[key]['spread']:.1%}", fmt_ratio(r[key])])
    print_table(["model", "prunable weights", "operation", "median", "spread (IQR/median)",
                 "vs train step (IQR)"], rows, title=f"One global selection vs one training step, {args.repeats} rounds")
    out = write_json(args.json, record)
    print(f"\nwrote {out}")
    return record


if __name__ == "__main__":
    main()
