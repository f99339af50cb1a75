"""Training overhead of pruning: steps/s of plain training vs training with a Pruner attached.

For each model and each selection rule (fggp_hub.pruning.METHODS) three kinds of training
step (SGD Nesterov, batch 64, real augmented CIFAR-10 batches, channels_last) run
round-robin in one process, so machine drift hits them alike:

- ``plain``: no pruner;
- ``<method>``: Pruner attached, a step on which it does not prune (the every-step cost:
  masking gradients and weights in place);
- ``<method> prune``: the step on which the pruner fires: the first pruning step of the
  paper's schedule (t = dt = 2000 of T = 125,120, dense start, every weight still active,
  so the most expensive selection of the run), including the selection, the mask update
  and zeroing the pruned weights' optimizer state.

Ratios are taken round by round against the plain step of the same round (median and
interquartile range). The amortised overhead spreads one pruning step over dt steps:
``(dt - 1) * attached + prune`` over ``dt * plain``; with the first (dearest) selection it
is an upper bound.

    python benchmarks/pruning_overhead.py                         # both models, ~4 min on 2 cores
    python benchmarks/pruning_overhead.py --models fggp_resnet20_cifar --repeats 30
    python benchmarks/pruning_overhead.py --quick                 # smoke run
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    PAPER_INTERVAL,
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
    paper_schedule,
    print_table,
    round_robin,
    summarize,
    train_step,
    write_json,
)

DEFAULT_MODELS = ("fggp_vgg19_bn_cifar", "fggp_resnet20_cifar")


def _measure_model(name: str, methods: Sequence[str], args, batch) -> dict:
    from fggp_hub.pruning import Pruner

    x, y = batch
    schedule = paper_schedule(args.final_sparsity, args.interval)
    plain, plain_opt = make_model(name, args.channels_last)
    variants = {"plain": lambda: train_step(plain, plain_opt, x, y)}
    prepare = {}
    pruners = {}
    for method in methods:
        model, opt = make_model(name, args.channels_last)
        pruner = Pruner(model, opt, schedule=schedule, method=method, rate=PAPER_RATE)
        first = first_pruning_step(pruner.n_total, method, args.final_sparsity, args.interval)
        dense = {n: torch.ones_like(m) for n, m in pruner.masks.items()}
        pruners[method] = (pruner, first)

        def attached(model=model, opt=opt):
            train_step(model, opt, x, y)

        def reset_attached(pruner=pruner):
            pruner.step = 0  # t = 1: never a pruning step

        def reset_pruning(pruner=pruner, dense=dense, t=first["t"]):
            pruner.load_state_dict({"step": t - 1, "masks": dense})  # the next step is the first pruning step

        variants[method] = attached
        prepare[method] = reset_attached
        variants[f"{method} prune"] = attached
        prepare[f"{method} prune"] = reset_pruning

    times = round_robin(variants, args.repeats, args.warmup, prepare)
    for method, (pruner, first) in pruners.items():
        expected = 1.0 - schedule.density(first["t"])
        if abs(pruner.sparsity - expected) > 1e-6:  # the timed step really pruned
            raise RuntimeError(f"{method}: the pruning step left sparsity {pruner.sparsity:.6f}, expected {expected:.6f}")

    summary = {k: summarize(v) for k, v in times.items()}
    ratios = paired_ratios(times, "plain")
    per_method = {}
    for method, (pruner, first) in pruners.items():
        attached = ratios[method]["median"]
        prune = ratios[f"{method} prune"]["median"]
        amortised = attached - 1.0 + (prune - attached) / args.interval
        per_method[method] = {
            "step_time_ratio": ratios[method],
            "pruning_step_time_ratio": ratios[f"{method} prune"],
            "per_step_overhead": attached - 1.0,
            "pruning_step_extra_plain_steps": prune - attached,
            "amortised_overhead": amortised,
            "amortised_speed_ratio": 1.0 / (1.0 + amortised),
            "n_prune": first["n_prune"],
        }
    return {
        "model": name,
        "prunable_weights": next(iter(pruners.values()))[0].n_total if pruners else None,
        "first_pruning_step": next(iter(pruners.values()))[1]["t"] if pruners else None,
        "times_s": summary,
        "time_ratio_vs_plain": ratios,
        "methods": per_method,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    from fggp_hub.pruning import METHODS

    parser = base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 12, --quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2, --quick 1)")
    parser.add_argument("--interval", type=int, default=PAPER_INTERVAL, help="dt: steps between pruning steps")
    parser.add_argument("--final-sparsity", type=float, default=0.95)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--source", default=None, help="CIFAR-10 folder (default: $FGGP_CIFAR10_PATH)")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 12)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    apply_threads(args.threads)

    record = new_record("pruning_overhead", __file__, argv, args)
    print(f"machine: {describe_machine(record['machine'])}")
    batch = cifar_batches(1, args.batch_size, source=args.source, channels_last=args.channels_last)[0]
    record["models"] = {}
    rows = []
    for name in args.models:
        result = _measure_model(name, args.methods, args, batch)
        record["models"][name] = result
        s, r = result["times_s"], result["time_ratio_vs_plain"]
        table = []
        for variant in s:
            table.append([variant, f"{1 / s[variant]['median']:.3g}", fmt_s(s[variant]["median"]),
                          f"{s[variant]['spread']:.1%}", fmt_ratio(r[variant])])
        print_table(["variant", "steps/s", "step (median)", "spread (IQR/median)", "time vs plain (IQR)"], table,
                    title=f"{name}, batch {args.batch_size}, {result['prunable_weights']:,} prunable weights, "
                          f"{args.repeats} rounds")
        for method, m in result["methods"].items():
            rows.append([name, method, f"{m['per_step_overhead']:+.1%}", f"{m['pruning_step_extra_plain_steps']:.2f}",
                         f"{m['amortised_overhead']:+.2%}", f"{m['amortised_speed_ratio']:.3f}"])
    print_table(["model", "method", "per-step overhead", "pruning step extra (plain steps)",
                 f"amortised overhead (dt={args.interval})", "amortised steps/s vs plain"], rows,
                title="Summary (time ratios are medians of round-by-round ratios)")
    out = write_json(args.json, record)
    print(f"\nwrote {out}")
    return record


if __name__ == "__main__":
    main()
