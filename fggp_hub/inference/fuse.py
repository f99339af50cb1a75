"""Fuse ReLUs and residual adds into sparse layers inside blocks (ResNet bottlenecks and basic blocks).

:func:`fggp_hub.inference.fold.conv_relu_pairs` fuses a ReLU *module* that follows one
layer and is used nowhere else. ResNet blocks reuse one ReLU module three times
(``self.act``) and end with ``relu(conv(x) + shortcut)``, so neither is fused there, and
each costs a pass over the activations (and, for the add, a layout conversion when its
operands differ). Here each such block is traced with torch.fx on its own (the model
around it stays as it is: its type, attributes and methods are kept) and rewritten:

- ``relu(layer(x))`` (module, ``F.relu``, ``torch.relu`` or ``.relu()``) -> ``layer(x)``
  with the ReLU in the layer's kernel;
- ``relu(layer(x) + y)`` -> ``layer(x, y)``: the add and the ReLU run in the kernel's
  epilogue (the direct kernel reads ``y`` in its CHWN layout while the output tile is
  still in registers).

A layer is rewritten only when its output feeds that one op (through the Identity
modules that replaced folded BatchNorms) and the layer is called once. Blocks that do
not trace are left unchanged.
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .layers import ChwnGlobalAvgPool2d, ChwnMaxPool2d, SparseConv2d, SparseInferenceLayer

__all__ = ["fuse_residual_blocks"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_ADDS = {operator.add, operator.iadd, torch.add}
_RELU_FUNCS = {F.relu, torch.relu, torch.relu_}


class _Tracer(fx.Tracer):
    """Our layers and pools are leaves (their forward has data-dependent checks)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (SparseInferenceLayer, ChwnMaxPool2d, ChwnGlobalAvgPool2d)) or super().is_leaf_module(m, qualname)


def _module(gm_modules: dict[str, nn.Module], node: fx.Node) -> nn.Module | None:
    return gm_modules.get(str(node.target)) if node.op == "call_module" else None


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules.get(str(node.target))) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCS and len(node.args) == 1 and set(node.kwargs) <= {"inplace"}
    return node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1


def _skip_identities(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """The first user past a chain of Identity modules (the folded BatchNorms), each with one user."""
    while len(node.users) == 1:
        (user,) = node.users
        if type(_module(modules, user)) is nn.Identity:
            node = user
            continue
        return user
    return node


def _rewrite(gm: fx.GraphModule) -> list[dict[str, Any]]:
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    fused: list[dict[str, Any]] = []
    for node in list(gm.graph.nodes):
        layer = _module(modules, node)
        if not isinstance(layer, SparseInferenceLayer) or calls[str(node.target)] != 1 or len(node.users) != 1:
            continue
        if layer.relu or layer.residual_fused or len(node.args) != 1 or node.kwargs:
            continue
        user = _skip_identities(node, modules)
        if user is node or len(node.users) != 1:
            continue
        if _is_relu(user, modules):
            identities = []
            cur = node
            while next(iter(cur.users)) is not user:
                (cur,) = cur.users
                identities.append(cur)
            user.replace_all_uses_with(node)
            for dead in [user, *identities[::-1]]:
                gm.graph.erase_node(dead)
            layer.relu = True
            fused.append({"layer": str(node.target), "relu": True, "residual": False})
            continue
        is_add = (user.op == "call_function" and user.target in _ADDS) or (
            user.op == "call_method" and user.target == "add"
        )
        if not isinstance(layer, SparseConv2d) or not is_add or len(user.args) != 2 or user.kwargs:
            continue
        if len(user.users) != 1:
            continue
        (relu,) = user.users
        if not _is_relu(relu, modules):
            continue
        # the operand that is not our layer's (Identity-chained) output
        chain = {node}
        cur = node
        while cur is not user:
            (cur,) = cur.users
            chain.add(cur)
        others = [a for a in user.args if a not in chain]
        if len(others) != 1 or not isinstance(others[0], fx.Node):
            continue
        with gm.graph.inserting_before(user):
            new = gm.graph.call_module(str(node.target), (node.args[0], others[0]))
        relu.replace_all_uses_with(new)
        for dead in [relu, user, *sorted(chain - {node, user}, key=lambda n: -list(gm.graph.nodes).index(n)), node]:
            gm.graph.erase_node(dead)
        layer.relu = True
        layer.residual_fused = True
        fused.append({"layer": str(node.target), "relu": True, "residual": True})
    if fused:
        gm.graph.lint()
        gm.recompile()
    return fused


def fuse_residual_blocks(model: nn.Module) -> list[dict[str, Any]]:
    """Rewrite, in place, each block of ``model`` whose ReLUs / residual adds can run in its sparse layers.

    Returns one entry per fused layer: ``{"layer": qualified name, "relu": True, "residual": bool}``.
    The root module itself is never replaced.
    """
    fused: list[dict[str, Any]] = []
    names = [name for name, _ in model.named_modules()]
    # deepest first: a block inside a block is rewritten (and becomes a leaf-free GraphModule) before its parent
    for name in sorted(names, key=lambda n: -n.count(".")):
        if not name:
            continue
        try:
            module = model.get_submodule(name)
        except AttributeError:  # inside a block already replaced
            continue
        if isinstance(module, (*_CONTAINERS, SparseInferenceLayer, ChwnMaxPool2d, ChwnGlobalAvgPool2d, fx.GraphModule)):
            continue
        if not any(isinstance(m, SparseConv2d) for m in module.modules()):
            continue
        if type(module).__module__.startswith("torch.nn"):
            continue
        try:
            gm = fx.GraphModule(module, _Tracer().trace(module), class_name=type(module).__name__)
        except Exception:  # noqa: BLE001  control flow or custom ops: leave the block as it is
            continue
        done = _rewrite(gm)
        if not done:
            continue
        gm.train(module.training)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, gm)
        fused.extend({**d, "layer": f"{name}.{d['layer']}"} for d in done)
    return fused
