"""The model zoo: short names -> repo ids, pinned revisions and expected metrics.

Names follow ``{arch}-{dataset}-s{sparsity}[-{variant}]``, e.g. ``vgg19-cifar10-s95`` or
``resnet50-cifar10-s98-erk`` (sparsity in percent; ``s99p5`` for 99.5%).

Two JSON indexes are merged: the one shipped in the package (``zoo_index.json``: only
published, existing repos are ever listed there, each with the Hugging Face repo id it is
published under and the sha256 of its bundled copy) and the user's own
(``$FGGP_ZOO_INDEX``, default ``$FGGP_HUB_HOME/zoo_index.json``), filled with
:func:`register`. A user entry overrides a packaged one of the same name.
"""
from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._io import write_text_atomic
from ..constants import ENV_ZOO_INDEX as ENV_INDEX
from ..constants import ENV_ZOO_PACKAGE_INDEX as ENV_PACKAGE_INDEX
from ..constants import ZOO_INDEX_NAME, home_dir
from .errors import InvalidNameError, UnknownModelError, ZooIndexError
from .integrity import validate_repo_id, validate_revision

__all__ = [
    "ZooEntry",
    "NAME_PATTERN",
    "is_zoo_name",
    "make_name",
    "list_models",
    "resolve",
    "register",
    "user_index_path",
]

SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(
    r"^(?P<arch>[a-z][a-z0-9]*)-(?P<dataset>[a-z][a-z0-9]*)-s(?P<sparsity>\d{1,2}(?:p\d{1,3})?)(?:-(?P<variant>[a-z0-9][a-z0-9_]*))?$"
)
_PACKAGE_INDEX = Path(__file__).with_name(ZOO_INDEX_NAME)


@dataclass(frozen=True)
class ZooEntry:
    """One zoo name and where its weights live."""

    name: str
    repo_id: str
    revision: str | None = None
    hub: str | None = None
    architecture: str | None = None
    dataset: str | None = None
    sparsity: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = "package"
    method: str | None = None
    #: file name -> sha256 of the copy bundled under model_cards/<name>/ (see fggp_hub.hub.bundled)
    bundled: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("source")
        return {k: v for k, v in out.items() if v not in (None, {})}


def is_zoo_name(text: str) -> bool:
    return isinstance(text, str) and NAME_PATTERN.fullmatch(text) is not None


def _short(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def arch_short_name(architecture: str) -> str:
    """``fggp_vgg19_bn_cifar`` -> ``vgg19``, ``fggp_resnet50_cifar`` -> ``resnet50``."""
    name = architecture.lower()
    name = re.sub(r"^fggp_", "", name)
    name = re.sub(r"_cifar\d*$", "", name)
    name = name.replace("_bn", "")
    return _short(name) or "model"


def dataset_short_name(dataset: str) -> str:
    """``CIFAR-10 (JPEG-q75 copy)`` -> ``cifar10``; other labels lose everything but letters and digits."""
    text = dataset.lower()
    match = re.match(r"\s*(cifar)[-_ ]?(10|100)\b", text)
    if match:
        return match.group(1) + match.group(2)
    return _short(text.split("(")[0].split("/")[-1]) or "data"


def sparsity_tag(sparsity: float) -> str:
    """0.95 -> ``95``, 0.995 -> ``99p5``."""
    percent = round(float(sparsity) * 100, 3)
    if abs(percent - round(percent)) < 1e-9:
        return str(int(round(percent)))
    return f"{percent:.3f}".rstrip("0").replace(".", "p")


def make_name(architecture: str, dataset: str, sparsity: float, variant: str | None = None) -> str:
    """The zoo name of a checkpoint, e.g. ``vgg19-cifar10-s95``."""
    name = f"{arch_short_name(architecture)}-{dataset_short_name(dataset)}-s{sparsity_tag(sparsity)}"
    if variant:
        name += "-" + re.sub(r"[^a-z0-9_]", "", variant.lower().replace("-", "_"))
    if not is_zoo_name(name):
        raise InvalidNameError(f"cannot build a zoo name from {architecture!r}, {dataset!r}, {sparsity!r}, {variant!r}")
    return name


def user_index_path() -> Path:
    return Path(os.environ.get(ENV_INDEX) or home_dir() / ZOO_INDEX_NAME).expanduser()


def _read_index(path: Path, source: str) -> list[ZooEntry]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ZooIndexError(f"zoo index {path} is not valid JSON: fix or delete it") from None
    models = data.get("models", []) if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ZooIndexError(f"zoo index {path} must be a JSON object with a 'models' list: fix or delete it")
    entries = []
    for i, raw in enumerate(models):
        known = _checked_entry(raw, f"zoo index {path}, entry {i}")
        entries.append(ZooEntry(**known, source=source))
    return entries


def _checked_entry(raw: Any, where: str) -> dict[str, Any]:
    """The known fields of one index entry, each of the right type (NaN, bools-as-numbers, bad names refused)."""
    import math

    def bad(key: str, want: str) -> ZooIndexError:
        return ZooIndexError(f"{where}: {key} is {str(raw.get(key))[:60]!r}, expected {want}: fix or delete the entry")

    if not isinstance(raw, dict):
        raise ZooIndexError(f"{where} is not a JSON object: fix or delete it")
    known = {k: raw[k] for k in ZooEntry.__dataclass_fields__ if k in raw and k != "source"}
    if not is_zoo_name(known.get("name")):
        raise bad("name", "a zoo name such as vgg19-cifar10-s95")
    try:
        validate_repo_id(known.get("repo_id"))
        if known.get("revision") is not None:
            validate_revision(known["revision"])
    except InvalidNameError as err:
        raise ZooIndexError(f"{where}: {err}") from None
    for key in ("hub", "architecture", "dataset", "method"):
        if known.get(key) is not None and not isinstance(known[key], str):
            raise bad(key, "a string")
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    if known.get("sparsity") is not None and not (number(known["sparsity"]) and 0 <= known["sparsity"] <= 1):
        raise bad("sparsity", "a number in [0, 1]")
    metrics = known.get("metrics", {})
    if not isinstance(metrics, dict) or not all(isinstance(k, str) and (v is None or number(v) and v >= 0) for k, v in metrics.items()):
        raise bad("metrics", "a mapping of metric names to finite numbers >= 0")
    for key in ("top1", "top5"):
        if metrics.get(key) is not None and metrics[key] > 100:
            raise ZooIndexError(f"{where}: metrics.{key} is {metrics[key]}, expected a percentage in [0, 100]: fix the entry")
    bundled = known.get("bundled")
    if bundled is not None and not (isinstance(bundled, dict) and all(
            isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for k, v in bundled.items())):
        raise bad("bundled", "a mapping of file names to sha256 digests")
    return known


def package_index_path() -> Path:
    """The index shipped with the package, or ``$FGGP_ZOO_PACKAGE_INDEX`` (e.g. an isolated test)."""
    return Path(os.environ.get(ENV_PACKAGE_INDEX) or _PACKAGE_INDEX).expanduser()


def _all_entries() -> dict[str, ZooEntry]:
    entries = {e.name: e for e in _read_index(package_index_path(), "package")}
    entries.update({e.name: e for e in _read_index(user_index_path(), "user")})
    return entries


def list_models(pattern: str | None = None) -> list[ZooEntry]:
    """Zoo entries (packaged and user-registered), optionally filtered by a glob like ``vgg19-*``."""
    entries = sorted(_all_entries().values(), key=lambda e: e.name)
    if pattern:
        entries = [e for e in entries if fnmatch.fnmatch(e.name, pattern)]
    return entries


def resolve(name: str) -> ZooEntry:
    """The entry of a zoo name; an unknown name raises with the closest names."""
    entries = _all_entries()
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.6)
    close = close or sorted(n for n in entries if n.startswith(name))[:3]
    hint = f"did you mean {', '.join(close)}?" if close else (
        f"known names: {', '.join(sorted(entries)[:8])}" if entries else "the zoo is empty: register a name or load by repo id or folder"
    )
    raise UnknownModelError(f"unknown model {name!r}: {hint} (fggp_hub.list_models() lists the zoo)")


def register(
    name: str,
    repo_id: str,
    revision: str | None = None,
    hub: str | None = None,
    *,
    architecture: str | None = None,
    dataset: str | None = None,
    sparsity: float | None = None,
    metrics: dict[str, Any] | None = None,
    method: str | None = None,
    overwrite: bool = False,
) -> ZooEntry:
    """Add a name to the user's zoo index (pin ``revision`` to a commit sha for reproducibility).

    ``metrics`` are the expected results (``top1``, ``top5`` in percent; load() checks them
    against the repo) and may carry the file sizes ``compact_bytes`` / ``dense_bytes`` that
    ``fggp-hub list`` shows while the repo is not downloaded.
    """
    if not is_zoo_name(name):
        raise InvalidNameError(f"invalid zoo name {name!r}: use {{arch}}-{{dataset}}-s{{sparsity}}[-{{variant}}], e.g. vgg19-cifar10-s95")
    validate_repo_id(repo_id)
    if revision is not None:
        validate_revision(revision)
    path = user_index_path()
    existing = _read_index(path, "user")
    if any(e.name == name for e in existing) and not overwrite:
        raise InvalidNameError(f"zoo name {name!r} is already registered in {path}: pass overwrite=True to replace it")
    entry = ZooEntry(name, repo_id, revision, hub, architecture, dataset, sparsity, dict(metrics or {}), source="user", method=method)
    models = [e.to_dict() for e in existing if e.name != name] + [entry.to_dict()]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"schema_version": SCHEMA_VERSION, "models": models}, indent=2) + "\n")
    return entry
