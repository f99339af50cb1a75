"""Small model helpers shared by the hub tests (a module of its own: importing ``conftest`` is fragile)."""
from __future__ import annotations

import torch

from fggp_hub.pruning import prunable_parameters


def magnitude_prune_(model: torch.nn.Module, sparsity: float) -> torch.nn.Module:
    """One global magnitude mask over the prunable weights, multiplied in place (as a Pruner leaves them)."""
    params = prunable_parameters(model)
    with torch.no_grad():
        scores = torch.cat([p.detach().abs().flatten() for p in params.values()])
        k = int(round(sparsity * scores.numel()))
        threshold = torch.kthvalue(scores, k).values if k > 0 else scores.new_tensor(-1.0)
        for p in params.values():
            p.mul_((p.abs() > threshold).to(p.dtype))
    return model


def randomise_bn_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-zero biases and BN parameters/statistics, as after training (init leaves them 0 or 1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model
