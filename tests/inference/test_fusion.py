"""ResNet-block fusion (ReLU and residual add in the conv's kernel), the 1x1 paths and the padded CHWN layout.

Every kernel path is checked against the dense model: the direct 1x1 path (a sparse
GEMM over channels), the dense 1x1 GEMM in CHWN, the residual epilogue of each kernel
(dense, torch CSR, direct) and inputs in padded CHWN, contiguous NCHW and CHWN layouts.
"""
from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from fggp_hub.inference import SparseConv2d, inference_report, native_status, sparsify_for_inference
from fggp_hub.inference import layers as layers_module
from fggp_hub.models.resnet_cifar import CifarResNet

from ._helpers import bottleneck_resnet

NATIVE = native_status()["available"]
needs_native = pytest.mark.skipif(not NATIVE, reason=f"native kernel unavailable: {native_status()['reason']}")


@pytest.fixture(autouse=True)
def _short_timing(monkeypatch):
    monkeypatch.setattr("fggp_hub.inference.sparse._MIN_TIME_S", 0.0)




def _rel(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("force", ["dense", "sparse", "direct", "winograd", "gemm", None])
@pytest.mark.parametrize("batch", [1, 16])
def test_bottleneck_blocks_fuse_relus_and_residual_adds(force, batch):
    model = bottleneck_resnet(0.8)
    fast = sparsify_for_inference(
        model, force=force, batch_sizes=(1, 16), repeats=1, min_speedup=1.0, input_size=(3, 32, 32)
    )
    report = inference_report(fast)
    fusions = report["block_fusions"]
    # each of the 4 blocks: conv1 and conv2 get their ReLU, the add + ReLU goes into one conv
    assert sum(f["residual"] for f in fusions) == 4
    assert sum(not f["residual"] for f in fusions) == 8
    assert all(isinstance(fast.get_submodule(n), fx.GraphModule) for n in ("layer1.0", "layer2.1"))
    assert type(fast) is CifarResNet and hasattr(fast, "forward_features")  # the model around the blocks is kept
    for f in fusions:
        lay = report["layers"][f["layer"]]
        assert lay["relu_fused"] and lay["residual_fused"] == f["residual"]
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref_feat, out_feat = model.forward_features(x), fast.forward_features(x)
        assert _rel(ref_feat, out_feat) <= 1e-4
        assert _rel(model(x), fast(x)) <= 1e-4
    paths = {p for lay in inference_report(fast)["layers"].values() for p in lay["paths"].values()}
    if force == "direct" and NATIVE:
        assert "direct 1x1 (sparse GEMM over channels, packed tiles, CHWN)" in paths
        assert any(p.startswith("direct 3x3 stride 2") for p in paths)


def test_fusion_can_be_turned_off_and_leaves_untraceable_blocks():
    model = bottleneck_resnet(0.8)
    fast = sparsify_for_inference(model, force="dense", fuse_relu=False)
    assert inference_report(fast)["block_fusions"] == []
    assert not any(isinstance(m, fx.GraphModule) for m in fast.modules())


def _conv(ci: int, co: int, k: int, stride: int = 1, density: float = 0.3, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(ci, co, k, stride=stride, padding=k // 2).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) < density)
        conv.bias.normal_()
    return conv


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values as NCHW, contiguous CHWN and padded CHWN (the direct kernel's own output layout)."""
    padded = layers_module._empty_chwn(x.shape[1], x.shape[2], x.shape[3], x.shape[0])
    padded.copy_(x.permute(1, 2, 3, 0))
    return {
        "nchw": x.contiguous(),
        "chwn": x.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2),
        "padded": padded.permute(3, 0, 1, 2),
    }


@needs_native
@pytest.mark.parametrize("mode", ["dense", "sparse", "direct", "direct@8", "winograd", "gemm"])
@pytest.mark.parametrize("k, stride", [(1, 1), (3, 1), (3, 2), (1, 2)])
@pytest.mark.parametrize("batch", [1, 16])
def test_every_path_adds_the_residual_exactly(mode, k, stride, batch):
    conv = _conv(24, 40, k, stride)
    layer = SparseConv2d(conv)
    layer.relu = True
    layer.residual_fused = True
    x = torch.randn(batch, 24, 32, 32)
    with torch.inference_mode():
        y = conv(x)
        residual = torch.randn_like(y)
        ref = torch.relu(y + residual)
        for xname, xv in _layouts(x).items():
            for rname, rv in _layouts(residual).items():
                out = layer.run(xv, mode, rv)
                torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, msg=f"{mode} x={xname} res={rname}")
    path = layer.paths[batch]
    if mode.startswith("direct"):
        assert path.startswith("direct 1x1" if (k, stride) == (1, 1) else f"direct {k}x{k}")
    if mode == "gemm":
        assert path.startswith("dense 1x1 GEMM, packed" if (k, stride) == (1, 1) else "dense")
    if mode == "winograd":
        assert path.startswith("winograd" if (k, stride) == (3, 1) else "dense")


@needs_native
def test_pointwise_dense_runs_one_gemm_in_chwn_and_keeps_the_layout():
    conv = _conv(32, 48, 1, density=0.9)
    layer = SparseConv2d(conv)
    x = torch.randn(16, 32, 8, 8)
    with torch.inference_mode():
        for name, xv in _layouts(x).items():
            out = layer.run(xv, "dense")
            torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-5)
            if name != "nchw":
                assert layer.paths[16] == "dense 1x1 GEMM in CHWN" and layers_module._is_chwn(out)
            else:
                assert layer.paths[16] == "dense (F.conv2d)"


def test_padded_channel_stride_spreads_large_planes_over_cache_sets():
    assert layers_module._channel_stride(100) == 100  # small planes: no padding
    for plane in (1024, 4096, 65536, 1000 * 64):
        cs = layers_module._channel_stride(plane)
        assert cs >= plane and cs % 16 == 0 and (cs // 16) % 2 == 1
    t = layers_module._empty_chwn(3, 32, 32, 64)
    assert t.stride()[1:] == (32 * 64, 64, 1) and t.stride(0) > 32 * 32 * 64
    assert layers_module._is_chwn(t.permute(3, 0, 1, 2))


def test_report_says_which_path_each_layer_takes_and_the_malloc_setting():
    model = bottleneck_resnet(0.8)
    fast = sparsify_for_inference(model, force="direct" if NATIVE else "sparse")
    with torch.inference_mode():
        fast(torch.randn(4, 3, 32, 32))
    report = inference_report(fast)
    assert "tuned" in report["malloc"]
    assert all(4 in lay["paths"] for lay in report["layers"].values())
