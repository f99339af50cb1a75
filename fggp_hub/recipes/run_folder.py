"""A training run's folder: crash-safe checkpoints, resume checks, and the schedules the runner steps.

Layout of ``output_dir``::

    recipe.resolved.yaml        the recipe the run started with (never rewritten on resume)
    checkpoints/step_000640/    accelerate ``save_state`` folders, named by optimizer step
    checkpoints/.partial-*      a save in progress (renamed into place only once complete)
    results.json, export/, logs/

A checkpoint is written under a temporary name and renamed when every process has
finished writing, so a crash mid-save never leaves a folder that looks complete.
"""
from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import yaml

from ..constants import RESOLVED_RECIPE_NAME, RUN_RESULTS_NAME
from .config import Recipe, RecipeError, recipe_to_dict

__all__ = [
    "CHECKPOINT_PREFIX", "RESULT_NEUTRAL_KEYS", "check_resume_compatible", "checkpoint_is_complete",
    "find_resume_checkpoint", "lr_lambda", "stopped_before_first_checkpoint", "prune_old_checkpoints", "refuse_existing_run", "resize_for_step",
]

CHECKPOINT_PREFIX = "step_"
_PARTIAL_PREFIX = ".partial-"
_LEGACY_PREFIX = "checkpoint_"  # accelerate's automatic naming (runs before step-named checkpoints)

#: Recipe keys that may differ on resume: they change where things go or how often the run
#: reports, never the trained weights or masks.
RESULT_NEUTRAL_KEYS = frozenset({
    "output_dir", "resume", "tracker", "data.cache_dir", "data.num_workers", "data.eval_batch_size",
    "train.eval_every", "train.checkpoint_every", "train.checkpoint_every_steps", "train.keep_checkpoints",
    "train.log_every", "train.max_steps", "train.compile", "export.enabled", "export.hub", "export.push_to",
    "export.name", "export.dense_baseline_top1", "export.overwrite", "pruning.check_sync",
})

#: Values a key had before it existed, for runs recorded by an older runner.
LEGACY_DEFAULTS = {"data.drop_last": True}


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "model_args":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def refuse_existing_run(out_dir: Path, resume: str | None, overwrite: bool) -> None:
    """A fresh run never writes into a folder that already holds a run (its checkpoints would be lost)."""
    if resume or not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise RecipeError(f"output_dir {str(out_dir)!r} is a file: choose another --output-dir")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise RecipeError(f"output_dir {str(out_dir)!r} already holds a run: continue it with --resume auto, "
                          "pick another --output-dir, or pass --overwrite to start over (deletes its checkpoints)")
    if not (out_dir / RESOLVED_RECIPE_NAME).is_file():  # --overwrite only ever removes one of our runs
        raise RecipeError(f"output_dir {str(out_dir)!r} is not empty and holds no run of ours: "
                          "--overwrite refuses to delete it; pick another --output-dir")
    for name in ("checkpoints", "logs", "export"):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in (RUN_RESULTS_NAME, RESOLVED_RECIPE_NAME):
        (out_dir / name).unlink(missing_ok=True)


def check_resume_compatible(out_dir: Path, recipe: Recipe) -> Recipe:
    """Refuse to resume a run with a recipe that would change its result; returns the recipe to use.

    Keys the run was recorded without take their legacy value (``LEGACY_DEFAULTS``) unless
    they were given explicitly, so runs from an older runner resume as they started.
    """
    path = out_dir / RESOLVED_RECIPE_NAME
    if not path.is_file():
        warnings.warn(f"{path} is missing: cannot check that the resumed recipe matches the run", stacklevel=2)
        return recipe
    try:
        stored = _flat(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError:
        raise RecipeError(f"{path} is not valid YAML: the run folder is damaged") from None
    for key, legacy in LEGACY_DEFAULTS.items():
        if key not in stored:
            section, name = key.split(".")
            setattr(getattr(recipe, section), name, legacy)
            stored[key] = legacy
    now = _flat(recipe_to_dict(recipe))
    for key, value in now.items():
        if key in RESULT_NEUTRAL_KEYS or key not in stored:
            continue
        if stored[key] != value:
            raise RecipeError(f"--resume: {key} is {value!r} but the run in {str(out_dir)!r} was started with "
                              f"{stored[key]!r}; a resumed run must keep every key that changes its result")
    return recipe


def _step_of(folder: Path) -> int:
    return int(folder.name.rsplit("_", 1)[-1])


def checkpoint_is_complete(folder: Path) -> bool:
    """accelerate wrote model weights, the optimizer, our registered objects and process 0's RNG state."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    has_model = any(n.startswith(("model.safetensors", "pytorch_model")) for n in names)
    has_optimizer = any(n.startswith("optimizer") for n in names)
    has_custom = any(n.startswith("custom_checkpoint_") for n in names)
    return has_model and has_optimizer and has_custom


def stopped_before_first_checkpoint(out_dir: Path) -> bool:
    """A run of ours that died before writing any checkpoint (or result): ``--resume auto`` starts it over.

    Only its log and resolved recipe exist, so nothing is lost; refusing would stall a queue of
    resumable runs that was interrupted in a run's first minutes.
    """
    if not (out_dir / RESOLVED_RECIPE_NAME).is_file() or (out_dir / RUN_RESULTS_NAME).exists():
        return False
    return not _complete_checkpoints(out_dir / "checkpoints", warn=False)


def _complete_checkpoints(root: Path, *, warn: bool = True) -> list[Path]:
    """The complete checkpoints under ``root``, oldest first; incomplete newest ones are dropped (with a warning)."""
    found = sorted((p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir()), key=_step_of)
    if not found:  # a run from before step-named checkpoints
        found = sorted((p for p in root.glob(f"{_LEGACY_PREFIX}*") if p.is_dir()), key=_step_of)
    if warn:
        for partial in root.glob(f"{_PARTIAL_PREFIX}*"):
            warnings.warn(f"ignoring {partial}: a checkpoint save that did not finish", stacklevel=3)
    while found and not checkpoint_is_complete(found[-1]):
        if warn:
            warnings.warn(f"ignoring {found[-1]}: incomplete checkpoint (missing model, optimizer or run state)",
                          stacklevel=3)
        found.pop()
    return found


def find_resume_checkpoint(out_dir: Path, resume: str) -> Path:
    """``resume`` is a folder, or ``auto``: the newest complete checkpoint (a broken one is skipped, with a warning)."""
    if resume != "auto":
        path = Path(resume)
        if not path.is_dir():
            raise RecipeError(f"--resume: checkpoint folder {str(path)!r} not found")
        if not checkpoint_is_complete(path):
            raise RecipeError(f"--resume: {str(path)!r} is not a complete checkpoint (no model, optimizer or "
                              "run state in it)")
        return path
    root = out_dir / "checkpoints"
    found = _complete_checkpoints(root)
    if not found:
        raise RecipeError(f"--resume auto: no complete checkpoint under {str(root)!r}; start the run without --resume")
    return found[-1]


def partial_path(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"{_PARTIAL_PREFIX}{CHECKPOINT_PREFIX}{step:06d}"


def final_path(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:06d}"


def prune_old_checkpoints(out_dir: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` complete step checkpoints, and stale partial saves."""
    root = out_dir / "checkpoints"
    found = sorted((p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir()), key=_step_of)
    for old in found[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for partial in root.glob(f"{_PARTIAL_PREFIX}*"):
        shutil.rmtree(partial, ignore_errors=True)


def lr_lambda(recipe: Recipe, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """The LR multiplier per optimizer step: the spec's step decay, or warmup + cosine to 0."""
    t = recipe.train
    if t.lr_schedule == "step":
        milestones = [m * steps_per_epoch for m in t.lr_milestones]
        warmup = round(t.warmup_epochs * steps_per_epoch)

        def step_decay(step: int) -> float:
            scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
            return scale * t.lr_gamma ** sum(step >= m for m in milestones)

        return step_decay
    warmup = round(t.warmup_epochs * steps_per_epoch)

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return cosine


def resize_for_step(recipe: Recipe, step: int, total_steps: int) -> int | None:
    """The training image size at ``step`` under ``train.progressive_resize`` (None: native size)."""
    size = None
    for start, stage_size in recipe.train.progressive_resize:
        if step >= start * total_steps:
            size = int(stage_size)
    return size
