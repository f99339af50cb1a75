""":class:`SparsityInfo`: config.json's ``"sparsity"`` block as a typed record (as timm's ``PretrainedCfg``).

``export()`` makes one, :func:`~fggp_hub.hub.integrity.read_export` reads and validates one
(once: types, ranges, finite numbers, safe file names), ``load()`` attaches it to the model as
``model.sparsity_info``, and eval, the leaderboard records, the card and the CLI read its
fields. This module is the only one that touches the block as a raw dict, so its keys are
spelled in one place.

The on-disk JSON does not change: a record read from a file writes back exactly the block it
was read from (:meth:`SparsityInfo.to_dict`), with only the fields changed by
:meth:`SparsityInfo.replace` replaced, so published repos keep their bytes and hashes.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..constants import COMPACT_WEIGHTS_NAME, DENSE_WEIGHTS_NAME
from .errors import CorruptCheckpointError

__all__ = ["BLOCK_KEY", "BLOCK_VERSION", "FileInfo", "LayerInfo", "SparsityInfo", "unverified_files"]

#: The key of the block in config.json.
BLOCK_KEY = "sparsity"
#: Version of the block written by this fggp-hub (a newer one is refused on read).
BLOCK_VERSION = 1


#: The block's keys in the order export writes them (config.json stays byte-identical across versions).
_KEY_ORDER = ("format_version", "name", "method", "sparsity", "sparsity_all_params", "target_sparsity", "include_first_conv",
              "prunable_params", "total_params", "nonzero_params", "layers", "macs", "pruning", "schedule", "recipe",
              "recipe_file", "dataset", "results", "dense_baseline", "command", "files", "fggp_hub_version")


@dataclass(frozen=True)
class FileInfo:
    """A weight file of the repo as config.json records it: its sha256 and size (and, for the compact file, its encoding)."""

    sha256: str
    size: int
    format: str | None = None
    encodings: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256, "size": self.size}
        if self.format is not None:
            out["format"] = self.format
        if self.encodings is not None:
            out["encodings"] = dict(self.encodings)
        return out


@dataclass(frozen=True)
class LayerInfo:
    """Exact zeros of one prunable weight (``sparsity`` is zeros / numel)."""

    sparsity: float
    shape: tuple[int, ...] | None = None
    numel: int | None = None
    zeros: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        for key in ("numel", "zeros"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["sparsity"] = self.sparsity
        return out


def _plain(value: Any) -> Any:
    """A field value as JSON data (records to dicts, tuples to lists)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


@dataclass(frozen=True)
class SparsityInfo:
    """What config.json records about a pruned model; fields in the order export writes them.

    Settings that are free-form by design (``pruning``, ``schedule``, ``recipe``, ``results``,
    ``macs``) stay mappings; :attr:`top1`, :attr:`dense_top1` and :attr:`schedule_settings`
    read the parts the hub compares.
    """

    sparsity: float
    files: dict[str, FileInfo]
    format_version: int = BLOCK_VERSION
    name: str | None = None
    method: str | None = None
    sparsity_all_params: float | None = None
    target_sparsity: float | None = None
    include_first_conv: bool = False
    prunable_params: int | None = None
    total_params: int | None = None
    nonzero_params: int | None = None
    layers: dict[str, LayerInfo] = field(default_factory=dict)
    macs: dict[str, Any] | None = None
    pruning: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    recipe_file: str | None = None
    dataset: str | None = None
    results: dict[str, Any] | None = None
    dense_baseline: dict[str, Any] | None = None
    command: str | None = None
    fggp_hub_version: str | None = None
    #: The block as read from a file (None for a record made here): written back unchanged.
    _block: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ derived values
    @property
    def top1(self) -> float | None:
        """Top-1 (%) recorded at export (None when not recorded)."""
        return _number((self.results or {}).get("top1"))

    @property
    def top5(self) -> float | None:
        return _number((self.results or {}).get("top5"))

    @property
    def dense_top1(self) -> float | None:
        """Top-1 (%) of the dense baseline the card compares with."""
        return _number((self.dense_baseline or {}).get("top1"))

    @property
    def schedule_settings(self) -> dict[str, Any]:
        """The cubic schedule's settings: the block's own, else the pruning settings' (empty when unknown)."""
        return dict(self.schedule or (self.pruning or {}).get("schedule") or {})

    @property
    def dense_file(self) -> FileInfo | None:
        return self.files.get(DENSE_WEIGHTS_NAME)

    @property
    def compact_file(self) -> FileInfo | None:
        return self.files.get(COMPACT_WEIGHTS_NAME)

    def file_sizes(self) -> dict[str, int]:
        """File name -> size in bytes, in the order config.json lists them."""
        return {name: info.size for name, info in self.files.items()}

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The block as JSON data: the one read (with replaced fields), or all fields in export's order."""
        if self._block is not None:
            return copy.deepcopy(self._block)
        return {key: _plain(getattr(self, key)) for key in _KEY_ORDER}

    def into_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with this record as its block (in the block's place when it had one)."""
        return {**config, BLOCK_KEY: self.to_dict()}

    def replace(self, **changes: Any) -> SparsityInfo:
        """A copy with ``changes``; a record read from a file keeps every other key of its block as it was."""
        new = dataclasses.replace(self, **changes)
        if self._block is not None:
            block = dict(self._block)
            block.update({key: _plain(value) for key, value in changes.items()})
            object.__setattr__(new, "_block", block)
        return new

    @classmethod
    def from_block(cls, block: Mapping[str, Any]) -> SparsityInfo:
        """A record of a block this process made (export): no checks, its JSON is written from the fields."""
        return cls(**_fields(block))

    @classmethod
    def from_config(cls, config: Mapping[str, Any], where: str) -> SparsityInfo:
        """The validated record of a config.json read from ``where`` (raises CorruptCheckpointError, one line)."""
        block = _checked_block(config, where)
        info = cls(**_fields(block))
        object.__setattr__(info, "_block", copy.deepcopy(dict(block)))
        return info

    @classmethod
    def of_config_or_none(cls, config: Mapping[str, Any] | None) -> SparsityInfo | None:
        """The record of a config.json read elsewhere, or None when it holds no usable fggp-hub block."""
        if not isinstance(config, Mapping):
            return None
        try:
            return cls.from_config(config, "config.json")
        except CorruptCheckpointError:
            return None


# ---------------------------------------------------------------------------- reading
def unverified_files(config: Any) -> dict[str, Any] | None:
    """The ``files`` an unvalidated config.json records when it looks like an fggp-hub export, else None.

    Only for recognising an earlier export before replacing it (a damaged one is still ours to
    replace); everything that is read for use goes through :meth:`SparsityInfo.from_config`.
    """
    block = config.get(BLOCK_KEY) if isinstance(config, Mapping) else None
    files = block.get("files") if isinstance(block, Mapping) else None
    if not isinstance(files, dict) or not files or "fggp_hub_version" not in block:
        return None
    return files


def _number(value: Any) -> float | None:
    import math

    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _fields(block: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(SparsityInfo) if f.init}
    out = {k: v for k, v in block.items() if k in names}
    out["files"] = {name: info if isinstance(info, FileInfo) else FileInfo(
        sha256=info.get("sha256"), size=info.get("size"), format=info.get("format"), encodings=info.get("encodings"))
        for name, info in (block.get("files") or {}).items()}
    out["layers"] = {name: layer if isinstance(layer, LayerInfo) else LayerInfo(
        sparsity=layer.get("sparsity"), shape=tuple(layer["shape"]) if isinstance(layer.get("shape"), list) else None,
        numel=layer.get("numel"), zeros=layer.get("zeros"))
        for name, layer in (block.get("layers") or {}).items()}
    out["include_first_conv"] = bool(block.get("include_first_conv", False))
    return out


def _checked_block(config: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The block of ``config``, its shape, version, file names, types and ranges checked (the one validation on read)."""
    from .integrity import validate_filename
    from .validate import bad_value, check_config, check_number, check_sha256

    block = config.get(BLOCK_KEY)
    if not isinstance(block, dict) or not isinstance(block.get("files"), dict) or BLOCK_KEY not in block:
        raise CorruptCheckpointError(
            f"{where} has no 'sparsity' block with files and sparsity: not an fggp-hub export "
            "(plain timm checkpoints load with timm.create_model('hf-hub:...'))"
        )
    version = block.get("format_version", 1)
    if not isinstance(version, int) or version > BLOCK_VERSION:
        raise CorruptCheckpointError(
            f"{where} has sparsity block version {version!r}; this fggp-hub reads up to {BLOCK_VERSION}: upgrade fggp-hub"
        )
    for name in block["files"]:
        validate_filename(name, where=where)
    check_config(config, where)  # num_classes, model_args, pretrained_cfg
    check_number(block["sparsity"], "sparsity.sparsity", where, lo=0.0, hi=1.0)
    for key in ("sparsity_all_params", "target_sparsity"):
        check_number(block.get(key), f"sparsity.{key}", where, lo=0.0, hi=1.0, optional=True)
    for key in ("prunable_params", "total_params", "nonzero_params"):
        check_number(block.get(key), f"sparsity.{key}", where, lo=0, integer=True, optional=True)
    if not isinstance(block.get("include_first_conv", False), bool):
        raise bad_value(where, "sparsity.include_first_conv", block.get("include_first_conv"), "true or false")
    for key in ("name", "method", "dataset"):
        if block.get(key) is not None and not isinstance(block[key], str):
            raise bad_value(where, f"sparsity.{key}", block[key], "a string")
    for name, info in block["files"].items():
        if not isinstance(info, Mapping):
            raise bad_value(where, f"sparsity.files.{name}", info, "a mapping with sha256 and size")
        check_sha256(info.get("sha256"), f"sparsity.files.{name}.sha256", where)
        check_number(info.get("size"), f"sparsity.files.{name}.size", where, lo=0, integer=True)
    layers = block.get("layers")
    if layers is not None and not isinstance(layers, Mapping):
        raise bad_value(where, "sparsity.layers", layers, "a mapping of layer name to its sparsity")
    for name, layer in (layers or {}).items():
        if not isinstance(layer, Mapping):
            raise bad_value(where, f"sparsity.layers.{name}", layer, "a mapping with sparsity")
        check_number(layer.get("sparsity"), f"sparsity.layers.{name}.sparsity", where, lo=0.0, hi=1.0)
    for key in ("results", "dense_baseline"):
        value = block.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise bad_value(where, f"sparsity.{key}", value, "a mapping such as {'top1': 93.1}")
        for metric in ("top1", "top5"):
            check_number(value.get(metric), f"sparsity.{key}.{metric}", where, lo=0.0, hi=100.0, optional=True)
    for key in ("pruning", "schedule", "recipe", "macs"):  # free-form settings, but mappings: readers call .get on them
        if block.get(key) is not None and not isinstance(block[key], Mapping):
            raise bad_value(where, f"sparsity.{key}", block[key], "a mapping")
    if block.get("files") == {}:
        raise bad_value(where, "sparsity.files", {}, "at least one weight file")
    return block
