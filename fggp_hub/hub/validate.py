"""Validation of every value read from a repo or an index before it is compared or used.

A NaN compares False with everything, so ``abs(measured - nan) > tol`` would switch a check
off; a ``model_args`` key such as ``checkpoint_path`` would make timm open a file before any
hash is checked; a declared shape of 10^10 entries would be allocated before it is refused.
Each check here raises a typed one-line error instead.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import CorruptCheckpointError

if TYPE_CHECKING:
    from .sparsity_info import SparsityInfo

__all__ = [
    "MODEL_ARGS_ALLOWED",
    "MAX_NUM_CLASSES",
    "bad_value",
    "check_number",
    "check_block",
    "check_config",
    "check_sha256",
    "check_model_args",
    "check_model_size",
]

#: Keys a repo's ``model_args`` may carry: timm's reconstruction arguments and the
#: structural arguments of the fggp_* backbones. Anything else (``checkpoint_path``,
#: ``pretrained_cfg_overlay``, ``features_only``, ``device``...) is refused.
MODEL_ARGS_ALLOWED = frozenset({
    "num_classes", "in_chans", "global_pool", "img_size", "drop_rate", "drop_path_rate", "drop_block_rate",
    "output_stride", "block", "layers", "widths", "stem_width", "shortcut", "fc_bias", "layout",
})
MAX_NUM_CLASSES = 100_000
MAX_IN_CHANS = 64
#: A compact file may describe at most this many dense bytes per byte it holds (99.9 % sparse
#: CSR is ~170 dense bytes per stored byte), plus a fixed allowance for small models.
MAX_EXPANSION = 1024
EXPANSION_SLACK = 64 * 2**20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def bad_value(where: str, key: str, value: Any, want: str) -> CorruptCheckpointError:
    """The one-line error for a value of the wrong type or range in a repo's file."""
    return CorruptCheckpointError(f"{where}: {key} is {str(value)[:60]!r}, expected {want}; the repo is damaged or crafted: re-export it")


def check_number(value: Any, key: str, where: str, *, lo: float | None = None, hi: float | None = None,
                 integer: bool = False, optional: bool = False) -> float | int | None:
    """``value`` if it is a finite number (an int when ``integer``) within [lo, hi]; bools are not numbers."""
    if value is None and optional:
        return None
    kinds = (int,) if integer else (int, float)
    want = ("an integer" if integer else "a finite number") + (f" in [{lo}, {hi}]" if lo is not None and hi is not None else
                                                              f" >= {lo}" if lo is not None else "")
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise bad_value(where, key, value, want)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise bad_value(where, key, value, want)
    return value


def check_sha256(value: Any, key: str, where: str) -> str:
    """``value`` if it is a sha256 digest (64 lowercase hex digits)."""
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise bad_value(where, key, value, "64 lowercase hex digits")
    return value


def check_config(config: Mapping[str, Any], where: str) -> None:
    """Types and ranges of config.json's top-level values that build the model (the block: :mod:`.sparsity_info`)."""
    num_classes = config.get("num_classes")
    if num_classes is not None:
        check_number(num_classes, "num_classes", where, lo=1, hi=MAX_NUM_CLASSES, integer=True)
    check_model_args(config.get("model_args"), where)
    if config.get("pretrained_cfg") is not None and not isinstance(config["pretrained_cfg"], Mapping):
        raise bad_value(where, "pretrained_cfg", config["pretrained_cfg"], "a mapping")


def check_block(config: Mapping[str, Any], where: str) -> SparsityInfo:
    """Everything in config.json that load, info and list compare or print; returns the block as a typed record."""
    from .sparsity_info import SparsityInfo

    return SparsityInfo.from_config(config, where)


def _arg_value_ok(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) <= 1_000_000
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= 1e6
    if isinstance(value, str):
        return len(value) <= 64 and re.fullmatch(r"[A-Za-z0-9_.-]*", value) is not None and ".." not in value
    if isinstance(value, list) and depth == 0:
        return len(value) <= 64 and all(_arg_value_ok(v, 1) for v in value)
    return False


def check_model_args(model_args: Any, where: str) -> dict[str, Any]:
    """Whitelisted, plainly typed ``model_args`` (no file paths, hooks or nested configs)."""
    if model_args is None:
        return {}
    if not isinstance(model_args, Mapping):
        raise bad_value(where, "model_args", model_args, "a mapping")
    for key, value in model_args.items():
        if key not in MODEL_ARGS_ALLOWED:
            raise CorruptCheckpointError(
                f"{where}: model_args key {str(key)[:60]!r} is not allowed (only {', '.join(sorted(MODEL_ARGS_ALLOWED))}); "
                "refusing a config that could make timm read other files: re-export the model")
        if not _arg_value_ok(value):
            raise bad_value(where, f"model_args.{key}", value, "a plain number, name or list of them")
    if "num_classes" in model_args and model_args["num_classes"] is not None:
        check_number(model_args["num_classes"], "model_args.num_classes", where, lo=1, hi=MAX_NUM_CLASSES, integer=True)
    if "in_chans" in model_args:
        check_number(model_args["in_chans"], "model_args.in_chans", where, lo=1, hi=MAX_IN_CHANS, integer=True)
    return dict(model_args)


def check_model_size(dense_bytes: int, file_size: int, compact: bool, where: str) -> None:
    """Refuse a model whose dense weights cannot come from a file of ``file_size`` bytes (before allocating them)."""
    limit = file_size * MAX_EXPANSION + EXPANSION_SLACK if compact else file_size
    if dense_bytes > limit:
        raise CorruptCheckpointError(
            f"{where}: the architecture in config.json needs {dense_bytes:,} bytes of weights but the file holds "
            f"{file_size:,} bytes; refusing to allocate them (config.json and the weights disagree): re-export the model")
