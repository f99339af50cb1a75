"""Export a training run as a Hub repo folder: the run folder is the single source of what to write.

The runner records, next to ``recipe.resolved.yaml``, a ``run_info.json`` with what only it
knows: the pruner's settings (``Pruner.config()``, schedule included, so T is never derived
again), the dataset label of the images it really read, and the command that ran. Both the
runner's own export at the end of a run and ``fggp-hub export RUN`` call :func:`export_run`,
so the two write the same folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from .._io import write_text_atomic
from ..constants import RUN_INFO_NAME as RUN_INFO
from ..constants import RESOLVED_RECIPE_NAME, RUN_RESULTS_NAME
from .config import Recipe, RecipeError, default_export_name, load_recipe, recipe_to_dict

__all__ = ["RUN_INFO", "export_run", "read_run_info", "run_export_kwargs", "write_run_info"]


def write_run_info(run_dir: str | os.PathLike, *, pruning: dict[str, Any], dataset: str, command: str,
                   total_steps: int) -> Path:
    """Record the run's pruning settings, dataset label, command and T (atomically)."""
    path = Path(run_dir) / RUN_INFO
    info = {"pruning": pruning, "dataset": dataset, "command": command, "total_steps": int(total_steps)}
    write_text_atomic(path, json.dumps(info, indent=2, default=str) + "\n")
    return path


def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``run_info.json`` of a run, or None for a run recorded before the runner wrote one."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except ValueError:
        raise RecipeError(f"{path} is not valid JSON: the run folder is damaged") from None
    if not isinstance(info, dict) or not isinstance(info.get("pruning"), dict):
        raise RecipeError(f"{path} holds no pruning settings: the run folder is damaged")
    return info


def _legacy_info(recipe: Recipe, results: dict[str, Any] | None, total_steps: int | None) -> dict[str, Any]:
    """What a run from before ``run_info.json`` recorded, rebuilt from its recipe (no Pruner needed)."""
    from ..data import dataset_label
    from ..data.sources import cifar10_source
    from ..pruning import CubicSchedule

    p = recipe.pruning
    schedule = None
    if not recipe.init_from and p.method != "none":
        steps = total_steps or (results or {}).get("total_steps")
        if not isinstance(steps, int):
            raise RecipeError("this run predates run_info.json and records no total_steps: pass --total-steps T")
        schedule = CubicSchedule(total_steps=steps, final_density=1 - p.final_sparsity,
                                 initial_density=1 - p.initial_sparsity, interval=p.interval,
                                 end_fraction=p.end_fraction).to_dict()
    pruning = {"method": p.method, "rate": p.rate, "anneal_initial": p.anneal_initial,
               "anneal_final": p.anneal_final, "include_first_conv": p.include_first_conv, "seed": recipe.seed,
               "schedule": schedule}
    source = str(cifar10_source()[0]) if recipe.data.dataset == "cifar10" else recipe.data.dataset
    return {"pruning": pruning, "dataset": dataset_label(recipe.data.dataset, source),
            "command": "python recipes/prune.py --recipe recipe.yaml"}


def run_export_kwargs(run_dir: str | os.PathLike, *, results: dict[str, Any] | None = None,
                      total_steps: int | None = None) -> dict[str, Any]:
    """What :func:`fggp_hub.export` needs from a run folder: name, pruning, recipe, dataset, dense top-1, command."""
    run = Path(run_dir)
    recipe = load_recipe(run / RESOLVED_RECIPE_NAME)
    info = read_run_info(run) or _legacy_info(recipe, results, total_steps)
    return dict(name=recipe.export.name or default_export_name(recipe), pruning=info["pruning"],
                recipe=recipe_to_dict(recipe), dataset=info["dataset"], dense_top1=recipe.export.dense_baseline_top1,
                command=info.get("command"))


def export_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    model: nn.Module,
    results: dict[str, Any] | None = None,
    name: str | None = None,
    total_steps: int | None = None,
    **export_kwargs: Any,
) -> Path:
    """Write the run in ``run_dir`` as a Hub repo folder (default ``run_dir/export/<name>``).

    ``model`` is the trained model (the runner passes its own, ``fggp-hub export`` one built
    from a checkpoint); ``results`` its evaluation (default: the run's ``results.json``).
    Other keyword arguments go to :func:`fggp_hub.export` and win over what the run recorded.
    """
    from ..hub import export

    run = Path(run_dir)
    if results is None and (run / RUN_RESULTS_NAME).is_file():
        results = json.loads((run / RUN_RESULTS_NAME).read_text())
    kwargs = run_export_kwargs(run, results=results, total_steps=total_steps)
    name = name or kwargs.pop("name")
    kwargs.pop("name", None)
    kwargs.update(export_kwargs)
    return export(model, out_dir or run / "export" / name, results=results, name=name, **kwargs)
