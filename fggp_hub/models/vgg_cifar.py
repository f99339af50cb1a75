"""CIFAR VGG-19-BN (spec section 7), registered with timm as ``fggp_vgg19_bn_cifar``.

conv3x3 (pad 1, bias) + BN + ReLU blocks with max-pools, a 2x2 (global) average
pool and Linear(512, num_classes): 20,040,522 parameters for 10 classes.

The model follows timm's ``vgg.py`` interface (device/dtype, ``in_chans``, selectable
pooling, ``feature_info`` / ``features_only``, ``forward_intermediates``, TorchScript).
Module names are those of the first release, so exported checkpoints load unchanged.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ._cifar_cfg import cifar_cfg
from ._head import create_head, device_dtype

__all__ = ["VggCifar"]

_VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)


class VggCifar(nn.Module):
    """VGG with batch norm for 32x32 inputs, with timm's model interface.

    Features (``feature_info``), as in timm's VGG: the activation before each max-pool, then
    the end of ``features`` (for VGG-19: strides 1, 2, 4, 8 and 16).
    """

    def __init__(
        self,
        layout: Sequence[Union[int, str]] = _VGG19_LAYOUT,
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        assert layout and layout[0] != "M", "the layout starts with a conv width"
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.feature_info = []
        self.feature_ends = []  # index in self.features of each feature_info tap

        layers: List[nn.Module] = []
        channels, reduction = in_chans, 1
        for item in layout:
            if item == "M":
                self._add_tap(channels, reduction, len(layers) - 1)
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                reduction *= 2
            else:
                width = int(item)
                conv = nn.Conv2d(channels, width, 3, padding=1, bias=True, **dd)
                layers += [conv, nn.BatchNorm2d(width, **dd), nn.ReLU(inplace=True)]
                channels = width
        self._add_tap(channels, reduction, len(layers) - 1)
        self.features = nn.Sequential(*layers)

        self.num_features = channels
        self.global_pool, self.classifier = create_head(channels, num_classes, global_pool, **dd)
        self.head_hidden_size = channels * self.global_pool.feat_mult()
        self._init_weights()

    def _add_tap(self, num_chs: int, reduction: int, index: int) -> None:
        self.feature_info.append(dict(num_chs=num_chs, reduction=reduction, module=f"features.{index}"))
        self.feature_ends.append(index)

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
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^features\.0\.", blocks=r"^features\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        # as in timm's VGG: per-layer segments would start at an in-place ReLU and break backward
        assert not enable, "gradient checkpointing not supported"

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New head on the model's device and dtype; the current pooling is kept when ``global_pool`` is None."""
        self.num_classes = num_classes
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.classifier = create_head(self.num_features, num_classes, pool_type, **device_dtype(self))
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.classifier.train(self.training)

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

        ``norm`` is accepted for timm's API and unused (no final norm); ``stop_early`` skips the
        layers after the last requested tap.
        """
        assert output_fmt == "NCHW", "Output shape must be NCHW."
        take_indices, max_index = feature_take_indices(len(self.feature_ends), indices)
        intermediates = []
        if torch.jit.is_scripting() or not stop_early:  # TorchScript cannot slice a Sequential
            layers = self.features
        else:
            layers = self.features[: self.feature_ends[max_index] + 1]
        feat_idx = 0
        last_idx = len(self.feature_ends) - 1
        for i, layer in enumerate(layers):
            x = layer(x)
            if i == self.feature_ends[feat_idx]:
                if feat_idx in take_indices:
                    intermediates.append(x)
                feat_idx = min(feat_idx + 1, last_idx)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        """Drop the layers after the last tap in ``indices`` (for ``features_only`` via ``forward_intermediates``)."""
        take_indices, max_index = feature_take_indices(len(self.feature_ends), indices)
        self.features = self.features[: self.feature_ends[max_index] + 1]
        if max_index < len(self.feature_ends) - 1:
            self.num_features = self.feature_info[max_index]["num_chs"]  # the head was sized for the last tap
            prune_head = True
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs):
    return cifar_cfg(**{"first_conv": "features.0", "classifier": "classifier", "pool_size": (2, 2), **kwargs})


default_cfgs = generate_default_cfgs({"fggp_vgg19_bn_cifar.cifar10": _cfg()})


@register_model
def fggp_vgg19_bn_cifar(pretrained: bool = False, **kwargs) -> VggCifar:
    """VGG-19-BN for CIFAR (FGGP paper backbone, 20.0M parameters)."""
    # features_only defaults to every tap (one per max-pool plus the end); flattening reaches features.N
    layout = kwargs.get("layout", _VGG19_LAYOUT)
    out_indices = tuple(range(sum(item == "M" for item in layout) + 1))
    feature_cfg = dict(flatten_sequential=True, out_indices=out_indices)
    return build_model_with_cfg(VggCifar, "fggp_vgg19_bn_cifar", pretrained, feature_cfg=feature_cfg, **kwargs)
