"""Run folders: nothing of an earlier run is lost, resumes refuse changed recipes, checkpoints are crash-safe."""
import math
import warnings

import pytest
import yaml

from fggp_hub.recipes import RecipeError, load_recipe, recipe_to_dict
from fggp_hub.recipes import run_folder


def _run_dir(tmp_path, **changes):
    out = tmp_path / "run"
    out.mkdir()
    recipe = load_recipe(None, ["--output_dir", str(out)])
    data = recipe_to_dict(recipe)
    for key, value in changes.items():
        section, name = key.split(".")
        data[section][name] = value
    (out / "recipe.resolved.yaml").write_text(yaml.safe_dump(data))
    return out


def _checkpoint(root, name, complete=True):
    folder = root / "checkpoints" / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x")
    if complete:
        (folder / "optimizer.bin").write_bytes(b"x")
        (folder / "custom_checkpoint_0.pkl").write_bytes(b"x")
    return folder


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path):
    out = _run_dir(tmp_path)
    _checkpoint(out, "step_000010")
    with pytest.raises(RecipeError, match="--resume auto"):
        run_folder.refuse_existing_run(out, None, overwrite=False)
    assert (out / "checkpoints" / "step_000010").is_dir()  # nothing was touched
    run_folder.refuse_existing_run(out, None, overwrite=True)  # asked explicitly: the old run goes
    assert not (out / "checkpoints").exists() and not (out / "recipe.resolved.yaml").exists()


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RecipeError, match="holds no run of ours"):
        run_folder.refuse_existing_run(tmp_path, None, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_refuses_a_recipe_that_changes_the_result(tmp_path):
    out = _run_dir(tmp_path)
    same = load_recipe(None, ["--output_dir", str(out), "--train.eval_every", "3", "--resume", "auto"])
    run_folder.check_resume_compatible(out, same)  # reporting keys may change
    changed = load_recipe(None, ["--output_dir", str(out), "--pruning.final_sparsity", "0.8", "--resume", "auto"])
    with pytest.raises(RecipeError, match="pruning.final_sparsity"):
        run_folder.check_resume_compatible(out, changed)


def test_a_run_recorded_before_drop_last_existed_resumes_as_it_started(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    data = recipe_to_dict(load_recipe(None, ["--output_dir", str(out)]))
    del data["data"]["drop_last"]
    (out / "recipe.resolved.yaml").write_text(yaml.safe_dump(data))
    recipe = run_folder.check_resume_compatible(out, load_recipe(None, ["--output_dir", str(out)]))
    assert recipe.data.drop_last is True


def test_resume_auto_takes_the_newest_complete_checkpoint(tmp_path):
    out = _run_dir(tmp_path)
    good = _checkpoint(out, "step_000100")
    _checkpoint(out, "step_000200", complete=False)  # a crash mid-save
    (out / "checkpoints" / ".partial-step_000300").mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_folder.find_resume_checkpoint(out, "auto") == good
    assert any("step_000200" in str(w.message) for w in caught)
    assert any("partial" in str(w.message) for w in caught)


def test_resume_auto_without_a_complete_checkpoint_is_one_line(tmp_path):
    out = _run_dir(tmp_path)
    _checkpoint(out, "step_000010", complete=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RecipeError, match="no complete checkpoint"):
            run_folder.find_resume_checkpoint(out, "auto")


def test_legacy_checkpoint_names_still_resume(tmp_path):
    out = _run_dir(tmp_path)
    _checkpoint(out, "checkpoint_0")
    newest = _checkpoint(out, "checkpoint_1")
    assert run_folder.find_resume_checkpoint(out, "auto") == newest


def test_old_checkpoints_are_pruned_to_keep(tmp_path):
    out = _run_dir(tmp_path)
    for step in (10, 20, 30):
        _checkpoint(out, f"step_{step:06d}")
    (out / "checkpoints" / ".partial-step_000040").mkdir()
    run_folder.prune_old_checkpoints(out, keep=2)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000020", "step_000030"]


def test_cosine_schedule_warms_up_and_ends_at_zero():
    recipe = load_recipe(None, ["--train.lr_schedule", "cosine", "--train.warmup_epochs", "1", "--train.epochs", "4"])
    f = run_folder.lr_lambda(recipe, steps_per_epoch=10, total_steps=40)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(25) == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 30)))
    assert f(40) == pytest.approx(0.0, abs=1e-12)
    step = run_folder.lr_lambda(load_recipe(None, ["--train.lr_milestones", "[2, 3]", "--train.epochs", "4"]), 10, 40)
    assert [step(s) for s in (19, 20, 30)] == pytest.approx([1.0, 0.1, 0.01])


def test_progressive_resize_stages():
    recipe = load_recipe(None, ["--train.progressive_resize", "[[0.0, 24], [0.5, 32]]"])
    assert [run_folder.resize_for_step(recipe, s, 100) for s in (0, 49, 50, 99)] == [24, 24, 32, 32]
    assert run_folder.resize_for_step(load_recipe(None), 0, 100) is None


@pytest.mark.parametrize("override, key", [
    (["--train.max_steps", "-1"], "train.max_steps"),
    (["--pruning.end_fraction", "1.5"], "pruning.end_fraction"),
    (["--data.train_subset", "-8"], "data.train_subset"),
    (["--num_classes", "-1"], "num_classes"),
    (["--train.eval_every", "0"], "train.eval_every"),
    (["--train.log_every", "0"], "train.log_every"),
    (["--train.lr", ".nan"], "train.lr"),
    (["--seed", "-3"], "seed"),
    (["--train.momentum", "1.5"], "train.momentum"),
    (["--train.weight_decay", "-1"], "train.weight_decay"),
    (["--train.label_smoothing", "1.0"], "train.label_smoothing"),
    (["--data.image_size", "0"], "data.image_size"),
    (["--pruning.final_sparsity", ".inf"], "pruning.final_sparsity"),
    (["--train.lr_schedule", "linear"], "train.lr_schedule"),
    (["--train.progressive_resize", "[[0.5, 24], [0.1, 32]]"], "train.progressive_resize"),
])
def test_every_numeric_key_is_validated(override, key):
    with pytest.raises(RecipeError) as err:
        load_recipe(None, override)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_a_section_given_twice_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  epochs: 2\ntrain:\n  lr: 0.5\n")
    with pytest.raises(RecipeError, match="appears twice"):
        load_recipe(path)


def test_default_export_name_of_a_fractional_sparsity_is_a_zoo_name():
    from fggp_hub.hub.zoo import is_zoo_name
    from fggp_hub.recipes import default_export_name

    name = default_export_name(load_recipe(None, ["--pruning.final_sparsity", "0.995"]))
    assert name.endswith("-s99p5") and is_zoo_name(name)
