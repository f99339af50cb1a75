"""Shared set-up of the inference tests."""
from __future__ import annotations

import torch
from torch import nn

from fggp_hub.models.resnet_cifar import CifarResNet
from fggp_hub.pruning import prunable_parameters


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (folding identity BNs would test nothing); in place."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.2)
    return model


def assert_close_rel(out: torch.Tensor, ref: torch.Tensor, rel: float) -> None:
    """Same shape, and the largest difference at most ``rel`` of the largest reference value."""
    assert out.shape == ref.shape
    err = (out - ref).abs().max().item() / max(ref.abs().max().item(), 1e-12)
    assert err <= rel, f"max error {err:.2e} of the largest output"


@torch.no_grad()
def bottleneck_resnet(sparsity: float, seed: int = 0) -> nn.Module:
    """A narrow bottleneck ResNet (identity and projection shortcuts, a strided block), pruned at random."""
    torch.manual_seed(seed)
    model = randomize_batchnorm(
        CifarResNet(block="bottleneck", layers=(2, 2), widths=(8, 16), stem_width=16, num_classes=10)
    )
    for p in prunable_parameters(model).values():
        p.mul_(torch.rand_like(p) >= sparsity)
    return model.eval()
