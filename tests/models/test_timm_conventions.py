"""The registered backbones behave like timm's own models (the conventions of timm's resnet.py / vgg.py)."""
import pytest
import timm
import torch
from timm.models._features import FeatureGetterNet, FeatureListNet

import fggp_hub  # noqa: F401

ARCHS = ["fggp_resnet20_cifar", "fggp_resnet50_cifar", "fggp_vgg19_bn_cifar"]
# (channels, stride) of every feature_info tap, for a 32x32 input
TAPS = {
    "fggp_resnet20_cifar": [(16, 1), (16, 1), (32, 2), (64, 4)],
    "fggp_resnet50_cifar": [(64, 1), (256, 1), (512, 2), (1024, 4), (2048, 8)],
    "fggp_vgg19_bn_cifar": [(64, 1), (128, 2), (256, 4), (512, 8), (512, 16)],
}
DEVICES = ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])


def _x(batch: int = 2, chans: int = 3, **kw) -> torch.Tensor:
    return torch.randn(batch, chans, 32, 32, generator=torch.Generator().manual_seed(0), **kw)


def _model(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs).eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ARCHS)
def test_factory_device_and_dtype(name, device):
    model = timm.create_model(name, device=device, dtype=torch.float64)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert {t.device.type for t in tensors.values()} == {device}
    assert {t.dtype for n, t in tensors.items() if not n.endswith("num_batches_tracked")} == {torch.float64}
    if device != "meta":
        assert model.eval()(_x(dtype=torch.float64).to(device)).dtype == torch.float64


@pytest.mark.parametrize("name", ARCHS)
def test_in_chans_is_an_attribute_timm_reads(name):
    model = _model(name, in_chans=1)
    assert model.in_chans == 1
    assert timm.models.get_model_input_config(model)["input_size"] == (1, 32, 32)
    assert timm.data.resolve_input_data_config(model)["input_size"] == (1, 32, 32)  # what timm's scripts feed it
    assert model(_x(chans=1)).shape == (2, 10)


@pytest.mark.parametrize("name", ARCHS)
def test_global_pool_empty_keeps_the_feature_map(name):
    model = _model(name, num_classes=0, global_pool="")
    chs, stride = TAPS[name][-1]
    x = _x()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, chs, 32 // stride, 32 // stride) == (2, model.num_features, *model.pretrained_cfg["pool_size"])
        torch.testing.assert_close(out, model.forward_features(x))
    # and back: a pooled classifier on the same trunk
    model.reset_classifier(4, "avg")
    assert model(x).shape == (2, 4)


@pytest.mark.parametrize("name", ARCHS)
def test_concat_pooling_sizes_the_head(name):
    model = _model(name, global_pool="catavgmax")
    assert model.head_hidden_size == 2 * model.num_features
    with torch.no_grad():
        assert model.forward_head(model.forward_features(_x()), pre_logits=True).shape == (2, model.head_hidden_size)
        assert model(_x()).shape == (2, 10)


@pytest.mark.parametrize("name", ARCHS)
def test_reset_classifier_follows_device_dtype_and_keeps_pool(name):
    model = _model(name, global_pool="max").double()
    fc_bias = model.get_classifier().bias is not None
    model.reset_classifier(5)
    head = model.get_classifier()
    assert head.weight.dtype == torch.float64 and head.out_features == 5
    assert (head.bias is not None) == fc_bias  # ResNet-50 keeps its bias-free fc
    assert model.global_pool.pool_type == "max"
    assert not head.training  # the model's mode, not a fresh module's
    with torch.no_grad():
        assert model(_x(dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
def test_reset_classifier_follows_the_device(device):
    """Like after ``model.cuda()``: the new head is built where the model's weights are."""
    model = _model("fggp_resnet20_cifar").to(device)
    model.reset_classifier(3)
    assert model.fc.weight.device.type == device
    if device != "meta":
        assert model(_x().to(device)).shape == (2, 3)


@pytest.mark.parametrize("name", ARCHS)
def test_features_only_shapes_for_every_out_index(name):
    """Shapes only, so on the meta device (values: see the forward_intermediates test)."""
    taps = TAPS[name]
    default = timm.create_model(name, features_only=True, device="meta")
    assert isinstance(default, FeatureListNet) and len(default.feature_info.channels()) == len(taps)
    x = torch.empty(2, 3, 32, 32, device="meta")
    assert [tuple(f.shape) for f in default(x)] == [(2, c, 32 // s, 32 // s) for c, s in taps]
    for i, (chs, stride) in enumerate(taps):
        model = timm.create_model(name, features_only=True, out_indices=(i,), device="meta")
        assert model.feature_info.channels() == [chs] and model.feature_info.reduction() == [stride]
        (feat,) = model(x)
        assert feat.shape == (2, chs, 32 // stride, 32 // stride)


@pytest.mark.parametrize("name", ARCHS)
def test_forward_intermediates_match_features_only(name):
    model = _model(name)
    x = _x()
    with torch.no_grad():
        final, taps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [(t.shape[1], 32 // t.shape[-1]) for t in taps] == TAPS[name]
        # the hook-free wrapper (FeatureListNet, same seed = same weights) sees the same maps
        listed = _model(name, features_only=True)(x)
        for a, b in zip(taps, listed, strict=True):
            torch.testing.assert_close(a, b)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        early = model.forward_intermediates(x, indices=[0, 2], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(last_two, taps[-2:])
    torch.testing.assert_close(early, [taps[0], taps[2]])


@pytest.mark.parametrize("name", ARCHS)
def test_features_only_getter_is_pruned_to_the_last_tap(name):
    model = _model(name, features_only=True, feature_cls="getter", out_indices=(1, 2))
    assert isinstance(model, FeatureGetterNet)
    assert model.model.num_classes == 0 and isinstance(model.model.get_classifier(), torch.nn.Identity)
    x = _x()
    with torch.no_grad():
        expected = _model(name).forward_intermediates(x, indices=[1, 2], intermediates_only=True)
        torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("name", ARCHS)
def test_torchscript_forward_matches_eager(name):
    model = _model(name)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(_x()), model(_x()))


@pytest.mark.parametrize("name", ARCHS)
def test_fx_trace_matches_eager(name):
    """BN folding for sparse inference finds conv -> BN pairs on this trace."""
    model = _model(name)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(_x()), model(_x()))


def test_grad_checkpointing_gives_the_same_gradients():
    grads = []
    for enable in (False, True):
        model = _model("fggp_resnet20_cifar").train()
        model.set_grad_checkpointing(enable)
        model(_x()).logsumexp(1).sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for g0, g1 in zip(*grads, strict=True):
        torch.testing.assert_close(g1, g0)


def test_vgg_refuses_grad_checkpointing_like_timm():
    """Per-layer checkpoints would start segments at an in-place ReLU (timm's VGG refuses it too)."""
    model = _model("fggp_vgg19_bn_cifar")
    model.set_grad_checkpointing(False)
    with pytest.raises(AssertionError, match="not supported"):
        model.set_grad_checkpointing()
