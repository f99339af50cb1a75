"""Latency and throughput of a model's forward pass on the current device.

Median of ``repeats`` timed passes after ``warmup`` untimed ones, on a random input
(the weights' values, not the pixels, decide the arithmetic of a dense kernel). On CUDA
the device is synchronised around every pass. Numbers depend on the machine and its
load: report them with the device and thread count (``evaluate_model`` does).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["measure_latency", "latency_keys"]


def latency_keys(batch_sizes: Iterable[int]) -> list[str]:
    """The result keys ``measure_latency`` fills for ``batch_sizes``."""
    keys = []
    for b in batch_sizes:
        keys += [f"latency_ms_batch{int(b)}", f"throughput_img_s_batch{int(b)}"]
    return keys


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    input_size: Sequence[int] = (3, 32, 32),
    batch_sizes: Iterable[int] = (1, 64),
    *,
    warmup: int = 3,
    repeats: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """``{"latency_ms_batch{b}": median ms per pass, "throughput_img_s_batch{b}": b / median s}`` for each b.

    ``input_size`` is one image's (C, H, W); the model runs in eval mode under
    ``torch.inference_mode`` on the device and dtype of its parameters.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    try:
        with torch.inference_mode():
            for b in batch_sizes:
                b = int(b)
                x = torch.randn((b, *input_size), generator=generator).to(device=device, dtype=dtype)
                for _ in range(warmup):
                    model(x)
                _sync(device)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    model(x)
                    _sync(device)
                    times.append(time.perf_counter() - start)
                median = statistics.median(times)
                out[f"latency_ms_batch{b}"] = 1000.0 * median
                out[f"throughput_img_s_batch{b}"] = b / median
    finally:
        model.train(was_training)
    return out
