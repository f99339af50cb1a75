from pathlib import Path

import pytest

from fggp_hub.recipes import RecipeError, load_recipe, parse_overrides

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_every_shipped_recipe_loads_and_follows_the_protocol():
    paper = sorted(RECIPES.glob("vgg19_cifar10_s*.yaml")) + sorted(RECIPES.glob("resnet50_cifar10_s*.yaml"))
    paper = [p for p in paper if not p.stem.endswith("_cpu")]  # reduced-budget CPU recipes are not the protocol
    assert len(paper) == 12
    for path in paper:
        r = load_recipe(path)
        assert r.train.lr_schedule == "step" and not r.data.drop_last  # the authors keep the last batch: T = 125,120
        assert r.train.epochs == 160 and r.train.batch_size == 64 and r.train.lr == 0.1
        assert r.train.lr_milestones == [80, 120] and r.train.label_smoothing == 0.1
        assert r.train.nesterov and r.train.weight_decay == 5e-4
        assert r.pruning.interval == 2000 and r.pruning.end_fraction == 0.8 and r.pruning.rate == 0.5
        assert r.pruning.method == "fggp"
        assert r.pruning.initial_sparsity == (0.5 if path.stem.endswith("_erk") else 0.0)
        assert r.pruning.final_sparsity == int(path.stem.split("_s")[1][:2]) / 100
    quick = load_recipe(RECIPES / "quick_cpu.yaml")
    assert quick.model == "fggp_resnet20_cifar" and quick.data.train_subset
    for path in RECIPES.glob("*.yaml"):  # every other shipped recipe is valid too
        load_recipe(path)
    imagenet = load_recipe(RECIPES / "imagenet1k_resnet50_s90.yaml")
    assert imagenet.model == "resnet50" and imagenet.data.streaming and imagenet.train.mixed_precision == "bf16"


def test_overrides_win_and_are_typed():
    r = load_recipe(RECIPES / "vgg19_cifar10_s95.yaml", ["--pruning.method", "gmp", "--train.epochs=3", "--train.lr", "1"])
    assert r.pruning.method == "gmp" and r.train.epochs == 3 and r.train.lr == 1.0
    assert r.pruning.final_sparsity == 0.95  # untouched keys keep the file's values
    assert parse_overrides(["--a.b-c", "[1, 2]", "--x=null"]) == {"a": {"b_c": [1, 2]}, "x": None}
    assert load_recipe(None, ["--train.mixed_precision", "no"]).train.mixed_precision == "no"  # YAML reads no as false


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--train.epoch", "2"], r"unknown recipe key 'train.epoch' \(did you mean train.epochs\?\)"),
        (["--train.epochs", "two"], r"train.epochs: expected an integer"),
        (["--pruning.method", "magnitude"], r"pruning.method: 'magnitude' is not one of"),
        (["--pruning.final_sparsity", "1.5"], r"pruning.final_sparsity: must be in \(0, 1\)"),
        (["--train.nesterov", "3"], r"train.nesterov: expected true or false"),
        (["--train", "5"], r"train: expected a mapping"),
        (["--train.epochs"], r"--train.epochs needs a value"),
        (["stray"], r"expected an override like"),
    ],
)
def test_bad_keys_and_values_name_the_key(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, overrides)


def test_bad_recipe_files(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="must hold a mapping"):
        load_recipe(listy)
    typo = tmp_path / "typo.yaml"
    typo.write_text("pruning:\n  final_sparsty: 0.9\n")
    with pytest.raises(RecipeError, match="pruning.final_sparsty.*did you mean pruning.final_sparsity"):
        load_recipe(typo)


def test_default_export_names_are_valid_zoo_names():
    from fggp_hub.hub.zoo import is_zoo_name
    from fggp_hub.pruning import METHODS
    from fggp_hub.recipes import default_export_name

    for path in sorted(RECIPES.glob("*_cifar10_s*.yaml")):
        for method in METHODS:
            name = default_export_name(load_recipe(path, ["--pruning.method", method]))
            assert is_zoo_name(name), name
    erk = load_recipe(RECIPES / "vgg19_cifar10_s95_erk.yaml", ["--pruning.method", "gmp"])
    assert default_export_name(erk) == "vgg19-cifar10-s95-gmp_erk"
