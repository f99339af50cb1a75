"""The timm ``default_cfgs`` entry shared by the CIFAR backbones."""
from __future__ import annotations

from typing import Any

from ..constants import CIFAR10_MEAN, CIFAR10_STD


def cifar_cfg(**kwargs: Any) -> dict[str, Any]:
    """32x32 CIFAR-10 input, mean/std and 10 classes; no hosted weights (``url`` empty)."""
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "license": "apache-2.0",
        **kwargs,
    }
