"""Which parameters are prunable (spec section 1) and sparsity bookkeeping."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["unwrap_model", "first_conv_name", "prunable_parameters", "sparsity_stats"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP / DataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def first_conv_name(model: nn.Module) -> str | None:
    """Module name of the input convolution.

    timm models name it in ``pretrained_cfg['first_conv']``; otherwise the first
    ``nn.Conv2d`` in registration order is taken.
    """
    model = unwrap_model(model)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("first_conv") if isinstance(cfg, dict) else None
    modules = dict(model.named_modules())
    if isinstance(name, str) and isinstance(modules.get(name), nn.Conv2d):
        return name
    for module_name, module in modules.items():
        if isinstance(module, nn.Conv2d):
            return module_name
    return None


def prunable_parameters(
    model: nn.Module, include_first_conv: bool = False, exclude: Iterable[str] = ()
) -> dict[str, nn.Parameter]:
    """The ``weight`` of every Conv2d and Linear layer, the classifier included.

    The first convolution is left dense unless ``include_first_conv``; biases and
    normalisation parameters are never prunable. ``exclude`` lists layers to keep
    dense as well, by module name (``"fc"``) or weight name (``"fc.weight"``) of the
    unwrapped model; a name that matches no Conv2d/Linear layer raises.
    """
    model = unwrap_model(model)
    if isinstance(exclude, str):
        exclude = [exclude]
    skip = {name[: -len(".weight")] if name.endswith(".weight") else name for name in exclude}  # "fc.weight" or "fc"
    layers = {name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    unknown = sorted(skip - layers)
    if unknown:
        raise ValueError(f"exclude: no Conv2d/Linear layer named {unknown[0]!r} "
                         f"(names look like {sorted(layers)[:2]}; a parameter name such as 'fc.weight' works too)")
    if not include_first_conv:
        first = first_conv_name(model)
        if first is not None:
            skip.add(first)
    params: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name not in skip:
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter):
                params[f"{name}.weight"] = weight
    return params


@torch.no_grad()
def sparsity_stats(model: nn.Module, include_first_conv: bool = False) -> dict:
    """Measured sparsity (exact zeros) of a model, the way the cards report it.

    Returns global sparsity over prunable weights, over all parameters, the
    nonzero parameter count and the per-layer sparsity of the prunable weights.
    """
    model = unwrap_model(model)
    prunable = prunable_parameters(model, include_first_conv=include_first_conv)
    zeros_of = {}  # id -> exact zeros, counted once per tensor (prunable weights are parameters too)
    a_total = a_zero = 0
    for p in model.parameters():
        zeros_of[id(p)] = zeros = int(p.numel() - p.count_nonzero())
        a_total += p.numel()
        a_zero += zeros
    layers = {}
    p_total = p_zero = 0
    for name, w in prunable.items():
        zeros = zeros_of[id(w)] if id(w) in zeros_of else int(w.numel() - w.count_nonzero())
        layers[name] = {"shape": list(w.shape), "numel": w.numel(), "zeros": zeros, "sparsity": zeros / w.numel()}
        p_total += w.numel()
        p_zero += zeros
    return {
        "sparsity": p_zero / max(p_total, 1),
        "sparsity_all_params": a_zero / max(a_total, 1),
        "prunable_params": p_total,
        "total_params": a_total,
        "nonzero_params": a_total - a_zero,
        "layers": layers,
    }
