"""The Winograd F(4x4, 3x3) kernel: equal to F.conv2d on every shape, layout, padding and chunking.

Winograd's transforms reorder the sums, so results differ from F.conv2d by float32
rounding (about 1e-6 of the output's scale); the bound here is 2e-5 of the largest
output, the same order as the direct kernel's tests.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fggp_hub.inference import SparseConv2d, inference_report, native_status, sparsify_for_inference
from fggp_hub.inference import layers as layers_module

from ._helpers import assert_close_rel, randomize_batchnorm

NATIVE = native_status()["available"]
pytestmark = pytest.mark.skipif(not NATIVE, reason=f"native kernels unavailable: {native_status()['reason']}")

REL = 2e-5


def _assert_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert_close_rel(out, ref, REL)


def _layer(c_in: int, c_out: int, padding: int, relu: bool, seed: int, bias: bool = True) -> tuple[nn.Conv2d, SparseConv2d]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 3, padding=padding, bias=bias).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.3)  # pruned a little: Winograd's territory
        if bias:
            conv.bias.normal_()
    layer = SparseConv2d(conv)
    layer.relu = relu
    return conv, layer


@pytest.mark.parametrize("batch", [1, 3, 8, 13])
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("hw", [(9, 11), (4, 4), (6, 13)])
def test_winograd_matches_conv2d(batch, padding, hw):
    """Partial tiles at the bottom/right edge, masked lanes when the batch is not a multiple of 8."""
    conv, layer = _layer(5, 7, padding, relu=True, seed=batch * 31 + padding)
    x = torch.randn(batch, 5, *hw)
    with torch.inference_mode():
        out = layer.run(x, "winograd")
        _assert_close(out, torch.relu(conv(x)))
    assert layer.paths[batch].startswith("winograd")


@pytest.mark.parametrize("c_in, c_out, padding, hw", [
    (1, 1, 1, (5, 7)), (1, 3, (0, 2), (6, 3)), (3, 1, (3, 3), (2, 9)), (2, 2, (5, 1), (3, 4)), (4, 2, 0, (3, 3)),
])
def test_winograd_matches_conv2d_on_edge_shapes(c_in, c_out, padding, hw):
    """One channel, asymmetric and large padding, maps of 2-3 pixels (one partial tile), 1x1 outputs."""
    torch.manual_seed(c_in * 10 + c_out)
    conv = nn.Conv2d(c_in, c_out, 3, padding=padding).eval()
    layer = SparseConv2d(conv)
    x = torch.randn(9, c_in, *hw)
    with torch.inference_mode():
        _assert_close(layer.run(x, "winograd"), conv(x))
    assert layer.paths[9].startswith("winograd")


def test_winograd_error_stays_small_on_wide_layers():
    """256 input channels (VGG-19's widths): the transforms' rounding grows with the sum's length."""
    torch.manual_seed(5)
    conv = nn.Conv2d(256, 32, 3, padding=1).eval()
    layer = SparseConv2d(conv)
    x = torch.randn(8, 256, 8, 8)
    with torch.inference_mode():
        _assert_close(layer.run(x, "winograd"), conv(x))


def test_winograd_leaves_empty_batches_to_dense_and_refuses_too_small_inputs():
    """Batch 0 gives an empty result (dense); an input smaller than the kernel is refused with one ValueError."""
    conv, layer = _layer(4, 4, 1, relu=False, seed=2)
    empty = torch.randn(0, 4, 8, 8)
    assert not layer.winograd_supported(empty)
    with torch.inference_mode():
        assert layer.run(empty, "winograd").shape == (0, 4, 8, 8)
    conv = nn.Conv2d(4, 4, 3).eval()
    layer = SparseConv2d(conv)
    for shape in [(2, 4, 2, 8), (2, 4, 8, 2)]:
        x = torch.randn(*shape)
        assert not layer.winograd_supported(x)
        with torch.inference_mode(), pytest.raises(ValueError, match="too small for kernel"):
            layer.run(x, "winograd")


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_winograd_reads_chwn_input_and_fuses_the_residual(relu, bias):
    """A direct layer's CHWN output (channel stride padded: plane >= 1024 floats) in, residual added before ReLU."""
    conv, layer = _layer(6, 4, 1, relu=relu, seed=3, bias=bias)
    x = torch.randn(16, 6, 12, 10)
    x_chwn = layers_module._as_chwn(x)[0].permute(3, 0, 1, 2)
    assert not x_chwn.is_contiguous() and layers_module._is_chwn(x_chwn)
    residual = torch.randn(16, 4, 12, 10)
    with torch.inference_mode():
        ref = conv(x) + residual
        ref = torch.relu(ref) if relu else ref
        _assert_close(layer.run(x_chwn, "winograd", residual), ref)
        res_chwn = layers_module._as_chwn(residual)[0].permute(3, 0, 1, 2)
        out = layer.run(x, "winograd", res_chwn)
        _assert_close(out, ref)
        per_channel = torch.randn(1, 4, 1, 1)  # a broadcast residual
        ref = conv(x) + per_channel
        _assert_close(layer.run(x, "winograd", per_channel), torch.relu(ref) if relu else ref)
    assert layers_module._is_chwn(out)  # the next direct or Winograd layer reads it without a copy


@pytest.mark.parametrize("max_tiles", [1, 7, 40])
def test_winograd_chunks_of_tile_rows_give_the_same_result(monkeypatch, max_tiles):
    """Small chunk limits force one or a few tile rows per chunk (and a short last chunk)."""
    monkeypatch.setattr(layers_module, "_WINOGRAD_MAX_TILES", max_tiles)
    conv, layer = _layer(4, 6, 1, relu=True, seed=max_tiles)
    x = torch.randn(3, 4, 19, 10)  # 5 tile rows of 3 tiles each
    with torch.inference_mode():
        _assert_close(layer.run(x, "winograd"), torch.relu(conv(x)))


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 3, stride=2, padding=1),
    nn.Conv2d(4, 6, 1),
    nn.Conv2d(4, 6, 3, padding=2, dilation=2),
    nn.Conv2d(4, 6, (3, 1), padding=(1, 0)),
], ids=["stride2", "1x1", "dilated", "3x1"])
def test_winograd_falls_back_to_dense_where_it_cannot_run(conv):
    conv = conv.eval()
    layer = SparseConv2d(conv)
    x = torch.randn(2, 4, 9, 9)
    assert not layer.winograd_supported(x)
    with torch.inference_mode():
        torch.testing.assert_close(layer.run(x, "winograd"), conv(x), rtol=1e-5, atol=1e-5)
    assert layer.paths[2].startswith("dense")


def test_winograd_falls_back_to_dense_on_float64_input():
    conv, layer = _layer(3, 4, 1, relu=False, seed=0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert layer.winograd_supported() and not layer.winograd_supported(x)
    layer64 = SparseConv2d(copy.deepcopy(conv).double())
    assert not layer64.winograd_supported()  # float64 weights: never
    with torch.inference_mode():
        torch.testing.assert_close(layer64.run(x, "winograd"), conv.double()(x))


def test_set_decisions_keeps_what_winograd_needs():
    _, layer = _layer(3, 4, 1, relu=False, seed=1)
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        layer.run(x, "winograd")
    assert layer._winograd_cache is not None
    layer.set_decisions({2: "winograd"})
    assert layer.weight is not None and layer._winograd_cache is not None  # dense is its fallback
    assert layer.values is None  # no sparse kernel in use
    _, layer = _layer(3, 4, 1, relu=False, seed=1)
    with torch.inference_mode():
        layer.run(x, "winograd")
    layer.set_decisions({2: "direct"})
    assert layer.weight is None and layer._winograd_cache is None


def test_forced_winograd_model_matches_and_survives_deepcopy():
    """A whole VGG-style net (BN folded, ReLUs fused, CHWN pools between) on the Winograd kernel."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    ).eval()
    with torch.no_grad():
        randomize_batchnorm(model)
    fast = sparsify_for_inference(model, force="winograd", input_size=(3, 16, 16))
    with torch.inference_mode():
        fast(torch.randn(2, 3, 16, 16))  # builds the layers' Winograd weights: the copy must not share them
    assert fast[0]._winograd_cache is not None
    clone = copy.deepcopy(fast)
    assert clone[0]._winograd_cache is None
    for batch in (1, 8, 9):
        x = torch.randn(batch, 3, 16, 16)
        with torch.inference_mode():
            ref = model(x)
            for net in (fast, clone):
                out = net(x)
                assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
    paths = {name: lay["paths"] for name, lay in inference_report(fast)["layers"].items()}
    assert all(p.startswith("winograd") for name in ("0", "3", "7") for p in paths[name].values())
    assert all(p.startswith("dense") for p in paths["12"].values())  # the Linear


def test_tuner_keeps_winograd_only_where_it_was_faster():
    """Whatever the machine, a layer runs Winograd only if it was timed and beat dense by min_speedup."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1)).eval()
    fast = sparsify_for_inference(model, batch_sizes=(8,), repeats=2, input_size=(3, 16, 16), min_speedup=1.1)
    for lay in inference_report(fast)["layers"].values():
        t = lay["timings_s"][8]
        assert "winograd" in t
        if lay["decisions"][8] == "winograd":
            assert t["winograd"] * 1.1 <= t["dense"]
    x = torch.randn(8, 3, 16, 16)
    with torch.inference_mode():
        ref = model(x)
        assert (fast(x) - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_very_sparse_layers_do_not_time_winograd():
    """Above _DENSE_NATIVE_MAX_SPARSITY the direct kernel always won: Winograd is not even timed (tuning time)."""
    from fggp_hub.inference.sparse import _DENSE_NATIVE_MAX_SPARSITY

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1)).eval()
    with torch.no_grad():
        model[2].weight.mul_(torch.rand_like(model[2].weight) > 0.98)
    fast = sparsify_for_inference(model, batch_sizes=(8,), repeats=1, input_size=(3, 8, 8))
    lay = inference_report(fast)["layers"]["2"]
    assert lay["sparsity"] > _DENSE_NATIVE_MAX_SPARSITY
    assert "winograd" not in lay["timings_s"][8] and "direct" in lay["timings_s"][8]
    # below a min_sparsity above it the layer is too dense for the sparse kernels and too sparse for
    # Winograd: kept dense without timing dense against nothing
    fast = sparsify_for_inference(model, batch_sizes=(8,), repeats=1, input_size=(3, 8, 8), min_sparsity=0.999)
    lay = inference_report(fast)["layers"]["2"]
    assert lay["decisions"] == {8: "dense"} and not lay["timings_s"]


def test_winograd_weight_is_rebuilt_when_the_weight_tensor_changes():
    """After .to() (a new weight tensor) the cached transform is rebuilt, not reused."""
    conv, layer = _layer(3, 4, 1, relu=False, seed=4)
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        layer.run(x, "winograd")
        first = layer._winograd_cache[1]
        layer.double().float()
        with torch.no_grad():
            layer.weight.mul_(2.0)  # a new tensor after the round trip: changing it must show
        conv.weight.data.mul_(2.0)
        _assert_close(layer.run(x, "winograd"), conv(x))
    assert layer._winograd_cache[1] is not first
