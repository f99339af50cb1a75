"""Fold eval-mode BatchNorm2d into the convolution that feeds it.

BN in eval mode is a per-output-channel affine map, so it scales the rows of the
conv weight: zeros stay zeros (the pruning pattern is kept) and a whole layer of
work disappears. Pairs are found from a torch.fx trace (conv output used only by
the BN); models that do not trace fall back to adjacent pairs inside plain
``nn.Sequential`` containers, which is always safe.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import nn

__all__ = ["conv_bn_pairs", "conv_relu_pairs", "fold_batchnorms"]


def _foldable_bn(bn: nn.Module) -> bool:
    return type(bn) is nn.BatchNorm2d and bn.track_running_stats and bn.running_mean is not None


def _unique_names(model: nn.Module) -> set[str]:
    """Names of modules reachable by one path only (a shared module must not be rewritten)."""
    counts = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    return {name for name, m in model.named_modules() if counts[id(m)] == 1}


def _pairs_from_fx(model: nn.Module) -> list[tuple[str, str]]:
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _foldable_bn(modules.get(node.target)) or not node.args:
            continue
        src = node.args[0]
        if not isinstance(src, torch.fx.Node) or src.op != "call_module":
            continue
        if type(modules.get(src.target)) is not nn.Conv2d:
            continue
        if len(src.users) == 1 and calls[src.target] == 1 and calls[node.target] == 1:
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _pairs_from_sequential(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, module in model.named_modules():
        if type(module) is not nn.Sequential:
            continue
        children = list(module.named_children())
        for (cname, conv), (bname, bn) in zip(children, children[1:]):
            if type(conv) is nn.Conv2d and _foldable_bn(bn):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + cname, prefix + bname))
    return pairs


def conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], str]:
    """(conv name, bn name) pairs that can be folded, and how they were found ("fx" or "sequential")."""
    try:
        pairs, how = _pairs_from_fx(model), "fx"
    except Exception:  # noqa: BLE001  any trace failure (control flow, custom ops): use the safe fallback
        pairs, how = _pairs_from_sequential(model), "sequential"
    unique = _unique_names(model)
    pairs = [(c, b) for c, b in pairs if c in unique and b in unique]
    pairs = [(c, b) for c, b in pairs if model.get_submodule(c).out_channels == model.get_submodule(b).num_features]
    return pairs, how


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@torch.no_grad()
def fold_batchnorms(model: nn.Module) -> tuple[list[tuple[str, str]], str]:
    """Fold every foldable BN of an eval-mode model into its conv, in place; BNs become Identity.

    The arithmetic runs in float64 so the folded model stays within float32
    rounding of the original.
    """
    pairs, how = conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        conv: nn.Conv2d = model.get_submodule(conv_name)
        bn: nn.BatchNorm2d = model.get_submodule(bn_name)
        dtype = conv.weight.dtype
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        bias = shift if conv.bias is None else conv.bias.double() * scale + shift
        conv.weight = nn.Parameter((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype), requires_grad=False)
        conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
        _set_submodule(model, bn_name, nn.Identity())
    return pairs, how


def _relu_pairs_from_fx(model: nn.Module) -> list[tuple[str, str]]:
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules.get(node.target)) not in (nn.Conv2d, nn.Linear):
            continue
        cur = node
        while len(cur.users) == 1:  # skip the Identity modules that replaced folded BNs
            (user,) = cur.users
            mod = modules.get(user.target) if user.op == "call_module" else None
            if type(mod) is nn.Identity and calls[user.target] == 1:
                cur = user
                continue
            if type(mod) is nn.ReLU and calls[user.target] == 1 and calls[node.target] == 1:
                pairs.append((str(node.target), str(user.target)))
            break
    return pairs


def _relu_pairs_from_sequential(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, module in model.named_modules():
        if type(module) is not nn.Sequential:
            continue
        children = list(module.named_children())
        prefix = f"{name}." if name else ""
        for i, (cname, layer) in enumerate(children):
            if type(layer) not in (nn.Conv2d, nn.Linear):
                continue
            j = i + 1
            while j < len(children) and type(children[j][1]) is nn.Identity:
                j += 1
            if j < len(children) and type(children[j][1]) is nn.ReLU:
                pairs.append((prefix + cname, prefix + children[j][0]))
    return pairs


def conv_relu_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv or linear name, ReLU name) where the layer's output goes only to a ReLU used nowhere else.

    Such a ReLU can run inside the layer's kernel (one pass over the output fewer)
    and be replaced by Identity. Call after :func:`fold_batchnorms`.
    """
    try:
        pairs = _relu_pairs_from_fx(model)
    except Exception:  # noqa: BLE001  same fallback as conv_bn_pairs
        pairs = _relu_pairs_from_sequential(model)
    unique = _unique_names(model)
    return [(c, r) for c, r in pairs if c in unique and r in unique]
