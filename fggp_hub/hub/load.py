"""``load()``: a zoo name, a repo id or a folder -> a verified timm model in eval mode.

resolve (zoo / repo id / folder) -> pull (only config.json, the card and ONE weight file)
-> check the architecture is registered -> check the weight file's size and sha256
against config.json -> build the timm model and load the weights (compact or dense,
safetensors only) -> recompute the sparsity of the prunable weights and compare it with
config.json and the card (tolerance 1e-6) -> eval mode.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..constants import CARD_NAME
from . import sparse_format
from .bundled import bundled_folder, bundled_root, missing_hint
from .errors import (CorruptCheckpointError, FggpHubError, FolderNotFoundError, HubUnreachableError, InvalidNameError,
                     NotInCacheError, UnknownModelError)
from .hubs import Hub, LocalHub, get_hub
from .integrity import (
    COMPACT_WEIGHTS,
    CONFIG_NAME,
    DENSE_WEIGHTS,
    build_model,
    check_sparsity,
    read_export,
    split_revision,
    validate_repo_id,
    verify_weight_file,
)
from .sparsity_info import SparsityInfo
from .validate import check_model_size, check_number
from .zoo import ZooEntry
from .zoo import resolve as resolve_zoo_name

__all__ = ["load", "load_folder", "resolve_source"]



def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..") or "\\" in text or text.count("/") > 1


def resolve_source(
    name_or_repo_or_path: str | os.PathLike, revision: str | None = None, hub: Hub | str | os.PathLike | None = None
) -> dict[str, Any]:
    """What ``load`` would read: ``{"kind": "folder", "path"}`` or ``{"kind": "repo", "repo_id", "revision", "hub"}``.

    A zoo name resolves, unless ``hub`` names a hub explicitly, in this order:

    1. the user's local hub (``$FGGP_HUB_HOME/hub``), if it holds the entry's repo;
    2. the bundled zoo (``model_cards/<name>/`` of the checkout, read-only, verified against the
       sha256 pinned in the zoo index); skipped when a ``revision`` is asked for;
    3. the entry's Hugging Face Hub repo (from huggingface_hub's cache when offline).

    A bare name that is not in the zoo resolves to ``local/<name>`` in the local hub when
    that exists (where ``recipes/prune.py`` publishes a run).
    """
    if isinstance(name_or_repo_or_path, os.PathLike):
        return {"kind": "folder", "path": Path(name_or_repo_or_path).expanduser()}
    if not isinstance(name_or_repo_or_path, str) or not name_or_repo_or_path.strip():
        raise InvalidNameError(f"load() needs a zoo name, 'org/name[@rev]' or a folder, not {name_or_repo_or_path!r}")
    text = name_or_repo_or_path.strip()
    if text.startswith("local-dir:"):
        return {"kind": "folder", "path": Path(text[len("local-dir:"):]).expanduser()}
    source_hub = None
    if text.startswith("hf-hub:"):
        text, source_hub = text[len("hf-hub:"):], "hf"
    elif Path(text).expanduser().is_dir():
        return {"kind": "folder", "path": Path(text).expanduser()}
    base, _, zoo_rev = text.partition("@")
    if source_hub is None and "/" not in base and not _looks_like_path(base):
        if zoo_rev and revision and zoo_rev != revision:
            raise InvalidNameError(f"two revisions given: '@{zoo_rev}' and revision={revision!r}; pass one")
        asked = revision or zoo_rev or None
        try:
            entry = resolve_zoo_name(base)
        except UnknownModelError:
            own = _own_local_repo(base, asked, hub)
            if own is None:
                raise  # unknown names raise with the closest zoo names
            return own
        repo_id, pinned = split_revision(entry.repo_id, None)
        rev = asked or entry.revision or pinned
        source = {"kind": "repo", "repo_id": repo_id, "revision": rev, "entry": entry}
        if hub is not None:
            return {**source, "hub": hub}
        local = _default_local_hub()
        if local is not None and local.exists(repo_id, rev):
            return {**source, "hub": local, "origin": "local hub"}
        if asked is None:
            folder = bundled_folder(entry.name, entry.bundled)
            if folder is not None:
                return {"kind": "folder", "path": folder, "entry": entry, "origin": "bundled"}
        return {**source, "hub": entry.hub or ("hf" if entry.source == "package" else None)}
    if source_hub is None and _looks_like_path(base):
        raise FolderNotFoundError(f"folder {text} does not exist: pass an existing export folder, a zoo name or 'org/name'")
    repo_id, revision = split_revision(text, revision)
    return {"kind": "repo", "repo_id": repo_id, "revision": revision, "entry": None, "hub": source_hub or hub}


def _default_local_hub() -> LocalHub | None:
    """The user's own hub when it is a local folder (``$FGGP_HUB`` may point at a remote one instead)."""
    try:
        default = get_hub(None)
    except FggpHubError:
        return None
    return default if isinstance(default, LocalHub) else None


def _own_local_repo(name: str, revision: str | None, hub: Hub | str | os.PathLike | None) -> dict[str, Any] | None:
    """``local/<name>`` in the local hub (a run published by recipes/prune.py), if it exists."""
    local = get_hub(hub) if hub is not None else _default_local_hub()
    repo_id = f"local/{name}"
    if not isinstance(local, LocalHub) or not _is_repo_name(name) or not local.exists(repo_id, revision):
        return None
    return {"kind": "repo", "repo_id": repo_id, "revision": revision, "entry": None, "hub": local, "origin": "local hub"}


def _is_repo_name(name: str) -> bool:
    try:
        validate_repo_id(f"local/{name}")
    except InvalidNameError:
        return False
    return True


def _card_sparsity(folder: Path) -> float | None:
    path = folder / CARD_NAME
    if not path.is_file():
        return None
    from huggingface_hub import metadata_load

    try:
        meta = metadata_load(path) or {}
    except Exception as err:  # the YAML parser's many error types
        raise CorruptCheckpointError(f"the model card {path} has unreadable YAML ({err.__class__.__name__}); re-download or re-export") from None
    value = meta.get("sparsity")
    if value is None:
        return None
    return float(check_number(value, "sparsity", f"the model card {path}", lo=0.0, hi=1.0))


def _check_expected_metrics(info: SparsityInfo, entry: ZooEntry | None) -> None:
    if entry is None or not entry.metrics:
        return
    recorded = info.results or {}
    for key, expected in entry.metrics.items():
        got = recorded.get(key)
        if isinstance(expected, (int, float)) and isinstance(got, (int, float)) and abs(float(got) - float(expected)) > 1e-6:
            raise CorruptCheckpointError(
                f"zoo entry {entry.name} expects {key}={expected} but the repo records {key}={got}: "
                "the zoo index and the repo revision disagree; pin the revision the zoo lists"
            )


def _read_weights(path: Path, compact: bool, expected: dict | None = None, architecture: str = "the architecture") -> dict[str, torch.Tensor]:
    if compact:
        return sparse_format.load_file(path, expected=expected, architecture=architecture)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as err:
        raise CorruptCheckpointError(f"{path.name} is not a readable safetensors file ({err}); re-download it") from None


def _filled_by_state_dict(model: nn.Module) -> bool:
    """True when a complete state_dict sets every tensor ``model`` holds, so its initial values never matter.

    False (build the model normally) when a module keeps tensors outside its state_dict:
    non-persistent buffers, tensors held as plain attributes (directly or in a list, tuple or
    dict), or when a parameter is shared by two modules (``to_empty`` would untie it).
    """
    seen: set[int] = set()
    for module in model.modules():
        if module._non_persistent_buffers_set:
            return False
        for key, value in vars(module).items():
            if key in ("_parameters", "_buffers", "_modules"):
                continue
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
            if any(isinstance(item, torch.Tensor) for item in items):
                return False
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            if tensor is not None:
                if id(tensor) in seen:
                    return False
                seen.add(id(tensor))
    return True


def _fits_exactly(state: dict[str, torch.Tensor], shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> bool:
    """The same names as the architecture's state_dict, each with its shape and dtype (nothing to cast or refuse)."""
    return state.keys() == shapes.keys() and all((tuple(t.shape), t.dtype) == shapes[k] for k, t in state.items())


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in ``t``: one summing pass (any NaN/inf makes the sum non-finite), exact check only if it is."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())  # a finite tensor whose sum overflows: exact


def load_folder(folder: str | os.PathLike, compact: bool = True, *, entry: ZooEntry | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Verify an export folder and build its model (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderNotFoundError(f"folder {folder} does not exist: pass an existing export folder")
    config, info = read_export(folder)
    files = info.files
    weight = COMPACT_WEIGHTS if compact and COMPACT_WEIGHTS in files else DENSE_WEIGHTS
    if weight not in files:
        raise CorruptCheckpointError(f"config.json in {folder} lists no {DENSE_WEIGHTS}; re-export the model")
    with torch.device("meta"):  # the architecture's size, without allocating it
        skeleton = build_model(config)
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in skeleton.state_dict().items()}
    path = verify_weight_file(folder, weight, info)
    dense_bytes = sum(math.prod(shape) * torch.empty((), dtype=dtype).element_size() for shape, dtype in shapes.values())
    check_model_size(dense_bytes, path.stat().st_size, weight == COMPACT_WEIGHTS, where=str(path))
    state = _read_weights(path, compact=weight == COMPACT_WEIGHTS, expected=shapes, architecture=config["architecture"])
    bad = next((k for k, t in state.items() if t.is_floating_point() and not _all_finite(t)), None)
    if bad is not None:
        raise CorruptCheckpointError(f"{weight} in {folder} holds NaN or infinite values in {bad}; refusing the model: re-export it")
    # Every tensor the file must fill (missing keys are refused below) needs no random initialisation,
    # so the skeleton is used instead of a second, randomly initialised build. Tensors decoded from the
    # compact file are new memory of the right shape and dtype: the skeleton adopts them (assign).
    # The dense file's tensors may map the file itself: they are copied into new storage, as timm does.
    assign = False
    if not _filled_by_state_dict(skeleton):
        model = build_model(config)
    elif weight == COMPACT_WEIGHTS and _fits_exactly(state, shapes):
        model, assign = skeleton, True
    else:
        model = skeleton.to_empty(device="cpu")
    try:
        result = model.load_state_dict(state, strict=False, assign=assign)
    except RuntimeError as err:  # shape mismatches
        raise CorruptCheckpointError(
            f"{weight} in {folder} does not fit {config['architecture']}: {str(err).splitlines()[-1].strip()}; re-export the model"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise CorruptCheckpointError(
            f"{weight} in {folder} does not fit {config['architecture']} (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}); re-export the model"
        )
    if assign and any(t.is_meta for t in (*model.parameters(), *model.buffers())):  # cannot happen: keys and tensors checked
        raise RuntimeError(f"loading {folder} left tensors of {config['architecture']} without storage; please report this")
    check_sparsity(model, info, _card_sparsity(folder), where=str(folder / weight))
    _check_expected_metrics(info, entry)
    model.eval()
    model.to(device)
    model.sparsity_info = info  # config.json's sparsity block, typed (the full record)
    model.hub_info = {  # where the model came from (kept a dict: older code indexes it)
        "name": info.name,
        "folder": str(folder),
        "weights": weight,
        "sparsity": info.sparsity,
        "results": info.results,
    }
    return model


def load(
    name_or_repo_or_path: str | os.PathLike,
    revision: str | None = None,
    hub: Hub | str | os.PathLike | None = None,
    compact: bool = True,
    *,
    token: str | bool | None = None,
    device: str | torch.device = "cpu",
    force_download: bool = False,
) -> nn.Module:
    """A ready timm model in eval mode, its files and sparsity verified.

    ``model.sparsity_info`` is config.json's sparsity block as a typed
    :class:`~fggp_hub.hub.sparsity_info.SparsityInfo`; ``model.hub_info`` (a dict) says where the
    model came from (name, folder, weights file, repo_id, revision, hub, origin) and repeats its
    sparsity and results.

    Args:
        name_or_repo_or_path: a zoo name (``vgg19-cifar10-s95``, see :func:`list_models`),
            a repo id ``org/name[@revision]`` (``hf-hub:org/name`` means the Hugging Face hub),
            or a local export folder (``local-dir:`` prefix optional). A zoo name is looked
            up in this order: (1) your local hub, (2) the bundled zoo that ships with the
            project (``model_cards/<name>/``, verified against the sha256 pinned in the zoo
            index), (3) the Hugging Face Hub repo the index names (offline: its cache).
            A bare name that is not in the zoo finds ``local/<name>`` in your local hub.
        revision: branch, tag or commit sha (overrides a zoo entry's pinned revision).
        hub: where repos live (see :func:`fggp_hub.hub.hubs.get_hub`); given, it is the only
            source. Defaults to the order above for zoo names, else ``$FGGP_HUB``, then the local hub.
        compact: read ``model.sparse.safetensors`` (fewer bytes to fetch) instead of
            ``model.safetensors``; both decode to identical weights.
        token: access token for a remote hub (never printed).
        device: where to put the model.
        force_download: fetch the files again even when huggingface_hub's cache has them (a damaged cached file).
    """
    source = resolve_source(name_or_repo_or_path, revision, hub)
    if source["kind"] == "folder":
        model = load_folder(source["path"], compact, entry=source.get("entry"), device=device)
        if source.get("origin") == "bundled":
            model.hub_info.update({"repo_id": source["entry"].repo_id, "origin": "bundled"})
        return model
    hub_obj = get_hub(source.get("hub"), token=token)
    repo_id, rev = source["repo_id"], source["revision"]
    wanted = COMPACT_WEIGHTS if compact else DENSE_WEIGHTS
    remote = not isinstance(hub_obj, LocalHub)
    extra = {"force_download": True} if force_download and remote else {}
    try:
        folder = hub_obj.pull(repo_id, rev, files=[CONFIG_NAME, CARD_NAME, wanted], **extra)
    except (NotInCacheError, HubUnreachableError):
        entry = source.get("entry")
        if entry is not None and entry.bundled and bundled_root() is None:  # a wheel install, offline
            raise NotInCacheError(missing_hint(entry.name, repo_id)) from None
        raise
    if compact and COMPACT_WEIGHTS not in read_export(folder)[1].files:
        # exported without the compact file: fetch the dense one, at the same commit
        folder = hub_obj.pull(repo_id, folder.name, files=[CONFIG_NAME, CARD_NAME, DENSE_WEIGHTS], **extra)
    try:
        model = load_folder(folder, compact, entry=source["entry"], device=device)
    except CorruptCheckpointError as err:
        if not remote or force_download:
            raise
        raise type(err)(f"{err} (the copy in huggingface_hub's cache {folder} is damaged: fetch it again with "
                        "force_download=True, or fggp-hub pull/info --force-download)") from None
    model.hub_info.update({"repo_id": repo_id, "revision": folder.name, "hub": hub_obj.describe(),
                           "origin": source.get("origin", "hub")})
    return model
