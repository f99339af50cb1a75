"""Resolve a dataset source (Hub id, parquet/arrow files, a folder) into a ``datasets`` split.

One resolver serves CIFAR-10 and any other image-classification dataset:

* an existing folder: handed to ``datasets.load_dataset(folder)``, which finds
  parquet shards (``train-*.parquet``, ``test-*.parquet``) or an ImageFolder
  tree (``[split/]class/xxx.png``) by itself;
* existing files or a glob (``*.parquet``, ``*.arrow``): they are the requested split;
* anything else: a Hub dataset id (``uoft-cs/cifar10``), loaded through the
  ordinary ``datasets`` cache, so it also works offline once downloaded.

Local sources are read in streaming mode (nothing is copied into an arrow cache:
the uint8 tensor cache in ``cache.py`` is the only copy) and identified by their
files' path, size and mtime, so a cache hit never has to open ``datasets`` at all.
Hub sources are identified by the dataset fingerprint.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import datasets

from ..constants import CIFAR10_HUB_ID, CIFAR10_JPEG_LABEL
from ..constants import ENV_CIFAR10_PATH as CIFAR10_PATH_ENV
from .errors import DatasetFormatError, DatasetUnavailableError

__all__ = [
    "CIFAR10_HUB_ID",
    "CIFAR10_PATH_ENV",
    "IMAGE_COLUMN_NAMES",
    "LABEL_COLUMN_NAMES",
    "ResolvedSource",
    "SourceLike",
    "cifar10_source",
    "dataset_label",
    "detect_columns",
    "open_split",
    "resolve_source",
]

#: Preferred column names, most likely first (CIFAR-10 uses img/label, CIFAR-100 img/fine_label).
IMAGE_COLUMN_NAMES = ("img", "image", "images", "pixel_values")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "class", "target")

_LOCAL_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}

SourceLike = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


@dataclass(frozen=True)
class ResolvedSource:
    """Where a split comes from, and a stable identity for caching it.

    ``identity`` changes whenever the data could have changed (a file's size or
    mtime, the Hub fingerprint); ``cache_key`` hashes it with the split.
    """

    kind: str  # "dir" | "files" | "hub"
    location: str  # folder, first file, or Hub id: for messages and cache file names
    split: str
    files: tuple[str, ...] = ()
    name: str | None = None  # Hub config name
    revision: str | None = None
    identity: tuple[Any, ...] = field(default=(), compare=False)

    @property
    def description(self) -> str:
        if self.kind == "hub":
            extra = f" (config {self.name})" if self.name else ""
            return f"Hub dataset {self.location!r}{extra}"
        if self.kind == "files":
            return f"{len(self.files)} local file(s) starting {self.location!r}"
        return f"local folder {self.location!r}"

    def cache_key(self, *extra: Any) -> str:
        blob = json.dumps([self.kind, self.location, self.split, self.name, self.revision, list(self.identity),
                           list(extra)], default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def slug(self) -> str:
        """A short file-name-safe label: the Hub id or the folder/file name."""
        base = self.location if self.kind == "hub" else Path(self.location).name
        return re.sub(r"[^A-Za-z0-9._-]+", "-", base.replace("/", "--")).strip("-")[:60] or "data"


def _stat_identity(paths: Sequence[Path], root: Path | None = None) -> tuple[Any, ...]:
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p.relative_to(root)) if root else str(p), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _walk_files(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder`` (what ``datasets`` could read), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        found.extend(Path(dirpath, f) for f in filenames if not f.startswith("."))
    return sorted(found)


def _looks_local(source: str) -> bool:
    """True for strings that can only be paths (not ``org/name`` Hub ids)."""
    return (source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source
            or any(ch in source for ch in "*?[") or Path(source).suffix.lower() in _LOCAL_FILE_BUILDERS)


def resolve_source(source: SourceLike, split: str = "train", *, name: str | None = None,
                   revision: str | None = None) -> ResolvedSource:
    """Decide what ``source`` is, without reading any data (cheap: a few ``stat`` calls).

    Raises ``DatasetUnavailableError`` for a path that does not exist.
    """
    if isinstance(source, (list, tuple)):
        files = [Path(p).expanduser().resolve() for p in source]
        if not files:
            raise DatasetUnavailableError("Empty list of data files: pass parquet/arrow files, a folder or a Hub id.")
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DatasetUnavailableError(f"Data file(s) not found: {', '.join(missing)}. Check the paths.")
        return _files_source(files, split)

    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path.resolve()
        return ResolvedSource("dir", str(path), split, identity=_stat_identity(_walk_files(path), path))
    if path.is_file():
        return _files_source([path.resolve()], split)
    if any(ch in text for ch in "*?["):
        matches = sorted(Path(p).resolve() for p in glob.glob(os.path.expanduser(text)))
        if matches:
            return _files_source(matches, split)
        raise DatasetUnavailableError(f"No file matches {text!r}. Check the pattern.")
    if not isinstance(source, str) or _looks_local(text):  # a Path is never a Hub id
        raise DatasetUnavailableError(
            f"Dataset path {text!r} does not exist. Pass an existing folder, parquet file(s) or a Hub dataset id.")
    return ResolvedSource("hub", text, split, name=name, revision=revision)


def _files_source(files: list[Path], split: str) -> ResolvedSource:
    suffixes = {p.suffix.lower() for p in files}
    if len(suffixes) != 1 or next(iter(suffixes)) not in _LOCAL_FILE_BUILDERS:
        raise DatasetFormatError(
            f"Unsupported data files {[p.name for p in files][:3]}: pass .parquet or .arrow files "
            "(all of one kind), or a folder (parquet shards or class-per-subfolder images).")
    return ResolvedSource("files", str(files[0]), split, files=tuple(str(p) for p in files),
                          identity=_stat_identity(files))


def cifar10_source(source: SourceLike | None = None) -> tuple[SourceLike, str]:
    """The CIFAR-10 source to use, and in words how it was chosen (for error messages).

    Precedence: the explicit argument, then ``$FGGP_CIFAR10_PATH``, then the Hub id
    ``uoft-cs/cifar10``.
    """
    if source is not None:
        return source, "the source argument"
    env = os.environ.get(CIFAR10_PATH_ENV)
    if env:
        return Path(env), f"${CIFAR10_PATH_ENV}"
    return CIFAR10_HUB_ID, f"the default Hub id ({CIFAR10_PATH_ENV} is not set)"


def dataset_label(dataset: str, source: str) -> str:
    """The name results carry: the shared CIFAR-10 copy is JPEG-degraded, so it is labelled as such.

    ``dataset`` is the recipe's ``data.dataset`` (``"cifar10"`` or a source), ``source`` where the
    images really came from (a path, a Hub id or a description).
    """
    if dataset == "cifar10" and CIFAR10_HUB_ID not in source:
        return CIFAR10_JPEG_LABEL
    return source or dataset


def open_split(src: ResolvedSource, *,
               hf_cache_dir: str | os.PathLike | None = None) -> datasets.Dataset | datasets.IterableDataset:
    """Open the split with ``datasets``: an ``IterableDataset`` for local data, a ``Dataset`` for the Hub.

    Converts ``datasets``/network failures into this package's typed errors.
    """
    kwargs: dict[str, Any] = {"split": src.split}
    if hf_cache_dir is not None:
        kwargs["cache_dir"] = os.fspath(hf_cache_dir)
    try:
        if src.kind == "dir":
            return datasets.load_dataset(src.location, streaming=True, **kwargs)
        if src.kind == "files":
            builder = _LOCAL_FILE_BUILDERS[Path(src.files[0]).suffix.lower()]
            return datasets.load_dataset(builder, data_files={src.split: list(src.files)}, streaming=True, **kwargs)
        return datasets.load_dataset(src.location, name=src.name, revision=src.revision, **kwargs)
    except ValueError as e:  # "Bad split: x. Available splits: [...]", unknown config
        raise DatasetFormatError(f"{src.description}: {_one_line(e)}") from e
    except (ConnectionError, OSError, datasets.exceptions.DatasetsError) as e:
        if src.kind != "hub":
            raise DatasetFormatError(f"{src.description} could not be read: {_one_line(e)}") from e
        offline = datasets.config.HF_HUB_OFFLINE
        why = "offline mode is on (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) and it is not in the datasets cache" \
            if offline else _one_line(e)
        raise DatasetUnavailableError(f"Could not load {src.description}: {why}.") from e


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _is_int_value(feature: Any) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))


def detect_columns(features: datasets.Features, image_column: str | None = None,
                   label_column: str | None = None) -> tuple[str, str, tuple[str, ...] | None]:
    """Pick the image and label columns; return them and the class names (None if unnamed ints).

    Prefers the usual names (``img``/``image``, ``label``/``labels``/``fine_label``);
    otherwise takes the only ``Image`` / ``ClassLabel`` column.
    """
    columns = list(features)
    images = [c for c in columns if isinstance(features[c], datasets.Image)]
    labels = [c for c in columns if isinstance(features[c], datasets.ClassLabel) or _is_int_value(features[c])]

    def pick(kind: str, explicit: str | None, candidates: list[str], preferred: Sequence[str]) -> str:
        if explicit is not None:
            if explicit not in candidates:
                raise DatasetFormatError(
                    f"Column {explicit!r} cannot hold {kind}s; candidate {kind} columns: {candidates}, all: {columns}.")
            return explicit
        for p in preferred:
            if p in candidates:
                return p
        strong = [c for c in candidates if kind == "image" or isinstance(features[c], datasets.ClassLabel)]
        if len(strong) == 1:
            return strong[0]
        raise DatasetFormatError(
            f"Cannot tell which column holds the {kind}s (columns: {columns}); "
            f"pass {kind}_column=... to choose one.")

    img = pick("image", image_column, images, IMAGE_COLUMN_NAMES)
    lbl = pick("label", label_column, labels, LABEL_COLUMN_NAMES)
    feat = features[lbl]
    classes = tuple(feat.names) if isinstance(feat, datasets.ClassLabel) else None
    return img, lbl, classes
