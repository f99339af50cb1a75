"""CIFAR ResNets registered with timm: ``fggp_resnet50_cifar`` (paper backbone) and
``fggp_resnet20_cifar`` (a 0.27M-parameter model for fast CPU runs and studies).

ResNet-50 (spec section 7): 3x3 stride-1 stem with 64 channels and no max-pool,
bottleneck blocks [3, 4, 6, 3] with the stride on the 3x3 conv, 1x1 conv + BN
projection shortcuts, global average pool, Linear(2048, 10) without bias:
23,520,832 parameters. ResNet-20 (He et al. 2016, CIFAR variant): basic blocks
[3, 3, 3] of widths 16/32/64 with parameter-free "option A" shortcuts
(strided subsampling + zero channel padding): 269,722 parameters.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._cifar_cfg import cifar_cfg

__all__ = ["CifarResNet", "BasicBlock", "Bottleneck"]


class _PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially, zero-pad the new channels (no parameters)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = out_chs - in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


def _projection(in_chs: int, out_chs: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chs))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = _PadShortcut(in_chs, out_chs, stride) if shortcut == "A" else _projection(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act(x + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = _PadShortcut(in_chs, out_chs, stride) if shortcut == "A" else _projection(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act(x + shortcut)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs (3x3 stride-1 stem, no max-pool) with timm's model interface."""

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        shortcut: str = "B",
        fc_bias: bool = False,
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        block_cls = _BLOCKS[block]
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.fc_bias = fc_bias
        self.grad_checkpointing = False
        self.conv1 = nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.act1 = nn.ReLU(inplace=True)
        channels = stem_width
        self.feature_info = [{"num_chs": stem_width, "reduction": 1, "module": "act1"}]
        for i, (depth, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                blocks.append(block_cls(channels, width, stride if j == 0 else 1, shortcut=shortcut))
                channels = width * block_cls.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": channels, "reduction": 2**i, "module": f"layer{i + 1}"})
        self.num_stages = len(layers)
        self.num_features = self.head_hidden_size = channels
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(channels, num_classes, bias=fc_bias) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes, bias=self.fc_bias) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs):
    return cifar_cfg(**{"first_conv": "conv1", "classifier": "fc", "pool_size": (4, 4), **kwargs})


default_cfgs = generate_default_cfgs(
    {
        "fggp_resnet50_cifar.cifar10": _cfg(),
        "fggp_resnet20_cifar.cifar10": _cfg(pool_size=(8, 8)),
    }
)


def _create(variant: str, pretrained: bool, **kwargs) -> CifarResNet:
    return build_model_with_cfg(CifarResNet, variant, pretrained, feature_cfg={"flatten_sequential": True}, **kwargs)


@register_model
def fggp_resnet50_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-50 for CIFAR (FGGP paper backbone, 23.5M parameters)."""
    args = dict(block="bottleneck", layers=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem_width=64, shortcut="B", fc_bias=False)
    return _create("fggp_resnet50_cifar", pretrained, **dict(args, **kwargs))


@register_model
def fggp_resnet20_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 for CIFAR (He et al. 2016, option-A shortcuts, 0.27M parameters): fast CPU runs."""
    args = dict(block="basic", layers=(3, 3, 3), widths=(16, 32, 64), stem_width=16, shortcut="A", fc_bias=True)
    return _create("fggp_resnet20_cifar", pretrained, **dict(args, **kwargs))
