"""Loading: ``fggp_hub.load`` vs plain timm on the same exported checkpoint, warm cache.

For each paper backbone a 95 %-sparse model (one global magnitude selection on its
initial weights: what is loaded, not how it was pruned, sets the cost) is exported with
``fggp_hub.export`` into a temporary folder. ``$FGGP_HUB_HOME`` is pointed at a second
temporary folder for the run (and ``$FGGP_HUB`` unset), so the hub's own cache is a fresh
one. Then, round-robin, after a warm-up round that puts every file in the page cache:

- ``timm file``: ``timm.create_model(arch, pretrained=True,
  pretrained_cfg_overlay=dict(file=".../model.safetensors"))`` (the baseline);
- ``timm local-dir``: ``timm.create_model("local-dir:<folder>", pretrained=True)``;
- ``fggp_hub.load(folder)``: compact file (default) and ``compact=False`` (dense file);
- ``fggp_hub.load("bench/<name>", hub=<local hub>)``: the same through a local hub repo
  in the temporary folder. These three rows read files outside the hub's caches, so their
  sha256 is computed on every load;
- ``fggp_hub.load("bench/<name>")`` (compact and dense): the realistic repeat load, a repo
  of the default local hub ``$FGGP_HUB_HOME/hub``, looked up by name, after a first load
  that hashed the file and wrote a verification record. An unchanged file inside the
  hub's caches is not re-hashed (see ``fggp_hub.hub.integrity.verify_weight_file``).

fggp_hub.load also checks the file's size and sha256 (or its verification record) against
config.json and recomputes the sparsity; timm does neither. Ratios are load time over the
``timm file`` time of the same round (median and interquartile range). All loaded weights
are checked identical. The JSON records, per row, how many times the first and a repeat
load computed a sha256 (``sha256_per_load``) and whether the timed loads used a
verification record (``verification_record``).

    python benchmarks/loading.py                  # both backbones, ~1 min on 2 cores
    python benchmarks/loading.py --models fggp_vgg19_bn_cifar --repeats 15
    python benchmarks/loading.py --quick          # smoke run
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    apply_threads,
    base_parser,
    describe_machine,
    fmt_bytes,
    fmt_ratio,
    fmt_s,
    make_model,
    new_record,
    paired_ratios,
    print_table,
    round_robin,
    summarize,
    write_json,
)

DEFAULT_MODELS = ("fggp_vgg19_bn_cifar", "fggp_resnet50_cifar")
BASELINE = "timm file"
CACHED_COMPACT = "fggp_hub.load repo in FGGP_HUB_HOME (compact)"
CACHED_DENSE = "fggp_hub.load repo in FGGP_HUB_HOME (dense)"


def _export_sparse(name: str, sparsity: float, root: Path, home: Path) -> tuple[Path, str, object]:
    """Export a ``sparsity``-sparse ``name`` under ``root``; push it to a local hub there and to ``home``'s."""
    import fggp_hub
    from fggp_hub.hub import LocalHub
    from fggp_hub.pruning import prunable_parameters, prune_step

    model, _ = make_model(name, channels_last=False)
    params = list(prunable_parameters(model).values())
    n_total = sum(p.numel() for p in params)
    masks = [torch.ones_like(p, dtype=torch.bool) for p in params]
    masks = prune_step([p.detach() for p in params], [p.detach() for p in params], masks, int(n_total * sparsity), method="gmp")
    with torch.no_grad():
        for p, m in zip(params, masks):
            p.mul_(m)
    folder = fggp_hub.export(model.eval(), root / name, pruning={"method": "gmp"})
    hub = LocalHub(root / "hub")
    repo_id = f"bench/{name.replace('_', '-')}"
    fggp_hub.push(folder, repo_id, hub=hub)
    fggp_hub.push(folder, repo_id, hub=LocalHub(home / "hub"))  # the default local hub: inside the trusted home
    return folder, repo_id, hub


@contextlib.contextmanager
def _hub_home(home: Path):
    """``$FGGP_HUB_HOME`` = ``home`` and ``$FGGP_HUB`` unset while the block runs (restored after)."""
    saved = {k: os.environ.get(k) for k in ("FGGP_HUB_HOME", "FGGP_HUB")}
    os.environ["FGGP_HUB_HOME"] = str(home)
    os.environ.pop("FGGP_HUB", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _count_hashes(load) -> tuple[int, object]:
    """Run ``load`` once (untimed); how many files it sha256-hashed, and what it returned."""
    from fggp_hub.hub import integrity

    real, calls = integrity.sha256_file, []
    integrity.sha256_file = lambda path, *a, **k: calls.append(str(path)) or real(path, *a, **k)
    try:
        out = load()
    finally:
        integrity.sha256_file = real
    return len(calls), out


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _measure_model(name: str, args, root: Path, home: Path) -> dict:
    import timm

    import fggp_hub
    from fggp_hub.hub.integrity import COMPACT_WEIGHTS, DENSE_WEIGHTS

    folder, repo_id, hub = _export_sparse(name, args.sparsity, root, home)
    dense_file = folder / DENSE_WEIGHTS
    loaders = {
        BASELINE: lambda: timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(dense_file))),
        "timm local-dir": lambda: timm.create_model(f"local-dir:{folder}", pretrained=True),
        "fggp_hub.load folder (compact)": lambda: fggp_hub.load(folder),
        "fggp_hub.load folder (dense)": lambda: fggp_hub.load(folder, compact=False),
        "fggp_hub.load local hub (compact)": lambda: fggp_hub.load(repo_id, hub=hub),
        CACHED_COMPACT: lambda: fggp_hub.load(repo_id),
        CACHED_DENSE: lambda: fggp_hub.load(repo_id, compact=False),
    }
    reference = loaders[BASELINE]()
    first = {}
    for variant, load in loaders.items():  # the first load of each row (writes the records); all give the same weights
        first[variant], model = _count_hashes(load)
        if not _same_weights(reference, model):
            raise RuntimeError(f"{variant} loaded different weights than {BASELINE} for {name}")
    repeat = {variant: _count_hashes(load)[0] for variant, load in loaders.items()}
    times = round_robin(loaders, args.repeats, args.warmup)
    after = {variant: _count_hashes(load)[0] for variant, load in loaders.items()}  # the timed loads did the same
    fggp_rows = [v for v in loaders if not v.startswith("timm")]  # timm verifies nothing: no entry
    sha256 = {v: {"first_load": first[v], "repeat_load": repeat[v], "after_timed_rounds": after[v]} for v in fggp_rows}
    used_record = {v: repeat[v] == 0 and after[v] == 0 for v in fggp_rows}
    return {
        "model": name,
        "sparsity": args.sparsity,
        "dense_bytes": dense_file.stat().st_size,
        "compact_bytes": (folder / COMPACT_WEIGHTS).stat().st_size,
        "times_s": {k: summarize(v) for k, v in times.items()},
        "ratio_vs_timm_file": paired_ratios(times, BASELINE),
        "sha256_per_load": sha256,
        "verification_record": used_record,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--sparsity", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 9, --quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 1)")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 9)
    args.warmup = args.warmup if args.warmup is not None else 1
    apply_threads(args.threads)

    record = new_record("loading", __file__, argv, args)
    print(f"machine: {describe_machine(record['machine'])}")
    record["models"] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="fggp-loading-bench-") as tmp, _hub_home(Path(tmp) / "home"):
        record["hub_home"] = "a fresh temporary FGGP_HUB_HOME (FGGP_HUB unset); the other rows' files lie outside it"
        for name in args.models:
            result = _measure_model(name, args, Path(tmp), Path(tmp) / "home")
            record["models"][name] = result
            s, r, h = result["times_s"], result["ratio_vs_timm_file"], result["sha256_per_load"]
            for variant in s:
                size = result["compact_bytes"] if "compact" in variant else result["dense_bytes"]
                hashed = str(h[variant]["after_timed_rounds"]) if variant in h else "-"
                rows.append([name, variant, fmt_bytes(size), hashed, fmt_s(s[variant]["median"]), f"{s[variant]['spread']:.1%}",
                             fmt_ratio(r[variant], 2)])
    print_table(["model", "loader", "file", "sha256 per load", "median", "spread (IQR/median)", "vs timm file (IQR)"], rows,
                title=f"Load time, warm page cache, {args.sparsity:.0%} sparse, {args.repeats} rounds")
    out = write_json(args.json, record)
    print(f"\nwrote {out}")
    return record


if __name__ == "__main__":
    main()
