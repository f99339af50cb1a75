"""``sparsify_for_inference``: run a pruned model's convs and linears with sparse kernels where faster.

Whether CSR beats dense depends on the layer's shape, its sparsity, the batch size
and the machine (measured on VGG-19 CIFAR: at batch 1 the late 512-channel layers are
weight-bandwidth bound and CSR wins by 5-20x; at batch 64 dense GEMM is efficient and
CSR wins only on the sparsest late layers, 2-10x there), so every layer is timed both
ways on its real input shape at each requested batch size and the faster kernel is
kept; at run time a layer dispatches on the batch size. Nothing is cached on disk.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import SparseInferenceError, SparsifyArgumentError, TrainingModeError
from .fold import fold_batchnorms
from .layers import MODES, SparseConv2d, SparseInferenceLayer, SparseLinear

__all__ = ["sparsify_for_inference", "inference_report", "format_inference_report"]

_INFO_ATTR = "sparse_inference_info"


def _check_args(model: nn.Module, batch_sizes: Sequence[int], force: str | None, repeats: int) -> tuple[int, ...]:
    if any(m.training for m in model.modules()):
        raise TrainingModeError("the model is in training mode: call model.eval() before sparsify_for_inference")
    if force is not None and force not in MODES:
        raise SparsifyArgumentError(f"force={force!r} is not a kernel mode: use None, 'dense' or 'sparse'")
    sizes = tuple(batch_sizes) if isinstance(batch_sizes, Sequence) else (batch_sizes,)
    if not sizes or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in sizes):
        raise SparsifyArgumentError(
            f"batch_sizes={batch_sizes!r} must be a non-empty list of positive ints, e.g. (1, 64)"
        )
    if repeats < 1:
        raise SparsifyArgumentError(f"repeats={repeats} must be at least 1")
    return tuple(sorted(set(sizes)))


def _resolve_input_size(model: nn.Module, input_size: Sequence[int] | None) -> tuple[int, ...]:
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        input_size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if input_size is None:
        raise SparsifyArgumentError(
            "the model has no pretrained_cfg['input_size']: pass input_size=(C, H, W) (one sample, no batch dim)"
        )
    return tuple(int(s) for s in input_size)


def _replace_layers(model: nn.Module) -> tuple[dict[str, SparseInferenceLayer], dict[str, str]]:
    """Swap every plain Conv2d / Linear for its inference twin; return them and why others were skipped."""
    counts: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        counts[id(m)] = counts.get(id(m), 0) + 1
    layers: dict[str, SparseInferenceLayer] = {}
    skipped: dict[str, str] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        cls = SparseConv2d if isinstance(module, nn.Conv2d) else SparseLinear
        reason = cls.unsupported_reason(module)
        if reason is None and counts[id(module)] > 1:
            reason = "module is shared by several parents"
        if reason is None and module.weight.dtype not in (torch.float32, torch.float64):
            reason = f"weight dtype {module.weight.dtype} (CSR kernels run in float32/float64)"
        if reason is not None:
            skipped[name] = reason
            continue
        layer = cls(module)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
        layers[name] = layer
    return layers, skipped


@torch.inference_mode()
def _capture_inputs(model: nn.Module, layers: dict[str, SparseInferenceLayer], sample: Tensor) -> dict[str, Tensor]:
    """Each layer's input in one forward pass of ``sample`` (copies: later in-place ops must not change them)."""
    inputs: dict[str, Tensor] = {}
    handles = [
        layer.register_forward_pre_hook(lambda mod, args, name=name: inputs.setdefault(name, args[0].clone()))
        for name, layer in layers.items()
    ]
    try:
        model(sample)
    except SparseInferenceError:
        raise
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparsifyArgumentError(
            f"a sample forward pass with input shape {tuple(sample.shape)} failed ({first}): "
            f"pass the model's real input_size=(C, H, W)"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    return inputs


# Fast kernels (batch 1: microseconds to a few ms) are re-run until each has had this much
# time, up to _MAX_ROUNDS: on a busy machine single runs of them are often stretched by
# preemption, and the best of many is what the kernel costs.
_MIN_TIME_S = 0.05
_MAX_ROUNDS = 50


@torch.inference_mode()
def _time_kernels(layer: SparseInferenceLayer, x: Tensor, repeats: int) -> dict[str, float]:
    """Best seconds per kernel over at least ``repeats`` rounds, round-robin so drift hits both alike.

    Stops early when one kernel is clearly slower.
    """
    best = {m: math.inf for m in MODES}
    spent = {m: 0.0 for m in MODES}
    order = list(MODES)
    i = 0
    while i <= repeats or (i <= _MAX_ROUNDS and min(spent.values()) < _MIN_TIME_S):
        warmup = {}
        for mode in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            layer.run(x, mode)
            elapsed = time.perf_counter() - start
            if i == 0:  # round 0 warms up (allocator, MKL handles, oneDNN primitives)
                warmup[mode] = elapsed
            else:
                best[mode] = min(best[mode], elapsed)
                spent[mode] += elapsed
        if i == 0 and warmup["sparse"] > max(8 * warmup["dense"], _MIN_TIME_S):
            return warmup  # slow, and losing clearly even against a cold dense kernel: do not spend seconds on it
        if i >= 2 and max(best.values()) > 4 * min(best.values()) and min(spent.values()) >= _MIN_TIME_S:
            break
        i += 1
    return best


def sparsify_for_inference(
    model: nn.Module,
    batch_sizes: Sequence[int] = (1, 64),
    *,
    input_size: Sequence[int] | None = None,
    force: str | None = None,
    fold_bn: bool = True,
    min_sparsity: float = 0.5,
    min_speedup: float = 1.1,
    repeats: int = 5,
    inplace: bool = False,
) -> nn.Module:
    """A copy of an eval-mode model whose convs and linears use CSR kernels where that is faster.

    BatchNorm2d layers that directly follow a conv are folded into it first. Then
    each plain ``nn.Conv2d`` (groups 1) and ``nn.Linear`` becomes a
    :class:`SparseConv2d` / :class:`SparseLinear` that is timed with the dense and
    the sparse kernel on its real input shape at every batch size in
    ``batch_sizes``; the sparse kernel is kept where it is at least
    ``min_speedup`` times faster. A layer dispatches on its input's first dimension
    (the batch size in CNNs); other sizes use the choice of the nearest measured
    one. Results match the original model to float32 rounding.

    Args:
        model: a model in eval mode (a pruned one: zeros in its weights). Left untouched unless ``inplace``.
        batch_sizes: batch sizes to tune for, e.g. ``(1, 64)``.
        input_size: one sample's shape (C, H, W); default ``model.pretrained_cfg["input_size"]``.
        force: ``"dense"`` or ``"sparse"`` to skip timing and use that kernel everywhere (tests, debugging).
        fold_bn: fold BatchNorm into the preceding convs.
        min_sparsity: layers less sparse than this stay dense without being timed.
        min_speedup: how much faster the sparse kernel must be to be chosen (guards against timing noise).
        repeats: timed runs per kernel, layer and batch size (the best is kept).
        inplace: convert ``model`` itself instead of a deep copy.

    Returns:
        The converted model, in eval mode and without gradients; run it under
        ``torch.inference_mode()``. :func:`inference_report` lists each layer's choice.

    Raises:
        TrainingModeError: the model is in training mode.
        SparsifyArgumentError: bad ``batch_sizes``, ``force`` or ``repeats``, or no usable input size.
    """
    sizes = _check_args(model, batch_sizes, force, repeats)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    out = model if inplace else copy.deepcopy(model)
    for p in out.parameters():
        p.requires_grad_(False)
    folded, fold_method = fold_batchnorms(out) if fold_bn else ([], "off")
    layers, skipped = _replace_layers(out)
    out.eval()  # the new layers and the Identity modules that replaced folded BNs

    if force is not None:
        for layer in layers.values():
            layer.set_decisions({}, default_mode=force)
    else:
        shape = _resolve_input_size(out, input_size)
        decisions: dict[str, dict[int, str]] = {name: {} for name in layers}
        for b in sizes:
            inputs = _capture_inputs(out, layers, torch.randn((b, *shape), dtype=dtype))
            for name, layer in layers.items():
                x = inputs.pop(name, None)
                if x is None:
                    continue  # not reached by the forward pass: keeps the default (dense)
                key = x.shape[0]  # layers dispatch on their input's first dim (the batch size for CNNs)
                if layer.sparsity < min_sparsity:
                    decisions[name][key] = "dense"  # too dense to be worth timing
                    continue
                best = _time_kernels(layer, x, repeats)
                layer.timings[key] = best
                decisions[name][key] = "sparse" if best["sparse"] * min_speedup <= best["dense"] else "dense"
        for name, layer in layers.items():
            layer.set_decisions(decisions[name])

    setattr(
        out,
        _INFO_ATTR,
        {
            "batch_sizes": list(sizes),
            "force": force,
            "min_sparsity": min_sparsity,
            "min_speedup": min_speedup,
            "threads": torch.get_num_threads(),
            "folded_batchnorms": [list(p) for p in folded],
            "fold_method": fold_method,
            "skipped_layers": skipped,
        },
    )
    return out.eval()


def inference_report(model: nn.Module) -> dict[str, Any]:
    """Settings of the conversion and, per converted layer, its sparsity, kernel per batch size and timings."""
    info = dict(getattr(model, _INFO_ATTR, {}))
    info["layers"] = {
        name: m.describe() for name, m in model.named_modules() if isinstance(m, SparseInferenceLayer)
    }
    return info


def format_inference_report(report: dict[str, Any]) -> str:
    """The report as a table: one row per layer, kernel and dense/sparse times per batch size."""
    sizes = report.get("batch_sizes") or sorted({b for lay in report["layers"].values() for b in lay["decisions"]})
    head = f"{'layer':<28}{'matrix':>12}{'sparsity':>10}" + "".join(f"{f'b{b}':>26}" for b in sizes)
    rows = [head]
    for name, lay in report["layers"].items():
        cells = []
        for b in sizes:
            mode = lay["decisions"].get(b, lay["default_mode"])
            t = lay["timings_s"].get(b)
            cells.append(f"{mode:>7} " + (f"{t['dense'] * 1e3:8.3f}/{t['sparse'] * 1e3:8.3f}ms" if t else f"{'':>18}"))
        shape = "x".join(str(s) for s in lay["matrix_shape"])
        rows.append(f"{name:<28}{shape:>12}{lay['sparsity']:>10.4f}" + "".join(f"{c:>26}" for c in cells))
    if report.get("skipped_layers"):
        rows.append("skipped: " + "; ".join(f"{n} ({r})" for n, r in report["skipped_layers"].items()))
    return "\n".join(rows)
