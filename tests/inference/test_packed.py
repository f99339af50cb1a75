"""The packed-tile direct kernel (``"direct@K:G"``): equal to F.conv2d for every geometry, setting and layout.

Before the output channels read them, it copies what a group of G 64-float tiles of one output row
needs from one block of K input channels into a buffer: per (input channel, kernel row, column
phase) the input row, gathered at the conv's stride, zeros past the image. So the cases below put
an edge in each of these: batch sizes where a tile is one pixel (64), part of one (65) or many
pixels (1-5), rows that end in a masked tile, strides 2, 3 and (2, 1) with odd image sizes (phases
of unequal length), padding 0 to 3, dilation, 1x3 / 3x1 / 5x5 / 7x7 kernels, blocks that do not
divide the channels, kernel rows and channel blocks without a non-zero, and streaming stores.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fggp_hub.inference import (
    SparseConv2d,
    format_inference_report,
    inference_report,
    native_status,
    sparsify_for_inference,
)
from fggp_hub.inference import layers as layers_module
from fggp_hub.inference import sparse as sparse_module

from ._helpers import assert_close_rel, randomize_batchnorm

NATIVE = native_status()["available"]
pytestmark = pytest.mark.skipif(not NATIVE, reason=f"native kernels unavailable: {native_status()['reason']}")

REL = 1e-5


def _layer(c_in: int, c_out: int, kernel, stride=1, padding=0, dilation=1, sparsity: float = 0.7,
           seed: int = 0) -> tuple[nn.Conv2d, SparseConv2d]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) >= sparsity)
        conv.bias.normal_()
    layer = SparseConv2d(conv)
    layer.relu = True
    return conv, layer


GEOMETRIES = [
    # kernel, stride, padding, dilation, c_in, c_out, batch, (h, w)
    (3, 1, 1, 1, 20, 16, 64, (6, 5)),         # batch 64: a tile is one pixel
    (3, 1, 1, 1, 8, 16, 3, (9, 7)),           # rows of 21 floats: one masked tile per row, tiles span pixels
    (3, 1, 0, 1, 9, 5, 2, (5, 6)),            # no padding
    (3, 2, 1, 1, 70, 12, 5, (11, 10)),        # strided, odd height: the phases differ in length
    (3, 2, 0, 1, 40, 24, 65, (11, 10)),       # batch 65: a column's run starts inside a tile
    (3, 2, 1, 1, 12, 8, 65, (9, 8)),          # batch 65, padding 1: a group starts inside the column left of it
    (3, 3, 1, 1, 8, 8, 1, (10, 10)),          # stride 3, batch 1: the per-float gather
    ((3, 1), (2, 1), (1, 0), 1, 12, 8, 4, (7, 9)),  # 3x1, stride (2, 1): phases on rows only
    ((1, 3), (1, 2), (0, 1), 1, 12, 8, 4, (7, 9)),  # 1x3, stride (1, 2): phases on columns only
    (3, 1, 2, 2, 12, 8, 4, (7, 9)),           # dilation 2
    (5, 1, 2, 1, 16, 16, 1, (8, 8)),          # 5x5, batch 1
    (7, 2, 3, 1, 3, 16, 2, (12, 12)),         # an ImageNet-style stem
]


@pytest.mark.parametrize("setting", [(0, 1), (4, 2), (32, 8)], ids=lambda s: f"{s[0]}:{s[1]}")
@pytest.mark.parametrize("kernel, stride, padding, dilation, c_in, c_out, batch, hw", GEOMETRIES)
def test_every_setting_matches_conv2d(setting, kernel, stride, padding, dilation, c_in, c_out, batch, hw, streaming):
    conv, layer = _layer(c_in, c_out, kernel, stride, padding, dilation, seed=c_in + batch)
    x = torch.randn(batch, c_in, *hw)
    mode = f"direct@{setting[0]}:{setting[1]}"
    with torch.inference_mode():
        y = conv(x)
        residual = torch.randn_like(y)
        assert_close_rel(layer.run(x, mode), torch.relu(y), REL)
        assert_close_rel(layer.run(x, mode, residual), torch.relu(y + residual), REL)
    assert "packed tiles" in layer.paths[batch]
    assert ("phases gathered while packing" in layer.paths[batch]) == (layer.stride != (1, 1))


def test_without_relu_and_without_bias():
    torch.manual_seed(0)
    conv = nn.Conv2d(10, 6, 3, padding=1, bias=False).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.5)
    layer = SparseConv2d(conv)  # relu False: negative outputs stay
    x = torch.randn(7, 10, 5, 5)
    with torch.inference_mode():
        out = layer.run(x, "direct@4:2")
    assert (out < 0).any()
    assert_close_rel(out, conv(x), REL)


def test_kernel_rows_channels_and_blocks_without_non_zeros():
    """Unused buffer rows are never packed, and no non-zero reads them; empty channels give relu(bias)."""
    conv, _ = _layer(70, 20, 3, padding=1, sparsity=0.5, seed=1)
    with torch.no_grad():
        conv.weight[:, :, 0, :] = 0      # kernel row 0 unused: its buffer rows are skipped
        conv.weight[4:9] = 0             # whole output channels pruned
        conv.weight[:, 32:64] = 0        # a whole 32-channel block pruned
    layer = SparseConv2d(conv)
    layer.relu = True
    x = torch.randn(9, 70, 6, 7)
    with torch.inference_mode():
        for setting in ("0:1", "32:2", "32:8", "16:4"):
            assert_close_rel(layer.run(x, f"direct@{setting}"), torch.relu(conv(x)), REL)
    _, _, _, prow, prows, kb, nb = layer._packed_meta_for(32, 2, 9)
    assert (kb, nb) == (32, 3) and int(prow[2] - prow[1]) == 0  # block 1 packs nothing
    assert not (prows[:, 2] == 0).any()  # no buffer row of kernel row 0
    zero = nn.Conv2d(8, 5, 3, padding=1).eval()
    with torch.no_grad():
        zero.weight.zero_()
    layer = SparseConv2d(zero)
    x = torch.randn(16, 8, 4, 4)
    with torch.inference_mode():
        torch.testing.assert_close(layer.run(x, "direct@0:2"), zero(x))


def test_reads_chwn_input_with_a_padded_channel_stride_and_every_residual_form():
    conv, layer = _layer(24, 20, 3, padding=1, seed=2)
    x = torch.randn(16, 24, 12, 10)  # plane of 1,920 floats: the CHWN buffer pads the channel stride
    x_chwn = layers_module._as_chwn(x)[0].permute(3, 0, 1, 2)
    assert layers_module._chwn_channel_stride(x_chwn.permute(1, 2, 3, 0)) > 12 * 10 * 16
    with torch.inference_mode():
        y = conv(x)
        residual = torch.randn_like(y)
        res_chwn = layers_module._as_chwn(residual)[0].permute(3, 0, 1, 2)
        out = layer.run(x_chwn, "direct@8:4", res_chwn)
        assert_close_rel(out, torch.relu(y + residual), REL)
        assert_close_rel(layer.run(x_chwn, "direct@8:4", residual), torch.relu(y + residual), REL)
        per_channel = torch.randn(1, 20, 1, 1)
        assert_close_rel(layer.run(x_chwn, "direct@8:4", per_channel), torch.relu(y + per_channel), REL)
    assert layers_module._is_chwn(out)


def test_large_output_streams_with_a_ragged_tail():
    """Over 24 MiB out (the real threshold), rows of 65 x 31 floats: streaming stores and a masked tile per row."""
    conv, layer = _layer(8, 96, 3, padding=1, sparsity=0.5, seed=3)
    x = torch.randn(65, 8, 33, 31)
    assert 96 * 65 * 33 * 31 * 4 >= layers_module._STREAM_MIN_BYTES
    with torch.inference_mode():
        assert_close_rel(layer.run(x, "direct@0:8"), torch.relu(conv(x)), REL)


def test_falls_back_to_torch_where_the_native_kernels_cannot_run():
    conv, _ = _layer(6, 4, 3, padding=1, seed=5)
    layer = SparseConv2d(conv.double())  # float64: no native kernel
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(layer.run(x, "direct@0:2"), conv(x))
    assert layer.paths[2] == "torch CSR (im2col + CSR GEMM)"


def test_candidates_cover_kxk_layers_at_batch_8_and_up_only():
    _, layer = _layer(64, 16, 3, padding=1)
    packed = layer._packed_candidates(64)
    assert packed == [(32, 4), (32, 8), (0, 8)]  # 64 of 64 channels per block: one block
    assert all(layer._packed_buffer_bytes(k, g, 64) <= layers_module._PACKED_MAX_BUFFER_BYTES for k, g in packed)
    assert layer.block_candidates(batch=64)[-3:] == packed
    assert layer._packed_candidates(1) == [] and not any(isinstance(s, tuple) for s in layer.block_candidates(batch=1))
    assert layer._packed_buffer_bytes(32, 4, 1024) > layers_module._PACKED_MAX_BUFFER_BYTES
    assert layer._packed_candidates(1024) == []  # every buffer too large: the per-tap kernel only
    for stride in (1, 2):  # 1x1 layers run their own packed kernel
        _, pointwise = _layer(64, 16, 1, stride=stride)
        assert pointwise._packed_candidates(64) == []
        assert not any(isinstance(s, tuple) for s in pointwise.block_candidates(batch=64))


def test_settings_round_trip_through_mode_strings_and_the_tuner():
    assert layers_module.parse_direct_setting("32:8") == (32, 8)
    assert layers_module.parse_direct_setting("48") == 48
    for setting in (0, 48, (32, 8), (0, 1)):
        assert layers_module.parse_direct_setting(layers_module.format_direct_setting(setting)) == setting
    _, layer = _layer(64, 16, 3, padding=1)
    modes = sparse_module._candidate_modes(layer, torch.randn(64, 64, 8, 8))
    assert {"direct@32:4", "direct@32:8", "direct@0:8"} <= set(modes)


def _small_vgg(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c = 3
    for width, stride in ((16, 1), (32, 2), (32, 1)):
        layers += [nn.Conv2d(c, width, 3, stride, 1), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.in_channels > 3:
                m.weight.mul_(torch.rand_like(m.weight) > 0.8)
        randomize_batchnorm(model)
    return model.eval()


def test_a_tuned_model_runs_the_packed_setting_it_is_given_and_reports_it():
    model = _small_vgg()
    x = torch.randn(16, 3, 12, 12)
    fast = sparsify_for_inference(model, input_size=(3, 12, 12), batch_sizes=(16,), repeats=1)
    for layer in fast.modules():
        if isinstance(layer, SparseConv2d) and layer.in_channels > 3:
            assert layer.direct_blocks.get(16, 0) in layer.block_candidates(batch=16)
            layer.set_decisions({16: "direct"})
            layer.direct_blocks[16] = (16, 2)
    with torch.inference_mode():
        assert_close_rel(fast(x), model(x), 1e-4)
    report = inference_report(fast)
    json.dumps(report)  # tuple settings serialise
    packed = [name for name, lay in report["layers"].items() if "packed tiles" in lay["paths"].get(16, "")]
    assert {"3", "6"} <= set(packed)  # the stem ("0") runs whatever the tuner chose
    assert "stride 2x2 (phases gathered while packing" in report["layers"]["3"]["paths"][16]
    assert report["layers"]["3"]["direct_ci_blocks"][16] == (16, 2)
    assert "direct@16:2+relu" in format_inference_report(report)  # the text table names the setting


@pytest.mark.parametrize("mode", ["dense", "sparse", "direct", "direct@8", "direct@0:2", "winograd"])
def test_inputs_too_small_for_the_kernel_are_refused_in_every_mode(mode):
    _, layer = _layer(4, 4, 3)  # no padding: a 2-pixel side gives no output
    for shape in [(2, 4, 2, 8), (2, 4, 8, 2), (1, 4, 0, 5)]:
        with torch.inference_mode(), pytest.raises(ValueError, match=r"too small for kernel \(3, 3\).*pass a larger"):
            layer.run(torch.randn(*shape), mode)


def test_bad_packed_settings_are_refused():
    _, layer = _layer(8, 4, 3, padding=1)
    x = torch.randn(2, 8, 5, 5)
    for mode in ("direct@0:0", "direct@16:-1"):
        with torch.inference_mode(), pytest.raises(ValueError, match="at least 1 tile per group"):
            layer.run(x, mode)
    with pytest.raises(ValueError, match="at least 1 tile per group"):
        layer._direct(x, (0, 0))
    _, wide = _layer(4096, 1, 7, padding=3, sparsity=0.999)  # 4096 x 7 rows x (8*64 + 6*16384) floats
    with pytest.raises(ValueError, match=r"over 2\*\*31\): use fewer input channels per block or tiles per group"):
        wide._packed_meta_for(0, 8, 16384)


def test_the_native_kernel_reports_a_failure_and_the_layer_raises_it(monkeypatch):
    """The kernel returns -1 when it cannot run (no buffer); the layer turns that into a MemoryError."""
    from fggp_hub.inference.native import native_library

    conv, layer = _layer(8, 4, 3, padding=1)
    x = torch.randn(2, 8, 5, 5)
    x4, xcs = layers_module._as_chwn(x)
    seg, off, vals, prow, prows, kb, nb = layer._packed_meta_for(0, 1, 2)
    out = torch.empty(4, 5, 5, 2)  # (Co, Ho, Wo, N), channel stride 50
    lib = native_library()
    args = [x4.data_ptr(), 8, 5, 5, 2, xcs, 4, 5, 5, 1, 1, 1, 1, 3, 1, -1, 1, 1, nb, kb, seg.data_ptr(), off.data_ptr(),
            vals.data_ptr(), prow.data_ptr(), prows.data_ptr(), layer.bias.data_ptr(), None, 0, out.data_ptr(), 50, 0, 1]
    assert lib.fggp_sparse_conv_packed_f32(*args) == 0
    assert_close_rel(out.permute(3, 0, 1, 2), conv(x), REL)
    args[17] = 0  # G = 0: refused
    assert lib.fggp_sparse_conv_packed_f32(*args) == -1

    class Failing:
        def __getattr__(self, name):
            return (lambda *a: -1) if name == "fggp_sparse_conv_packed_f32" else getattr(lib, name)

    monkeypatch.setattr(layers_module, "native_library", lambda: Failing())
    with torch.inference_mode(), pytest.raises(MemoryError, match="could not allocate its .*-byte buffer per thread"):
        layer.run(x, "direct@0:1")
