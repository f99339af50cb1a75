"""Sparse CPU inference: logits equal to the dense-with-zeros model, per-layer choices, guards.

No timing assertions: the per-layer choice depends on the machine, so correctness
is checked for the measured choice and for every forced kernel (dense, torch CSR,
native direct, and the direct mode's torch fallback when the library is missing).
"""
from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import fggp_hub
from fggp_hub.inference import (
    ChwnGlobalAvgPool2d,
    ChwnMaxPool2d,
    SparseConv2d,
    SparseInferenceLayer,
    SparseLinear,
    SparsifyArgumentError,
    TrainingModeError,
    conv_bn_pairs,
    format_inference_report,
    inference_report,
    native_status,
    sparsify_for_inference,
)
from fggp_hub.inference import layers as layers_module
from fggp_hub.pruning import prunable_parameters

from ._helpers import randomize_batchnorm

NATIVE = native_status()["available"]
MODES_ALL = ("dense", "sparse", "direct", "winograd", "gemm")
needs_native = pytest.mark.skipif(not NATIVE, reason=f"native kernel unavailable: {native_status()['reason']}")

TOL = 1e-4  # relative to the largest logit


@pytest.fixture(autouse=True)
def _short_timing(monkeypatch):
    """Time each kernel for ``repeats`` rounds only: these tests check results, not speed."""
    monkeypatch.setattr("fggp_hub.inference.sparse._MIN_TIME_S", 0.0)


class TinyVgg(nn.Module):
    """VGG-style net with a two-Linear head; its input check defeats torch.fx (exercises the fold fallback)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 96), nn.ReLU(inplace=True), nn.Linear(96, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:  # data-dependent Python control flow: symbolic tracing fails here
            raise ValueError("expected NCHW input")
        return self.head(self.features(x))


def _make(name: str) -> nn.Module:
    if name == "tiny_vgg":
        return TinyVgg()
    if name == "test_vit":
        return timm.create_model("test_vit", img_size=32, num_classes=10)
    if name == "small_vgg_cifar":  # the package's VGG class, narrow, built through timm
        return timm.create_model("fggp_vgg19_bn_cifar", layout=(16, "M", 32, 32, "M", 64, "M", 64, 64))
    return timm.create_model(name)


@torch.no_grad()
def _pruned(name: str, sparsity: float, kind: str, seed: int = 0) -> nn.Module:
    """A model with non-trivial BN statistics and biases, pruned globally (magnitude) or at random, in eval mode."""
    torch.manual_seed(seed)
    model = randomize_batchnorm(_make(name))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            m.bias.normal_(0, 0.1)
    params = prunable_parameters(model)
    if kind == "global":
        scores = torch.cat([p.abs().flatten() for p in params.values()])
        threshold = scores.kthvalue(int(sparsity * scores.numel())).values
        for p in params.values():
            p.mul_(p.abs() > threshold)
    else:
        for p in params.values():
            p.mul_(torch.rand_like(p) >= sparsity)
    return model.eval()


def _input(name: str, batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _assert_same_logits(ref: torch.Tensor, out: torch.Tensor) -> None:
    assert out.shape == ref.shape
    scale = ref.abs().max()
    assert scale > 0
    rel = float((out - ref).abs().max() / scale)
    assert rel <= TOL, f"max relative logit error {rel:.2e} > {TOL}"
    # argmax must agree wherever the top-2 gap is clearly above the tolerance
    top2 = ref.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 10 * TOL * scale
    assert torch.equal(out.argmax(-1)[clear], ref.argmax(-1)[clear])


def _input_size(name: str) -> tuple[int, int, int] | None:
    return (3, 32, 32) if name in ("test_vit", "tiny_vgg") else None


@pytest.mark.parametrize("name", ["fggp_resnet20_cifar", "small_vgg_cifar", "tiny_vgg", "test_vit"])
@pytest.mark.parametrize(
    "sparsity, kind, force",
    [
        (0.9, "global", None),  # kernels chosen by timing (whatever this machine picks)
        (0.98, "global", None),
        (0.98, "random", None),
        (0.9, "global", "sparse"),
        (0.98, "global", "sparse"),
        (0.9, "random", "sparse"),
        (0.9, "global", "dense"),
        (0.9, "global", "direct"),
        (0.98, "global", "direct"),
        (0.9, "random", "direct"),
    ],
)
def test_logits_match_dense_model(name, sparsity, kind, force):
    model = _pruned(name, sparsity, kind)
    fast = sparsify_for_inference(
        model, batch_sizes=(1, 8), input_size=_input_size(name), force=force, repeats=1, min_speedup=1.0
    )
    layers = [m for m in fast.modules() if isinstance(m, SparseInferenceLayer)]
    assert layers
    if force is not None:
        assert all(layer.mode_for(b) == force for layer in layers for b in (1, 3, 8))
    for batch in (1, 8):
        x = _input(name, batch)
        with torch.inference_mode():
            _assert_same_logits(model(x), fast(x))


def test_forced_sparse_runs_the_csr_kernel_everywhere():
    model = _pruned("fggp_resnet20_cifar", 0.9, "global")
    fast = sparsify_for_inference(model, force="sparse")
    layers = [m for m in fast.modules() if isinstance(m, SparseInferenceLayer)]
    assert len(layers) == 20  # 19 convs + fc
    assert all(layer.weight is None and layer.values is not None for layer in layers)  # dense storage freed
    with torch.inference_mode():
        _assert_same_logits(model(_input("r", 4)), fast(_input("r", 4)))
        with pytest.raises(RuntimeError, match="no dense weight"):
            layers[0].run(_input("r", 1), "dense")


def test_original_model_is_untouched():
    model = _pruned("fggp_resnet20_cifar", 0.9, "global")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = {n: type(m) for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    fast = sparsify_for_inference(model, batch_sizes=(1, 4), repeats=1)
    assert fast is not model
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(fast.bn1, nn.Identity)
    assert not any(p.requires_grad for p in fast.parameters())


def test_batchnorm_folding_keeps_the_zero_pattern():
    model = _pruned("fggp_resnet20_cifar", 0.9, "global")
    pairs, how = conv_bn_pairs(model)
    assert how == "fx" and len(pairs) == 19 and ("layer1.0.conv1", "layer1.0.bn1") in pairs
    fast = sparsify_for_inference(model, force="dense")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    for name in ("conv1", "layer2.1.conv2", "layer3.2.conv1"):
        original = model.get_submodule(name).weight
        folded = fast.get_submodule(name).weight
        assert torch.equal(original == 0, folded == 0)
    info = inference_report(fast)
    assert info["fold_method"] == "fx" and len(info["folded_batchnorms"]) == 19


def test_fold_falls_back_to_sequential_pairs_when_tracing_fails():
    model = _pruned("tiny_vgg", 0.9, "global")
    pairs, how = conv_bn_pairs(model)
    assert how == "sequential"
    assert pairs == [
        ("features.0", "features.1"),
        ("features.4", "features.5"),
        ("features.8", "features.9"),
        ("features.11", "features.12"),
    ]


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, bias, hw",
    [
        (3, 1, 1, 1, True, 8),
        (3, 1, 1, 1, False, 2),  # batch 1 takes the F.unfold path at <= 16 output pixels
        (1, 1, 0, 1, True, 5),  # 1x1: columns are a view at batch 1
        (1, 2, 0, 1, False, 6),
        (3, 2, 1, 1, True, 7),
        (3, 1, 2, 2, True, 9),
        ((3, 1), (2, 1), (1, 0), 1, True, 6),
        (5, 3, 0, 1, True, 11),
    ],
)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_sparse_conv_matches_conv2d(kernel, stride, padding, dilation, bias, hw, batch, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.7)
    x = torch.randn(batch, 6, hw, hw + 1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    layer = SparseConv2d(conv.eval())
    with torch.inference_mode():
        ref = conv(x)
        for mode in ("sparse", "dense", "direct"):
            out = layer.run(x, mode)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 12), (5, 12), (2, 3, 12)])
def test_sparse_linear_matches_linear(shape):
    torch.manual_seed(0)
    linear = nn.Linear(12, 7)
    with torch.no_grad():
        linear.weight.mul_(torch.rand_like(linear.weight) > 0.8)
    layer = SparseLinear(linear.eval())
    x = torch.randn(*shape)
    with torch.inference_mode():
        ref = linear(x)
        for mode in ("sparse", "direct"):
            out = layer.run(x, mode)
            assert out.is_contiguous()
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_choice_dispatches_on_batch_size():
    torch.manual_seed(0)
    layer = SparseLinear(nn.Linear(8, 4).eval())
    layer.set_decisions({1: "sparse", 64: "dense"})
    modes = [layer.mode_for(b) for b in (1, 2, 7, 8, 9, 64, 512)]
    assert modes == ["sparse", "sparse", "sparse", "dense", "dense", "dense", "dense"]  # nearest in log scale, ties up
    assert layer.weight is not None and layer.values is not None  # both kernels in use: both kept
    layer.set_decisions({1: "dense", 64: "dense"})
    assert layer.values is None
    with pytest.raises(ValueError, match="unknown kernel mode"):
        layer.set_decisions({1: "csr"})


def test_report_lists_each_layer_and_its_choice():
    model = _pruned("fggp_resnet20_cifar", 0.98, "global")
    fast = sparsify_for_inference(model, batch_sizes=(4, 1), repeats=1)
    report = inference_report(fast)
    assert report["batch_sizes"] == [1, 4] and report["force"] is None
    assert len(report["layers"]) == 20
    for name, layer in report["layers"].items():
        assert set(layer["decisions"]) == {1, 4}
        assert set(layer["decisions"].values()) <= set(MODES_ALL)
        if name == "conv1":  # first conv is not pruned: below min_sparsity, but an image stem (3 input channels)
            assert layer["sparsity"] == 0.0
            if NATIVE:
                # batch 1: too dense for the sparse kernels, timed against Winograd only (a 3x3 stride-1 conv);
                # batch > 1: an image stem, so the direct kernel too (no torch CSR for a dense layer)
                assert set(layer["timings_s"][1]) == {"dense", "winograd"}
                assert set(layer["timings_s"][4]) == {"dense", "winograd", "direct"}
            else:  # no native library: no Winograd, no direct kernel; kept dense, untimed
                assert layer["decisions"] == {1: "dense", 4: "dense"} and not layer["timings_s"]
        else:
            assert set(layer["timings_s"]) == {1, 4}
    assert report["native"]["available"] == NATIVE
    table = format_inference_report(report)
    assert "layer3.2.conv2" in table and "b4" in table and "native direct kernel" in table
    assert "sparsity=" in repr(fast.layer3[2].conv2)


def test_dense_layers_that_are_not_stems_stay_untimed():
    """Below min_sparsity only image stems (<= 4 input channels) meet the sparse kernels; a dense 3x3
    stride-1 conv is timed against Winograd only, a dense 1x1 against the native GEMM only, and a strided
    conv not at all."""
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1),
    ).eval()
    fast = sparsify_for_inference(model, batch_sizes=(4,), repeats=1, input_size=(3, 8, 8))
    layers = inference_report(fast)["layers"]
    assert layers["6"]["decisions"] == {4: "dense"} and not layers["6"]["timings_s"]
    assert set(layers["4"]["timings_s"].get(4, {})) == ({"dense", "gemm"} if NATIVE else set())
    assert set(layers["2"]["timings_s"].get(4, {})) == ({"dense", "winograd"} if NATIVE else set())
    assert set(layers["0"]["timings_s"].get(4, {})) == ({"dense", "winograd", "direct"} if NATIVE else set())


def test_sparsified_model_deep_copies_and_moves_dtype():
    model = _pruned("small_vgg_cifar", 0.9, "global")
    fast = sparsify_for_inference(model, force="sparse")
    x = _input("v", 2)
    with torch.inference_mode():
        out = fast(x)  # builds the CSR caches
        twin = copy.deepcopy(fast)
        torch.testing.assert_close(twin(x), out, rtol=0, atol=0)
        double = copy.deepcopy(fast).double()
        torch.testing.assert_close(double(x.double()).float(), model(x), rtol=1e-4, atol=1e-5)


def test_training_mode_and_gradients_are_refused():
    model = _pruned("fggp_resnet20_cifar", 0.9, "random")
    with pytest.raises(TrainingModeError, match="eval"):
        sparsify_for_inference(model.train(), force="dense")
    model.eval()
    model.layer2.train()  # a submodule left in training mode counts too
    with pytest.raises(TrainingModeError):
        sparsify_for_inference(model, force="dense")
    fast = sparsify_for_inference(model.eval(), force="sparse")
    with pytest.raises(TrainingModeError, match="inference only"):
        fast.train()(_input("r", 1))
    fast.eval()
    with pytest.raises(TrainingModeError, match="inference_mode"):
        fast(_input("r", 1).requires_grad_())


def test_bad_arguments_are_reported():
    model = _pruned("fggp_resnet20_cifar", 0.9, "random")
    with pytest.raises(SparsifyArgumentError, match="force"):
        sparsify_for_inference(model, force="fast")
    with pytest.raises(SparsifyArgumentError, match="batch_sizes"):
        sparsify_for_inference(model, batch_sizes=())
    with pytest.raises(SparsifyArgumentError, match="batch_sizes"):
        sparsify_for_inference(model, batch_sizes=(1, 0))
    with pytest.raises(SparsifyArgumentError, match="input_size"):
        sparsify_for_inference(TinyVgg().eval())  # no pretrained_cfg
    with pytest.raises(SparsifyArgumentError, match="input_size"):
        sparsify_for_inference(model, batch_sizes=(1,), input_size=(5, 32, 32))  # the model takes 3 channels


def test_unsupported_layers_stay_as_they_are():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 3, padding="same"),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),
    ).eval()
    fast = sparsify_for_inference(model, force="sparse")
    assert isinstance(fast[0], SparseConv2d)
    assert all(type(fast[i]) is nn.Conv2d for i in (1, 2, 3))
    skipped = inference_report(fast)["skipped_layers"]
    assert set(skipped) == {"1", "2", "3"} and "groups=8" in skipped["1"]
    x = torch.randn(2, 4, 6, 6)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)


def test_exported_at_package_level():
    assert fggp_hub.sparsify_for_inference is sparsify_for_inference
    assert "sparsify_for_inference" in fggp_hub.__all__


@needs_native
@pytest.mark.parametrize("batch", [1, 2, 16])
def test_direct_kernel_chains_in_chwn_layout_with_fused_relu_and_pools(batch):
    """VGG-style stack on the direct kernel: activations stay CHWN from layer to layer, ReLUs fused, pools kept."""
    model = _pruned("small_vgg_cifar", 0.9, "global")
    fast = sparsify_for_inference(model, force="direct")
    report = inference_report(fast)
    assert len(report["fused_relus"]) == 6 and report["layout_pools"]  # every conv's ReLU, the max-pools
    assert all(isinstance(fast.get_submodule(r), nn.Identity) for _, r in report["fused_relus"])
    assert all(isinstance(fast.get_submodule(p), (ChwnMaxPool2d, ChwnGlobalAvgPool2d)) for p in report["layout_pools"])
    assert any(isinstance(fast.get_submodule(p), ChwnMaxPool2d) for p in report["layout_pools"])
    seen = []
    # CHWN with dense (H, W, N) planes; the channel stride may be padded (cache sets), so not "contiguous"
    handles = [m.register_forward_pre_hook(lambda mod, a: seen.append(layers_module._is_chwn(a[0])))
               for m in fast.modules() if isinstance(m, SparseConv2d)]
    x = _input("v", batch)
    with torch.inference_mode():
        _assert_same_logits(model(x), fast(x))
    for h in handles:
        h.remove()
    assert all(seen[1:])  # every conv after the first reads its input in place


@needs_native
@pytest.mark.parametrize("shape", [(64, 64, 32, 32), (2, 5, 9, 11), (13, 3, 8, 8), (9, 7, 1, 17), (8, 16, 7, 1)])
def test_native_layout_transposes_are_exact(shape):
    """NCHW -> CHWN (into the padded buffer) and back, 8 x 8 AVX blocks plus scalar edges, on odd shapes too."""
    x = torch.randn(*shape)
    y, cs = layers_module._as_chwn(x)
    assert torch.equal(y, x.permute(1, 2, 3, 0)) and y.stride(0) == cs
    back = layers_module._as_nchw(y.permute(3, 0, 1, 2))
    assert back.is_contiguous() and torch.equal(back, x)
    # a channel slice of an NCHW batch (batch stride > C*H*W) reads right too
    wide = torch.randn(shape[0], shape[1] + 3, *shape[2:])[:, 1 : 1 + shape[1]]
    assert torch.equal(layers_module._as_chwn(wide)[0], wide.permute(1, 2, 3, 0))


@needs_native
@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (3, 1), ((2, 3), (1, 2))])
@pytest.mark.parametrize("layout", ["nchw", "chwn", "channels_last"])
def test_max_pool_matches_torch_in_every_layout(kernel, stride, layout):
    """The native pools (CHWN, and NCHW for a dense layer's output) equal F.max_pool2d; other layouts go to torch."""
    pool = ChwnMaxPool2d(nn.MaxPool2d(kernel, stride))
    x = torch.randn(6, 10, 13, 12)
    if layout == "chwn":
        x = layers_module._as_chwn(x)[0].permute(3, 0, 1, 2)
    elif layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(pool(x), F.max_pool2d(x, kernel, stride))


@pytest.mark.parametrize("shape", [(6, 10, 13, 12), (64, 33, 4, 4), (1, 5, 3, 3), (2, 1, 32, 32)])
@pytest.mark.parametrize("layout", ["nchw", "chwn", "channels_last"])
def test_global_avg_pool_matches_torch_in_every_layout(shape, layout):
    """The CHWN global pool (a mean over each padded channel plane) equals F.adaptive_avg_pool2d(x, 1)."""
    pool = ChwnGlobalAvgPool2d()
    x = torch.randn(*shape)
    ref = F.adaptive_avg_pool2d(x, 1)
    if layout == "chwn":
        x = layers_module._as_chwn(x)[0].permute(3, 0, 1, 2)
    elif layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(pool(x), ref, rtol=1e-6, atol=1e-6)
    assert pool(x).shape == (shape[0], shape[1], 1, 1)
    assert ChwnGlobalAvgPool2d.supports(nn.AdaptiveAvgPool2d(1)) and ChwnGlobalAvgPool2d.supports(nn.AdaptiveAvgPool2d((1, 1)))
    assert not ChwnGlobalAvgPool2d.supports(nn.AdaptiveAvgPool2d(2)) and not ChwnGlobalAvgPool2d.supports(nn.AvgPool2d(2))


def test_resnet_global_pool_is_replaced_and_logits_match():
    model = _pruned("fggp_resnet20_cifar", 0.9, "global")
    fast = sparsify_for_inference(model, force="direct" if NATIVE else "sparse")
    pools = inference_report(fast)["layout_pools"]
    assert any(isinstance(fast.get_submodule(p), ChwnGlobalAvgPool2d) for p in pools)
    x = torch.randn(8, 3, 32, 32)
    with torch.inference_mode():
        ref = model(x)
        assert (fast(x) - ref).abs().max() <= TOL * ref.abs().max()


@needs_native
def test_direct_kernel_handles_strided_convs_and_empty_layers():
    """Stride 2 (polyphase rewrite), a 1x1 stride-2 projection and a layer with no non-zero at all."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1, stride=2), nn.Conv2d(8, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, stride=3, padding=2, dilation=2),
    ).eval()
    with torch.no_grad():
        model[3].weight.zero_()
        model[0].weight.mul_(torch.rand_like(model[0].weight) > 0.5)
    fast = sparsify_for_inference(model, force="direct")
    for batch in (1, 5):
        x = torch.randn(batch, 3, 17, 16)
        with torch.inference_mode():
            torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize("block", [0, 1, 3, 8, 64])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch", [1, 5, 16])
def test_direct_kernel_cache_blocks_match_conv2d(block, stride, batch):
    """Every input-channel cache blocking (partial sums through the output tile, ReLU on the last block only)."""
    torch.manual_seed(block * 7 + stride + batch)
    conv = nn.Conv2d(20, 12, 3, stride=stride, padding=1).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.6)
        conv.bias.normal_()
    layer = SparseConv2d(conv)
    layer.relu = True
    layer.direct_ci_block = block
    x = torch.randn(batch, 20, 11, 9)
    with torch.inference_mode():
        ref = torch.relu(conv(x))
        torch.testing.assert_close(layer.run(x, "direct"), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.run(x, f"direct@{block}"), ref, rtol=1e-5, atol=1e-5)
    assert layer.block_candidates()[0] == 0


@needs_native
@pytest.mark.parametrize(
    "kernel, padding, dilation",
    [(3, 1, 1), (5, 2, 1), (3, 2, 2), ((1, 3), (0, 1), 1), (3, 0, 1)],  # 1x1: the packed kernel (test_pointwise)
)
@pytest.mark.parametrize("batch", [16, 64])
def test_direct_kernel_interior_tiles_match_the_per_tap_loop(kernel, padding, dilation, batch, monkeypatch):
    """Interior tiles run one flat loop over precomputed input offsets; border tiles the per-tap loop.

    Both must equal F.conv2d (residual and ReLU fused), with and without cache blocks, and the
    result must not depend on whether the offset table exists.
    """
    torch.manual_seed(batch)
    conv = nn.Conv2d(24, 16, kernel, padding=padding, dilation=dilation).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.5)
        conv.bias.normal_()
    layer = SparseConv2d(conv)
    layer.relu = True
    x = torch.randn(batch, 24, 12, 10)
    with torch.inference_mode():
        ref_plain = conv(x)
        res = torch.randn_like(ref_plain)
        ref = torch.relu(ref_plain + res)
        for block in (0, 8):
            torch.testing.assert_close(layer.run(x, f"direct@{block}", res), ref, rtol=1e-5, atol=1e-5)
        assert any(table is not None for _, table in layer._offset_tables.values())  # the flat loop was set up
        with_offsets = layer.run(x, "direct@0", res)
        monkeypatch.setattr(layers_module, "_input_offsets", lambda *a: None)
        without = layer.run(x, "direct@0", res)
    torch.testing.assert_close(with_offsets, without, rtol=1e-6, atol=1e-6)


def test_block_candidates_add_an_l1_sized_block_for_large_inputs():
    """With the batch size known, the tuner also times the block whose input rows fit L1 (here 3x3, batch 64)."""
    conv = nn.Conv2d(256, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.7)
    layer = SparseConv2d(conv)
    plain = layer.block_candidates()
    l1 = layers_module._L1_BLOCK_BYTES // (4 * 3 * (64 + 2 * 64)) // 4 * 4
    assert plain[0] == 0 and l1 not in plain
    packed = layer._packed_candidates(64)  # then the packed-tile kernel's settings (tests/inference/test_packed.py)
    assert packed and all(isinstance(s, tuple) for s in packed)
    assert layer.block_candidates(batch=64) == [*plain, l1, *packed]
    assert layer.block_candidates(48, batch=64) == layer.block_candidates(48)  # explicit targets: only those


@needs_native
@pytest.mark.parametrize("kernel, stride, block", [(3, 1, 0), (3, 1, 8), (1, 1, 0), (3, 2, 0)])
def test_streaming_stores_give_the_same_output(kernel, stride, block, monkeypatch):
    """Outputs over _STREAM_MIN_BYTES are written with non-temporal stores (last block, aligned full tiles)."""
    torch.manual_seed(kernel + stride + block)
    conv = nn.Conv2d(24, 16, kernel, stride=stride, padding=kernel // 2).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.5)
    layer = SparseConv2d(conv)
    layer.relu = True
    x = torch.randn(64, 24, 12, 10)
    with torch.inference_mode():
        res = torch.randn_like(conv(x))
        plain = layer.run(x, f"direct@{block}", res)
        monkeypatch.setattr(layers_module, "_STREAM_MIN_BYTES", 0)
        streamed = layer.run(x, f"direct@{block}", res)
        torch.testing.assert_close(streamed, torch.relu(conv(x) + res), rtol=1e-5, atol=1e-5)
    assert torch.equal(streamed, plain)


@needs_native
def test_tuning_records_the_chosen_cache_block():
    model = _pruned("small_vgg_cifar", 0.7, "global")
    fast = sparsify_for_inference(model, batch_sizes=(4,), repeats=1, min_speedup=1.0)
    for name, lay in inference_report(fast)["layers"].items():
        layer = fast.get_submodule(name)
        assert "direct" not in lay["decisions"].values() or 4 in lay["direct_ci_blocks"]
        assert not any(m.startswith("direct@") for m in lay["timings_s"].get(4, {}))
        if isinstance(layer, SparseConv2d) and layer.values is not None:
            assert set(layer.direct_blocks.values()) <= set(layer.block_candidates(batch=4))
    x = _input("v", 4)
    with torch.inference_mode():
        _assert_same_logits(model(x), fast(x))


def test_direct_mode_falls_back_to_torch_without_the_library(monkeypatch):
    monkeypatch.setattr(layers_module, "native_library", lambda: None)
    model = _pruned("fggp_resnet20_cifar", 0.9, "global")
    fast = sparsify_for_inference(model, force="direct")
    layer = fast.layer1[0].conv1
    assert not layer.direct_supported()
    x = _input("r", 3)
    with torch.inference_mode():
        _assert_same_logits(model(x), fast(x))
    tuned = sparsify_for_inference(model, batch_sizes=(1, 2), repeats=1)
    assert all(m != "direct" for lay in inference_report(tuned)["layers"].values() for m in lay["decisions"].values())


@needs_native
def test_tuning_can_pick_the_direct_kernel_and_stays_exact():
    model = _pruned("small_vgg_cifar", 0.98, "global")
    fast = sparsify_for_inference(model, batch_sizes=(1, 16), repeats=1, min_speedup=1.0)
    report = inference_report(fast)
    modes = {m for lay in report["layers"].values() for m in lay["decisions"].values()}
    assert modes <= set(MODES_ALL) and set(MODES_ALL) == set(layers_module.MODES)
    for lay in report["layers"].values():
        for b, t in lay["timings_s"].items():
            assert lay["decisions"][b] in t and "dense" in t  # chosen among the timed kernels
            assert t[lay["decisions"][b]] <= t["dense"]  # never a kernel slower than dense
    for batch in (1, 16, 5):
        x = _input("v", batch)
        with torch.inference_mode():
            _assert_same_logits(model(x), fast(x))


def test_native_build_is_cached_and_can_be_disabled(tmp_path, monkeypatch):
    from fggp_hub.inference import native

    monkeypatch.setattr(native, "_state", {"tried": False, "lib": None, "reason": "not built yet", "path": None})
    monkeypatch.setenv(native.NATIVE_ENV, "0")
    assert native.native_library() is None and "FGGP_HUB_NATIVE" in native.native_status()["reason"]
    if not NATIVE:
        return
    monkeypatch.setattr(native, "_state", {"tried": False, "lib": None, "reason": "not built yet", "path": None})
    monkeypatch.setenv(native.NATIVE_ENV, "1")
    monkeypatch.setenv(native.NATIVE_CACHE_ENV, str(tmp_path))
    assert native.native_library() is not None
    built = list(tmp_path.glob("libfggp_sparse_*.so"))
    assert len(built) == 1 and native.native_status()["library"] == str(built[0])


@pytest.mark.parametrize("mode", MODES_ALL)
def test_every_mode_refuses_an_input_with_the_wrong_channel_count(mode):
    """The native kernels trust the shapes (a 16-channel layer read a 12- or 20-channel input past its
    buffers): every mode raises one clear error instead, as F.conv2d / F.linear would."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 8, 1).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.5)
    layer = SparseConv2d(conv)
    with torch.inference_mode():
        for shape in [(4, 12, 5, 5), (4, 20, 5, 5), (12, 5, 5)]:
            with pytest.raises(ValueError, match=r"expects a 4-D \(N, 16, H, W\) input"):
                layer.run(torch.randn(*shape), mode)
        assert layer.run(torch.randn(4, 16, 5, 5), mode).shape == (4, 8, 5, 5)
    linear = SparseLinear(nn.Linear(10, 3).eval())
    with torch.inference_mode():
        for shape in [(4, 20), (2, 5)]:
            with pytest.raises(ValueError, match="last dimension is 10"):
                linear.run(torch.randn(*shape), mode)
        assert linear.run(torch.randn(4, 10), mode).shape == (4, 3)
