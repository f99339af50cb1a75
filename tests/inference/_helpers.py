"""Shared set-up of the inference tests."""
from __future__ import annotations

from torch import nn


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (folding identity BNs would test nothing); in place."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.2)
    return model
