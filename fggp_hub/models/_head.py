"""Classifier-head helpers shared by the CIFAR backbones (timm's ``create_classifier`` conventions)."""
from typing import Any, Dict, Tuple

from torch import nn
from timm.layers import SelectAdaptivePool2d

__all__ = ["create_head", "device_dtype"]


def create_head(
    num_features: int,
    num_classes: int,
    pool_type: str = "avg",
    bias: bool = True,
    device=None,
    dtype=None,
) -> Tuple[SelectAdaptivePool2d, nn.Module]:
    """``timm.layers.create_classifier`` plus a ``bias`` switch (ResNet-50's fc has none).

    The caller keeps its attribute names, so the state-dict keys stay ``fc.*`` / ``classifier.*``.
    ``pool_type=''`` keeps the NCHW map (no pooling, no flatten); as in timm it is meant for
    ``num_classes=0``, a Linear head after it would see NCHW input.
    """
    global_pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))
    num_pooled = num_features * global_pool.feat_mult()
    fc = nn.Linear(num_pooled, num_classes, bias=bias, device=device, dtype=dtype) if num_classes > 0 else nn.Identity()
    return global_pool, fc


def device_dtype(module: nn.Module) -> Dict[str, Any]:
    """Factory kwargs of ``module``'s first parameter, so a rebuilt head lands where the model is.

    (``timm.layers.get_device_dtype`` in recent timm; kept here because fggp-hub supports older timm.)
    """
    p = next(module.parameters(), None)
    return {"device": None, "dtype": None} if p is None else {"device": p.device, "dtype": p.dtype}
