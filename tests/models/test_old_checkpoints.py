"""Checkpoints written by the model code of commit 581cc95 (before the timm-conventions
rewrite) still load, strictly, and give the same logits.

The fixtures in ``data/`` were made once by ``data/make_old_fixtures.py`` on that commit:
ResNet-20 as it is (the zoo architecture) and narrow versions of the bottleneck ResNet and
the VGG, each with random BN statistics and biases and 90 % of every weight zeroed.
"""
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import fggp_hub  # noqa: F401

DATA = Path(__file__).parent / "data"
FIXTURES = ["resnet20", "tiny_bottleneck_resnet", "tiny_vgg"]


def _fixture(tag: str) -> tuple[str, dict, Path, dict[str, torch.Tensor]]:
    path = DATA / f"{tag}_old.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    model_args = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(meta["model_args"]).items()}
    return meta["architecture"], model_args, path, load_file(DATA / f"{tag}_old_logits.safetensors")


@pytest.mark.parametrize("tag", FIXTURES)
def test_old_state_dict_loads_strictly_with_the_same_logits(tag):
    arch, model_args, path, io = _fixture(tag)
    model = timm.create_model(arch, **model_args).eval()
    model.load_state_dict(load_file(path), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"]), io["logits"])


@pytest.mark.parametrize("tag", FIXTURES)
def test_old_checkpoint_loads_through_timm_pretrained_path(tag):
    """The route of ``pretrained=True``: timm's loader and any ``pretrained_filter_fn`` the model has."""
    arch, model_args, path, io = _fixture(tag)
    model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **model_args).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"]), io["logits"])


@pytest.mark.parametrize("arch", ["fggp_resnet20_cifar", "fggp_resnet50_cifar", "fggp_vgg19_bn_cifar"])
def test_state_dict_keys_and_shapes_are_unchanged(arch):
    """Exported checkpoints are plain state dicts: any renamed or reshaped entry would break them."""
    expected = json.loads((DATA / "state_dict_keys_old.json").read_text())["keys"][arch]
    got = {k: list(v.shape) for k, v in timm.create_model(arch).state_dict().items()}
    assert list(got) == list(expected)  # same names, same order
    assert got == expected
