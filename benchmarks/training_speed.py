"""Training images/s: the runner (recipes/prune.py) against a plain timm + torch loop, same model and batch.

Both sides train the same timm model with the paper's optimizer (SGD Nesterov, wd 5e-4,
label-smoothed cross-entropy) in channels_last on real CIFAR-10 batches. The plain loop has
no pruner, no accelerate, no scheduler and takes its batches from a list made beforehand;
the runner has everything it uses in a real run (the batch loader with augmentation, the
FGGP pruner's hooks and pruning steps, the LR scheduler, accelerate), optionally compiled.

Each measurement is a fresh process run for ``--short`` and for ``--long`` optimizer
steps; the difference of the two wall times over the difference of the steps is the time
of one training step with start-up, data decoding, compilation and the final evaluation
cancelled out. Variants run round-robin (``--repeats`` rounds), so drift hits all alike.

    FGGP_CIFAR10_PATH=../shared/data/cifar10/plain_text python benchmarks/training_speed.py        # ~15 min
    python benchmarks/training_speed.py --models fggp_resnet20_cifar --batch 128 --repeats 2
    python benchmarks/training_speed.py --quick
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import apply_threads, base_parser, describe_machine, new_record, print_table, summarize, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLAIN = r"""
import sys, time, torch, timm, fggp_hub
from fggp_hub.data import load_cifar10, make_loader
model_name, batch, steps, compile_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
train = load_cifar10("train")
loader = make_loader(train, batch, train=True, seed=0, channels_last=True)
batches = []
for x, y in loader:
    batches.append((x, y))
    if len(batches) == min(steps, 50):
        break
torch.manual_seed(0)
model = timm.create_model(model_name).to(memory_format=torch.channels_last).train()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
forward = torch.compile(model) if compile_ else model
for i in range(steps):
    x, y = batches[i % len(batches)]
    loss = torch.nn.functional.cross_entropy(forward(x), y, label_smoothing=0.1)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
"""


SOURCE: str | None = None  # --source: the CIFAR-10 parquet folder (default: $FGGP_CIFAR10_PATH, then ../shared)


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.setdefault("FGGP_CIFAR10_PATH", str(ROOT.parent / "shared" / "data" / "cifar10" / "plain_text"))
    if SOURCE:
        env["FGGP_CIFAR10_PATH"] = SOURCE
    if torch_threads is not None:
        env["OMP_NUM_THREADS"] = str(torch_threads)
    return env


torch_threads: int | None = None


def _plain(model: str, batch: int, steps: int, compile_: bool) -> float:
    start = time.perf_counter()
    _check([sys.executable, "-c", PLAIN, model, str(batch), str(steps), "1" if compile_ else "0"])
    return time.perf_counter() - start


def _check(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")


def _runner(model: str, batch: int, steps: int, compile_: bool, work: Path, interval: int) -> float:
    out = work / f"run-{time.monotonic_ns()}"
    args = [sys.executable, str(ROOT / "recipes" / "prune.py"), "--model", model, "--train.batch_size", str(batch),
            "--train.max_steps", str(steps), "--train.epochs", "2", "--pruning.interval", str(interval),
            "--train.compile", "true" if compile_ else "false", "--train.checkpoint_every", "0",
            "--train.eval_every", "1000", "--data.test_subset", "64", "--tracker", "null",
            "--export.enabled", "false", "--output-dir", str(out)]
    start = time.perf_counter()
    _check(args)
    elapsed = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    if results["optimizer_steps"] != steps:
        raise RuntimeError(f"the runner made {results['optimizer_steps']} steps, not {steps}")
    return elapsed


def main(argv: Sequence[str] | None = None) -> dict:
    parser = base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["fggp_resnet20_cifar", "fggp_vgg19_bn_cifar"])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 64], help="batch per model (same order)")
    parser.add_argument("--short", type=int, nargs="+", default=[20, 5], help="short run's steps per model")
    parser.add_argument("--long", type=int, nargs="+", default=[220, 30], help="long run's steps per model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also the runner with train.compile true")
    parser.add_argument("--source", default=None, help="CIFAR-10 parquet folder (default: $FGGP_CIFAR10_PATH)")
    args = parser.parse_args(argv)
    global SOURCE, torch_threads
    SOURCE, torch_threads = args.source, args.threads
    apply_threads(args.threads)
    if args.quick:
        args.models, args.batch, args.short, args.long, args.repeats = ["fggp_resnet20_cifar"], [32], [2], [6], 1
    record = new_record("training_speed", __file__, argv, args)
    print(describe_machine(record["machine"]))
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="fggp-speed-") as tmp:
        for model, batch, short, long in zip(args.models, args.batch, args.short, args.long):
            variants = {"plain timm + torch loop": lambda n, m=model, b=batch: _plain(m, b, n, False),
                        "recipes/prune.py (FGGP)": lambda n, m=model, b=batch: _runner(m, b, n, False, Path(tmp), max(1, short))}
            if args.compile:
                variants["recipes/prune.py (FGGP), compiled"] = lambda n, m=model, b=batch: _runner(m, b, n, True, Path(tmp), max(1, short))
            per_step: dict[str, list[float]] = {name: [] for name in variants}
            for r in range(args.repeats):
                order = list(variants) if r % 2 == 0 else list(variants)[::-1]
                for name in order:
                    per_step[name].append((variants[name](long) - variants[name](short)) / (long - short))
            base = summarize(per_step["plain timm + torch loop"])["median"]
            for name, times in per_step.items():
                s = summarize(times)
                results[f"{model}/{name}"] = {"batch": batch, "step_s": s, "images_per_s": batch / s["median"]}
                rows.append([model, batch, name, f"{s['median'] * 1e3:.0f} ms", f"{batch / s['median']:.0f}",
                             f"{base / s['median']:.3f}", f"{s['spread']:.2f}"])
    print_table(["model", "batch", "loop", "step (median)", "images/s", "speed vs plain", "IQR/median"], rows,
                title="training speed, CIFAR-10 (JPEG-q75 copy), channels_last, fp32, one process")
    record["results"] = results
    path = write_json(args.json, record)
    print(f"\nwrote {path}")
    return record


if __name__ == "__main__":
    main()
