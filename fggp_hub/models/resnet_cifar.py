"""CIFAR ResNets registered with timm: ``fggp_resnet50_cifar`` (paper backbone) and
``fggp_resnet20_cifar`` (a 0.27M-parameter model for fast CPU runs and studies).

ResNet-50 (spec section 7): 3x3 stride-1 stem with 64 channels and no max-pool,
bottleneck blocks [3, 4, 6, 3] with the stride on the 3x3 conv, 1x1 conv + BN
projection shortcuts, global average pool, Linear(2048, 10) without bias:
23,520,832 parameters. ResNet-20 (He et al. 2016, CIFAR variant): basic blocks
[3, 3, 3] of widths 16/32/64 with parameter-free "option A" shortcuts
(strided subsampling + zero channel padding): 269,722 parameters.

The model follows timm's ``resnet.py`` interface (device/dtype, ``in_chans``, selectable
pooling, ``feature_info`` / ``features_only``, ``forward_intermediates``, TorchScript).
Module names are those of the first release, so exported checkpoints load unchanged.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ._cifar_cfg import cifar_cfg
from ._head import create_head, device_dtype

__all__ = ["CifarResNet", "BasicBlock", "Bottleneck"]

MAX_STAGES = 4  # layer1..layer4; a shallower net gets empty (weightless) stages so forward stays static


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


def _shortcut(in_chs: int, out_chs: int, stride: int, kind: str, device=None, dtype=None) -> Optional[nn.Module]:
    """None (identity), an option-A pad or an option-B 1x1 conv + BN projection."""
    if stride == 1 and in_chs == out_chs:
        return None
    if kind == "A":
        return _PadShortcut(in_chs, out_chs, stride)
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False, device=device, dtype=dtype),
        nn.BatchNorm2d(out_chs, device=device, dtype=dtype),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, shortcut: str = "A", device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(planes, **dd)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(planes, **dd)
        self.act = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_chs, planes * self.expansion, stride, shortcut, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act(x + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, shortcut: str = "B", device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(planes, **dd)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(planes, **dd)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(out_chs, **dd)
        self.act = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_chs, out_chs, stride, shortcut, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act(x + shortcut)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs (3x3 stride-1 stem, no max-pool) with timm's model interface.

    Features (``feature_info``): index 0 is the stem (``act1``, stride 1), index i the output
    of ``layer{i}`` (stride 2**(i-1)). A 3-stage net (ResNet-20) has an empty ``layer4``: no
    weights, identity, and a forward without data-dependent control flow (TorchScript, fx).
    """

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
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        assert 1 <= len(layers) <= MAX_STAGES and len(widths) == len(layers), "1 to 4 stages, one width each"
        block_cls = _BLOCKS[block]
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.fc_bias = fc_bias
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(stem_width, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=stem_width, reduction=1, module="act1")]

        channels = stem_width
        for i in range(MAX_STAGES):
            blocks = []
            if i < len(layers):
                for j in range(layers[i]):
                    stride = 2 if i > 0 and j == 0 else 1
                    blocks.append(block_cls(channels, widths[i], stride, shortcut=shortcut, **dd))
                    channels = widths[i] * block_cls.expansion
                self.feature_info.append(dict(num_chs=channels, reduction=2**i, module=f"layer{i + 1}"))
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))

        self.num_features = channels
        self.global_pool, self.fc = create_head(channels, num_classes, global_pool, bias=fc_bias, **dd)
        self.head_hidden_size = channels * self.global_pool.feat_mult()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stages(self) -> List[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^conv1|^bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New head on the model's device and dtype; the current pooling is kept when ``global_pool`` is None."""
        self.num_classes = num_classes
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_head(
            self.num_features, num_classes, pool_type, bias=self.fc_bias, **device_dtype(self)
        )
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Final features and the ``feature_info`` taps listed in ``indices`` (all if None, last n if int).

        ``norm`` is accepted for timm's API and unused (no final norm); ``stop_early`` skips the stages
        after the last requested tap.
        """
        assert output_fmt == "NCHW", "Output shape must be NCHW."
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        intermediates = []
        x = self.act1(self.bn1(self.conv1(x)))
        if 0 in take_indices:
            intermediates.append(x)
        stages = self._stages()[: max_index if stop_early else len(self.feature_info) - 1]
        for feat_idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last tap in ``indices`` (for ``features_only`` via ``forward_intermediates``)."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        for i in range(max_index, MAX_STAGES):
            setattr(self, f"layer{i + 1}", nn.Sequential())  # empty, not Identity: checkpoint_seq iterates it
        if max_index < len(self.feature_info) - 1:
            self.num_features = self.feature_info[max_index]["num_chs"]  # the head was sized for the last stage
            prune_head = True
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.layer1, self.layer2, self.layer3, self.layer4], x, flatten=True)
        else:
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
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
    # features_only defaults to every tap (the stem and each stage), not timm's fixed five
    out_indices = tuple(range(1 + len(kwargs["layers"])))
    return build_model_with_cfg(CifarResNet, variant, pretrained, feature_cfg=dict(out_indices=out_indices), **kwargs)


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
