"""Model cards: render them, read what they claim, write measured results back.

The card of an export folder is its ``README.md``: YAML front matter (with the ``model-index``
the Hub shows) over markdown. This module does the three things done with it, as
huggingface_hub's ``repocard`` does for any repo card:

- **render**: :func:`make_card` builds a ``huggingface_hub.ModelCard`` from the export's facts
  (config.json's ``sparsity`` block, the recipe text, the command) and a Jinja template,
  ``fggp_hub/hub/templates/model_card.md`` (package data; overridable with
  ``$FGGP_HUB_CARD_TEMPLATE`` or the ``template`` argument); :func:`rewrite_folder_card`
  re-renders an export folder's card. Plots are drawn with matplotlib's object API on an Agg
  canvas, so no global backend is changed.
- **read**: :func:`card_metrics` gathers what a card claims from config.json, eval_results.json
  and the model-index, under :func:`~fggp_hub.eval.evaluate_model`'s key names (for
  ``fggp-hub eval --check``; an unreadable file is a :class:`~fggp_hub.hub.errors.CardError`);
  :func:`card_results` gives the top-1/top-5 of the zoo table and the leaderboard, skipping
  unreadable sources. Both take the model-index's first entry, read by one function.
- **write**: :func:`write_results_to_card` merges measured values into the ``model-index`` the way
  ``huggingface_hub.metadata_update`` does (same task, dataset, split and metric: value
  replaced; otherwise appended), in a folder or as a commit on a hub.

:data:`METRIC_TYPES` and :data:`METRIC_NAMES` are the one map between model-index metric types
and result keys.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import write_text_atomic
from ..constants import CARD_NAME, CONFIG_NAME, EVAL_RESULTS_NAME, RECIPE_NAME
from ..constants import ENV_CARD_TEMPLATE as ENV_TEMPLATE
from ..constants import LAYER_PLOT_NAME as LAYER_PLOT
from ..constants import SCHEDULE_PLOT_NAME as SCHEDULE_PLOT
from .errors import CardError, CorruptCheckpointError, ExportError, FggpHubError, FolderNotFoundError
from .integrity import COMPACT_WEIGHTS, DENSE_WEIGHTS, read_export
from .sparsity_info import SparsityInfo

__all__ = [
    "LAYER_PLOT",
    "METRIC_NAMES",
    "METRIC_TYPES",
    "SCHEDULE_PLOT",
    "card_metrics",
    "card_results",
    "dataset_hub_id",
    "plot_layer_sparsity",
    "plot_schedule",
    "make_card",
    "folder_card",
    "rewrite_folder_card",
    "template_path",
    "write_results_to_card",
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
    if not card_path.is_file():
        return None
    match = re.search(r'hf-hub:([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)"', card_path.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def folder_card(folder: str | Path, *, repo_id: str | None = None, template: str | Path | None = None):
    """The card of an export folder, rendered again from its config.json, eval_results.json and recipe.yaml.

    ``eval_results.json`` (updated after export, e.g. by ``fggp-hub eval --update-card``)
    overrides config.json's results; the repo id defaults to the one the card names.
    """
    folder = Path(folder)
    config, info = read_export(folder)
    results_path = folder / EVAL_RESULTS_NAME
    if results_path.is_file():
        try:
            extra = json.loads(results_path.read_text(encoding="utf-8"))
        except ValueError:
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
    if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not math.isfinite(top1) or not 0 <= top1 <= 100:
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


# --------------------------------------------------------------------------- reading
#: A model-index split on the first n images of a split: ``test[:1017]``.
_SUBSET_SPLIT = re.compile(r"^(?P<split>[A-Za-z0-9_.-]+)\[:(?P<n>\d+)\]$")


def _card_folder(folder_or_name: str | os.PathLike, hub: Any, revision: str | None) -> tuple[Path, dict]:
    """The folder holding the card's files, and where it came from."""
    from .hubs import get_hub
    from .load import resolve_source

    source = resolve_source(folder_or_name, revision, hub)
    if source["kind"] == "folder":
        folder = Path(source["path"])
        if not folder.is_dir():
            raise FolderNotFoundError(f"folder {folder} does not exist: pass an existing export folder, a zoo name or 'org/name'")
        return folder, {"folder": str(folder)}
    hub_obj = get_hub(source.get("hub"))
    folder = hub_obj.pull(source["repo_id"], source["revision"], files=[CONFIG_NAME, CARD_NAME, EVAL_RESULTS_NAME])
    return folder, {"repo_id": source["repo_id"], "revision": folder.name, "folder": str(folder)}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CardError(f"{path} is not valid JSON: re-download or re-export the model") from None
    return data if isinstance(data, dict) else {}


def _card_metadata(path: Path) -> dict:
    """A README.md's YAML front matter (``{}`` when it has none)."""
    from huggingface_hub import metadata_load

    try:
        return metadata_load(path) or {}
    except Exception as err:  # the YAML parser's many error types
        raise CardError(f"the model card {path} has unreadable YAML ({err.__class__.__name__}); re-download or re-export") from None


def _split_and_count(split: str) -> tuple[str, int | None]:
    """``"test[:256]"`` -> ``("test", 256)``: a result on the first 256 images of the split."""
    match = _SUBSET_SPLIT.match(split)
    return (match["split"], int(match["n"])) if match else (split, None)


def _from_model_index(meta: Mapping[str, Any], num_images: int | None = None) -> dict[str, Any]:
    """The card's figures: the model-index's first (task, dataset, split) entry, or with ``num_images``
    the entry on exactly the first ``num_images`` images (``test[:1017]``) when the card has one.

    The one reader of a model-index (:func:`card_metrics` and :func:`card_results`): metric types
    map to result keys through :data:`METRIC_TYPES`; the first value of each key wins.
    """
    from huggingface_hub.repocard_data import model_index_to_eval_results

    out: dict[str, Any] = {}
    if not meta.get("model-index"):
        return out
    try:
        name, results = model_index_to_eval_results(meta["model-index"])
    except (KeyError, TypeError, IndexError, AttributeError):
        raise CardError("the card's model-index is malformed (missing task, dataset or metrics): re-export the model") from None
    if not results:
        return out
    head = results[0]
    if num_images is not None:
        head = next((r for r in results if r.dataset_split and _split_and_count(r.dataset_split)[1] == num_images), head)
    out.update(model=name, dataset=head.dataset_name)
    if head.dataset_split:
        out["split"], count = _split_and_count(head.dataset_split)
        if count is not None:
            out["num_images"] = count
    for result in results:
        key = METRIC_TYPES.get(result.metric_type)
        value = result.metric_value
        same_entry = (result.task_type, result.dataset_name, result.dataset_split) == (head.task_type, head.dataset_name, head.dataset_split)
        if same_entry and key is not None and key not in out and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def card_metrics(folder_or_name: str | os.PathLike, hub: Any = None, revision: str | None = None, *,
                 num_images: int | None = None) -> dict[str, Any]:
    """The numbers a model card claims, under :func:`~fggp_hub.eval.evaluate_model`'s key names.

    ``folder_or_name`` is an export folder, a zoo name or ``org/name[@rev]`` (only
    config.json, README.md and eval_results.json are fetched). Keys present when the card
    has them: ``top1``, ``top5``, ``loss``, ``sparsity``, ``sparsity_all_params``,
    ``nonzero_params``, ``total_params``, ``num_images``, ``dataset``, ``split``, ``model``.
    The README wins, then eval_results.json, then config.json; a file that cannot be read
    raises :class:`~fggp_hub.hub.errors.CardError`.
    """
    folder, where = _card_folder(folder_or_name, hub, revision)
    info = read_export(folder)[1] if (folder / CONFIG_NAME).is_file() else None
    out: dict[str, Any] = {}
    for key in ("sparsity", "sparsity_all_params", "nonzero_params", "total_params", "prunable_params", "dataset"):
        if info is not None and getattr(info, key) is not None:
            out[key] = getattr(info, key)
    if info is not None and info.name:
        out["model"] = info.name
    for source in ((info.results if info is not None else None) or {}, _read_json(folder / EVAL_RESULTS_NAME)):
        for key in ("top1", "top5", "loss", "num_images", "split", "dataset"):
            if source.get(key) is not None:
                out[key] = source[key]
    card = folder / CARD_NAME
    if card.is_file():
        meta = _card_metadata(card)
        for key in ("sparsity", "sparsity_all_params"):
            if isinstance(meta.get(key), (int, float)):
                out[key] = float(meta[key])
        subset = _from_model_index(meta, num_images)
        if num_images is not None and subset.get("num_images") == num_images:
            out = {k: v for k, v in out.items() if k not in ("top1", "top5", "loss", "split", "num_images")}
        out.update(subset)
    if not any(k in out for k in ("top1", "sparsity")):
        raise CardError(f"{folder} has no model card values (no config.json sparsity block, eval_results.json or model-index): is it an export folder?")
    return {**where, **out}


def _accuracies(values: Mapping[str, Any]) -> dict[str, float]:
    """``values``' top1/top5 that are finite numbers."""
    return {k: float(v) for k, v in ((k, values.get(k)) for k in ("top1", "top5"))
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def card_results(folder: str | os.PathLike) -> tuple[dict[str, float], str | None]:
    """Top-1/top-5 (%) as the card states them, and where they were read (``"card"``, ``"eval_results.json"``,
    ``"config.json"``; None when no source has them).

    The README's model-index (what the Hub shows; read as :func:`card_metrics` reads it) wins,
    then ``eval_results.json``, then config.json's ``results``. Nothing raises: an unreadable
    source is skipped (``load()`` reports a broken card), so the zoo table and the leaderboard
    still show the other models.
    """
    folder = Path(folder)
    card = folder / CARD_NAME
    if card.is_file():
        try:
            found = _accuracies(_from_model_index(_card_metadata(card)))
        except Exception:  # an unreadable card is reported by load(); here the other sources are tried
            found = {}
        if found:
            return found, "card"
    results_path = folder / EVAL_RESULTS_NAME
    if results_path.is_file():
        try:
            data = json.loads(results_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        found = _accuracies(data) if isinstance(data, dict) else {}
        if found:
            return found, EVAL_RESULTS_NAME
    try:
        info = read_export(folder)[1]
    except FggpHubError:
        return {}, None
    found = {k: v for k, v in (("top1", info.top1), ("top5", info.top5)) if v is not None}
    return found, (CONFIG_NAME if found else None)


# --------------------------------------------------------------------------- writing results back
def _result_split(results: Mapping[str, Any]) -> tuple[str, bool]:
    """The split a result is on, and whether that is the whole split (``"test[:256]"``, False for a prefix)."""
    split = str(results.get("split") or "test")
    n, size = results.get("num_images"), results.get("dataset_size")
    if isinstance(n, int) and isinstance(size, int) and n < size:
        return f"{split}[:{n}]", False  # a result on the first n images is not the split's result
    return split, True


def _merge_model_index(card, results: Mapping[str, Any]) -> None:
    """Put ``results``' top1/top5/loss into ``card.data.eval_results`` as ``metadata_update(overwrite=True)`` would."""
    from huggingface_hub import EvalResult

    existing = card.data.eval_results or []
    label = str(results.get("dataset") or (existing[0].dataset_name if existing else "unknown"))
    split, _ = _result_split(results)
    new = [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset_hub_id(label),
            dataset_name=label,
            dataset_split=split,
            metric_type=METRIC_NAMES[key][0],
            metric_value=float(results[key]),
            metric_name=METRIC_NAMES[key][1],
        )
        for key in ("top1", "top5", "loss")
        if isinstance(results.get(key), (int, float))
    ]
    if not new:
        raise CardError("results hold no top1, top5 or loss to write to the card: pass evaluate_model's results")
    for result in new:
        match = next((r for r in existing if result.is_equal_except_value(r)), None)
        if match is not None:
            match.metric_value = result.metric_value
        else:
            existing.append(result)
    card.data.eval_results = existing
    if not card.data.model_name:
        card.data.model_name = str(results.get("model") or "model")


def _update_folder(folder: Path, results: Mapping[str, Any]) -> list[str]:
    """Rewrite README.md's model-index (and eval_results.json for a whole-split result on its dataset) atomically.

    eval_results.json holds the card's headline figures (``fggp-hub card`` re-renders the card
    from it), so a result on a prefix of the split or on another dataset leaves it alone.
    Returns the names of the files changed.
    """
    from huggingface_hub import ModelCard

    path = folder / CARD_NAME
    if not path.is_file():
        raise CardError(f"{path} does not exist: export the model first (fggp_hub.export writes its card)")
    try:
        card = ModelCard.load(path)
    except Exception as err:  # the YAML parser's many error types
        raise CardError(f"the model card {path} cannot be parsed ({err.__class__.__name__}); re-export the model") from None
    # Everything is read (and may fail) before anything is written: a broken eval_results.json or
    # config.json leaves README.md as it was, not updated alone.
    current = _read_json(folder / EVAL_RESULTS_NAME)
    # A run writes its recipe's dataset key ("cifar10") into eval_results.json; eval measures under
    # the card's label ("CIFAR-10 (JPEG-q75 copy)"): both name the card's own dataset.
    card_label = read_export(folder)[1].dataset if (folder / CONFIG_NAME).is_file() else None
    _merge_model_index(card, results)
    same_dataset = results.get("dataset") is None or current.get("dataset") in (None, results.get("dataset")) \
        or (card_label is not None and results.get("dataset") == card_label)
    write_text_atomic(path, str(card))
    changed = [CARD_NAME]
    if _result_split(results)[1] and same_dataset:
        update = {k: results[k] for k in ("dataset", "top1", "top5", "loss", "split", "num_images") if results.get(k) is not None}
        write_text_atomic(folder / EVAL_RESULTS_NAME, json.dumps({**current, **update}, indent=2) + "\n")
        changed.append(EVAL_RESULTS_NAME)
    return changed


def write_results_to_card(
    name_or_folder: str | os.PathLike,
    results: Mapping[str, Any],
    hub: Any = None,
    *,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | bool | None = None,
) -> Path | str:
    """Merge measured ``top1``/``top5``/``loss`` into the card's ``model-index`` (and ``eval_results.json``).

    - an export folder: README.md and eval_results.json are rewritten atomically; returns the folder;
    - a repo on a hub: README.md and eval_results.json are fetched, merged and committed to
      branch ``revision`` (default main) with :meth:`Hub.commit <fggp_hub.hub.hubs.Hub.commit>`
      (``huggingface_hub.metadata_update`` has no endpoint argument, so the same merge is
      done here); returns the commit sha.

    Results on the first n images of a split (``num_images < dataset_size``) are written
    with split ``"<split>[:n]"``, next to (not over) the full split's figures, and leave
    eval_results.json alone.
    """
    from .hubs import get_hub
    from .load import resolve_source

    source = resolve_source(name_or_folder, hub=hub)
    if source.get("origin") == "bundled":
        raise CardError(f"{name_or_folder} is the read-only bundled copy in {source['path']}: write results to a "
                        "folder or a hub repo you own (e.g. fggp-hub pull it into your local hub first)")
    if source["kind"] == "folder":
        folder = Path(source["path"])
        _update_folder(folder, results)
        return folder
    hub_obj = get_hub(source.get("hub"), token=token)
    repo_id = source["repo_id"]
    branch = revision or source["revision"] or "main"
    if re.fullmatch(r"[0-9a-f]{40}", branch):
        raise CardError(f"{repo_id}@{branch[:12]} is a commit, not a branch: pass revision='main' (or another branch) to commit the card to")
    message = commit_message or "Update evaluation results"
    with tempfile.TemporaryDirectory(prefix="fggp-card-") as tmp:
        work = Path(tmp) / "repo"
        work.mkdir()
        # the files the merge reads (config.json: the card's dataset label) and rewrites
        source = hub_obj.pull(repo_id, branch, files=[CARD_NAME, EVAL_RESULTS_NAME, CONFIG_NAME])
        for name in (CARD_NAME, EVAL_RESULTS_NAME, CONFIG_NAME):
            if (source / name).is_file():
                shutil.copyfile(source / name, work / name)
        changed = _update_folder(work, results)
        try:
            return hub_obj.commit(repo_id, {name: work / name for name in changed}, message, revision=branch)
        except NotImplementedError:
            raise CardError(f"cannot update cards on {hub_obj.describe()}: use a local folder, a local hub or a "
                            "Hugging Face-style hub") from None
