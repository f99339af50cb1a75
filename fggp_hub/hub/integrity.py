"""Checks shared by export, push and load: names, hashes, config.json, model building, sparsity."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from .._io import write_text_atomic
from ..constants import COMPACT_WEIGHTS_NAME as COMPACT_WEIGHTS
from ..constants import CONFIG_NAME
from ..constants import DENSE_WEIGHTS_NAME as DENSE_WEIGHTS
from .errors import (
    ArchitectureNotRegisteredError,
    CorruptCheckpointError,
    InvalidNameError,
    SparsityMismatchError,
)
from .sparsity_info import BLOCK_VERSION, SparsityInfo

__all__ = [
    "CONFIG_NAME",
    "DENSE_WEIGHTS",
    "COMPACT_WEIGHTS",
    "SPARSITY_TOLERANCE",
    "BLOCK_VERSION",
    "validate_repo_id",
    "split_revision",
    "validate_revision",
    "validate_filename",
    "sha256_file",
    "read_config",
    "read_export",
    "check_folder_files",
    "verify_weight_file",
    "build_model",
    "check_sparsity",
]

SPARSITY_TOLERANCE = 1e-6
#: File kinds a repo may hold. Weights are safetensors only: nothing is ever unpickled.
ALLOWED_SUFFIXES = (".safetensors", ".json", ".md", ".yaml", ".yml", ".png", ".txt", ".onnx")
_ALLOWED_DOTFILES = (".gitattributes",)
_MAX_CONFIG_BYTES = 16 * 1024 * 1024

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
_FILENAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")


def validate_repo_id(repo_id: Any) -> str:
    """``org/name``: letters, digits, ``-``, ``_`` and ``.`` only; no ``..``, ``--`` or leading ``/``."""
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise InvalidNameError(
            f"invalid repo id {str(repo_id)[:120]!r}: use 'org/name' with letters, digits, '-', '_' and '.' "
            "(no '..', '--', spaces or leading '/')"
        )
    return repo_id


def split_revision(repo_id: str, revision: str | None = None) -> tuple[str, str | None]:
    """``org/name@rev`` -> (``org/name``, ``rev``); an explicit ``revision`` must agree."""
    if "@" in repo_id:
        repo_id, _, rev = repo_id.partition("@")
        if revision is not None and revision != rev:
            raise InvalidNameError(f"two revisions given: '@{rev}' in the id and revision={revision!r}; pass one")
        revision = rev
    validate_repo_id(repo_id)
    if revision is not None:
        validate_revision(revision)
    return repo_id, revision


def validate_revision(revision: Any) -> str:
    if (
        not isinstance(revision, str)
        or not _REVISION.fullmatch(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith("/")
    ):
        raise InvalidNameError(
            f"invalid revision {str(revision)[:120]!r}: use a branch, tag or commit sha (letters, digits, '._-/', no '..')"
        )
    return revision


def validate_filename(name: Any, where: str = "repo") -> str:
    """A plain file name at the top of a repo folder, of an allowed kind."""
    if name in _ALLOWED_DOTFILES:
        return name
    if (
        not isinstance(name, str)
        or not _FILENAME.fullmatch(name)
        or name in (".", "..")
        or ".." in name
        or not name.endswith(ALLOWED_SUFFIXES)
    ):
        raise InvalidNameError(
            f"refusing file {str(name)[:120]!r} in {where}: only plain names of safetensors/json/md/yaml/png/txt/onnx files "
            "are allowed (no paths, '..', pickles or odd characters)"
        )
    return name


def sha256_file(path: str | Path, chunk: int = 8 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_config(folder: str | Path) -> dict:
    """config.json of an export folder, validated (see :func:`read_export`)."""
    return read_export(folder)[0]


def read_export(folder: str | Path) -> tuple[dict, SparsityInfo]:
    """config.json of an export folder and its ``sparsity`` block as a record, validated once here.

    Size, JSON, the architecture, then every value the hub compares or prints (types, ranges,
    finite numbers, safe file names: :meth:`SparsityInfo.from_config`).
    """
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CorruptCheckpointError(f"{folder} has no {CONFIG_NAME}: it is not an exported model folder")
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise CorruptCheckpointError(f"{path} is larger than {_MAX_CONFIG_BYTES} bytes; refusing to parse it")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCheckpointError(f"{path} is not valid JSON ({err.__class__.__name__}); re-download or re-export") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise CorruptCheckpointError(f"{path} has no 'architecture': it is not a timm config")
    return config, SparsityInfo.from_config(config, where=str(path))  # every number finite, in range, of the right type


def check_folder_files(folder: str | Path, links_within: str | Path | None = None, *, allow_links: bool = False) -> list[str]:
    """Names of the files of a repo folder, each validated; sub-folders and links are refused.

    ``links_within``: symbolic links are accepted only when they resolve to a file inside that
    folder (huggingface_hub's cache snapshots link to its blobs). ``allow_links``: a user's own
    export folder, read only after its hashes are checked.
    """
    folder = Path(folder)
    names = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name == ".cache" and entry.is_dir(follow_symlinks=False):
            continue  # huggingface_hub's local_dir metadata
        if entry.is_symlink() and not allow_links:
            target = Path(entry.path).resolve()
            if links_within is None or not target.is_file() or not target.is_relative_to(Path(links_within).resolve()):
                raise InvalidNameError(f"refusing symbolic link {entry.name!r} in {folder}: repo folders hold plain files only; "
                                       "copy the file in instead of linking it")
        if entry.is_dir(follow_symlinks=False):
            raise InvalidNameError(f"refusing sub-folder {entry.name!r} in {folder}: exported repos are flat")
        validate_filename(entry.name, where=str(folder))
        names.append(entry.name)
    return names


# ------------------------------------------------------------------ verification records
# Hashing a 90 MB file costs ~0.1 s on every load. A file inside the hub's own caches (the
# local hub / fggp_hub home, huggingface_hub's cache) that was hashed and matched before is
# trusted again while its (real path, size, mtime_ns, ctime_ns, inode, device) and the
# expected sha256 are unchanged: any write changes mtime/ctime (ctime cannot be set back by a
# user), a replaced file has another inode. Files elsewhere (a folder the user edits) are
# always hashed.
_RECORDS_DIR = "verified"


def _trusted_roots() -> list[Path]:
    from .hubs import home_dir

    roots = [home_dir()]
    try:
        from huggingface_hub import constants

        roots.append(Path(constants.HF_HUB_CACHE))
    except Exception:  # noqa: BLE001  no huggingface_hub cache configured: the fggp_hub home only
        pass
    return [r.expanduser().resolve() for r in roots]


def _identity(real: Path, sha256: str) -> dict:
    st = real.stat()
    return {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino, "device": st.st_dev, "sha256": sha256}


def _record_file(real: Path) -> Path:
    from .hubs import home_dir

    return home_dir() / _RECORDS_DIR / (hashlib.sha256(str(real).encode()).hexdigest()[:32] + ".json")


def _is_trusted(real: Path) -> bool:
    return any(real.is_relative_to(root) for root in _trusted_roots())


def _verified_before(real: Path, sha256: str) -> bool:
    """True when a record says this exact file (same identity) matched ``sha256`` before."""
    if not _is_trusted(real):
        return False
    try:
        record = json.loads(_record_file(real).read_text(encoding="utf-8"))
        return record == _identity(real, sha256)
    except (OSError, ValueError):
        return False


def _remember_verified(real: Path, identity: dict) -> None:
    """Write the record (atomically; best effort: a read-only cache just means hashing next time)."""
    if not _is_trusted(real):
        return
    try:
        target = _record_file(real)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, json.dumps(identity), fsync=False)
    except OSError:
        pass


def verify_weight_file(folder: str | Path, name: str, info: SparsityInfo) -> Path:
    """Size and sha256 of ``folder/name`` against config.json's record ``info``; returns its path.

    The hash of an unchanged file inside the hub's own caches is not recomputed
    (a verification record, see ``_verified_before``); any change re-hashes it.
    """
    folder = Path(folder)
    validate_filename(name, where=str(folder))
    if not name.endswith(".safetensors"):
        raise InvalidNameError(f"refusing to read weights from {name!r}: only safetensors files are read")
    recorded = info.files.get(name)
    if recorded is None:
        raise CorruptCheckpointError(f"config.json in {folder} records no sha256 for {name}; re-export the model")
    path = folder / name
    if not path.is_file():
        raise CorruptCheckpointError(f"{name} is missing from {folder}; re-download the repo (or load with compact={name != COMPACT_WEIGHTS})")
    size = path.stat().st_size
    if size != recorded.size:
        kind = "truncated" if size < recorded.size else "larger than recorded"
        raise CorruptCheckpointError(f"{name} in {folder} is {kind} ({size} bytes, config.json says {recorded.size}); re-download it")
    real = path.resolve()
    if _verified_before(real, recorded.sha256):
        return path
    identity = _identity(real, recorded.sha256)  # taken before hashing: a write during it changes mtime/ctime
    digest = sha256_file(path)
    if digest != recorded.sha256:
        raise CorruptCheckpointError(
            f"{name} in {folder} does not match config.json (sha256 {digest[:12]}... != {recorded.sha256[:12]}...); "
            "the file is corrupt or was replaced: re-download it"
        )
    _remember_verified(real, identity)
    return path


def build_model(config: dict):
    """An untrained timm model of config.json's architecture and arguments (weights not loaded)."""
    import timm
    from timm.models import PretrainedCfg

    arch = config["architecture"]
    if not timm.is_model(arch):
        raise ArchitectureNotRegisteredError(
            f"architecture {arch!r} is not registered with timm {timm.__version__}: import the package that "
            "registers it (fggp_hub registers fggp_*) or upgrade timm/fggp-hub"
        )
    from .validate import check_model_args

    model_args = check_model_args(config.get("model_args"), where=f"config.json of {arch}")  # whitelisted keys only
    model_args.setdefault("num_classes", config.get("num_classes"))
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    overlay = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in (config.get("pretrained_cfg") or {}).items()
        if k in fields and k not in ("architecture", "tag", "hf_hub_id", "file", "url", "source", "state_dict")
    }
    return timm.create_model(arch, pretrained=False, pretrained_cfg_overlay=overlay, **model_args)


def check_sparsity(model, info: SparsityInfo, card_sparsity: float | None = None, where: str = "") -> dict:
    """Recompute exact zeros of prunable weights and compare with the recorded numbers (tolerance 1e-6)."""
    from ..pruning import sparsity_stats

    stats = sparsity_stats(model, include_first_conv=info.include_first_conv)
    where = f" in {where}" if where else ""
    from .validate import check_number

    recorded = float(info.sparsity)  # validated when read
    card_sparsity = check_number(card_sparsity, "the model card's sparsity", where or "README.md", lo=0.0, hi=1.0, optional=True)
    if abs(stats["sparsity"] - recorded) > SPARSITY_TOLERANCE:
        raise SparsityMismatchError(
            f"weights{where} are {stats['sparsity']:.6%} sparse but config.json says {recorded:.6%}; "
            "the weights or the card were altered: re-download or re-export"
        )
    if card_sparsity is not None and abs(stats["sparsity"] - float(card_sparsity)) > SPARSITY_TOLERANCE:
        raise SparsityMismatchError(
            f"weights{where} are {stats['sparsity']:.6%} sparse but the model card says {float(card_sparsity):.6%}; "
            "re-export the model to regenerate its card"
        )
    for name, layer in info.layers.items():
        got = stats["layers"].get(name)
        if got is None or abs(got["sparsity"] - float(layer.sparsity)) > SPARSITY_TOLERANCE:
            measured = "missing" if got is None else f"{got['sparsity']:.6%}"
            raise SparsityMismatchError(
                f"layer {name}{where} is {measured} sparse but config.json says {float(layer.sparsity):.6%}; "
                "re-download or re-export"
            )
    return stats
