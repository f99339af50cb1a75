"""CIFAR backbones registered in timm's model registry.

Importing this package (``import fggp_hub`` does) is enough for
``timm.create_model("fggp_vgg19_bn_cifar")`` and the ``local-dir:`` / ``hf-hub:``
loaders to find the architectures.
"""
from .resnet_cifar import BasicBlock, Bottleneck, CifarResNet
from .vgg_cifar import VggCifar

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "VggCifar"]
