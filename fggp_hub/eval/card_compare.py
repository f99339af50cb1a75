"""What a model card claims, how measured results compare with it, and writing results back.

A card's numbers live in three files of an export: ``config.json`` (the ``sparsity``
block, with the results given at export), ``eval_results.json`` and the ``model-index``
of ``README.md``'s YAML front matter. :func:`card_metrics` reads them into the key names
of :func:`~fggp_hub.eval.evaluate_model` (the README wins, then eval_results.json, then
config.json), :func:`compare_with_card` lines them up with measured results, and
:func:`write_results_to_card` merges measured values into the ``model-index`` the way
``huggingface_hub.metadata_update`` does (same task, dataset, split and metric: value
replaced; otherwise appended).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import write_text_atomic
from ..constants import CARD_NAME, CONFIG_NAME
from ..constants import EVAL_RESULTS_NAME as RESULTS_NAME
from ..hub.card import METRIC_NAMES, METRIC_TYPES
from ..hub.integrity import read_export
from .errors import CardError, EvalError

__all__ = ["DEFAULT_TOLERANCES", "card_metrics", "compare_with_card", "comparison_text", "parse_tolerances",
           "write_results_to_card"]


#: model-index metric ``type`` -> result key (the first type of a key is the one written).
_SUBSET_SPLIT = re.compile(r"^(?P<split>[A-Za-z0-9_.-]+)\[:(?P<n>\d+)\]$")

#: Absolute tolerances of :func:`compare_with_card`. A CPU evaluation of the same weights on the
#: same images matches the card to float noise; 0.1 points of accuracy leave room for GPU kernels.
DEFAULT_TOLERANCES: dict[str, float] = {
    "top1": 0.1,
    "top5": 0.1,
    "loss": 1e-3,
    "sparsity": 1e-6,
    "sparsity_all_params": 1e-6,
    "nonzero_params": 0,
    "total_params": 0,
    "num_images": 0,
}
#: Compared for equality (strings).
_EXACT = ("dataset", "split")


# --------------------------------------------------------------------------- reading
def _card_folder(folder_or_name: str | os.PathLike, hub: Any, revision: str | None) -> tuple[Path, dict]:
    """The folder holding the card's files, and where it came from."""
    from ..hub.hubs import get_hub
    from ..hub.load import resolve_source

    source = resolve_source(folder_or_name, revision, hub)
    if source["kind"] == "folder":
        folder = Path(source["path"])
        if not folder.is_dir():
            from ..hub.errors import FolderNotFoundError

            raise FolderNotFoundError(f"folder {folder} does not exist: pass an existing export folder, a zoo name or 'org/name'")
        return folder, {"folder": str(folder)}
    hub_obj = get_hub(source.get("hub"))
    folder = hub_obj.pull(source["repo_id"], source["revision"], files=[CONFIG_NAME, CARD_NAME, RESULTS_NAME])
    return folder, {"repo_id": source["repo_id"], "revision": folder.name, "folder": str(folder)}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CardError(f"{path} is not valid JSON: re-download or re-export the model") from None
    return data if isinstance(data, dict) else {}


def _split_and_count(split: str) -> tuple[str, int | None]:
    """``"test[:256]"`` -> ``("test", 256)``: a result on the first 256 images of the split."""
    match = _SUBSET_SPLIT.match(split)
    return (match["split"], int(match["n"])) if match else (split, None)


def _from_model_index(meta: Mapping[str, Any], num_images: int | None = None) -> dict[str, Any]:
    """The card's figures: the model-index's first (task, dataset, split) entry, or with ``num_images``
    the entry on exactly the first ``num_images`` images (``test[:1017]``) when the card has one."""
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
        same_entry = (result.task_type, result.dataset_name, result.dataset_split) == (head.task_type, head.dataset_name, head.dataset_split)
        if same_entry and key is not None and key not in out and isinstance(result.metric_value, (int, float)):
            out[key] = float(result.metric_value)
    return out


def card_metrics(folder_or_name: str | os.PathLike, hub: Any = None, revision: str | None = None, *,
                 num_images: int | None = None) -> dict[str, Any]:
    """The numbers a model card claims, under :func:`~fggp_hub.eval.evaluate_model`'s key names.

    ``folder_or_name`` is an export folder, a zoo name or ``org/name[@rev]`` (only
    config.json, README.md and eval_results.json are fetched). Keys present when the card
    has them: ``top1``, ``top5``, ``loss``, ``sparsity``, ``sparsity_all_params``,
    ``nonzero_params``, ``total_params``, ``num_images``, ``dataset``, ``split``, ``model``.
    """
    from huggingface_hub import metadata_load

    folder, where = _card_folder(folder_or_name, hub, revision)
    info = read_export(folder)[1] if (folder / CONFIG_NAME).is_file() else None
    out: dict[str, Any] = {}
    for key in ("sparsity", "sparsity_all_params", "nonzero_params", "total_params", "prunable_params", "dataset"):
        if info is not None and getattr(info, key) is not None:
            out[key] = getattr(info, key)
    if info is not None and info.name:
        out["model"] = info.name
    for source in ((info.results if info is not None else None) or {}, _read_json(folder / RESULTS_NAME)):
        for key in ("top1", "top5", "loss", "num_images", "split", "dataset"):
            if source.get(key) is not None:
                out[key] = source[key]
    card = folder / CARD_NAME
    if card.is_file():
        try:
            meta = metadata_load(card) or {}
        except Exception as err:  # the YAML parser's many error types
            raise CardError(f"the model card {card} has unreadable YAML ({err.__class__.__name__}); re-download or re-export") from None
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


# --------------------------------------------------------------------------- comparing
def compare_with_card(measured: Mapping[str, Any], card: Mapping[str, Any], tolerances: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """One row ``{metric, card, measured, diff, tolerance, ok}`` per metric both sides have.

    ``diff`` is measured - card; ``ok`` means ``|diff| <= tolerance``
    (:data:`DEFAULT_TOLERANCES`, overridden per key by ``tolerances``). ``dataset`` and
    ``split`` must be equal. A different ``num_images`` is flagged: the card's accuracy
    was measured on other images.
    """
    tol = {**DEFAULT_TOLERANCES, **dict(tolerances or {})}
    rows = []
    for key in [k for k in tol if k not in _EXACT] + [k for k in _EXACT if k not in tol]:
        have, want = measured.get(key), card.get(key)
        if have is None or want is None:
            continue
        if key in _EXACT and key not in (tolerances or {}):
            rows.append({"metric": key, "card": want, "measured": have, "diff": None, "tolerance": None, "ok": have == want})
            continue
        diff = float(have) - float(want)
        limit = float(tol[key])
        rows.append({"metric": key, "card": want, "measured": have, "diff": diff, "tolerance": limit, "ok": abs(diff) <= limit + 1e-12})
    return rows


def parse_tolerances(values: Sequence[str]) -> dict[str, float] | None:
    """``["0.2", "sparsity=1e-6"]`` -> ``{"top1": 0.2, "top5": 0.2, "sparsity": 1e-6}`` (a bare number is for accuracies)."""
    out: dict[str, float] = {}
    for raw in values:
        key, eq, value = raw.partition("=")
        if not eq:
            key, value = "", raw
        try:
            number = float(value)
        except ValueError:
            raise EvalError(f"--tolerance {raw!r}: expected a number or METRIC=NUMBER, e.g. 0.5 or top1=0.5") from None
        if not math.isfinite(number) or number < 0:
            raise EvalError(f"--tolerance {raw!r}: must be a finite number >= 0")
        if key:
            out[key.strip()] = number
        else:
            out["top1"] = out["top5"] = number
    return out or None


def _fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1 else f"{value:,.4f}".rstrip("0").rstrip(".")
    return str(value)


#: Numbers in evaluate_model's results that describe the run, not the model (shown with --json only).
_SETTINGS = {"batch_size", "num_processes", "torch_threads", "dataset_size", "prunable_params"}


def comparison_text(rows: Sequence[Mapping[str, Any]], measured: Mapping[str, Any]) -> str:
    """``fggp-hub eval``'s table of :func:`compare_with_card` rows, then the measured numbers the card has not."""
    from ..hub.render import text_table

    compared = {r["metric"] for r in rows}
    lines = [text_table(
        ["metric", "card", "measured", "diff", "tolerance", ""],
        [[r["metric"], _fmt_value(r.get("card")), _fmt_value(r.get("measured")), _fmt_value(r.get("diff")),
          _fmt_value(r.get("tolerance")), "ok" if r.get("ok") else "DIFFERS"] for r in rows],
        right={1, 2, 3, 4},
    )]
    extra = {k: v for k, v in measured.items()
             if k not in compared and k not in _SETTINGS and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if extra:
        lines += ["", "measured only:"] + [f"  {k:<26}{_fmt_value(v)}" for k, v in extra.items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------- writing
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

    from ..hub.card import dataset_hub_id

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
    _merge_model_index(card, results)
    write_text_atomic(path, str(card))
    changed = [CARD_NAME]
    current = _read_json(folder / RESULTS_NAME)
    # A run writes its recipe's dataset key ("cifar10") into eval_results.json; eval measures under
    # the card's label ("CIFAR-10 (JPEG-q75 copy)"): both name the card's own dataset.
    card_label = read_export(folder)[1].dataset if (folder / CONFIG_NAME).is_file() else None
    same_dataset = results.get("dataset") is None or current.get("dataset") in (None, results.get("dataset")) \
        or (card_label is not None and results.get("dataset") == card_label)
    if _result_split(results)[1] and same_dataset:
        update = {k: results[k] for k in ("dataset", "top1", "top5", "loss", "split", "num_images") if results.get(k) is not None}
        write_text_atomic(folder / RESULTS_NAME, json.dumps({**current, **update}, indent=2) + "\n")
        changed.append(RESULTS_NAME)
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
    from ..hub.hubs import get_hub
    from ..hub.load import resolve_source

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
        source = hub_obj.pull(repo_id, branch, files=[CARD_NAME, RESULTS_NAME])
        for name in (CARD_NAME, RESULTS_NAME):  # only the files the merge reads and rewrites
            if (source / name).is_file():
                shutil.copyfile(source / name, work / name)
        changed = _update_folder(work, results)
        try:
            return hub_obj.commit(repo_id, {name: work / name for name in changed}, message, revision=branch)
        except NotImplementedError:
            raise CardError(f"cannot update cards on {hub_obj.describe()}: use a local folder, a local hub or a "
                            "Hugging Face-style hub") from None
