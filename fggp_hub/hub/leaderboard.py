"""The zoo as records and the leaderboard: methods compared per backbone and sparsity.

A :class:`ModelRecord` gathers what is known about one model without loading its
weights: the zoo entry (expected metrics, pinned revision) and, when the repo is
available locally, its ``config.json`` ``sparsity`` block (method, measured sparsity,
file sizes) and its card's results (``README.md`` model-index, then
``eval_results.json``, then config.json). Records also come from export folders
(``records_from_folders``), so runs can be compared before they are in the zoo.

:func:`leaderboard` groups records by backbone, dataset and sparse start and compares
methods across target sparsities (mean and standard deviation over seeds);
:func:`zoo_markdown` renders ``model_cards/ZOO.md`` and :func:`write_zoo_markdown`
writes it atomically.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._io import write_text_atomic
from ..constants import CARD_NAME as CARD_FILE
from ..constants import EVAL_RESULTS_NAME as RESULTS_FILE
from .card import METRIC_TYPES
from .errors import FggpHubError
from .hubs import Hub, get_hub
from .integrity import COMPACT_WEIGHTS, CONFIG_NAME, DENSE_WEIGHTS, read_config, split_revision
from .zoo import NAME_PATTERN, ZooEntry, arch_short_name, list_models, sparsity_tag

__all__ = [
    "ModelRecord",
    "METADATA_FILES",
    "card_results",
    "locate",
    "record_from_entry",
    "record_from_folder",
    "records_from_zoo",
    "records_from_folders",
    "unique_records",
    "leaderboard",
    "leaderboard_markdown",
    "leaderboard_text",
    "zoo_markdown",
    "write_zoo_markdown",
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


def card_results(folder: str | os.PathLike) -> tuple[dict[str, float], str | None]:
    """Top-1/top-5 (%) as the card states them, and where they were read.

    The README's model-index (what the Hub shows) wins, then ``eval_results.json``,
    then config.json's ``results``.
    """
    folder = Path(folder)
    card = folder / CARD_FILE
    if card.is_file():
        from huggingface_hub import ModelCard

        try:
            data = ModelCard.load(card, ignore_metadata_errors=True).data
            found = {}
            for result in data.eval_results or []:
                key = METRIC_TYPES.get(result.metric_type)
                if key in ("top1", "top5") and _number(result.metric_value) is not None:
                    found.setdefault(key, float(result.metric_value))
            if found:
                return found, "card"
        except Exception:  # an unreadable card is reported by load(); here the other sources are tried
            pass
    results_path = folder / RESULTS_FILE
    if results_path.is_file():
        try:
            data = json.loads(results_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        found = {k: float(data[k]) for k in ("top1", "top5") if isinstance(data, dict) and _number(data.get(k)) is not None}
        if found:
            return found, RESULTS_FILE
    try:
        block = read_config(folder)["sparsity"]
    except FggpHubError:
        return {}, None
    results = block.get("results") or {}
    found = {k: float(results[k]) for k in ("top1", "top5") if _number(results.get(k)) is not None}
    return found, (CONFIG_NAME if found else None)


def _fill_from_folder(record: ModelRecord, folder: Path) -> ModelRecord:
    config = read_config(folder)
    block = config["sparsity"]
    files = block.get("files") or {}
    pruning = block.get("pruning") or {}
    schedule = block.get("schedule") or pruning.get("schedule") or {}
    recipe = block.get("recipe") or {}
    results = block.get("results") or {}
    record.folder = str(folder)
    record.available = True
    record.architecture = config["architecture"]
    record.backbone = arch_short_name(config["architecture"])
    record.dataset = block.get("dataset") or record.dataset
    record.method = block.get("method") or record.method
    record.target_sparsity = _number(block.get("target_sparsity"))
    record.sparsity = _number(block.get("sparsity"))
    record.sparsity_all_params = _number(block.get("sparsity_all_params"))
    initial_density = _number(schedule.get("initial_density"))
    record.initial_sparsity = round(1.0 - initial_density, 6) if initial_density is not None else 0.0
    seed = recipe.get("seed", pruning.get("seed")) if isinstance(recipe, dict) else pruning.get("seed")
    record.seed = int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None
    record.nonzero_params = block.get("nonzero_params")
    record.total_params = block.get("total_params")
    record.dense_bytes = (files.get(DENSE_WEIGHTS) or {}).get("size")
    record.compact_bytes = (files.get(COMPACT_WEIGHTS) or {}).get("size")
    record.weights_sha256 = (files.get(DENSE_WEIGHTS) or {}).get("sha256")
    record.dense_top1 = _number((block.get("dense_baseline") or {}).get("top1"))
    record.num_images = results.get("num_images") if isinstance(results.get("num_images"), int) else None
    found, where = card_results(folder)
    if found:
        record.top1, record.top5, record.accuracy_source = found.get("top1"), found.get("top5"), where
    record.name = record.name or block.get("name") or folder.name
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
            from .errors import FolderNotFoundError

            raise FolderNotFoundError(f"{path} is not a folder: pass export folders (with config.json) or folders that contain them")
        found = False
        for folder in _export_folders(path):
            try:
                records.append(record_from_folder(folder))
                found = True
            except FggpHubError:
                continue  # a config.json that is not an fggp-hub export (e.g. a dataset's)
        if not found:
            from .errors import FolderNotFoundError

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


# --------------------------------------------------------------------------- leaderboard
def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def leaderboard(records: Iterable[ModelRecord]) -> list[dict[str, Any]]:
    """One row per (backbone, dataset, start, sparsity, method): mean top-1 over runs, rank within its column.

    Rows are sorted by backbone, dataset, start, sparsity, then rank (best first).
    Records without a top-1 or a sparsity are left out.
    """
    cells: dict[tuple, list[ModelRecord]] = {}
    for r in records:
        if r.top1 is None or r.group_sparsity is None:
            continue
        key = (r.backbone or "?", r.dataset or "unknown", r.start, round(r.group_sparsity, 4), r.method or "unknown")
        cells.setdefault(key, []).append(r)
    rows = []
    for (backbone, dataset, start, sparsity, method), group in cells.items():
        mean, std = _mean_std([r.top1 for r in group])
        dense = [r.dense_top1 for r in group if r.dense_top1 is not None]
        compact = [r.compact_bytes for r in group if r.compact_bytes]
        measured = [r.sparsity for r in group if r.sparsity is not None]
        rows.append({
            "backbone": backbone,
            "dataset": dataset,
            "start": start,
            "sparsity": sparsity,
            "method": method,
            "top1": mean,
            "top1_std": std,
            "runs": len(group),
            "best_top1": max(r.top1 for r in group),
            "measured_sparsity": sum(measured) / len(measured) if measured else None,
            "dense_top1": sum(dense) / len(dense) if dense else None,
            "compact_bytes": int(sum(compact) / len(compact)) if compact else None,
            "models": sorted(r.name for r in group),
        })
    columns: dict[tuple, list[dict]] = {}
    for row in rows:
        columns.setdefault((row["backbone"], row["dataset"], row["start"], row["sparsity"]), []).append(row)
    for column in columns.values():
        column.sort(key=lambda r: -r["top1"])
        best = column[0]["top1"]
        for row in column:
            row["rank"] = 1 + sum(1 for other in column if other["top1"] > row["top1"])
            row["delta_to_best"] = row["top1"] - best
    return sorted(rows, key=lambda r: (r["backbone"], r["dataset"], r["start"], r["sparsity"], r["rank"], r["method"]))


def _tables(rows: list[dict]) -> list[dict]:
    """Rows pivoted into one table per (backbone, dataset, start): methods x sparsities."""
    tables: dict[tuple, dict] = {}
    for row in rows:
        key = (row["backbone"], row["dataset"], row["start"])
        table = tables.setdefault(key, {"backbone": key[0], "dataset": key[1], "start": key[2], "sparsities": [], "methods": [], "cells": {}, "dense": {}})
        if row["sparsity"] not in table["sparsities"]:
            table["sparsities"].append(row["sparsity"])
        if row["method"] not in table["methods"]:
            table["methods"].append(row["method"])
        table["cells"][(row["method"], row["sparsity"])] = row
        if row["dense_top1"] is not None:
            table["dense"].setdefault(row["sparsity"], row["dense_top1"])
    for table in tables.values():
        table["sparsities"].sort()
        # methods ordered by mean rank over the columns they appear in
        ranks = {m: [c["rank"] for (mm, _), c in table["cells"].items() if mm == m] for m in table["methods"]}
        table["methods"].sort(key=lambda m: (sum(ranks[m]) / len(ranks[m]), m))
    return list(tables.values())


def _cell(row: dict | None, markdown: bool) -> str:
    if row is None:
        return "–" if markdown else "-"
    text = f"{row['top1']:.2f}"
    if row["top1_std"] is not None:
        text += f" ± {row['top1_std']:.2f}"
    if row["runs"] > 1:
        text += f" (n={row['runs']})"
    if markdown and row["rank"] == 1:
        text = f"**{text}**"
    elif not markdown and row["rank"] == 1:
        text += " *"
    return text


def _title(table: dict) -> str:
    start = "dense start" if table["start"] == "dense" else f"sparse start ({table['start'].replace('erk', 'ERK ')}%)"
    return f"{table['backbone']} on {table['dataset']}, {start}"


def leaderboard_markdown(rows: list[dict]) -> str:
    """Markdown tables (one per backbone/dataset/start): top-1 (%) of each method at each sparsity, best in bold."""
    if not rows:
        return "_No results yet: the zoo has no models with a recorded top-1 accuracy._\n"
    out = []
    for table in _tables(rows):
        heads = [f"{sparsity_tag(s)}% sparsity" for s in table["sparsities"]]
        out.append(f"### {_title(table)}\n")
        out.append("| Method | " + " | ".join(heads) + " |")
        out.append("|---|" + "---:|" * len(heads))
        if table["dense"]:
            out.append("| dense baseline | " + " | ".join(
                f"{table['dense'][s]:.2f}" if s in table["dense"] else "–" for s in table["sparsities"]) + " |")
        for method in table["methods"]:
            out.append(f"| {method} | " + " | ".join(_cell(table["cells"].get((method, s)), True) for s in table["sparsities"]) + " |")
        out.append("")
    out.append(f"Top-1 accuracy (%) on the test split; {_spread_note(rows)}; the best method of each column in bold.\n")
    return "\n".join(out)


def leaderboard_text(rows: list[dict]) -> str:
    """The same tables as plain aligned text for a terminal (best of each column marked ``*``)."""
    if not rows:
        return "no results: no model in the zoo (or the given folders) has a recorded top-1 accuracy"
    blocks = []
    for table in _tables(rows):
        heads = ["method"] + [f"s={sparsity_tag(s)}%" for s in table["sparsities"]]
        body = []
        if table["dense"]:
            body.append(["dense baseline"] + [f"{table['dense'][s]:.2f}" if s in table["dense"] else "-" for s in table["sparsities"]])
        body += [[m] + [_cell(table["cells"].get((m, s)), False) for s in table["sparsities"]] for m in table["methods"]]
        widths = [max(len(r[i]) for r in [heads] + body) for i in range(len(heads))]
        lines = [_title(table), "  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(heads))]
        lines += ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)) for r in body]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + f"\n\ntop-1 accuracy (%), {_spread_note(rows)}; * best in its column"


def _spread_note(rows: list[dict]) -> str:
    """What a cell shows: a footer must not promise a ± that no cell has."""
    if any(row["runs"] > 1 for row in rows):
        return "mean ± sample standard deviation over the n runs (seeds) of a cell where n > 1, else one run"
    return "one run per cell, so no spread over seeds is shown"


# --------------------------------------------------------------------------- ZOO.md
def _fmt_bytes(n: int | None) -> str:
    if not n:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def zoo_markdown(records: Sequence[ModelRecord], *, title: str = "fggp-hub model zoo", command: str | None = None) -> str:
    """The text of ``model_cards/ZOO.md``: the models table, then the leaderboard."""
    lines = [f"# {title}", ""]
    lines.append("Sparse checkpoints produced with fggp-hub, and how the pruning methods compare. "
                 "Generated from the models' cards" + (f" with `{command}`" if command else "") + "; do not edit by hand.")
    lines.append("")
    if any(r.dataset and "JPEG" in r.dataset for r in records):
        lines += ["Results on \"CIFAR-10 (JPEG-q75 copy)\" come from a JPEG-degraded copy of CIFAR-10: compare them "
                  "with each other, not with published CIFAR-10 figures.", ""]
    lines += ["## Models", ""]
    if records:
        lines.append("| Model | Backbone | Method | Sparsity | Top-1 (%) | Compact file | Dense file | Load |")
        lines.append("|---|---|---|---:|---:|---:|---:|---|")
        for r in sorted(records, key=lambda r: (r.backbone or "", r.group_sparsity or 0, r.method or "", r.name)):
            load = f'`fggp_hub.load("{r.name}")`' if r.source == "zoo" else "local export"
            top1 = "–" if r.top1 is None else f"{r.top1:.2f}"
            lines.append(
                f"| `{r.name}` | {r.backbone or '–'} | {r.method or '–'} | {_pct(r.sparsity if r.sparsity is not None else r.target_sparsity)} | "
                f"{top1} | {_fmt_bytes(r.compact_bytes)} | {_fmt_bytes(r.dense_bytes)} | {load} |"
            )
    else:
        lines.append("_The zoo is empty._")
    lines += ["", "## Leaderboard", "", leaderboard_markdown(leaderboard(records))]
    return "\n".join(lines).rstrip() + "\n"


def write_zoo_markdown(path: str | os.PathLike, records: Sequence[ModelRecord], **kwargs: Any) -> Path:
    """Write :func:`zoo_markdown` to ``path`` atomically (temporary name, then rename)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, zoo_markdown(records, **kwargs))
    return path
