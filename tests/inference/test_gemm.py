"""The native packed GEMM for 1x1 convolutions ("gemm"): equal to F.conv2d on every shape, layout and tail.

The kernel computes 6 output channels x 16 pixels at a time over blocks of <= 512 input
channels and 128 pixels, so the shapes below put a tail in each of those: channel counts
that are not multiples of 6, pixel counts that are not multiples of 16 or 128, and input
channel counts that need two or three blocks. Sums are reordered relative to oneDNN, so
results agree to float32 rounding (bound: 2e-5 of the largest output).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn

from fggp_hub.inference import SparseConv2d, inference_report, native_status, sparsify_for_inference
from fggp_hub.inference import layers as layers_module
from fggp_hub.inference import sparse as sparse_module

from ._helpers import assert_close_rel, bottleneck_resnet

NATIVE = native_status()["available"]
pytestmark = pytest.mark.skipif(not NATIVE, reason=f"native kernels unavailable: {native_status()['reason']}")

REL = 2e-5
PATH = "dense 1x1 GEMM, packed weights (native, CHWN)"


def _assert_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert_close_rel(out, ref, REL)


def _layer(c_in: int, c_out: int, relu: bool, seed: int, bias: bool = True) -> tuple[nn.Conv2d, SparseConv2d]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 1, bias=bias).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.4)  # pruned a little: the GEMM's territory
        if bias:
            conv.bias.normal_()
    layer = SparseConv2d(conv)
    layer.relu = relu
    return conv, layer


@pytest.mark.parametrize("c_in, c_out", [(1, 1), (5, 7), (16, 6), (13, 13), (24, 64)])
@pytest.mark.parametrize("batch, hw", [(1, (1, 1)), (1, (5, 7)), (3, (5, 5)), (2, (9, 9)), (16, (4, 4)), (1, (16, 24))])
def test_gemm_matches_conv2d(c_in, c_out, batch, hw, streaming):
    """Channel panels with 1-5 rows left over, pixel counts of 1, 35, 75, 162 (a second 128-pixel block), 256
    and 384 at batch 1 (few pixel blocks: the channel panels are split between threads instead)."""
    conv, layer = _layer(c_in, c_out, relu=True, seed=c_in * 7 + c_out + batch)
    x = torch.randn(batch, c_in, *hw)
    with torch.inference_mode():
        out = layer.run(x, "gemm")
        _assert_close(out, torch.relu(conv(x)))
    assert layer.paths[batch] == PATH


@pytest.mark.parametrize("c_in", [511, 512, 513, 1100])
def test_gemm_sums_over_several_input_channel_blocks(c_in, streaming):
    """Blocks of <= 512 input channels: partial sums are stored and reloaded, bias and ReLU only at the end."""
    conv, layer = _layer(c_in, 10, relu=True, seed=c_in)
    x = torch.randn(3, c_in, 6, 6)
    with torch.inference_mode():
        _assert_close(layer.run(x, "gemm"), torch.relu(conv(x)))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_gemm_reads_chwn_input_and_fuses_the_residual(relu, bias, streaming):
    """A direct layer's CHWN output (channel stride padded: plane >= 1024 floats) in, residual added before ReLU."""
    conv, layer = _layer(20, 14, relu=relu, seed=3, bias=bias)
    x = torch.randn(16, 20, 12, 10)
    x_chwn = layers_module._as_chwn(x)[0].permute(3, 0, 1, 2)
    assert not x_chwn.is_contiguous() and layers_module._is_chwn(x_chwn)
    residual = torch.randn(16, 14, 12, 10)
    with torch.inference_mode():
        ref = conv(x) + residual
        ref = torch.relu(ref) if relu else ref
        _assert_close(layer.run(x_chwn, "gemm", residual), ref)
        res_chwn = layers_module._as_chwn(residual)[0].permute(3, 0, 1, 2)
        out = layer.run(x, "gemm", res_chwn)
        _assert_close(out, ref)
        per_channel = torch.randn(1, 14, 1, 1)  # a broadcast residual
        ref = conv(x) + per_channel
        _assert_close(layer.run(x, "gemm", per_channel), torch.relu(ref) if relu else ref)
    assert layers_module._is_chwn(out)  # the next direct, Winograd or GEMM layer reads it without a copy
    assert layer.paths[16] == PATH


def test_gemm_writes_large_outputs_with_streaming_stores_correctly():
    """An output over 24 MiB (the real threshold, no patch): the non-temporal path with a ragged last block."""
    conv, layer = _layer(8, 100, relu=True, seed=11)
    x = torch.randn(65, 8, 31, 33)  # 100 x 66,495 floats = 26.6 MB out; 66,495 pixels: not a multiple of 16
    assert 100 * 65 * 31 * 33 * 4 >= layers_module._STREAM_MIN_BYTES
    with torch.inference_mode():
        _assert_close(layer.run(x, "gemm"), torch.relu(conv(x)))


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 1, stride=2),
    nn.Conv2d(4, 6, 1, padding=1),
    nn.Conv2d(4, 6, 3, padding=1),
    nn.Conv2d(4, 6, (1, 3), padding=(0, 1)),
], ids=["stride2", "padded", "3x3", "1x3"])
def test_gemm_falls_back_to_dense_where_it_cannot_run(conv):
    conv = conv.eval()
    layer = SparseConv2d(conv)
    x = torch.randn(2, 4, 9, 9)
    assert not layer.gemm_supported(x)
    with torch.inference_mode():
        torch.testing.assert_close(layer.run(x, "gemm"), conv(x), rtol=1e-5, atol=1e-5)
    assert layer.paths[2].startswith("dense")


def test_gemm_falls_back_to_dense_on_float64_and_empty_batches():
    conv, layer = _layer(3, 4, relu=False, seed=0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert layer.gemm_supported() and not layer.gemm_supported(x)
    layer64 = SparseConv2d(copy.deepcopy(conv).double())
    assert not layer64.gemm_supported()  # float64 weights: never
    with torch.inference_mode():
        torch.testing.assert_close(layer64.run(x, "gemm"), conv.double()(x))
        empty = torch.randn(0, 3, 8, 8)
        assert not layer.gemm_supported(empty)
        assert layer.run(empty, "gemm").shape == (0, 4, 8, 8)


def test_set_decisions_keeps_what_gemm_needs():
    _, layer = _layer(3, 4, relu=False, seed=1)
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        layer.run(x, "gemm")
    assert layer._gemm_cache is not None
    layer.set_decisions({2: "gemm"})
    assert layer.weight is not None and layer._gemm_cache is not None  # dense is its fallback
    assert layer.values is None  # no sparse kernel in use
    _, layer = _layer(3, 4, relu=False, seed=1)
    with torch.inference_mode():
        layer.run(x, "gemm")
    layer.set_decisions({2: "direct"})
    assert layer.weight is None and layer._gemm_cache is None


def test_gemm_weight_is_rebuilt_when_the_weight_tensor_changes():
    """After .to() (a new weight tensor) the packed weight is rebuilt, not reused."""
    conv, layer = _layer(7, 9, relu=False, seed=4)
    x = torch.randn(2, 7, 8, 8)
    with torch.inference_mode():
        layer.run(x, "gemm")
        first = layer._gemm_cache[1]
        layer.double().float()
        with torch.no_grad():
            layer.weight.mul_(2.0)
        conv.weight.data.mul_(2.0)
        _assert_close(layer.run(x, "gemm"), conv(x))
    assert layer._gemm_cache[1] is not first




def test_forced_gemm_resnet_matches_and_survives_deepcopy():
    """Bottleneck blocks (BN folded, ReLUs and residual adds fused) with every 1x1 conv on the GEMM."""
    model = bottleneck_resnet(0.4)
    fast = sparsify_for_inference(model, force="gemm", input_size=(3, 16, 16))
    assert isinstance(fast.get_submodule("layer1.0"), fx.GraphModule)
    with torch.inference_mode():
        fast(torch.randn(2, 3, 16, 16))  # builds the packed weights: the copy must not share them
    clone = copy.deepcopy(fast)
    report = inference_report(fast)["layers"]
    pointwise = [n for n, m in fast.named_modules() if isinstance(m, SparseConv2d) and m.gemm_supported()]
    assert len(pointwise) >= 8 and all(fast.get_submodule(n)._gemm_cache is not None for n in pointwise)
    assert all(clone.get_submodule(n)._gemm_cache is None for n in pointwise)
    for batch in (1, 8, 9):
        x = torch.randn(batch, 3, 16, 16)
        with torch.inference_mode():
            ref = model(x)
            for net in (fast, clone):
                out = net(x)
                assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
    report = inference_report(fast)["layers"]
    assert all(p == PATH for n in pointwise for p in report[n]["paths"].values())
    assert any(report[n]["residual_fused"] for n in pointwise)  # conv3 of a block adds the shortcut
    others = [n for n in report if n not in pointwise]
    assert others and all(p.startswith("dense") for n in others for p in report[n]["paths"].values())


def test_tuner_times_gemm_on_1x1_layers_and_keeps_it_only_where_faster():
    """Whatever the machine, a layer runs the GEMM only if it was timed and beat dense by min_speedup."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 48, 1), nn.ReLU(), nn.Conv2d(48, 16, 1)
    ).eval()
    fast = sparsify_for_inference(model, batch_sizes=(8,), repeats=2, input_size=(3, 16, 16), min_speedup=1.1)
    layers = inference_report(fast)["layers"]
    assert "gemm" not in layers["0"]["timings_s"][8]  # a 3x3 conv
    for name in ("2", "4"):
        t = layers[name]["timings_s"][8]
        assert set(t) == {"dense", "gemm"}  # dense 1x1 layers: too dense for the sparse kernels
        if layers[name]["decisions"][8] == "gemm":
            assert t["gemm"] * 1.1 <= t["dense"]
    x = torch.randn(8, 3, 16, 16)
    with torch.inference_mode():
        ref = model(x)
        assert (fast(x) - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_very_sparse_1x1_layers_do_not_time_gemm():
    """Above _DENSE_NATIVE_MAX_SPARSITY the sparse kernels win: the dense-weight GEMM is not timed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 1)).eval()
    with torch.no_grad():
        model[2].weight.mul_(torch.rand_like(model[2].weight) > 0.98)
    fast = sparsify_for_inference(model, batch_sizes=(8,), repeats=1, input_size=(3, 8, 8))
    lay = inference_report(fast)["layers"]["2"]
    assert lay["sparsity"] > sparse_module._DENSE_NATIVE_MAX_SPARSITY
    assert "gemm" not in lay["timings_s"][8] and "direct" in lay["timings_s"][8]
