"""Model cards (huggingface_hub ``ModelCard`` from a Jinja template) and their PNG plots.

Everything on the card is derived from the export folder's facts: config.json's
``sparsity`` block, the recipe text and the command. The template is
``fggp_hub/hub/templates/model_card.md`` (package data; overridable with ``$FGGP_HUB_CARD_TEMPLATE`` or the
``template`` argument). Plots are drawn with matplotlib's object API on an Agg
canvas, so no global backend is changed.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import write_text_atomic
from ..constants import CARD_NAME, CONFIG_NAME, EVAL_RESULTS_NAME, RECIPE_NAME
from ..constants import ENV_CARD_TEMPLATE as ENV_TEMPLATE
from ..constants import LAYER_PLOT_NAME as LAYER_PLOT
from ..constants import SCHEDULE_PLOT_NAME as SCHEDULE_PLOT
from .sparsity_info import SparsityInfo

__all__ = [
    "LAYER_PLOT",
    "SCHEDULE_PLOT",
    "dataset_hub_id",
    "plot_layer_sparsity",
    "plot_schedule",
    "make_card",
    "folder_card",
    "rewrite_folder_card",
    "template_path",
]

_PACKAGE_TEMPLATE = Path(__file__).with_name("templates") / "model_card.md"  # package data: wheels render the same cards

# Used only when the package is installed without the repository's model_cards/ folder.
CITATION = """@inproceedings{zhu2025fggp,
  title     = {{FGGP}: Fixed-Rate Gradient-First Gradual Pruning},
  author    = {Zhu, Lingkai and Bezek, Can Deniz and Goksel, Orcun},
  booktitle = {Scandinavian Conference on Image Analysis (SCIA)},
  year      = {2025},
  note      = {arXiv:2411.05500}
}"""

#: The one map from a model-index ``metric_type`` to our result key (cards, leaderboard, eval --check).
METRIC_TYPES = {"accuracy": "top1", "top_1_accuracy": "top1", "top_5_accuracy": "top5", "loss": "loss",
                "cross_entropy": "loss"}
#: What we write for each result key: (metric_type, metric_name).
METRIC_NAMES = {"top1": ("accuracy", "Top-1 accuracy (%)"), "top5": ("top_5_accuracy", "Top-5 accuracy (%)"),
                "loss": ("loss", "Cross-entropy loss")}

_DATASET_IDS = {"cifar10": "uoft-cs/cifar10", "cifar100": "uoft-cs/cifar100"}


def dataset_hub_id(label: str) -> str:
    """Hub dataset id for a dataset label (``CIFAR-10 (JPEG-q75 copy)`` -> ``uoft-cs/cifar10``)."""
    from .zoo import dataset_short_name

    if "/" in label and " " not in label:
        return label
    return _DATASET_IDS.get(dataset_short_name(label), dataset_short_name(label))


def template_path(template: str | Path | None = None) -> Path | None:
    """The card template in use: argument, ``$FGGP_HUB_CARD_TEMPLATE``, the package's ``templates/model_card.md``."""
    for candidate in (template, os.environ.get(ENV_TEMPLATE), _PACKAGE_TEMPLATE):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


# --------------------------------------------------------------------------- plots
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_layer_sparsity(info: SparsityInfo, path: str | Path) -> Path:
    """Horizontal bars: sparsity of each prunable layer, with the global sparsity marked."""
    names = list(info.layers)
    values = [100.0 * float(info.layers[n].sparsity) for n in names]
    fig = _figure(8.0, max(2.5, 0.22 * len(names) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    positions = list(range(len(names)))[::-1]
    ax.barh(positions, values, color="#4c72b0")
    ax.set_yticks(positions)
    ax.set_yticklabels([n.removesuffix(".weight") for n in names], fontsize=7)
    ax.axvline(100.0 * float(info.sparsity), color="#c44e52", linestyle="--", label=f"global {100 * float(info.sparsity):.2f}%")
    ax.set_xlim(0, 100)
    ax.set_xlabel("sparsity (%)")
    ax.set_title("Per-layer sparsity of prunable weights")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


def plot_schedule(schedule: Mapping[str, Any], path: str | Path) -> Path | None:
    """Target sparsity over optimizer steps (cubic schedule) with its pruning steps; None if not plottable."""
    from ..pruning import CubicSchedule

    fields = set(CubicSchedule.__dataclass_fields__)
    try:
        sched = CubicSchedule(**{k: v for k, v in schedule.items() if k in fields})
    except (TypeError, ValueError):
        return None
    total = sched.total_steps
    steps = sorted(set(range(0, total + 1, max(1, total // 400))) | {total})
    fig = _figure(7.0, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, [100 * sched.sparsity(t) for t in steps], color="#4c72b0", label="target sparsity")
    prune_steps = sched.pruning_steps()
    ax.scatter(prune_steps, [100 * sched.sparsity(t) for t in prune_steps], s=8, color="#c44e52", label=f"{len(prune_steps)} pruning steps")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("sparsity (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Cubic sparsity schedule")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


# --------------------------------------------------------------------------- card
def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * float(value):.{digits}f}%"


def _display(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Settings for a sentence on the card: floats rounded (0.09999999999999998 -> 0.1)."""
    if not settings:
        return None
    return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in settings.items()}


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


#: The paper's CIFAR protocol (spec section 6): a card says when its run used another one.
PAPER_PROTOCOL = {"epochs": 160, "batch_size": 64, "lr_schedule": "step", "lr_milestones": [80, 120], "interval": 2000}


def protocol_note(recipe: Mapping[str, Any] | None, results: Mapping[str, Any] | None) -> str | None:
    """One sentence when a run's recipe departs from the paper's protocol (None when it follows it or is unknown)."""
    if not isinstance(recipe, Mapping) or not isinstance(recipe.get("train"), Mapping):
        return None
    train, pruning = recipe["train"], recipe.get("pruning") or {}
    ours = {"epochs": train.get("epochs"), "batch_size": train.get("batch_size"),
            "lr_schedule": train.get("lr_schedule", "step"), "lr_milestones": train.get("lr_milestones"),
            "interval": pruning.get("interval")}
    if ours["lr_schedule"] != "step":
        ours.pop("lr_milestones")
    differs = [k for k, v in ours.items() if v != PAPER_PROTOCOL[k]]
    if not differs:
        return None
    subset = (recipe.get("data") or {}).get("train_subset")
    wall = (results or {}).get("train_wall_s")
    where = (results or {}).get("hardware")
    parts = [f"{train.get('epochs')} epochs at batch {train.get('batch_size')}",
             "warmup + cosine LR" if ours["lr_schedule"] == "cosine" else f"LR x{train.get('lr_gamma')} at epochs {train.get('lr_milestones')}",
             f"dt = {pruning.get('interval')}"]
    if subset:
        parts.append(f"the first {subset:,} training images")
    if train.get("progressive_resize"):
        parts.append(f"progressive resizing {train['progressive_resize']}")
    text = ("**Reduced-budget run, not the paper's protocol** (160 epochs at batch 64, LR x0.1 at epochs 80 "
            f"and 120, dt = 2000): {', '.join(parts)}")
    if isinstance(wall, (int, float)):
        text += f"; trained in {wall / 3600:.2f} h" + (f" on {where}" if where else "")
    return text + "."


def _gmacs(n: int | None) -> str:
    return "n/a" if not isinstance(n, int) else f"{n / 1e9:.3f}"


def make_card(
    config: Mapping[str, Any],
    info: SparsityInfo,
    *,
    name: str,
    repo_id: str | None = None,
    recipe_text: str | None = None,
    plots: Mapping[str, str] | None = None,
    template: str | Path | None = None,
):
    """A ``huggingface_hub.ModelCard`` for an export folder described by ``config`` (config.json) and its record ``info``."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .integrity import COMPACT_WEIGHTS, DENSE_WEIGHTS
    from .zoo import dataset_short_name, sparsity_tag

    plots = dict(plots or {})
    dataset = info.dataset or "unknown"
    data_id = dataset_hub_id(dataset)
    results = info.results or {}
    top1 = results.get("top1")
    dense = info.dense_baseline or {}
    method = info.method or "unknown"
    target = info.target_sparsity
    sparsity = float(info.sparsity)
    repo = repo_id or f"<org>/{name}"

    eval_results = []
    for key in ("top1", "top5"):
        if isinstance(results.get(key), (int, float)):
            eval_results.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Image Classification",
                    dataset_type=data_id,
                    dataset_name=dataset,
                    dataset_split=str(results.get("split", "test")),
                    metric_type=METRIC_NAMES[key][0],
                    metric_value=float(results[key]),
                    metric_name=METRIC_NAMES[key][1],
                )
            )
    tags = ["pruning", "sparse", "fggp", "timm", "image-classification", dataset_short_name(dataset), f"sparsity-{sparsity_tag(target if target is not None else sparsity)}"]
    if method not in tags:
        tags.append(method)
    card_data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        license=(config.get("pretrained_cfg") or {}).get("license") or "apache-2.0",
        tags=tags,
        datasets=[data_id],
        metrics=["accuracy"],
        model_name=name,
        eval_results=eval_results or None,
        sparsity=sparsity,
        sparsity_all_params=float(info.sparsity_all_params if info.sparsity_all_params is not None else 0.0),
        pruning_method=method,
    )

    dense_size = info.dense_file.size if info.dense_file else None
    compact_size = info.compact_file.size if info.compact_file else None
    total_params = info.total_params if info.total_params is not None else 0
    nonzero_params = info.nonzero_params if info.nonzero_params is not None else 0
    summary_rows = [
        ("Top-1 accuracy", f"{dense['top1']:.2f}%" if isinstance(dense.get("top1"), (int, float)) else "n/a", f"{top1:.2f}%" if isinstance(top1, (int, float)) else "n/a"),
        ("Sparsity (prunable weights)", "0.00%", _pct(sparsity)),
        ("Sparsity (all parameters)", "0.00%", _pct(info.sparsity_all_params)),
        ("Non-zero parameters", f"{total_params:,}", f"{nonzero_params:,}"),
        ("Weights on disk", _fmt_bytes(dense_size) + " (model.safetensors)", (_fmt_bytes(compact_size) + " (model.sparse.safetensors)") if compact_size else "n/a"),
    ]
    macs = info.macs or {}
    size = "x".join(str(v) for v in (macs.get("input_size") or [])[1:]) or "?"
    stats_rows = [
        ("Parameters", f"{total_params:,}"),
        ("Non-zero parameters", f"{nonzero_params:,}"),
        (f"GMACs per image ({size}), dense", _gmacs(macs.get("dense"))),
        (f"GMACs per image ({size}), effective (non-zero weights only)", _gmacs(macs.get("effective"))),
        ("model.sparse.safetensors", _fmt_bytes(compact_size) if compact_size else "n/a"),
        ("model.safetensors", _fmt_bytes(dense_size)),
    ]
    if isinstance(top1, (int, float)) and isinstance(dense.get("top1"), (int, float)):
        delta = f"{top1 - dense['top1']:+.2f} points of top-1 accuracy against the dense baseline"
    else:
        delta = "the dense baseline's accuracy was not recorded"
    summary = (
        f"`{config['architecture']}` pruned to {_pct(sparsity)} sparsity (prunable weights) with **{method}** "
        f"on {dataset}: {delta}."
    )
    layers = [
        {
            "name": layer_name,
            "shape": "x".join(str(s) for s in layer.shape or ()),
            "numel": f"{int(layer.numel or 0):,}",
            "zeros": f"{int(layer.zeros or 0):,}",
            "sparsity": _pct(layer.sparsity),
        }
        for layer_name, layer in info.layers.items()
    ]
    pruning = {k: v for k, v in (info.pruning or {}).items() if k != "schedule"}
    kwargs = dict(
        model_name=name,
        repo_id=repo,
        load_id=name if repo_id is None else repo_id,
        architecture=config["architecture"],
        num_classes=config.get("num_classes"),
        summary=summary,
        summary_rows=summary_rows,
        stats_rows=stats_rows,
        protocol_note=protocol_note(info.recipe, results),
        dense_known=bool(dense),
        method=method,
        dataset=dataset,
        dataset_id=data_id,
        sparsity=_pct(sparsity, 4),
        target_sparsity=_pct(target) if target is not None else None,
        include_first_conv=info.include_first_conv,
        layers=layers,
        layer_plot=plots.get("layers"),
        schedule_plot=plots.get("schedule"),
        schedule=_display(info.schedule),
        pruning=_display(pruning),
        recipe_text=(recipe_text or "").rstrip() or None,
        command=info.command,
        results=results,
        dense_file=DENSE_WEIGHTS,
        compact_file=COMPACT_WEIGHTS if compact_size else None,
        compact_format=info.compact_file.format if info.compact_file else None,
        citation=CITATION,
        fggp_hub_version=info.fggp_hub_version,
    )
    return ModelCard.from_template(card_data, template_path=str(template_path(template)), **kwargs)


# --------------------------------------------------------------------------- re-rendering an export folder
def _card_repo_id(card_path: Path) -> str | None:
    """The repo id an existing card was rendered for (its ``hf-hub:`` line), unless it is the placeholder."""
    import re

    if not card_path.is_file():
        return None
    match = re.search(r'hf-hub:([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)"', card_path.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def folder_card(folder: str | Path, *, repo_id: str | None = None, template: str | Path | None = None):
    """The card of an export folder, rendered again from its config.json, eval_results.json and recipe.yaml.

    ``eval_results.json`` (updated after export, e.g. by ``fggp-hub eval --update-card``)
    overrides config.json's results; the repo id defaults to the one the card names.
    """
    import json

    from .integrity import read_export

    folder = Path(folder)
    config, info = read_export(folder)
    results_path = folder / EVAL_RESULTS_NAME
    if results_path.is_file():
        try:
            extra = json.loads(results_path.read_text(encoding="utf-8"))
        except ValueError:
            from .errors import CorruptCheckpointError

            raise CorruptCheckpointError(f"{results_path} is not valid JSON: fix or delete it") from None
        if isinstance(extra, dict):
            info = info.replace(results={**(info.results or {}), **{k: v for k, v in extra.items() if k != "dataset"}})
    recipe_path = folder / (info.recipe_file or RECIPE_NAME)
    recipe_text = recipe_path.read_text(encoding="utf-8") if recipe_path.is_file() else None
    plots = {kind: name for kind, name in (("layers", LAYER_PLOT), ("schedule", SCHEDULE_PLOT)) if (folder / name).is_file()}
    name = info.name or folder.name
    return make_card(
        config,
        info,
        name=name,
        repo_id=repo_id or _card_repo_id(folder / CARD_NAME),
        recipe_text=recipe_text,
        plots=plots,
        template=template,
    )


def record_dense_baseline(folder: str | Path, top1: float) -> Path:
    """Record the dense baseline's top-1 (%) in config.json's sparsity block, atomically; returns its path.

    For a baseline measured after the export, e.g. a dense run trained side by side with the
    pruned ones under the same recipe. Only ``dense_baseline`` changes; the weights' hashes stay valid.
    """
    import json
    import math

    from .integrity import read_export

    if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not math.isfinite(top1) or not 0 <= top1 <= 100:
        from .errors import ExportError

        raise ExportError(f"dense baseline top-1 must be a percentage in [0, 100], got {top1!r}")
    folder = Path(folder)
    config, info = read_export(folder)
    config = info.replace(dense_baseline={"top1": float(top1)}).into_config(config)
    path = folder / CONFIG_NAME
    write_text_atomic(path, json.dumps(config, indent=2) + "\n")
    return path


def _keep_other_results(card, old_path: Path) -> None:
    """Carry over the old card's model-index results that the re-render does not produce.

    ``fggp-hub eval --update-card`` writes results on a prefix of the split (``test[:1017]``) or
    on other datasets only into the card, not into eval_results.json; re-rendering must keep them.
    """
    if not old_path.is_file():
        return
    from huggingface_hub import ModelCard

    try:
        old = ModelCard.load(old_path).data.eval_results or []
    except Exception:  # an unparsable old card has nothing to keep; the new one replaces it
        return
    new = card.data.eval_results or []
    produced = {(r.dataset_type, r.dataset_name, r.dataset_split) for r in new}
    kept = [r for r in old if (r.dataset_type, r.dataset_name, r.dataset_split) not in produced]
    if kept:
        card.data.eval_results = new + kept


def rewrite_folder_card(folder: str | Path, *, repo_id: str | None = None, template: str | Path | None = None,
                        dense_top1: float | None = None) -> Path:
    """Re-render ``README.md`` of an export folder (see :func:`folder_card`) atomically; returns its path.

    ``dense_top1`` first records a dense baseline measured after the export (:func:`record_dense_baseline`).
    """
    if dense_top1 is not None:
        record_dense_baseline(folder, dense_top1)
    card = folder_card(folder, repo_id=repo_id, template=template)
    _keep_other_results(card, Path(folder) / CARD_NAME)
    path = Path(folder) / CARD_NAME
    write_text_atomic(path, str(card))
    return path
