"""Sparse CPU inference: torch dense vs ONNX Runtime dense vs ``fggp_hub.sparsify_for_inference`` vs DeepSparse.

Batch-1 latency and batch-64 throughput of VGG-19-BN CIFAR and ResNet-50 CIFAR at
90/95/98 % sparsity, all variants of a model round-robin in one process (DeepSparse
in a worker process of its own venv, timed by the worker, one request per call), so
the machine's drift hits them alike. Ratios are medians of round-by-round ratios.

Masks: the zoo's checkpoint where one exists for the architecture and sparsity (the
trained weights and FGGP masks of ``vgg19-cifar10-s90/s95/s98``; ``--no-zoo`` opts out);
otherwise global magnitude over the prunable weights (first conv dense) of the random
init, BN statistics re-estimated on random batches (ResNet-50: no zoo entry). Errors: max
relative logit error vs torch, and for ours also of the features (global magnitude
prunes ResNet-50's whole fc at >= 90 %, so its logits are all zero).

Runtimes: ONNX Runtime (``pip install -e ".[bench]"``) runs the ``fggp_hub.to_onnx``
file; DeepSparse 1.8 pins numpy<2 and onnx 1.14, so it runs from its own venv
(``--deepsparse-python``, default ``$FGGP_DEEPSPARSE_PYTHON`` or
``~/.cache/deepsparse-venv/bin/python``, made with ``python -m venv ... && pip install
deepsparse==1.8.0``). Each is skipped with one line when missing.

    python benchmarks/sparse_inference.py                    # VGG-19 + ResNet-50, 90/95/98 %, batch 1 and 64
    python benchmarks/sparse_inference.py --quick            # smoke run (small model, few repeats)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

import fggp_hub  # noqa: F401  (registers the CIFAR models)
from fggp_hub.inference import (
    MODES,
    format_inference_report,
    inference_report,
    native_status,
    sparsify_for_inference,
)
from fggp_hub.pruning import prunable_parameters, sparsity_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    apply_threads,
    base_parser,
    describe_machine,
    fmt_ratio,
    fmt_s,
    new_record,
    print_table,
    summarize,
    write_json,
)

_WORKER = r"""
import json, sys, time
import numpy as np
try:
    from deepsparse import Engine
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True); sys.exit(0)
import deepsparse
print(json.dumps({"ready": deepsparse.__version__}), flush=True)
engines, inputs = {}, {}
for line in sys.stdin:
    req = json.loads(line)
    try:
        if req["op"] == "load":
            t0 = time.perf_counter()
            engines[req["key"]] = Engine(req["path"], batch_size=req["batch"], num_cores=req["cores"])
            inputs[req["key"]] = [np.load(req["input"])]
            print(json.dumps({"compile_s": time.perf_counter() - t0}), flush=True)
        elif req["op"] == "run":
            eng, x = engines[req["key"]], inputs[req["key"]]
            t0 = time.perf_counter(); eng.run(x); dt = time.perf_counter() - t0
            print(json.dumps({"s": dt}), flush=True)
        elif req["op"] == "out":
            np.save(req["path"], engines[req["key"]].run(inputs[req["key"]])[0])
            print(json.dumps({"ok": True}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
"""


class DeepSparse:
    """A DeepSparse worker process in its own venv; ``run`` returns the worker's own timing."""

    def __init__(self, python: str, cores: int) -> None:
        self.cores = cores
        self.proc = subprocess.Popen([python, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, env={**os.environ, "NM_DISABLE_ANALYTICS": "1"})
        hello = self._read()
        if "error" in hello:
            self.close()
            raise RuntimeError(hello["error"])
        self.version = hello["ready"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the DeepSparse worker exited")
        return json.loads(line)

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@torch.no_grad()
def magnitude_model(base: torch.nn.Module, sparsity: float, calib_batches: int, seed: int) -> torch.nn.Module:
    """A copy of ``base`` pruned by global magnitude (first conv dense), BN statistics re-estimated, eval mode."""
    model = copy.deepcopy(base)
    params = prunable_parameters(model)
    scores = torch.cat([p.abs().flatten() for p in params.values()])
    threshold = scores.kthvalue(int(sparsity * scores.numel())).values
    for p in params.values():
        p.mul_(p.abs() > threshold)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(calib_batches):
        model(torch.randn(32, 3, 32, 32, generator=gen))
    return model.eval()


def zoo_model(arch: str, sparsity: float) -> tuple[torch.nn.Module, str] | None:
    """The zoo's FGGP checkpoint of ``arch`` at ``sparsity`` (within 0.005), loaded offline, and its name."""
    for entry in fggp_hub.list_models():
        if (entry.architecture == arch and (entry.method or "fggp") == "fggp" and entry.sparsity is not None
                and abs(entry.sparsity - sparsity) < 5e-3):
            return fggp_hub.load(entry.name).eval(), entry.name
    return None


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no busy-waiting between calls: in a round-robin its threads would spin on the cores the next variant needs
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _rel_err(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))


def bench_model(name: str, args: argparse.Namespace, ds: DeepSparse | None, ort_ok: bool, tmp: Path) -> dict:
    torch.manual_seed(args.seed)
    base = timm.create_model(name).eval()
    threads = torch.get_num_threads()
    models, masks = {}, {}
    for s in args.sparsities:
        found = None if args.no_zoo else zoo_model(name, s)
        if found is not None:
            models[s], masks[f"{s:g}"] = found[0], f"zoo checkpoint {found[1]}"
        else:
            models[s], masks[f"{s:g}"] = magnitude_model(base, s, args.calib_batches, args.seed), "global magnitude (random init)"
        print(f"{name} at {s:g}: masks from {masks[f'{s:g}']}")
    result: dict = {"model": name, "masks": masks, "per_sparsity": {}, "timings": {}, "errors": {}}
    ours = {}
    for s, m in models.items():
        t0 = time.perf_counter()
        ours[s] = sparsify_for_inference(m, batch_sizes=tuple(args.batch_sizes), repeats=args.tune_repeats)
        report = inference_report(ours[s])
        result["per_sparsity"][f"{s:g}"] = {
            "sparsity": sparsity_stats(m)["sparsity"], "sparsify_s": time.perf_counter() - t0,
            "kernels": {b: {k: sum(1 for lay in report["layers"].values() if lay["decisions"].get(b) == k)
                            for k in MODES} for b in args.batch_sizes},
            "report": report,
        }
        print(f"{name} at {s:g}: tuned in {time.perf_counter() - t0:.1f} s; kernels "
              + "; ".join(f"b{b}: {v}" for b, v in result["per_sparsity"][f"{s:g}"]["kernels"].items()))
        if args.verbose:
            print(format_inference_report(report))
    dense_key = args.sparsities[len(args.sparsities) // 2]
    onnx_paths = {}
    if ort_ok or ds is not None:
        for s, m in models.items():
            onnx_paths[s] = fggp_hub.to_onnx(m, tmp / f"{name}_{s:g}.onnx")

    for b in args.batch_sizes:
        gen = torch.Generator().manual_seed(args.seed + b)
        x = torch.randn(b, 3, 32, 32, generator=gen)
        xn = x.numpy()
        np.save(tmp / "x.npy", xn)
        calls, errors = {}, {}
        with torch.inference_mode():
            ref = models[dense_key](x).numpy()

        def timed(fn):
            def call():
                t0 = time.perf_counter()
                with torch.inference_mode():
                    fn()
                return time.perf_counter() - t0
            return call

        calls["torch dense"] = timed(lambda: models[dense_key](x))
        if ort_ok:
            sess = _ort_session(onnx_paths[dense_key], threads)
            calls["ORT dense"] = timed(lambda: sess.run(None, {"input": xn}))
            errors["ORT dense"] = _rel_err(ref, sess.run(None, {"input": xn})[0])
        for s in args.sparsities:
            with torch.inference_mode():
                ref_s = models[s](x).numpy()
                errors[f"ours@{s:g}"] = _rel_err(ref_s, ours[s](x).numpy())
                # global magnitude can prune the whole classifier (ResNet-50's fc at >= 90 %: all-zero logits),
                # so the pooled features are compared too
                if hasattr(models[s], "forward_features"):
                    feats = models[s].forward_features(x).numpy()
                    ours_feats = ours[s].forward_features(x).numpy()
                    errors[f"ours@{s:g} features"] = _rel_err(feats, ours_feats)
                    # the rounding floor: torch's own float32 features against a float64 run of the same model
                    feats64 = copy.deepcopy(models[s]).double().forward_features(x.double()).numpy()
                    errors[f"float64 ref@{s:g}"] = {"torch fp32": _rel_err(feats64, feats),
                                                    "ours": _rel_err(feats64, ours_feats)}
            calls[f"ours@{s:g}"] = timed(lambda s=s: ours[s](x))
            if ds is not None:
                key = f"{name}_{s:g}_b{b}"
                ds.ask(op="load", key=key, path=str(onnx_paths[s]), batch=b, input=str(tmp / "x.npy"), cores=ds.cores)
                ds.ask(op="out", key=key, path=str(tmp / "ds_out.npy"))
                errors[f"DeepSparse@{s:g}"] = _rel_err(ref_s, np.load(tmp / "ds_out.npy"))
                calls[f"DeepSparse@{s:g}"] = lambda key=key: ds.ask(op="run", key=key)["s"]
        names = list(calls)
        times = {n: [] for n in names}
        for r in range(args.warmup + args.repeats):
            order = names[(r // 2) % len(names):] + names[:(r // 2) % len(names)]
            for n in order[::-1] if r % 2 else order:
                dt = calls[n]()
                if r >= args.warmup:
                    times[n].append(dt)
        summary = {n: summarize(t) for n, t in times.items()}
        ratios = {}
        for s in args.sparsities:
            o = times[f"ours@{s:g}"]
            ratios[f"{s:g}"] = {
                "dense_over_ours": summarize([d / v for d, v in zip(times["torch dense"], o)]),
                **({"ours_over_deepsparse": summarize([v / d for v, d in zip(o, times[f"DeepSparse@{s:g}"])])}
                   if ds is not None else {}),
                **({"ort_over_ours": summarize([d / v for d, v in zip(times["ORT dense"], o)])} if ort_ok else {}),
            }
        result["timings"][b] = {"times_s": summary, "ratios": ratios}
        result["errors"][b] = errors
    return result


def _print(result: dict, args: argparse.Namespace) -> None:
    name = result["model"]
    for b in args.batch_sizes:
        t, rows = result["timings"][b], []
        for n, sm in t["times_s"].items():
            err = result["errors"][b]
            cell = f"{err.get(n, 0.0):.1e}" if n != "torch dense" else "ref"
            if f"{n} features" in err:
                cell += f" (features {err[f'{n} features']:.1e})"
            rows.append([n, fmt_s(sm["median"]), f"{sm['spread']:.0%}", f"{b / sm['median']:.4g}", cell])
        print_table(["variant", "median", "spread (IQR/median)", "img/s", "max rel. logit err"], rows,
                    title=f"{name}, batch {b}: {args.repeats} rounds")
        floors = {k.split("@")[1]: v for k, v in result["errors"][b].items() if k.startswith("float64 ref@")}
        if floors:
            print("features against a float64 run (max rel. error): "
                  + "; ".join(f"{float(s):.0%} torch fp32 {v['torch fp32']:.1e}, ours {v['ours']:.1e}"
                              for s, v in floors.items()))
        rows = []
        for key, r in t["ratios"].items():
            rows.append([f"{float(key):.0%}", fmt_ratio(r["dense_over_ours"], 2) + "x",
                         fmt_ratio(r["ort_over_ours"], 2) + "x" if "ort_over_ours" in r else "n/a",
                         fmt_ratio(r["ours_over_deepsparse"], 2) if "ours_over_deepsparse" in r else "n/a"])
        print_table(["sparsity", "torch dense / ours", "ORT dense / ours", "ours / DeepSparse (time)"], rows,
                    title=f"{name}, batch {b}: ratios (median of round-by-round ratios, IQR)")


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=None, help="default: fggp_vgg19_bn_cifar fggp_resnet50_cifar")
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.95, 0.98])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 15, --quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2, --quick 1)")
    parser.add_argument("--tune-repeats", type=int, default=None, help="sparsify_for_inference repeats (default 5, --quick 1)")
    parser.add_argument("--calib-batches", type=int, default=None, help="BN re-estimation batches of 32 (default 4)")
    parser.add_argument("--deepsparse-python", default=os.environ.get(
        "FGGP_DEEPSPARSE_PYTHON", str(Path.home() / ".cache/deepsparse-venv/bin/python")))
    parser.add_argument("--no-deepsparse", action="store_true")
    parser.add_argument("--no-zoo", action="store_true", help="global magnitude masks even where the zoo has a checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print every layer's kernel choice and timings")
    args = parser.parse_args(argv)
    quick = args.quick
    args.models = args.models or (["fggp_resnet20_cifar"] if quick else ["fggp_vgg19_bn_cifar", "fggp_resnet50_cifar"])
    args.repeats = args.repeats or (2 if quick else 15)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    args.tune_repeats = args.tune_repeats or (1 if quick else 5)
    args.calib_batches = args.calib_batches or (1 if quick else 4)
    if quick:
        args.batch_sizes = [b if b == 1 else min(b, 8) for b in args.batch_sizes]
    args.sparsities = sorted(args.sparsities)
    apply_threads(args.threads)

    record = new_record("sparse_inference", __file__, argv, args)
    record["masks"] = ("the zoo's FGGP checkpoint where one exists for the architecture and sparsity (models.*.masks), "
                       "else global magnitude of the random init (first conv dense), BN statistics re-estimated on "
                       "random batches")
    record["native"] = native_status()
    print(f"machine: {describe_machine(record['machine'])}")
    print(f"native direct kernel: {'available' if record['native']['available'] else record['native']['reason']}")
    try:
        import onnxruntime

        ort_ok = True
        record["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        ort_ok = False
        print('skipping ONNX Runtime: not installed (pip install -e ".[bench]")')
    ds = None
    if not args.no_deepsparse:
        try:
            if not Path(args.deepsparse_python).exists():
                raise RuntimeError(f"no python at {args.deepsparse_python}")
            ds = DeepSparse(args.deepsparse_python, torch.get_num_threads())
            record["deepsparse"] = ds.version
        except Exception as exc:  # noqa: BLE001  optional runtime: one line and go on
            print(f"skipping DeepSparse: {' '.join(str(exc).split())[:200]}")
    record["models"] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.models:
                result = bench_model(name, args, ds, ort_ok, Path(tmp))
                record["models"][name] = result
                _print(result, args)
    finally:
        if ds is not None:
            ds.close()
    if quick:
        print("(--quick: few rounds, the numbers are a smoke test, not a measurement)")
    out = write_json(args.json, record)
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
