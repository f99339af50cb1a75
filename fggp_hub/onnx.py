"""ONNX export of a checkpoint: BatchNorm folded, zeros exact, dynamic batch by default.

    fggp_hub.to_onnx("fggp/resnet20_cifar10_fggp_s95", "model.onnx")
    # onnxruntime.InferenceSession("model.onnx").run(None, {"input": x.numpy()})

Runs in ONNX Runtime (dense kernels) and in sparsity-aware runtimes that read the
zeros from the weights. Needs the ``onnx`` package (``pip install "fggp-hub[onnx]"``);
it uses torch's TorchScript-based exporter, which handles the plain CNNs of the zoo.
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ._io import atomic_path
from .constants import ONNX_NAME
from .errors import FggpHubError
from .inference.fold import fold_batchnorms

__all__ = ["to_onnx", "ONNX_FILE", "OnnxExportError"]

#: File name of the ONNX export inside a repo folder (``export(..., onnx=True)``).
ONNX_FILE = ONNX_NAME
_DEFAULT_OPSET = 17


class OnnxExportError(FggpHubError, RuntimeError):
    """The ONNX file could not be written (missing ``onnx`` package, an unsupported op); one line."""


def _input_size(model: nn.Module, input_size: tuple[int, ...] | None) -> tuple[int, ...]:
    if input_size is not None:
        return tuple(int(s) for s in input_size)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if size is None:
        raise OnnxExportError("the model has no pretrained_cfg['input_size']: pass input_size=(C, H, W)")
    return tuple(int(s) for s in size)


def to_onnx(
    model_or_name: nn.Module | str | os.PathLike,
    path: str | os.PathLike,
    batch_size: int | None = None,
    *,
    input_size: tuple[int, ...] | None = None,
    opset: int = _DEFAULT_OPSET,
    fold_bn: bool = True,
) -> Path:
    """Write an ONNX file of a model or a checkpoint (a zoo name, repo id or export folder).

    BatchNorm layers that follow a conv are folded into it first (their scaling keeps
    every zero a zero), so the file has one Conv per conv layer with exactly the
    checkpoint's zero pattern.

    Args:
        model_or_name: an ``nn.Module`` (left untouched) or anything :func:`fggp_hub.load` accepts.
        path: the ``.onnx`` file to write (its folder is created).
        batch_size: a fixed batch size, or None for a dynamic batch dimension.
        input_size: one sample's (C, H, W); default the model's ``pretrained_cfg["input_size"]``.
        opset: ONNX opset version.
        fold_bn: fold BatchNorm into the preceding convs.

    Returns:
        The path written.
    """
    if isinstance(model_or_name, nn.Module):
        model = copy.deepcopy(model_or_name)
    else:
        from .hub import load

        model = load(model_or_name)
    model = model.eval().float()
    for p in model.parameters():
        p.requires_grad_(False)
    if fold_bn:
        fold_batchnorms(model)
    shape = _input_size(model, input_size)
    sample = torch.zeros((batch_size or 1, *shape))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = None if batch_size is not None else {"input": {0: "batch"}, "logits": {0: "batch"}}
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
            torch.onnx.export(
                model, (sample,), str(tmp), dynamo=False, input_names=["input"], output_names=["logits"],
                dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
            )
    except Exception as exc:  # noqa: BLE001  one line, whatever the exporter raised
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = ' (pip install "fggp-hub[onnx]")' if "onnx" in first.lower() and "install" in first.lower() else ""
        raise OnnxExportError(f"ONNX export to {path} failed: {first}{hint}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
