"""What is known about one zoo model without loading its weights: :class:`ModelRecord`.

A record gathers the zoo entry (expected metrics, pinned revision) and, when the repo is
available locally, its ``config.json`` ``sparsity`` block (method, measured sparsity,
file sizes) and its card's results (:func:`~fggp_hub.hub.card.card_results`: ``README.md``
model-index, then ``eval_results.json``, then config.json). Records also come from export folders
(:func:`records_from_folders`), so runs can be compared before they are in the zoo.
:mod:`fggp_hub.hub.leaderboard` aggregates records, :mod:`fggp_hub.hub.render` prints them.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..constants import CARD_NAME as CARD_FILE
from ..constants import EVAL_RESULTS_NAME as RESULTS_FILE
from .card import card_results
from .errors import FggpHubError, FolderNotFoundError
from .hubs import Hub, get_hub
from .integrity import CONFIG_NAME, read_export, split_revision
from .zoo import NAME_PATTERN, ZooEntry, arch_short_name, list_models, sparsity_tag

__all__ = [
    "ModelRecord",
    "METADATA_FILES",
    "card_results",
    "locate",
    "model_info",
    "record_from_entry",
    "record_from_folder",
    "records_from_zoo",
    "records_from_folders",
    "unique_records",
]

#: The small files that describe a repo (no weights): enough for list and the leaderboard.
METADATA_FILES = [CONFIG_NAME, CARD_FILE, RESULTS_FILE]


@dataclass
class ModelRecord:
    """What the zoo table and the leaderboard show about one model."""

    name: str
    repo_id: str | None = None
    revision: str | None = None
    folder: str | None = None
    available: bool = False
    status: str = ""
    architecture: str | None = None
    backbone: str | None = None
    dataset: str | None = None
    method: str | None = None
    target_sparsity: float | None = None
    sparsity: float | None = None
    sparsity_all_params: float | None = None
    initial_sparsity: float = 0.0
    seed: int | None = None
    top1: float | None = None
    top5: float | None = None
    num_images: int | None = None
    accuracy_source: str | None = None
    dense_top1: float | None = None
    nonzero_params: int | None = None
    total_params: int | None = None
    dense_bytes: int | None = None
    compact_bytes: int | None = None
    weights_sha256: str | None = None
    source: str = "zoo"
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def start(self) -> str:
        """``dense`` or ``erk50`` (the sparse start of the paper's ERK settings)."""
        return "dense" if not self.initial_sparsity else f"erk{sparsity_tag(self.initial_sparsity)}"

    @property
    def group_sparsity(self) -> float | None:
        return self.target_sparsity if self.target_sparsity is not None else self.sparsity

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = self.start
        return out


# --------------------------------------------------------------------------- reading a folder
def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _fill_from_folder(record: ModelRecord, folder: Path) -> ModelRecord:
    config, info = read_export(folder)
    pruning = info.pruning or {}
    recipe = info.recipe or {}
    results = info.results or {}
    record.folder = str(folder)
    record.available = True
    record.architecture = config["architecture"]
    record.backbone = arch_short_name(config["architecture"])
    record.dataset = info.dataset or record.dataset
    record.method = info.method or record.method
    record.target_sparsity = _number(info.target_sparsity)
    record.sparsity = _number(info.sparsity)
    record.sparsity_all_params = _number(info.sparsity_all_params)
    initial_density = _number(info.schedule_settings.get("initial_density"))
    record.initial_sparsity = round(1.0 - initial_density, 6) if initial_density is not None else 0.0
    seed = recipe.get("seed", pruning.get("seed"))
    record.seed = int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None
    record.nonzero_params = info.nonzero_params
    record.total_params = info.total_params
    record.dense_bytes = info.dense_file.size if info.dense_file else None
    record.compact_bytes = info.compact_file.size if info.compact_file else None
    record.weights_sha256 = info.dense_file.sha256 if info.dense_file else None
    record.dense_top1 = info.dense_top1
    record.num_images = results.get("num_images") if isinstance(results.get("num_images"), int) else None
    found, where = card_results(folder)
    if found:
        record.top1, record.top5, record.accuracy_source = found.get("top1"), found.get("top5"), where
    record.name = record.name or info.name or folder.name
    return record


def _name_sparsity(name: str) -> float | None:
    """The target sparsity a zoo name states: ``s95`` -> 0.95, ``s99p5`` -> 0.995."""
    match = NAME_PATTERN.fullmatch(name)
    if not match:
        return None
    whole, _, fraction = match["sparsity"].partition("p")
    return round(float(f"{whole}.{fraction or 0}") / 100.0, 6)


def _fill_from_entry(record: ModelRecord, entry: ZooEntry) -> ModelRecord:
    metrics = entry.metrics or {}
    record.architecture = entry.architecture
    record.backbone = arch_short_name(entry.architecture) if entry.architecture else entry.name.split("-")[0]
    record.dataset = entry.dataset
    record.sparsity = _number(entry.sparsity)
    record.target_sparsity = _name_sparsity(entry.name)
    record.method = entry.method
    record.top1 = _number(metrics.get("top1"))
    record.top5 = _number(metrics.get("top5"))
    record.accuracy_source = "zoo index" if record.top1 is not None else None
    record.dense_bytes = metrics.get("dense_bytes") if isinstance(metrics.get("dense_bytes"), int) else None
    record.compact_bytes = metrics.get("compact_bytes") if isinstance(metrics.get("compact_bytes"), int) else None
    return record


# --------------------------------------------------------------------------- locating repos
def _entry_hub(entry: ZooEntry, hub: Hub | str | os.PathLike | None) -> Hub:
    """The hub a zoo name lives on: the argument, the entry's own, ``hf`` for published entries, else the default."""
    if hub is not None:
        return get_hub(hub)
    return get_hub(entry.hub or ("hf" if entry.source == "package" else None))


def locate(entry: ZooEntry, hub: Hub | str | os.PathLike | None = None, *, fetch: bool = False) -> tuple[Path | None, str]:
    """A local folder with the entry's metadata files and a status line, or (None, why not).

    Never downloads unless ``fetch``: local hubs are read in place, remote repos are
    looked up in huggingface_hub's cache only.
    """
    from .hubs import HfHub, LocalHub
    from .load import resolve_source

    repo_id, pinned = split_revision(entry.repo_id, None)
    revision = entry.revision or pinned
    if hub is None:  # load()'s order: the local hub, then the bundled copy, then the entry's Hub repo
        try:
            source = resolve_source(entry.name)
        except FggpHubError as err:
            return None, str(err)
        if source["kind"] == "folder":
            return source["path"], f"bundled with fggp-hub ({source['path']})"
        if source.get("origin") == "local hub":
            hub = source["hub"]
    try:
        hub_obj = _entry_hub(entry, hub)
    except FggpHubError as err:
        return None, str(err)
    where = hub_obj.describe()
    try:
        if isinstance(hub_obj, LocalHub) or fetch:
            folder = hub_obj.pull(repo_id, revision, files=METADATA_FILES)
        elif isinstance(hub_obj, HfHub):
            folder = _cached_snapshot(hub_obj, repo_id, revision)
            if folder is None:
                return None, f"not downloaded from {where}: run 'fggp-hub pull {entry.name}' (or list --fetch)"
        else:
            folder = hub_obj.pull(repo_id, revision, files=METADATA_FILES)
    except FggpHubError as err:
        return None, str(err)
    if not (folder / CONFIG_NAME).is_file():
        return None, f"{repo_id} in {where} has no {CONFIG_NAME}"
    return folder, f"{repo_id}@{folder.name[:12]} on {where}"


def _cached_snapshot(hub: Any, repo_id: str, revision: str | None) -> Path | None:
    """The huggingface_hub cache snapshot of a repo (revision or main), if its config.json is there."""
    from huggingface_hub import snapshot_download

    from .hubs import _client_errors

    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            endpoint=hub.endpoint,
            cache_dir=str(hub.cache_dir) if hub.cache_dir is not None else None,
            allow_patterns=METADATA_FILES,
            local_files_only=True,
        )
    except (*_client_errors(), OSError, ValueError):
        return None
    folder = Path(path)
    return folder if (folder / CONFIG_NAME).is_file() else None


def record_from_entry(entry: ZooEntry, hub: Hub | str | os.PathLike | None = None, *, fetch: bool = False) -> ModelRecord:
    """The record of a zoo entry: index metrics, replaced by the repo's own facts when it is available."""
    record = _fill_from_entry(ModelRecord(name=entry.name, repo_id=entry.repo_id, revision=entry.revision, metrics=dict(entry.metrics)), entry)
    folder, status = locate(entry, hub, fetch=fetch)
    record.status = status
    if folder is not None:
        try:
            _fill_from_folder(record, folder)
            record.revision = folder.name if len(folder.name) >= 7 else record.revision
        except FggpHubError as err:
            record.available, record.status = False, str(err)
    return record


def record_from_folder(folder: str | os.PathLike) -> ModelRecord:
    """The record of an export folder (not in the zoo)."""
    folder = Path(folder).expanduser()
    record = ModelRecord(name="", source="folder", status=f"folder {folder}")
    return _fill_from_folder(record, folder)


def records_from_zoo(pattern: str | None = None, hub: Hub | str | os.PathLike | None = None, *, fetch: bool = False) -> list[ModelRecord]:
    return [record_from_entry(e, hub, fetch=fetch) for e in list_models(pattern)]


def _export_folders(path: Path) -> Iterable[Path]:
    if (path / CONFIG_NAME).is_file():
        yield path
        return
    for config in sorted(path.rglob(CONFIG_NAME)):
        rel = config.parent.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):  # half-written exports, caches
            continue
        yield config.parent


def records_from_folders(paths: Sequence[str | os.PathLike]) -> list[ModelRecord]:
    """Records of export folders; a path that is not one is searched for exports below it."""
    records = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise FolderNotFoundError(f"{path} is not a folder: pass export folders (with config.json) or folders that contain them")
        found = False
        for folder in _export_folders(path):
            try:
                records.append(record_from_folder(folder))
                found = True
            except FggpHubError:
                continue  # a config.json that is not an fggp-hub export (e.g. a dataset's)
        if not found:
            raise FolderNotFoundError(f"no fggp-hub export (config.json with a sparsity block) found under {path}")
    return records


def unique_records(records: Iterable[ModelRecord]) -> list[ModelRecord]:
    """Records without repeats of the same weights (a zoo name and its export folder count once; the first is kept)."""
    seen: set[str] = set()
    out = []
    for r in records:
        if r.weights_sha256 is not None:
            if r.weights_sha256 in seen:
                continue
            seen.add(r.weights_sha256)
        out.append(r)
    return out


# --------------------------------------------------------------------------- a loaded model
def model_info(model: Any, source: str) -> dict[str, Any]:
    """What ``fggp-hub info`` reports about a model :func:`~fggp_hub.hub.load` returned (``source``: the name asked for).

    The sparsity figures are measured on the weights (load checked them against config.json);
    the rest comes from the model's :class:`~fggp_hub.hub.sparsity_info.SparsityInfo` and card.
    """
    from ..pruning import sparsity_stats

    hub_info = dict(getattr(model, "hub_info", {}))
    record = model.sparsity_info
    folder = Path(hub_info["folder"])
    stats = sparsity_stats(model, include_first_conv=record.include_first_conv)
    found, where = card_results(folder)
    return {
        "name": record.name or source,
        "source": source,
        "repo_id": hub_info.get("repo_id"),
        "revision": hub_info.get("revision"),
        "hub": hub_info.get("hub"),
        "folder": str(folder),
        "verified": hub_info.get("weights"),
        "architecture": model.pretrained_cfg["architecture"],
        "num_classes": getattr(model, "num_classes", None),
        "method": record.method,
        "dataset": record.dataset,
        "sparsity": stats["sparsity"],
        "target_sparsity": record.target_sparsity,
        "sparsity_all_params": stats["sparsity_all_params"],
        "nonzero_params": stats["nonzero_params"],
        "total_params": stats["total_params"],
        "top1": found.get("top1"),
        "top5": found.get("top5"),
        "accuracy_source": where,
        "results": record.results,
        "dense_top1": (record.dense_baseline or {}).get("top1"),
        "pruning": record.pruning,
        "files": record.file_sizes(),
        "layers": stats["layers"],
    }
