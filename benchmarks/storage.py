"""Storage: bytes of model.safetensors vs model.sparse.safetensors, against two bounds.

For each paper backbone (VGG-19-BN CIFAR, ResNet-50 CIFAR) and sparsity (90/95/98 %):

- masks: global FGGP selection (``fggp_hub.prune_step``, r = 0.5) on the model's weights
  and the gradients of real augmented CIFAR-10 training batches, in ``--steps`` pruning
  steps that follow the cubic schedule (so layers end at the uneven sparsities a global
  selection gives; no training between steps, the first conv kept dense);
  ``--uniform`` adds rows with uniform random masks (every prunable layer at exactly s)
  for comparison;
- both files are written by ``fggp_hub.export`` and their sizes read from disk;
- bounds over the whole state_dict (tensors that are not prunable weights count dense):
  *bitmask*: 1 bit per prunable entry + 4 bytes per non-zero, i.e. (1 - s) + 1/32 of
  dense; *entropy*: ideal coding of each layer's mask, ``n * H(p)`` bits with p the
  layer's density, + 4 bytes per non-zero (HUB_NOTES: ~17x smaller at 95 %).
  Bounds count tensor data only (no file header).

    python benchmarks/storage.py                      # both backbones, 3 sparsities, ~3 min on 2 cores
    python benchmarks/storage.py --models fggp_vgg19_bn_cifar --sparsities 0.95
    python benchmarks/storage.py --quick              # smoke run
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
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
    fmt_bytes,
    make_model,
    new_record,
    print_table,
    write_json,
)

DEFAULT_MODELS = ("fggp_vgg19_bn_cifar", "fggp_resnet50_cifar")


def _entropy_bits(p: float) -> float:
    """Binary entropy H(p) in bits."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p))


def bounds(state: dict[str, torch.Tensor], prunable: Sequence[str]) -> dict[str, float]:
    """Dense, bitmask-bound and entropy-bound bytes of a state_dict (data only), whole model and prunable part."""
    out = {"dense": 0.0, "bitmask": 0.0, "entropy": 0.0, "dense_prunable": 0.0, "bitmask_prunable": 0.0,
           "entropy_prunable": 0.0}
    prunable = set(prunable)
    for name, t in state.items():
        dense = t.numel() * t.element_size()
        out["dense"] += dense
        if name not in prunable:
            out["bitmask"] += dense
            out["entropy"] += dense
            continue
        n, nnz = t.numel(), int(t.count_nonzero())
        values = nnz * t.element_size()
        bitmask = n / 8 + values
        entropy = n * _entropy_bits(nnz / n) / 8 + values
        out["bitmask"] += bitmask
        out["entropy"] += entropy
        out["dense_prunable"] += dense
        out["bitmask_prunable"] += bitmask
        out["entropy_prunable"] += entropy
    return out


def _gradients(model: torch.nn.Module, batches) -> None:
    """Accumulate the loss gradients of ``batches`` into ``.grad`` (mean over batches)."""
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1) / len(batches)
        loss.backward()


def fggp_masks(params: dict[str, torch.nn.Parameter], sparsity: float, steps: int, rate: float) -> tuple[list[torch.Tensor], float]:
    """Masks of ``steps`` global FGGP selections following the cubic schedule to ``sparsity``.

    Scores use the parameters' current values (masked as pruning goes) and their ``.grad``.
    Returns the masks and the rate used (raised to the smallest feasible one if needed).
    """
    from fggp_hub.pruning import CubicSchedule, count_active, min_feasible_rate, prune_step

    weights = [p.detach() for p in params.values()]
    grads = [p.grad.detach() for p in params.values()]
    n_total = sum(w.numel() for w in weights)
    schedule = CubicSchedule(total_steps=steps, final_density=1.0 - sparsity, interval=1, end_step=steps)
    rate = max(rate, min_feasible_rate(schedule, n_total))
    masks = [torch.ones_like(w, dtype=torch.bool) for w in weights]
    for t in schedule.pruning_steps():
        n_zero = n_total - count_active(masks)
        n_prune = math.floor(n_total * (1.0 - schedule.density(t)) - n_zero + 1e-6)
        if n_prune <= 0:
            continue
        masks = prune_step([w * m for w, m in zip(weights, masks)], grads, masks, n_prune, method="fggp", rate=rate)
    return masks, rate


def uniform_masks(params: dict[str, torch.nn.Parameter], sparsity: float, seed: int = 0) -> list[torch.Tensor]:
    """Every layer at exactly ``sparsity``, positions drawn at random."""
    gen = torch.Generator().manual_seed(seed)
    masks = []
    for p in params.values():
        n = p.numel()
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n, generator=gen)[: n - math.floor(n * sparsity + 1e-6)]] = True
        masks.append(keep.view(p.shape))
    return masks


def _export_sizes(model, params, originals, masks, out_dir: Path, kind: str, sparsity: float) -> dict:
    import fggp_hub
    from fggp_hub.hub.integrity import COMPACT_WEIGHTS, DENSE_WEIGHTS

    with torch.no_grad():
        for p, w, m in zip(params.values(), originals, masks):
            p.copy_(w * m)
    folder = fggp_hub.export(model, out_dir, pruning={"method": kind if kind != "uniform" else "uniform-random"})
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    block = config["sparsity"]
    dense = (folder / DENSE_WEIGHTS).stat().st_size
    compact = (folder / COMPACT_WEIGHTS).stat().st_size
    state = {k: v.detach() for k, v in model.state_dict().items()}
    b = bounds(state, list(params))
    return {
        "masks": kind,
        "target_sparsity": sparsity,
        "sparsity": block["sparsity"],
        "layer_sparsity_min": min(v["sparsity"] for v in block["layers"].values()),
        "layer_sparsity_max": max(v["sparsity"] for v in block["layers"].values()),
        "dense_bytes": dense,
        "compact_bytes": compact,
        "dense_over_compact": dense / compact,
        "encodings": block["files"][COMPACT_WEIGHTS].get("encodings"),
        "bounds_bytes": b,
        "dense_over_bitmask_bound": b["dense"] / b["bitmask"],
        "dense_over_entropy_bound": b["dense"] / b["entropy"],
        "compact_over_entropy_bound": compact / b["entropy"],
        "prunable_dense_over_bitmask_bound": b["dense_prunable"] / b["bitmask_prunable"],
        "prunable_dense_over_entropy_bound": b["dense_prunable"] / b["entropy_prunable"],
    }


def main(argv: Sequence[str] | None = None) -> dict:
    from fggp_hub.pruning import prunable_parameters

    parser = base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.95, 0.98])
    parser.add_argument("--steps", type=int, default=10, help="pruning steps of the cubic schedule per sparsity")
    parser.add_argument("--batches", type=int, default=None, help="CIFAR-10 batches for the gradients (default 2, --quick 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 64, --quick 16")
    parser.add_argument("--no-uniform", dest="uniform", action="store_false", help="skip the uniform random masks")
    parser.add_argument("--source", default=None, help="CIFAR-10 folder (default: $FGGP_CIFAR10_PATH)")
    args = parser.parse_args(argv)
    args.batches = args.batches or (1 if args.quick else 2)
    args.batch_size = args.batch_size or (16 if args.quick else 64)
    apply_threads(args.threads)

    record = new_record("storage", __file__, argv, args)
    print(f"machine: {describe_machine(record['machine'])}")
    batches = cifar_batches(args.batches, args.batch_size, source=args.source)
    record["models"] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="fggp-storage-bench-") as tmp:
        for name in args.models:
            model, _ = make_model(name, channels_last=False)
            params = prunable_parameters(model)
            _gradients(model, batches)
            originals = [p.detach().clone() for p in params.values()]
            results = []
            for s in args.sparsities:
                for kind in ("fggp", "uniform") if args.uniform else ("fggp",):
                    with torch.no_grad():  # every level starts from the unpruned weights
                        for p, w in zip(params.values(), originals):
                            p.copy_(w)
                    if kind == "fggp":
                        masks, rate = fggp_masks(params, s, args.steps, PAPER_RATE)
                    else:
                        masks, rate = uniform_masks(params, s), None
                    r = _export_sizes(model, params, originals, masks, Path(tmp) / f"{name}-{kind}-{s}", kind, s)
                    r["rate"] = rate
                    results.append(r)
                    b = r["bounds_bytes"]
                    rows.append([name, f"{s:.0%}", kind, f"{r['sparsity']:.4f}", fmt_bytes(r["dense_bytes"]),
                                 fmt_bytes(r["compact_bytes"]), f"{r['dense_over_compact']:.2f}x",
                                 f"{fmt_bytes(b['bitmask'])} ({r['dense_over_bitmask_bound']:.2f}x)",
                                 f"{fmt_bytes(b['entropy'])} ({r['dense_over_entropy_bound']:.2f}x)",
                                 f"{r['compact_over_entropy_bound']:.3f}"])
            record["models"][name] = {"prunable_weights": sum(p.numel() for p in params.values()),
                                      "total_params": sum(p.numel() for p in model.parameters()), "results": results}
            del model, params, originals
    print_table(["model", "target", "masks", "sparsity", "model.safetensors", "model.sparse.safetensors",
                 "dense/compact", "bitmask bound (dense/bound)", "entropy bound (dense/bound)", "compact/entropy bound"],
                rows, title="Bytes on disk (whole state_dict; bounds count non-prunable tensors dense)")
    out = write_json(args.json, record)
    print(f"\nwrote {out}")
    return record


if __name__ == "__main__":
    main()
