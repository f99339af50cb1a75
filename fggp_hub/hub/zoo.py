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

from .errors import InvalidNameError, UnknownModelError
from .hubs import _write_text_atomic, home_dir
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

ENV_INDEX = "FGGP_ZOO_INDEX"
ENV_PACKAGE_INDEX = "FGGP_ZOO_PACKAGE_INDEX"  # replaces the shipped index (an empty file: no packaged names)
SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(
    r"^(?P<arch>[a-z][a-z0-9]*)-(?P<dataset>[a-z][a-z0-9]*)-s(?P<sparsity>\d{1,2}(?:p\d{1,3})?)(?:-(?P<variant>[a-z0-9][a-z0-9_]*))?$"
)
_PACKAGE_INDEX = Path(__file__).with_name("zoo_index.json")


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
    return Path(os.environ.get(ENV_INDEX) or home_dir() / "zoo_index.json").expanduser()


def _read_index(path: Path, source: str) -> list[ZooEntry]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise InvalidNameError(f"zoo index {path} is not valid JSON: fix or delete it") from None
    entries = []
    for raw in data.get("models", []):
        known = {k: raw[k] for k in ZooEntry.__dataclass_fields__ if k in raw and k != "source"}
        entries.append(ZooEntry(**known, source=source))
    return entries


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
    _write_text_atomic(path, json.dumps({"schema_version": SCHEMA_VERSION, "models": models}, indent=2) + "\n")
    return entry
