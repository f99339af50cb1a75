"""``sparsify_for_inference``: run a pruned model's convs and linears with sparse kernels where faster.

Which kernel wins depends on the layer's shape, its sparsity, the batch size and the
machine, so every layer is timed with each kernel (dense, Winograd, torch CSR, native direct)
on its real input at each requested batch size, and the fastest is kept; at run time
a layer dispatches on the batch size. Tuning happens inside one forward pass per
batch size, layer after layer, so each layer is timed on the input it will really
get (including the memory layout its predecessor's chosen kernel produces).
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
from .fold import conv_relu_pairs, fold_batchnorms
from .fuse import fuse_residual_blocks
from .layers import (
    MODES,
    ChwnGlobalAvgPool2d,
    ChwnMaxPool2d,
    SparseConv2d,
    SparseInferenceLayer,
    SparseLinear,
    format_direct_setting,
    parse_direct_setting,
)
from .native import keep_freed_memory, native_status

__all__ = ["sparsify_for_inference", "inference_report", "format_inference_report"]

_INFO_ATTR = "sparse_inference_info"


def _check_args(model: nn.Module, batch_sizes: Sequence[int], force: str | None, repeats: int) -> tuple[int, ...]:
    if any(m.training for m in model.modules()):
        raise TrainingModeError("the model is in training mode: call model.eval() before sparsify_for_inference")
    if force is not None and force not in MODES:
        raise SparsifyArgumentError(
            f"force={force!r} is not a kernel mode: use None, 'dense', 'sparse' (torch CSR), 'direct' (native) "
            "'winograd' (3x3 convs; dense elsewhere) or 'gemm' (1x1 convs; dense elsewhere)"
        )
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


def _sample_forward(model: nn.Module, sample: Tensor) -> None:
    """One forward pass; a failure that is not ours becomes a one-line argument error."""
    try:
        with torch.inference_mode():
            model(sample)
    except SparseInferenceError:
        raise
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparsifyArgumentError(
            f"a sample forward pass with input shape {tuple(sample.shape)} failed ({first}): "
            f"pass the model's real input_size=(C, H, W)"
        ) from exc


# Fast kernels (batch 1: microseconds to a few ms) are re-run until each has had this much
# time, up to _MAX_ROUNDS: on a busy machine single runs of them are often stretched by
# preemption, and the best of many is what the kernel costs.
_MIN_TIME_S = 0.05
_MAX_ROUNDS = 50


# The torch CSR kernel is timed at batch sizes below this only when the native kernel can run
# the layer: at batch 64 it was 2-30x slower than the direct kernel on every VGG-19 layer and
# takes seconds per run on the early ones.
_TORCH_CSR_MAX_BATCH = 8


@torch.inference_mode()
def _time_kernels(
    layer: SparseInferenceLayer, x: Tensor, repeats: int, modes: Sequence[str], residual: Tensor | None = None
) -> dict[str, float]:
    """Best seconds per kernel over at least ``repeats`` rounds, round-robin so drift hits all alike.

    Kernels clearly slower than the best after the warm-up round are dropped early.
    """
    best = {m: math.inf for m in modes}
    spent = {m: 0.0 for m in modes}
    order = list(modes)
    i = 0
    while i <= repeats or (i <= _MAX_ROUNDS and min(spent[m] for m in order) < _MIN_TIME_S):
        for mode in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            layer.run(x, mode, residual)
            elapsed = time.perf_counter() - start
            if i == 0:  # round 0 warms up (allocator, MKL handles, oneDNN primitives, kernel metadata)
                best[mode] = elapsed
            else:
                best[mode] = min(best[mode], elapsed) if i > 1 else elapsed
                spent[mode] += elapsed
        fastest = min(best[m] for m in order)
        if i == 0:  # slow even against cold kernels: do not spend seconds on it
            order = [m for m in order if m == "dense" or best[m] <= max(8 * fastest, _MIN_TIME_S)]
        elif i >= 2 and len(order) > 1:
            keep = [m for m in order if m == "dense" or best[m] <= 4 * fastest]
            if keep != order and min(spent[m] for m in keep) >= _MIN_TIME_S:
                order = keep
            elif max(best[m] for m in order) > 4 * fastest and min(spent[m] for m in order) >= _MIN_TIME_S:
                break
        i += 1
    return best


#: Layers sparser than this do not time the dense-weight native kernels (Winograd, GEMM): they do the same
#: work whatever the sparsity, and the direct kernel was 2-40x faster than Winograd on every such layer
#: measured (ResNet-50 / VGG-19, batch 1 and 64; the crossover was between 83 and 89 % sparsity at batch 64).
_DENSE_NATIVE_MAX_SPARSITY = 0.95


def _dense_modes(layer: SparseInferenceLayer, x: Tensor) -> tuple[str, ...]:
    """``"dense"`` and the dense-weight native kernels worth timing against it on ``x``."""
    if layer.sparsity > _DENSE_NATIVE_MAX_SPARSITY:
        return ("dense",)
    rivals = tuple(m for m, ok in (("winograd", layer.winograd_supported(x)), ("gemm", layer.gemm_supported(x))) if ok)
    return ("dense", *rivals)


def _candidate_modes(layer: SparseInferenceLayer, x: Tensor) -> tuple[str, ...]:
    dense = _dense_modes(layer, x)
    if not layer.direct_supported(x):
        return (*dense, "sparse")
    # the direct kernel with each setting worth trying ("direct@0": one block; "direct@K:G": packed tiles)
    direct = tuple(f"direct@{format_direct_setting(k)}" for k in layer.block_candidates(batch=x.shape[0]))
    if x.shape[0] >= _TORCH_CSR_MAX_BATCH:
        return (*dense, *direct)
    return (*dense, "sparse", *direct)


#: Convolutions with at most this many input channels (image stems) are timed with the direct kernel even
#: when dense: their input stays in L1, and a CHWN output saves the next direct layer a layout copy.
_STEM_MAX_IN_CHANNELS = 4


def _is_stem(layer: SparseInferenceLayer, x: Tensor) -> bool:
    return (isinstance(layer, SparseConv2d) and layer.in_channels <= _STEM_MAX_IN_CHANNELS and x.shape[0] > 1
            and layer.direct_supported(x))


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _replace_pools(model: nn.Module) -> list[str]:
    """Swap plain max-pools and global average pools for twins that read the direct kernel's CHWN layout as it lies."""
    names = []
    for name, module in list(model.named_modules()):
        if ChwnMaxPool2d.supports(module):
            _set_submodule(model, name, ChwnMaxPool2d(module))
            names.append(name)
        elif ChwnGlobalAvgPool2d.supports(module):
            _set_submodule(model, name, ChwnGlobalAvgPool2d())
            names.append(name)
    return names


def sparsify_for_inference(
    model: nn.Module,
    batch_sizes: Sequence[int] = (1, 64),
    *,
    input_size: Sequence[int] | None = None,
    force: str | None = None,
    fold_bn: bool = True,
    fuse_relu: bool = True,
    min_sparsity: float = 0.25,
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
        force: ``"dense"``, ``"sparse"`` (torch CSR), ``"direct"`` (native kernel, torch CSR where it cannot
            run), ``"winograd"`` (3x3 stride-1 convs; dense elsewhere) or ``"gemm"`` (1x1 stride-1 convs; dense
            elsewhere) to skip timing and use that kernel everywhere (tests, debugging).
        fold_bn: fold BatchNorm into the preceding convs.
        min_sparsity: layers less sparse than this are timed only against the dense-weight native kernels
            (Winograd for 3x3, GEMM for 1x1 stride-1 convs), not the sparse ones (except image stems with at
            most 4 input channels at batch > 1, where the direct kernel can win even dense). The packed 1x1
            kernel tied or beat the native GEMM on ResNet-50's 39 %-sparse 256 -> 64 layers at 32 x 32,
            batch 64 (18.7-18.8 vs 19.0-19.6 ms on the 2-core benchmark machine), hence a low default.
        min_speedup: how much faster a sparse, Winograd or GEMM kernel must be than dense to be chosen (guards
            against timing noise).
        fuse_relu: run a ReLU that only follows a conv/linear inside that layer's kernel, and inside
            blocks (ResNet bottlenecks) also ``relu(conv(x) + shortcut)`` in the conv's kernel
            (:func:`fggp_hub.inference.fuse.fuse_residual_blocks`).
        repeats: timed runs per kernel, layer and batch size (the best is kept).
        inplace: convert ``model`` itself instead of a deep copy.

    The first call makes glibc keep freed memory for reuse (process-wide; see
    :func:`fggp_hub.inference.native.keep_freed_memory`, ``FGGP_HUB_MALLOC_TUNE=0`` opts out):
    otherwise every large activation is page-faulted in anew on every call.

    Returns:
        The converted model, in eval mode and without gradients; run it under
        ``torch.inference_mode()``. :func:`inference_report` lists each layer's choice.

    Raises:
        TrainingModeError: the model is in training mode.
        SparsifyArgumentError: bad ``batch_sizes``, ``force`` or ``repeats``, or no usable input size.
    """
    sizes = _check_args(model, batch_sizes, force, repeats)
    malloc = keep_freed_memory()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    out = model if inplace else copy.deepcopy(model)
    for p in out.parameters():
        p.requires_grad_(False)
    folded, fold_method = fold_batchnorms(out) if fold_bn else ([], "off")
    relu_pairs = conv_relu_pairs(out) if fuse_relu else []
    layers, skipped = _replace_layers(out)
    fused = []
    for layer_name, relu_name in relu_pairs:
        if layer_name in layers:
            layers[layer_name].relu = True
            _set_submodule(out, relu_name, nn.Identity())
            fused.append([layer_name, relu_name])
    pools = _replace_pools(out)
    block_fusions = fuse_residual_blocks(out) if fuse_relu else []
    out.eval()  # the new layers and the Identity modules that replaced folded BNs and fused ReLUs

    if force is not None:
        for layer in layers.values():
            layer.set_decisions({}, default_mode=force)
    else:
        shape = _resolve_input_size(out, input_size)
        decisions: dict[str, dict[int, str]] = {name: {} for name in layers}

        def tuner(layer: SparseInferenceLayer, x: Tensor, residual: Tensor | None = None) -> str:
            name = names[id(layer)]
            key = x.shape[0]  # layers dispatch on their input's first dim (the batch size for CNNs)
            if key in decisions[name]:
                return decisions[name][key]
            stem = layer.sparsity < min_sparsity and _is_stem(layer, x)
            too_dense = layer.sparsity < min_sparsity and not stem
            if too_dense:  # too dense for the sparse kernels: dense against Winograd / GEMM only
                modes = _dense_modes(layer, x)
            else:
                modes = tuple(m for m in _candidate_modes(layer, x) if not (stem and m == "sparse"))
            if modes == ("dense",):
                decisions[name][key] = "dense"  # nothing to time it against
                return "dense"
            timed = _time_kernels(layer, x, repeats, modes, residual)
            # one "direct" entry: the best cache-block setting (kept per batch size on the layer)
            best = {m: t for m, t in timed.items() if not m.startswith("direct@")}
            blocks = {parse_direct_setting(m[7:]): t for m, t in timed.items() if m.startswith("direct@")}
            if blocks:
                block = min(blocks, key=blocks.get)
                best["direct"] = blocks[block]
                layer.direct_blocks[key] = block
            layer.timings[key] = best
            mode = min(best, key=best.get)
            if mode != "dense" and best[mode] * min_speedup > best["dense"]:
                mode = "dense"
            decisions[name][key] = mode
            return mode

        names = {id(layer): name for name, layer in layers.items()}
        for layer in layers.values():
            layer.tuner = tuner
        try:
            for b in sizes:
                _sample_forward(out, torch.randn((b, *shape), dtype=dtype))
        finally:
            for layer in layers.values():
                layer.tuner = None
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
            "fused_relus": fused,
            "layout_pools": pools,
            "block_fusions": block_fusions,
            "native": native_status(),
            "malloc": malloc,
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
    """The report as a table: one row per layer; per batch size the kernel in use, its time and dense's."""
    sizes = report.get("batch_sizes") or sorted({b for lay in report["layers"].values() for b in lay["decisions"]})
    native = report.get("native") or {}
    if native.get("available"):
        rows = [f"native direct kernel: in use where chosen ({native.get('library')})"]
    else:
        rows = [f"native direct kernel: unavailable ({native.get('reason', 'unknown')}); torch kernels only"]
    rows.append(f"{'layer':<28}{'matrix':>12}{'sparsity':>10}" + "".join(f"{f'b{b} kernel, ms/dense ms':>36}" for b in sizes))
    for name, lay in report["layers"].items():
        cells = []
        for b in sizes:
            mode = lay["decisions"].get(b, lay["default_mode"])
            t = lay["timings_s"].get(b)
            timing = f"{t[mode] * 1e3:8.3f}/{t['dense'] * 1e3:8.3f}" if t and mode in t else f"{'':>17}"
            setting = lay.get("direct_ci_blocks", {}).get(b) if mode == "direct" else None
            if setting is not None:  # the tuned setting: "direct@K" (per-tap kernel) or "direct@K:G" (packed tiles)
                mode += "@" + format_direct_setting(tuple(setting) if isinstance(setting, list) else setting)
            cells.append(f"{mode + ('+relu' if lay.get('relu_fused') else ''):>18} {timing}")
        shape = "x".join(str(s) for s in lay["matrix_shape"])
        rows.append(f"{name:<28}{shape:>12}{lay['sparsity']:>10.4f}" + "".join(f"{c:>36}" for c in cells))
    if report.get("skipped_layers"):
        rows.append("skipped: " + "; ".join(f"{n} ({r})" for n, r in report["skipped_layers"].items()))
    return "\n".join(rows)
