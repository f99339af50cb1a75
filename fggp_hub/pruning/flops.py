"""Multiply-adds per image, dense and effective (only those that touch a non-zero weight).

Counted with forward hooks on convolutions (any dimensionality, grouped and transposed)
and linear layers, which hold all but a negligible share of a CNN's arithmetic. Biases,
normalisation, activations, pooling and attention matmuls are not counted.

For an output position, a layer multiplies each weight once (a grouped convolution's
weight already has ``in_channels / groups`` inputs per filter), so

* dense MACs = ``weight.numel() * positions``,
* effective MACs = ``count_nonzero(weight) * positions``,

where ``positions`` is the number of output positions per image (the spatial size of
the output of a convolution; for a transposed convolution, of its input, since every
input pixel is multiplied into the whole kernel; the tokens of a linear layer).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["count_macs"]


def _positions(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """Output positions per image at which ``module`` applies its whole weight once."""
    if isinstance(module, nn.modules.conv._ConvNd):
        spatial = (inputs[0] if module.transposed else output).shape[2:]
        return math.prod(spatial)
    # linear: (N, ..., out) -> every leading position but the batch is a token
    return math.prod(output.shape[1:-1]) if output.dim() > 1 else 1


def count_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 32, 32)) -> tuple[int, int]:
    """``(dense_macs, effective_macs)`` per image for one forward pass on a zero batch of ``input_size``.

    The model runs in eval mode on the device and dtype of its parameters; its training
    mode is restored afterwards. A module called several times is counted every time.
    """
    from .targets import unwrap_model

    module_root = unwrap_model(model)
    size = tuple(int(v) for v in input_size)
    if len(size) < 2 or size[0] < 1:
        raise ValueError(f"input_size must be (batch, channels, ...) with batch >= 1, got {input_size}")
    first = next(module_root.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    totals = [0, 0]

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        positions = _positions(module, inputs, output)
        weight = module.weight
        totals[0] += weight.numel() * positions
        totals[1] += int(torch.count_nonzero(weight)) * positions

    handles = [m.register_forward_hook(hook) for m in module_root.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    was_training = module_root.training
    try:
        module_root.eval()
        with torch.no_grad():
            module_root(torch.zeros(size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        module_root.train(was_training)
    return totals[0], totals[1]
