"""The sparse 1x1 kernel (packed input tiles): equal to F.conv2d for every block setting, tail and layout.

It copies each 64-pixel tile's rows of one input-channel block into a buffer before the
output channels read them, so the shapes below put a tail in each dimension: pixel counts
that are not multiples of 64 (a masked last tile), input channels that are not multiples
of the block, few tiles (the output channels are split between threads instead), rows or
whole blocks without non-zeros, and outputs large enough for streaming stores.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fggp_hub.inference import SparseConv2d, native_status
from fggp_hub.inference import layers as layers_module

from ._helpers import assert_close_rel

NATIVE = native_status()["available"]
pytestmark = pytest.mark.skipif(not NATIVE, reason=f"native kernels unavailable: {native_status()['reason']}")

REL = 1e-5
PATH = "direct 1x1 (sparse GEMM over channels, packed tiles, CHWN)"


def _assert_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert_close_rel(out, ref, REL)


def _layer(c_in: int, c_out: int, sparsity: float, seed: int, bias: bool = True) -> tuple[nn.Conv2d, SparseConv2d]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 1, bias=bias).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) >= sparsity)
        if bias:
            conv.bias.normal_()
    layer = SparseConv2d(conv)
    layer.relu = True
    return conv, layer


@pytest.mark.parametrize("block", [0, 16, 64, 128, 256])
@pytest.mark.parametrize("c_in, c_out, batch, hw", [
    (300, 40, 4, (8, 8)),     # 256 pixels: whole tiles; 300 channels: a short last block
    (130, 24, 3, (5, 7)),     # 105 pixels: a masked last tile
    (257, 70, 1, (3, 3)),     # 9 pixels: one masked tile, output channels split between threads
    (64, 9, 2, (1, 1)),       # 2 pixels
])
def test_every_block_setting_matches_conv2d(block, c_in, c_out, batch, hw, streaming):
    conv, layer = _layer(c_in, c_out, 0.7, seed=block + c_in)
    x = torch.randn(batch, c_in, *hw)
    residual = torch.randn(batch, c_out, *hw)
    with torch.inference_mode():
        _assert_close(layer.run(x, f"direct@{block}"), torch.relu(conv(x)))
        _assert_close(layer.run(x, f"direct@{block}", residual), torch.relu(conv(x) + residual))
    assert layer.paths[batch] == PATH


def test_rows_and_blocks_without_non_zeros():
    """Empty output channels give relu(bias); an input-channel block with no non-zero at all still adds 0."""
    conv, layer = _layer(200, 30, 0.5, seed=1)
    with torch.no_grad():
        conv.weight[3:9] = 0          # whole output channels pruned
        conv.weight[:, 64:192] = 0    # two whole 64-channel blocks pruned
    layer = SparseConv2d(conv)
    layer.relu = True
    x = torch.randn(5, 200, 6, 6)
    with torch.inference_mode():
        for block in (0, 64, 128):
            _assert_close(layer.run(x, f"direct@{block}"), torch.relu(conv(x)))
    all_zero = nn.Conv2d(16, 8, 1).eval()
    with torch.no_grad():
        all_zero.weight.zero_()
    layer = SparseConv2d(all_zero)
    with torch.inference_mode():
        torch.testing.assert_close(layer.run(torch.randn(3, 16, 4, 4), "direct"), all_zero(torch.randn(3, 16, 4, 4)))


def test_reads_chwn_input_with_a_padded_channel_stride_and_keeps_the_layout():
    conv, layer = _layer(48, 20, 0.6, seed=2)
    x = torch.randn(16, 48, 12, 10)  # plane of 1,920 floats: the CHWN buffer pads the channel stride
    x_chwn = layers_module._as_chwn(x)[0].permute(3, 0, 1, 2)
    assert layers_module._chwn_channel_stride(x_chwn.permute(1, 2, 3, 0)) > 12 * 10 * 16
    residual = torch.randn(16, 20, 12, 10)
    res_chwn = layers_module._as_chwn(residual)[0].permute(3, 0, 1, 2)
    with torch.inference_mode():
        out = layer.run(x_chwn, "direct@16", res_chwn)
        _assert_close(out, torch.relu(conv(x) + residual))
        per_channel = torch.randn(1, 20, 1, 1)  # a broadcast residual
        _assert_close(layer.run(x_chwn, "direct@16", per_channel), torch.relu(conv(x) + per_channel))
    assert layers_module._is_chwn(out)


def test_large_output_streams_with_a_ragged_tail():
    """Over 24 MiB out (the real threshold): streaming stores on whole tiles, a masked last tile."""
    conv, layer = _layer(16, 96, 0.5, seed=3)
    x = torch.randn(65, 16, 33, 31)  # 66,495 pixels: 1,039 whole tiles and a tail of 63
    assert 96 * 65 * 33 * 31 * 4 >= layers_module._STREAM_MIN_BYTES
    with torch.inference_mode():
        _assert_close(layer.run(x, "direct@0"), torch.relu(conv(x)))


def test_block_candidates_of_1x1_layers():
    """One block, and the L1-to-L2-sized blocks below 3/4 of the input channels."""
    _, layer = _layer(300, 8, 0.5, seed=4)
    assert layer.block_candidates(batch=64) == [0, 64, 128]
    _, layer = _layer(1024, 8, 0.9, seed=4)
    assert layer.block_candidates(batch=64) == [0, 64, 128, 256]
    _, layer = _layer(64, 8, 0.5, seed=4)
    assert layer.block_candidates(batch=64) == [0]


@pytest.mark.parametrize("stride", [2, (2, 1), 3])
@pytest.mark.parametrize("batch", [1, 6])
def test_strided_1x1_runs_the_packed_kernel_on_its_phase_image(stride, batch):
    """A ResNet shortcut (1x1, stride 2): the polyphase split keeps phase 0, a plain 1x1 input."""
    torch.manual_seed(batch)
    conv = nn.Conv2d(70, 33, 1, stride=stride).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.8)
        conv.bias.normal_()
    layer = SparseConv2d(conv)
    layer.relu = True
    x = torch.randn(batch, 70, 9, 11)  # odd sizes: the last row/column of phase 0 exists, of phase 1 not
    with torch.inference_mode():
        y = conv(x)
        residual = torch.randn_like(y)
        for block in (0, 16, 64):
            _assert_close(layer.run(x, f"direct@{block}", residual), torch.relu(y + residual))
    assert layer.paths[batch].startswith("direct 1x1 stride") and "packed tiles" in layer.paths[batch]
    assert layer.block_candidates(batch=batch) == [0]  # 70 channels: 64 is not below 3/4 of them
