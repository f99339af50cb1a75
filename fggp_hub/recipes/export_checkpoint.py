"""``fggp-hub export CHECKPOINT OUT``: a run folder, one of its checkpoints or a safetensors file -> a repo folder.

The command line only parses; this module decides what a checkpoint is, rebuilds the model
from its weights (safetensors only, never pickles), picks the results that belong to it and
calls :func:`~fggp_hub.recipes.export_run.run_export_kwargs` for what a run recorded.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..constants import DENSE_WEIGHTS_NAME, RESOLVED_RECIPE_NAME, RUN_RESULTS_NAME
from ..hub.errors import ExportError

__all__ = ["build_from_state", "export_checkpoint", "find_checkpoint", "read_results_json", "read_state_dict"]


def read_state_dict(path: Path) -> dict:
    """A safetensors state_dict, without wrapper prefixes (DDP's ``module.``, torch.compile's ``_orig_mod.``)."""
    if path.suffix != ".safetensors":
        raise ExportError(f"{path} is not a .safetensors file: only safetensors weights are read (never pickles)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except SafetensorError as err:
        raise ExportError(f"{path} is not a readable safetensors file ({' '.join(str(err).split())})") from None
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def find_checkpoint(source: Path, step: int | None) -> tuple[Path | None, Path]:
    """(run folder or None, checkpoint folder) of a run folder or one of its checkpoint folders."""
    from .run_folder import CHECKPOINT_PREFIX, checkpoint_is_complete

    if (source / "recipe.resolved.yaml").is_file():
        root = source / "checkpoints"
        named = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if p.name.split("_")[-1].isdigit()]
        if not named:  # a run from before step-named checkpoints (step N then means checkpoint_N)
            named = [p for p in root.glob("checkpoint_*") if p.name.split("_")[-1].isdigit()]
        checkpoints = sorted((p for p in named if checkpoint_is_complete(p)), key=lambda p: int(p.name.split("_")[-1]))
        if step is not None:
            checkpoints = [p for p in checkpoints if int(p.name.split("_")[-1]) == step]
        if not checkpoints:
            what = f"checkpoint of step {step}" if step is not None else "complete checkpoint"
            raise ExportError(f"no {what} under {root}: train with train.checkpoint_every > 0")
        return source, checkpoints[-1]
    if (source / DENSE_WEIGHTS_NAME).is_file():
        run = source.parent.parent if source.parent.name == "checkpoints" else None
        return (run if run is not None and (run / "recipe.resolved.yaml").is_file() else None), source
    raise ExportError(f"{source} is neither a run folder (recipe.resolved.yaml) nor a checkpoint folder (model.safetensors)")


def _num_classes(arch: str, state: dict) -> int | None:
    import timm

    try:
        classifier = timm.models.get_pretrained_cfg(arch).classifier
    except (AttributeError, RuntimeError):
        return None
    names = [classifier] if isinstance(classifier, str) else list(classifier or [])
    for name in names:
        weight = state.get(f"{name}.weight")
        if weight is not None and weight.dim() >= 1:
            return int(weight.shape[0])
    return None


def build_from_state(arch: str, state: dict, num_classes: int | None, model_args: dict):
    """A timm ``arch`` holding ``state`` exactly (classes read off the head when not given), in eval mode."""
    import timm

    if not timm.is_model(arch):
        raise ExportError(f"unknown timm architecture {arch!r}: pass --model with a name timm.list_models() knows")
    num_classes = num_classes or _num_classes(arch, state)
    kwargs = dict(model_args)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(arch, pretrained=False, **kwargs)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ExportError(f"the weights do not fit {arch}: {str(err).splitlines()[-1].strip()}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ExportError(f"the weights do not fit {arch} (missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}): check --model")
    return model.eval()


def read_results_json(path: str | os.PathLike, what: str) -> dict:
    """A JSON object from a file the user named (results), or one ExportError line saying what is wrong."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExportError(f"{what} file {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ExportError(f"{what} file {path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ExportError(f"{what} file {path} must hold a JSON object such as {{\"top1\": 93.1}}")
    return data


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    step: int | None = None,
    name: str | None = None,
    method: str | None = None,
    dataset: str | None = None,
    dense_top1: float | None = None,
    results_file: str | os.PathLike | None = None,
    recipe: str | os.PathLike | None = None,
    total_steps: int | None = None,
    command: str | None = None,
    warn: Callable[[str], None] | None = None,
    **export_kwargs: Any,
):
    """Export ``checkpoint`` to ``out_dir``; returns (folder, model).

    ``checkpoint`` is a run folder of recipes/prune.py (its newest complete checkpoint, or the
    one of optimizer step ``step``), one of its ``checkpoints/step_N`` folders, or a plain
    safetensors state_dict (then ``arch`` names the timm architecture). From a run, the folder is
    the one the run itself exports at its end; the run's results.json is attached only to the
    checkpoint it describes (``warn`` says so otherwise). Arguments given win over what the run
    recorded; ``export_kwargs`` go to :func:`fggp_hub.export`.
    """
    from ..hub import export

    source = Path(checkpoint).expanduser()
    if not source.exists():
        raise ExportError(f"checkpoint {source} does not exist: pass a run folder, one of its checkpoints/step_N folders "
                          "or a .safetensors file")
    kwargs: dict[str, Any] = {}
    run = None
    if source.is_file():
        if not arch:
            raise ExportError(f"{source} is a plain state_dict: pass --model ARCH (the timm architecture it belongs to)")
        state = read_state_dict(source)
    else:
        run, found = find_checkpoint(source, step)
        state = read_state_dict(found / DENSE_WEIGHTS_NAME)
        if run is None and not arch:  # a lone checkpoint folder: like a plain file
            raise ExportError(f"{found} is not inside a run folder (no recipe.resolved.yaml): pass --model ARCH")
    if run is None:
        model = build_from_state(arch, state, num_classes, {})
        kwargs.update(pruning=method, recipe=recipe)
        results = read_results_json(results_file, "results") if results_file else None
    else:
        model, results, settings = _from_run(run, found, state, arch=arch, num_classes=num_classes,
                                             results_file=results_file, total_steps=total_steps, warn=warn)
        name = name or settings.pop("name")
        settings.pop("name", None)
        if method is not None:
            settings["pruning"] = {**settings["pruning"], "method": method}
        if recipe:
            settings["recipe"] = recipe
        run_command = settings.pop("command")
        command = run_command if command is None else command
        kwargs.update(settings)
    if dataset is not None:
        kwargs["dataset"] = dataset
    if dense_top1 is not None:
        kwargs["dense_top1"] = dense_top1
    folder = export(model, out_dir, results=results, command=command, name=name, **kwargs, **export_kwargs)
    return folder, model


def _from_run(run: Path, checkpoint: Path, state: dict, *, arch: str | None, num_classes: int | None,
              results_file: str | os.PathLike | None, total_steps: int | None,
              warn: Callable[[str], None] | None) -> tuple[Any, dict | None, dict[str, Any]]:
    """(model, results, export settings) of a checkpoint inside a run folder."""
    from ..pruning import sparsity_stats
    from .config import load_recipe
    from .export_run import run_export_kwargs

    cfg = load_recipe(run / RESOLVED_RECIPE_NAME)
    model = build_from_state(arch or cfg.model, state, num_classes or cfg.num_classes, cfg.model_args)
    newest = find_checkpoint(run, None)[1] == checkpoint
    results = None
    if results_file:
        results = read_results_json(results_file, "results")
    elif (run / RUN_RESULTS_NAME).is_file():
        run_results = read_results_json(run / RUN_RESULTS_NAME, "results")
        measured = sparsity_stats(model, include_first_conv=cfg.pruning.include_first_conv)["sparsity"]
        if newest and abs(float(run_results.get("sparsity", -1)) - measured) <= 1e-6:
            results = run_results
        elif warn is not None:
            warn(f"{run / RUN_RESULTS_NAME} belongs to the end of the run, not to {checkpoint.name}: exporting without results")
    # the run folder records what to write (run_info.json); older runs are rebuilt from the recipe
    return model, results, run_export_kwargs(run, results=results, total_steps=total_steps)
