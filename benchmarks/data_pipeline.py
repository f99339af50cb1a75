"""Input pipeline speed: first decode of CIFAR-10, cached reload, augmented training images per second.

Throughput is the training loader end to end (epoch permutation, batch gather from the
uint8 cache, pad-crop-flip-normalise) on this machine's CPU, for batch 64 and 128, with and
without channels_last, at 1 thread and at torch's default thread count. Variants run
round-robin (one pass of ``--batches`` batches each per round, after one untimed batch),
so machine drift hits them alike; medians and spreads are reported.
Floor: >= 20,000 augmented training images/s on the 2-core CPU.

    FGGP_CIFAR10_PATH=../shared/data/cifar10/plain_text python benchmarks/data_pipeline.py   # ~1 min
    python benchmarks/data_pipeline.py --source /path/to/parquet_folder --repeats 9
    python benchmarks/data_pipeline.py --quick                                               # smoke run
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    apply_threads,
    base_parser,
    describe_machine,
    new_record,
    print_table,
    round_robin,
    summarize,
    write_json,
)

FLOOR_IMAGES_PER_S = 20_000


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _decode_times(args, cache: str, record: dict):
    from fggp_hub.data import load_cifar10

    # First decode: an empty cache folder, so every JPEG is decoded (all cores, then one).
    train, t_first = _timed(lambda: load_cifar10("train", source=args.source, cache_dir=cache))
    if train.from_cache:
        raise RuntimeError(f"the cache folder {cache} was not empty: the first decode was not timed")
    decode = {"train_images": len(train), "train_first_decode_s": t_first}
    if not args.quick:
        _, decode["train_first_decode_one_process_s"] = _timed(
            lambda: load_cifar10("train", source=args.source, cache_dir=cache, use_cache=False, num_workers=1))
        test, decode["test_first_decode_s"] = _timed(lambda: load_cifar10("test", source=args.source, cache_dir=cache))
        decode["test_images"] = len(test)
    cached = []
    for _ in range(2 if args.quick else 5):
        again, dt = _timed(lambda: load_cifar10("train", source=args.source, cache_dir=cache))
        if not again.from_cache:
            raise RuntimeError("the second load decoded again: the cache was not written")
        cached.append(dt)
    decode["train_cached_load_median_s"] = statistics.median(cached)
    decode["train_cache_file_mb"] = train.cache_file.stat().st_size / 2**20 if train.cache_file else None
    record["source"] = str(train.source)
    record["decode"] = decode
    return train


def _throughput(train, args) -> dict[str, dict]:
    """Augmented images/s of each (batch size, memory format, threads) variant, round-robin."""
    from fggp_hub.data import make_loader

    default_threads = torch.get_num_threads()
    settings = {f"batch{bs}{'_channels_last' if cl else ''}_threads{th}": (bs, cl, th)
                for bs in args.batch_sizes for cl in (False, True) for th in sorted({1, default_threads})}
    loaders = {name: make_loader(train, bs, train=True, seed=0, channels_last=cl) for name, (bs, cl, _) in settings.items()}
    iterators: dict = {}
    images: dict[str, int] = {}
    epoch = {"n": 0}

    def prepare(name):
        def run():
            torch.set_num_threads(settings[name][2])
            epoch["n"] += 1
            loaders[name].set_epoch(epoch["n"])
            iterators[name] = iter(loaders[name])
            next(iterators[name])  # the first batch is untimed
        return run

    def consume(name):
        n_batches = min(args.batches, len(loaders[name]) - 1)

        def run():
            seen = 0
            for _ in range(n_batches):
                _, y = next(iterators[name])
                seen += y.shape[0]
            images[name] = seen
        return run

    try:
        times = round_robin({n: consume(n) for n in settings}, args.repeats, warmup=0,
                            prepare={n: prepare(n) for n in settings})
    finally:
        torch.set_num_threads(default_threads)
    return {name: summarize([images[name] / t for t in ts]) for name, ts in times.items()}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = base_parser(__doc__)
    parser.add_argument("--source", default=None, help="CIFAR-10 folder/files/Hub id (default: $FGGP_CIFAR10_PATH)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7, --quick 2)")
    parser.add_argument("--batches", type=int, default=None, help="batches per variant and round (default 150, --quick 20)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 7)
    args.batches = args.batches or (20 if args.quick else 150)
    apply_threads(args.threads)

    from fggp_hub.data.decode import default_num_workers

    record = new_record("data_pipeline", __file__, argv, args)
    record["decode_workers"] = default_num_workers()
    print(f"machine: {describe_machine(record['machine'])}")
    with tempfile.TemporaryDirectory(prefix="fggp-data-bench-") as cache:
        train = _decode_times(args, cache, record)
        rates = _throughput(train, args)
    record["train_images_per_s"] = rates
    # Per setting, the better thread count (what a run would pick); the floor applies to those.
    best: dict[str, float] = {}
    for name, s in rates.items():
        setting = name.rsplit("_threads", 1)[0]
        best[setting] = max(best.get(setting, 0.0), s["median"])
    record["best_median_per_setting"] = best
    record["floor_images_per_s"] = FLOOR_IMAGES_PER_S
    record["meets_floor"] = min(best.values()) >= FLOOR_IMAGES_PER_S

    d = record["decode"]
    rows = [[f"first decode, train ({d['train_images']:,} images, {record['decode_workers']} processes)",
             f"{d['train_first_decode_s']:.2f}"]]
    if "train_first_decode_one_process_s" in d:
        rows.append(["first decode, train, one process", f"{d['train_first_decode_one_process_s']:.2f}"])
        rows.append([f"first decode, test ({d['test_images']:,} images)", f"{d['test_first_decode_s']:.2f}"])
    rows.append(["cached load, train (median)", f"{d['train_cached_load_median_s']:.3f}"])
    print_table(["step", "seconds"], rows, title=f"CIFAR-10 from {record['source']}")
    print_table(["setting", "images/s (median)", "min", "max", "spread (IQR/median)"],
                [[k, f"{s['median']:,.0f}", f"{s['min']:,.0f}", f"{s['max']:,.0f}", f"{s['spread']:.1%}"]
                 for k, s in rates.items()],
                title=f"Augmented training images/s, {args.repeats} rounds of {args.batches} batches")
    print(f"\nslowest setting at its better thread count: {min(best.values()):,.0f} images/s "
          f"(floor: >= {FLOOR_IMAGES_PER_S:,})")
    out = write_json(args.json, record)
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
