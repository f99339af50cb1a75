"""recipes/prune.py beyond CIFAR: sparse fine-tuning (--init-from) and the ImageNet recipe's streaming path."""
import json

import pytest
import timm
import torch
from safetensors.torch import load_file

import fggp_hub
from fggp_hub.data.testing import make_fake_imagefolder

from .test_prune_runner import ROOT, _results, _run

IMAGENET_RECIPE = ROOT / "recipes" / "imagenet1k_resnet50_s90.yaml"


@pytest.fixture(scope="module")
def sparse_source(tmp_path_factory):
    """A published-style sparse ResNet-20 (90 % of prunable weights zero) exported to a folder."""
    torch.manual_seed(0)
    model = timm.create_model("fggp_resnet20_cifar", num_classes=10)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and name != "conv1.weight":
                p.mul_((torch.rand_like(p) > 0.9).float())
    folder = tmp_path_factory.mktemp("source") / "resnet20-cifar10-s90-src"
    return fggp_hub.export(model, folder, name="resnet20-cifar10-s90-src")


def _zeros(state):
    return {k: v == 0 for k, v in state.items() if v.dim() > 1 and not k.startswith("fc.") and k != "conv1.weight"}


@pytest.fixture(scope="module")
def tiny_imagefolder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    classes = ("n01440764", "n01443537", "n01484850")
    make_fake_imagefolder(root, classes, per_class=8, size=(48, 40), split="train", seed=0, fmt="jpeg")
    make_fake_imagefolder(root, classes, per_class=4, size=(40, 52), split="val", seed=1, fmt="jpeg")
    return root


def test_init_from_keeps_the_mask_fixed_on_a_new_dataset(tmp_path, sparse_source):
    """Transfer: CIFAR-10 sparse checkpoint -> a 2-class ImageFolder; pruned weights stay zero."""
    data = make_fake_imagefolder(tmp_path / "pets", ("cat", "dog"), per_class=32, size=32, split="train", seed=2)
    make_fake_imagefolder(data, ("cat", "dog"), per_class=8, size=32, split="test", seed=3)
    _run(["--init-from", str(sparse_source), "--data.dataset", str(data), "--train.epochs", "2",
          "--train.batch_size", "16", "--tracker", "null", "--output_dir", "ft", "--export.name", "resnet20-pets-s90-ft",
          "--export.hub", str(tmp_path / "hub")], tmp_path)
    res = _results(tmp_path / "ft")
    assert res["optimizer_steps"] == 8 and res["num_images"] == 16
    before = _zeros(load_file(str(sparse_source / "model.safetensors")))
    after_state = load_file(str(sorted((tmp_path / "ft" / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))
    after = _zeros(after_state)
    assert before.keys() == after.keys()
    for k in before:  # the mask is held: exactly the source's zeros, and the survivors trained
        assert torch.equal(before[k], after[k]), k
    src = load_file(str(sparse_source / "model.safetensors"))
    assert any(not torch.equal(src[k], after_state[k]) for k in before)
    assert after_state["fc.weight"].shape == (2, 64)  # a fresh head for the new classes
    model = fggp_hub.load("local/resnet20-pets-s90-ft", hub=str(tmp_path / "hub"))
    assert model.num_classes == 2


def test_init_from_bad_name_is_one_line(tmp_path):
    proc = _run(["--init-from", "resnet20-cifar10-s91-nosuch", "--tracker", "null", "--output_dir", "x"], tmp_path,
                check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert err and err[-1].startswith("error:") and "resnet20-cifar10-s91-nosuch" in err[-1]


def test_imagenet_recipe_runs_on_a_tiny_imagefolder(tmp_path, tiny_imagefolder):
    """The shipped ImageNet recipe (timm resnet50, streaming decode) end to end, only made tiny."""
    proc = _run(["--recipe", str(IMAGENET_RECIPE), "--data.dataset", str(tiny_imagefolder), "--data.test_split", "val",
                 "--data.image_size", "32", "--data.num_workers", "0", "--num_classes", "null",
                 "--train.batch_size", "8", "--train.epochs", "3", "--train.mixed_precision", "no",
                 "--train.checkpoint_every", "0", "--pruning.interval", "1", "--pruning.rate", "0.9",
                 "--tracker", "null", "--output_dir", "inet", "--export.hub", str(tmp_path / "hub")], tmp_path)
    res = _results(tmp_path / "inet")
    assert res["optimizer_steps"] == 9 and res["num_images"] == 12  # 24 train images / 8; all 12 val images
    assert res["sparsity"] == pytest.approx(0.9, abs=1e-4)
    config = json.loads((tmp_path / "inet" / "export" / "resnet50-imagenet1k-s90" / "config.json").read_text())
    assert config["architecture"] == "resnet50" and config["num_classes"] == 3
    assert "local/resnet50-imagenet1k-s90" in proc.stdout
    model = fggp_hub.load("local/resnet50-imagenet1k-s90", hub=str(tmp_path / "hub"))
    assert fggp_hub.sparsity_stats(model)["sparsity"] == pytest.approx(res["sparsity"], abs=1e-9)


def test_streaming_loader_is_seeded_sharded_and_resumable(tiny_imagefolder):
    from fggp_hub.data import make_streaming_loaders

    def loaders(rank=0, world=1, seed=0):
        return make_streaming_loaders(tiny_imagefolder, train_split="train", test_split="val", batch_size=4,
                                      image_size=32, device="cpu", seed=seed, rank=rank, world_size=world,
                                      num_workers=0, mean=(0.5,) * 3, std=(0.25,) * 3, channels_last=False)

    loader, test, source = loaders()
    assert source.num_classes == 3 and len(test.dataset) == 12 and len(loader) == 6
    first = list(loader)  # epoch 0
    again, _, _ = loaders()
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    torch.manual_seed(123)  # the caller's RNG does not leak into (or get changed by) augmentation
    state = torch.get_rng_state()
    resumed, _, _ = loaders()
    tail = list(resumed.skip_first_batches(4))
    assert torch.equal(torch.get_rng_state(), state)
    assert len(tail) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(first[4:], tail))
    epoch1 = next(iter(loader))  # the loader moved on to epoch 1: a new order and new crops
    assert not torch.equal(epoch1[0], first[0][0])
    other_seed, _, _ = loaders(seed=1)
    assert not torch.equal(next(iter(other_seed))[0], first[0][0])
    shards = [loaders(rank=r, world=2)[0] for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    seen = torch.cat([s.indices(0) for s in shards])
    assert sorted(seen.tolist()) == list(range(24))
