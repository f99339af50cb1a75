import pytest
import timm
import torch

import fggp_hub  # noqa: F401
from fggp_hub.pruning import prunable_parameters


@pytest.mark.parametrize(
    "name, params, prunable",
    [
        ("fggp_vgg19_bn_cifar", 20_040_522, 20_024_000),
        ("fggp_resnet50_cifar", 23_520_832, 23_467_712),
        ("fggp_resnet20_cifar", 269_722, 268_336),
    ],
)
def test_registered_models_match_the_spec(name, params, prunable):
    assert name in timm.list_models("fggp_*")
    model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    # the spec's prunable count includes the first conv
    assert sum(p.numel() for p in prunable_parameters(model, include_first_conv=True).values()) == prunable
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["num_classes"] == 10
    assert cfg["mean"] == pytest.approx((0.4914, 0.4822, 0.4465))
    modules = dict(model.named_modules())
    assert isinstance(modules[cfg["first_conv"]], torch.nn.Conv2d)
    assert modules[cfg["classifier"]] is model.get_classifier()
    model.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        out = model(x)
        assert out.shape == (2, 10)
        feats = model.forward_features(x)
        assert torch.allclose(model.forward_head(feats), out)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)


def test_reset_classifier_and_num_classes():
    model = timm.create_model("fggp_resnet20_cifar", num_classes=100)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    model.reset_classifier(7)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    r50 = timm.create_model("fggp_resnet50_cifar")
    assert r50.fc.bias is None
    r50.reset_classifier(5)
    assert r50.fc.bias is None and r50.fc.out_features == 5
    vgg = timm.create_model("fggp_vgg19_bn_cifar", num_classes=0)
    assert vgg(torch.randn(1, 3, 32, 32)).shape == (1, 512)
