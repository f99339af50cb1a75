"""Export a (pruned) timm model as a Hub repo folder, atomically.

The folder holds:

- ``config.json``: timm's schema (``architecture``, ``num_classes``, ``model_args``,
  ``pretrained_cfg``, written by timm's own ``save_config_for_hf``) plus a top-level
  ``"sparsity"`` block (method, measured sparsity globally and per layer, schedule,
  recipe, dataset, results, and the size and sha256 of each weight file);
- ``model.safetensors``: the plain state_dict (pruned weights exactly ``+0.0``, standard
  key names), what ``timm.create_model("hf-hub:..."/"local-dir:...", pretrained=True)`` reads;
- ``model.sparse.safetensors``: the same weights in the lossless compact format
  (:mod:`fggp_hub.hub.sparse_format`);
- ``README.md`` (model card), ``sparsity_per_layer.png`` (and ``sparsity_schedule.png``),
  ``recipe.yaml`` and ``eval_results.json`` when given.

Everything is written into a hidden sibling folder, fsynced, verified (the state_dict is
loaded strictly into a fresh timm model and the compact file is decoded and compared bit
for bit) and only then swapped in with one atomic rename (``renameat2(RENAME_EXCHANGE)``
when replacing an existing export on Linux), so a crash leaves the old folder or the
complete new one.
"""
from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import fsync_path
from ..constants import CARD_NAME, CIFAR10_JPEG_LABEL, EXPORT_FILES
from ..constants import EVAL_RESULTS_NAME as RESULTS_FILE
from ..constants import RECIPE_NAME as RECIPE_FILE
from ..pruning import CubicSchedule, sparsity_stats, unwrap_model
from ..pruning.flops import count_macs
from . import sparse_format
from .card import LAYER_PLOT, SCHEDULE_PLOT, make_card, plot_layer_sparsity, plot_schedule
from .errors import ExportError
from .integrity import BLOCK_VERSION, COMPACT_WEIGHTS, CONFIG_NAME, DENSE_WEIGHTS, build_model, sha256_file
from .sparsity_info import FileInfo, LayerInfo, SparsityInfo, unverified_files
from .zoo import is_zoo_name, make_name

__all__ = ["export", "RECIPE_FILE", "RESULTS_FILE", "BLOCK_VERSION", "EXPORT_FILES"]
logger = logging.getLogger("fggp_hub")

_DATASET_ALIASES = {"shared": CIFAR10_JPEG_LABEL, "cifar10-jpeg": CIFAR10_JPEG_LABEL, "cifar10_jpeg": CIFAR10_JPEG_LABEL}


# --------------------------------------------------------------------------- state_dict
def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict with masks folded in: no ``*_orig``/``*_mask`` or ``parametrizations.*`` keys."""
    from torch.nn.utils import parametrize

    sd = dict(model.state_dict())
    for key in list(sd):  # torch.nn.utils.prune reparametrisation
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in sd:
            base = key[: -len("_orig")]
            sd[base] = sd.pop(key) * sd.pop(base + "_mask")
    for module_name, module in model.named_modules():  # torch.nn.utils.parametrize
        if parametrize.is_parametrized(module):
            prefix = f"{module_name}." if module_name else ""
            for pname in list(module.parametrizations.keys()):
                for key in [k for k in sd if k.startswith(f"{prefix}parametrizations.{pname}.")]:
                    del sd[key]
                sd[prefix + pname] = getattr(module, pname).detach()
    leftovers = [k for k in sd if k.endswith(("_orig", "_mask")) or "parametrizations." in k]
    if leftovers:
        raise ExportError(f"cannot fold pruning reparametrisation keys {leftovers[:3]}: call torch.nn.utils.prune.remove first")
    # own storage, row-major (channels_last weights too), -0.0 -> +0.0 so zeros are one bit pattern
    return sparse_format.canonical_zeros(sd)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------- arguments
def _pruning_config(pruning: Any) -> dict:
    if pruning is None:
        return {}
    if isinstance(pruning, str):
        return {"method": pruning}
    if hasattr(pruning, "config") and callable(pruning.config):
        pruning = pruning.config()
    if not isinstance(pruning, Mapping):
        raise ExportError(f"pruning must be a dict (Pruner.config()), a Pruner or a method name, not {type(pruning).__name__}")
    return _jsonable(dict(pruning))


def _schedule_dict(schedule: Any, pruning: dict) -> dict | None:
    if schedule is None:
        schedule = pruning.get("schedule")
    if schedule is None:
        return None
    if isinstance(schedule, CubicSchedule):
        return schedule.to_dict()
    if isinstance(schedule, Mapping):
        return _jsonable(dict(schedule))
    raise ExportError(f"schedule must be a CubicSchedule or a dict, not {type(schedule).__name__}")


def _recipe(recipe: Any) -> tuple[dict | None, str | None]:
    import yaml

    if recipe is None:
        return None, None
    if isinstance(recipe, (str, os.PathLike)):
        path = Path(recipe).expanduser()
        if not path.is_file():
            raise ExportError(f"recipe file {path} does not exist: pass an existing YAML path or a dict")
        text = path.read_text(encoding="utf-8")
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ExportError(f"recipe {path} is not valid YAML ({err.__class__.__name__})") from None
        if not isinstance(parsed, dict):
            raise ExportError(f"recipe {path} must hold a YAML mapping of settings")
        return _jsonable(parsed), text
    if isinstance(recipe, Mapping):
        return _jsonable(dict(recipe)), yaml.safe_dump(_jsonable(dict(recipe)), sort_keys=False)
    raise ExportError(f"recipe must be a dict or a path to a YAML file, not {type(recipe).__name__}")


# --------------------------------------------------------------------------- atomic folder swap
_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cleanup_stale(out: Path) -> None:
    """Remove leftovers of crashed exports of ``out`` (and restore an old folder a crash left aside)."""
    if not out.parent.is_dir():
        return
    for entry in out.parent.iterdir():
        match = _STALE.fullmatch(entry.name)
        if not match or match["name"] != out.name or _pid_alive(int(match["pid"])):
            continue
        if match["kind"] == "old" and not out.exists():
            os.rename(entry, out)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp)  # now holds the previous export
    else:  # portable fallback; a crash in between leaves the old folder aside, restored by _cleanup_stale
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old)
    fsync_path(out.parent)


assert {CONFIG_NAME, DENSE_WEIGHTS, COMPACT_WEIGHTS, LAYER_PLOT, SCHEDULE_PLOT, RECIPE_FILE, RESULTS_FILE} <= EXPORT_FILES


def _check_replaceable(out: Path, overwrite: bool) -> bool:
    """True when ``out`` is an earlier export to replace; refuses anything else that is not empty.

    An earlier export is recognised by its config.json sparsity block (with the weight files it
    lists, of the recorded sizes) AND by holding nothing but the files an export writes, so a
    project folder or user files are never deleted.
    """
    if out.is_symlink():
        raise ExportError(f"{out} is a symbolic link: pass the real folder (or another out_dir); links are never replaced")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder: choose another out_dir")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not overwrite:
        raise ExportError(f"{out} already exists: pass overwrite=True to replace it")
    entries = list(out.iterdir())
    foreign = sorted(e.name for e in entries if e.name not in EXPORT_FILES or e.is_symlink() or not e.is_file())
    try:
        files = unverified_files(json.loads((out / CONFIG_NAME).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        files = None
    ours = files is not None and all(
        isinstance(info, dict) and name in EXPORT_FILES and (out / name).is_file() and (out / name).stat().st_size == info.get("size")
        for name, info in files.items() if (out / name).exists())
    if not ours:
        raise ExportError(f"refusing to replace {out}: it is not empty and not an fggp-hub export; choose another out_dir")
    if foreign:
        raise ExportError(f"refusing to replace {out}: besides an earlier export it holds {', '.join(foreign[:5])}, which export "
                          "did not write; move them out or choose another out_dir")
    return True


# --------------------------------------------------------------------------- export
def export(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    pruning: Mapping[str, Any] | Any | None = None,
    recipe: Mapping[str, Any] | str | os.PathLike | None = None,
    results: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    dense_top1: float | None = None,
    schedule: CubicSchedule | Mapping[str, Any] | None = None,
    command: str | None = None,
    name: str | None = None,
    variant: str | None = None,
    repo_id: str | None = None,
    compact: bool = True,
    overwrite: bool = True,
    template: str | os.PathLike | None = None,
    onnx: bool = False,
) -> Path:
    """Write ``model`` as a Hub repo folder at ``out_dir`` and return its path.

    Args:
        model: a timm model (DDP / torch.compile wrappers are unwrapped), pruned weights
            already zero (as a :class:`~fggp_hub.pruning.Pruner` leaves them). Masks of
            ``torch.nn.utils.prune`` / ``parametrize`` are folded in.
        out_dir: the repo folder to create or replace (only an earlier export or an empty folder is replaced).
        pruning: ``Pruner.config()`` (or the Pruner, or a method name): method and settings for the card.
        recipe: the training recipe, a dict or a path to its YAML file (copied as ``recipe.yaml``).
        results: evaluation results, e.g. ``{"top1": 93.1, "split": "test", "num_images": 10000}``
            (accuracies in percent), written to ``eval_results.json`` and the card's model-index.
        dataset: dataset label; defaults to ``"CIFAR-10 (JPEG-q75 copy)"``, the shared copy.
        dense_top1: top-1 accuracy (%) of the dense baseline, for the card's comparison.
        schedule: the :class:`CubicSchedule` (or its dict); defaults to ``pruning["schedule"]``.
        command: the command line that trained the model.
        name: zoo-style name (``{arch}-{dataset}-s{sparsity}[-{variant}]``), derived if omitted.
        variant: suffix for the derived name (e.g. ``"erk"``).
        repo_id: where the folder will be pushed, for the card's loading instructions.
        compact: also write ``model.sparse.safetensors``.
        overwrite: replace an existing export at ``out_dir``.
        template: a card template instead of the package's ``hub/templates/model_card.md``.
        onnx: also write ``model.onnx`` (:func:`fggp_hub.to_onnx`: BN folded, dynamic batch; needs ``onnx``).
    """
    from ..version import __version__

    out = Path(out_dir).expanduser().absolute()
    _cleanup_stale(out)
    replacing = _check_replaceable(out, overwrite)
    module = unwrap_model(model)
    cfg = getattr(module, "pretrained_cfg", None)
    if not isinstance(cfg, Mapping) or not cfg.get("architecture"):
        raise ExportError(f"{type(module).__name__} has no timm pretrained_cfg: create the model with timm.create_model before exporting")

    if name is not None and not is_zoo_name(name):
        raise ExportError(f"name {name!r} does not follow {{arch}}-{{dataset}}-s{{sparsity}}[-{{variant}}], e.g. vgg19-cifar10-s95")
    pruning_cfg = _pruning_config(pruning)
    schedule_dict = _schedule_dict(schedule, pruning_cfg)
    recipe_dict, recipe_text = _recipe(recipe)
    if results is not None and not isinstance(results, Mapping):
        raise ExportError(f"results must be a dict such as {{'top1': 93.1}}, not {type(results).__name__}")
    results_dict = _jsonable(dict(results)) if results is not None else None
    label = _DATASET_ALIASES.get((dataset or "").lower(), dataset) or CIFAR10_JPEG_LABEL
    include_first_conv = bool(pruning_cfg.get("include_first_conv", False))
    state = _plain_state_dict(module)
    bad = next((k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise ExportError(f"{bad} holds NaN or infinite values: the model diverged; export a checkpoint from before that")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        from safetensors.torch import save_file
        from timm.models._hub import save_config_for_hf

        save_config_for_hf(module, str(tmp / CONFIG_NAME))
        config = json.loads((tmp / CONFIG_NAME).read_text(encoding="utf-8"))

        fresh = build_model(config)  # what timm / load() will build: the weights must fit it exactly
        try:
            result = fresh.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise ExportError(f"the weights do not fit a fresh {config['architecture']}: {str(err).splitlines()[-1].strip()}") from None
        if result.missing_keys or result.unexpected_keys:
            raise ExportError(
                f"the weights do not fit a fresh {config['architecture']} (missing {result.missing_keys[:3]}, "
                f"unexpected {result.unexpected_keys[:3]}): export the model timm built, without extra modules"
            )
        stats = sparsity_stats(fresh, include_first_conv=include_first_conv)
        input_size = tuple((config.get("pretrained_cfg") or {}).get("input_size") or (3, 32, 32))
        dense_macs, effective_macs = count_macs(fresh, (1, *input_size))  # the card's "Model stats"
        del fresh

        save_file(state, str(tmp / DENSE_WEIGHTS), metadata={"format": "pt"})
        files = {DENSE_WEIGHTS: FileInfo(sha256=sha256_file(tmp / DENSE_WEIGHTS), size=(tmp / DENSE_WEIGHTS).stat().st_size)}
        if compact:
            encodings = sparse_format.save_file(state, tmp / COMPACT_WEIGHTS)
            decoded = sparse_format.load_file(tmp / COMPACT_WEIGHTS)
            for key, t in state.items():
                d = decoded.get(key)
                if d is None or d.dtype != t.dtype or d.shape != t.shape or not torch.equal(d.reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8)):
                    raise ExportError(f"compact encoding of {key} does not decode bit-identically; please report this bug")
            counts = {e: sum(1 for v in encodings.values() if v == e) for e in ("dense", "bitmask", "csr")}
            files[COMPACT_WEIGHTS] = FileInfo(
                sha256=sha256_file(tmp / COMPACT_WEIGHTS),
                size=(tmp / COMPACT_WEIGHTS).stat().st_size,
                format=f"{sparse_format.FORMAT_NAME}/{sparse_format.FORMAT_VERSION}",
                encodings=counts,
            )

        target = (1.0 - float(schedule_dict["final_density"])) if schedule_dict and "final_density" in schedule_dict else None
        zoo_name = name or make_name(config["architecture"], label, target if target is not None else stats["sparsity"], variant)
        info = SparsityInfo(
            format_version=BLOCK_VERSION,
            name=zoo_name,
            method=pruning_cfg.get("method") or "unknown",
            sparsity=stats["sparsity"],
            sparsity_all_params=stats["sparsity_all_params"],
            target_sparsity=target,
            include_first_conv=include_first_conv,
            prunable_params=stats["prunable_params"],
            total_params=stats["total_params"],
            nonzero_params=stats["nonzero_params"],
            layers={n: LayerInfo(sparsity=layer["sparsity"], shape=tuple(layer["shape"]), numel=layer["numel"], zeros=layer["zeros"])
                    for n, layer in stats["layers"].items()},
            macs={"dense": dense_macs, "effective": effective_macs, "input_size": list(input_size)},
            pruning=pruning_cfg or None,
            schedule=schedule_dict,
            recipe=recipe_dict,
            recipe_file=RECIPE_FILE if recipe_text is not None else None,
            dataset=label,
            results=results_dict,
            dense_baseline={"top1": float(dense_top1)} if dense_top1 is not None else None,
            command=command,
            files=files,
            fggp_hub_version=__version__,
        )
        config = info.into_config(config)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

        if onnx:
            from ..onnx import ONNX_FILE, to_onnx

            to_onnx(module, tmp / ONNX_FILE, input_size=input_size)
        if recipe_text is not None:
            (tmp / RECIPE_FILE).write_text(recipe_text, encoding="utf-8")
        if results_dict is not None:
            (tmp / RESULTS_FILE).write_text(json.dumps({"dataset": label, **results_dict}, indent=2) + "\n", encoding="utf-8")
        plots = {"layers": plot_layer_sparsity(info, tmp / LAYER_PLOT).name}
        if schedule_dict and plot_schedule(schedule_dict, tmp / SCHEDULE_PLOT) is not None:
            plots["schedule"] = SCHEDULE_PLOT
        card = make_card(config, info, name=zoo_name, repo_id=repo_id, recipe_text=recipe_text, plots=plots, template=template)
        card.save(str(tmp / CARD_NAME))

        for entry in tmp.iterdir():
            os.chmod(entry, 0o644)  # safetensors writes 0600; a repo's files are all world-readable
            fsync_path(entry)
        fsync_path(tmp)
        if replacing:
            logger.warning("replacing the earlier export in %s", out)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
