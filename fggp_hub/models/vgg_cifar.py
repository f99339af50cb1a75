"""CIFAR VGG-19-BN (spec section 7), registered with timm as ``fggp_vgg19_bn_cifar``.

conv3x3 (pad 1, bias) + BN + ReLU blocks with max-pools, a 2x2 (global) average
pool and Linear(512, num_classes): 20,040,522 parameters for 10 classes.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._cifar_cfg import cifar_cfg

__all__ = ["VggCifar"]

_VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)


class VggCifar(nn.Module):
    """VGG with batch norm for 32x32 inputs, with timm's model interface."""

    def __init__(
        self,
        layout: Sequence[int | str] = _VGG19_LAYOUT,
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        layers: list[nn.Module] = []
        channels = in_chans
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1, bias=True), nn.BatchNorm2d(int(item)), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.num_features = self.head_hidden_size = channels
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.classifier = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs):
    return cifar_cfg(**{"first_conv": "features.0", "classifier": "classifier", "pool_size": (2, 2), **kwargs})


default_cfgs = generate_default_cfgs({"fggp_vgg19_bn_cifar.cifar10": _cfg()})


@register_model
def fggp_vgg19_bn_cifar(pretrained: bool = False, **kwargs) -> VggCifar:
    """VGG-19-BN for CIFAR (FGGP paper backbone, 20.0M parameters)."""
    return build_model_with_cfg(VggCifar, "fggp_vgg19_bn_cifar", pretrained, **kwargs)
