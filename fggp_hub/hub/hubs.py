"""One notion of "a hub": a local folder of repos, or a Hugging Face-compatible endpoint.

Both kinds answer the same three calls:

- ``push(folder, repo_id)`` publishes a flat folder as ONE commit and returns its sha;
- ``pull(repo_id, revision)`` returns a folder holding that commit's files (named by the
  commit sha): the commit folder itself for a local hub, the huggingface_hub cache
  snapshot for a remote one (served from the cache when ``HF_HUB_OFFLINE=1``);
- ``resolve(repo_id, revision)`` returns the commit sha a revision points to.

Which hub is used: the ``hub`` argument, else the ``FGGP_HUB`` environment variable, else
the local hub under ``$FGGP_HUB_HOME/hub`` (``~/.cache/fggp_hub/hub``). ``hub`` may be
``"local"``, a folder path, ``"hf"`` (``HF_ENDPOINT``, huggingface.co by default), an
``http(s)://`` endpoint, or a :class:`Hub` instance. Tokens come from the ``token``
argument or huggingface_hub's usual sources (``HF_TOKEN``, the login file) and are
never printed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

from .errors import (
    CorruptCheckpointError,
    FggpHubError,
    FolderNotFoundError,
    HubAccessError,
    HubUnreachableError,
    InvalidNameError,
    NotInCacheError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from .integrity import (
    check_folder_files,
    fsync_path,
    read_config,
    split_revision,
    validate_repo_id,
    validate_revision,
    verify_weight_file,
)

__all__ = ["Hub", "LocalHub", "HfHub", "get_hub", "push", "pull", "home_dir", "default_local_root", "ENV_HUB", "ENV_HOME"]

ENV_HUB = "FGGP_HUB"
ENV_HOME = "FGGP_HUB_HOME"
DEFAULT_BRANCH = "main"
#: What a pull fetches from a remote repo: never pickles, never anything else.
PULL_PATTERNS = ["*.safetensors", "*.json", "*.md", "*.yaml", "*.yml", "*.png", "*.txt"]


def home_dir() -> Path:
    """``$FGGP_HUB_HOME`` or ``~/.cache/fggp_hub``: the local hub and the user zoo index live here."""
    return Path(os.environ.get(ENV_HOME) or "~/.cache/fggp_hub").expanduser()


def default_local_root() -> Path:
    return home_dir() / "hub"


def _client_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of huggingface_hub's HTTP client (httpx2 / httpx / requests, whichever it uses)."""
    import importlib

    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    errors: list[type[BaseException]] = [HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module, attr in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Hub(ABC):
    """A place repos are pushed to and pulled from."""

    kind: str = "hub"

    @abstractmethod
    def push(self, folder: str | Path, repo_id: str, *, commit_message: str | None = None, revision: str = DEFAULT_BRANCH, private: bool = False) -> str:
        """Publish the files of ``folder`` as one commit; return the commit sha."""

    @abstractmethod
    def pull(self, repo_id: str, revision: str | None = None, *, files: Iterable[str] | None = None) -> Path:
        """A local folder with the repo's files at ``revision`` (the folder's name is the commit sha)."""

    @abstractmethod
    def resolve(self, repo_id: str, revision: str | None = None) -> str:
        """The commit sha ``revision`` (default: main) points to."""

    def exists(self, repo_id: str, revision: str | None = None) -> bool:
        try:
            self.resolve(repo_id, revision)
        except (RepoNotFoundError, RevisionNotFoundError):
            return False
        return True

    def describe(self) -> str:
        return self.kind


# ============================================================================ local
class LocalHub(Hub):
    """A folder of repos with commit history: ``<root>/<org>/<name>/``

    ``commits/<sha>/`` (the files of each commit, never modified), ``commits/<sha>.json``
    (parent, message, time, sha256 of every file) and ``refs/<branch>`` (a sha).
    Revisions: a branch name, a full commit sha or a unique prefix of at least 7 hex digits.
    """

    kind = "local"

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_local_root()

    def __repr__(self) -> str:
        return f"LocalHub({str(self.root)!r})"

    def describe(self) -> str:
        return f"local hub {self.root}"

    def _repo_dir(self, repo_id: str) -> Path:
        org, name = validate_repo_id(repo_id).split("/")
        return self.root / org / name

    @contextlib.contextmanager
    def _locked(self, repo_dir: Path):
        repo_dir.mkdir(parents=True, exist_ok=True)
        with open(repo_dir / ".lock", "a+") as handle:
            try:
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - non-POSIX
                pass
            yield

    def _commit_info(self, repo_dir: Path, sha: str) -> dict:
        return json.loads((repo_dir / "commits" / f"{sha}.json").read_text(encoding="utf-8"))

    def push(self, folder, repo_id, *, commit_message=None, revision=DEFAULT_BRANCH, private=False) -> str:
        folder = Path(folder)
        validate_revision(revision)
        names = check_folder_files(folder)
        repo_dir = self._repo_dir(repo_id)
        tree = {}
        for name in names:
            h = hashlib.sha256()
            with open(folder / name, "rb") as f:
                while block := f.read(1 << 23):
                    h.update(block)
            tree[name] = h.hexdigest()
        message = commit_message or f"Upload {folder.name}"
        with self._locked(repo_dir):
            ref = repo_dir / "refs" / revision
            parent = ref.read_text().strip() if ref.is_file() else None
            if parent is not None and self._commit_info(repo_dir, parent)["files"] == tree:
                return parent  # nothing changed: no empty commit (as huggingface_hub does)
            payload = json.dumps({"parent": parent, "files": tree, "message": message, "time": time.time_ns()}, sort_keys=True)
            sha = hashlib.sha1(payload.encode()).hexdigest()
            commits = repo_dir / "commits"
            commits.mkdir(parents=True, exist_ok=True)
            staging = commits / f".tmp-{sha}-{os.getpid()}"
            try:
                staging.mkdir()
                for name in names:
                    shutil.copyfile(folder / name, staging / name)
                    fsync_path(staging / name)
                fsync_path(staging)
                os.rename(staging, commits / sha)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            info = {"sha": sha, "parent": parent, "message": message, "time": time.time(), "files": tree}
            _write_text_atomic(commits / f"{sha}.json", json.dumps(info, indent=2))
            ref.parent.mkdir(parents=True, exist_ok=True)
            _write_text_atomic(ref, sha + "\n")
            fsync_path(commits)
        return sha

    def resolve(self, repo_id, revision=None) -> str:
        repo_dir = self._repo_dir(repo_id)
        revision = validate_revision(revision or DEFAULT_BRANCH)
        if not (repo_dir / "refs").is_dir():
            raise RepoNotFoundError(
                f"repo {repo_id!r} not found in {self.describe()}: push it first, or pass hub='hf' (or set FGGP_HUB) for a remote hub"
            )
        ref = repo_dir / "refs" / revision
        if ref.is_file():
            return ref.read_text().strip()
        if 7 <= len(revision) <= 40 and all(c in "0123456789abcdef" for c in revision):
            matches = [p.name for p in (repo_dir / "commits").iterdir() if p.is_dir() and p.name.startswith(revision) and not p.name.startswith(".")]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise RevisionNotFoundError(f"revision {revision!r} of {repo_id!r} is ambiguous ({len(matches)} commits): give more digits")
        branches = sorted(str(p.relative_to(repo_dir / "refs")) for p in (repo_dir / "refs").rglob("*") if p.is_file() and not p.name.startswith("."))
        raise RevisionNotFoundError(
            f"revision {revision!r} not found in {repo_id!r} on {self.describe()}: use a branch ({', '.join(branches) or 'none'}) or a commit sha"
        )

    def pull(self, repo_id, revision=None, *, files=None) -> Path:
        sha = self.resolve(repo_id, revision)
        folder = self._repo_dir(repo_id) / "commits" / sha
        if not folder.is_dir():
            raise RevisionNotFoundError(f"commit {sha} of {repo_id!r} is missing from {self.describe()}; the hub folder is damaged")
        check_folder_files(folder)
        return folder

    def history(self, repo_id: str, revision: str | None = None) -> list[dict]:
        """Commits from ``revision`` back to the first, newest first."""
        repo_dir = self._repo_dir(repo_id)
        sha, out = self.resolve(repo_id, revision), []
        while sha:
            info = self._commit_info(repo_dir, sha)
            out.append(info)
            sha = info.get("parent")
        return out


# ============================================================================ remote
class HfHub(Hub):
    """Any Hugging Face-compatible endpoint, through huggingface_hub.

    ``endpoint`` defaults to ``HF_ENDPOINT`` (huggingface.co); ``cache_dir`` to
    huggingface_hub's cache (``HF_HUB_CACHE``); ``token`` to ``HF_TOKEN`` / the login file.
    """

    kind = "hf"

    def __init__(self, endpoint: str | None = None, token: str | bool | None = None, cache_dir: str | Path | None = None) -> None:
        self._endpoint = endpoint.rstrip("/") if endpoint else None
        self._token = token
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None

    @property
    def endpoint(self) -> str:
        from huggingface_hub import constants

        return self._endpoint or constants.ENDPOINT

    def __repr__(self) -> str:  # the token is never shown
        return f"HfHub(endpoint={self.endpoint!r})"

    def describe(self) -> str:
        return self.endpoint

    def _api(self):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self._token, library_name="fggp-hub")

    def _translate(self, err: Exception, repo_id: str, revision: str | None, action: str) -> FggpHubError:
        """huggingface_hub's (multi-line) errors -> one-line typed errors, without tokens or URLs with secrets."""
        from huggingface_hub import constants
        from huggingface_hub.errors import (
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
        )
        from huggingface_hub.errors import RepositoryNotFoundError as _RepoNotFound
        from huggingface_hub.errors import RevisionNotFoundError as _RevNotFound

        where = f"{repo_id}@{revision or DEFAULT_BRANCH}"
        if isinstance(err, _RevNotFound):
            return RevisionNotFoundError(f"revision {revision or DEFAULT_BRANCH!r} not found in {repo_id!r} on {self.endpoint}: use a branch, tag or commit sha of that repo")
        if isinstance(err, _RepoNotFound):
            return RepoNotFoundError(f"repo {repo_id!r} not found on {self.endpoint} (or it is private: set HF_TOKEN or pass token=)")
        if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            if constants.is_offline_mode() and action != "pull":
                return HubUnreachableError(f"cannot {action} {where}: HF_HUB_OFFLINE=1 is set; unset it to reach {self.endpoint}")
            if constants.is_offline_mode():
                return NotInCacheError(
                    f"{where} is not in the local cache ({self.cache_dir or constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 "
                    f"is set: {action} it once online (unset HF_HUB_OFFLINE) or point HF_HUB_CACHE at a cache that has it"
                )
            return HubUnreachableError(f"cannot reach {self.endpoint} to {action} {where} and it is not cached: check the network and HF_ENDPOINT")
        if isinstance(err, HfHubHTTPError) and err.response is not None:
            status = err.response.status_code
            if status in (401, 403):
                return HubAccessError(f"{self.endpoint} refused to {action} {where} (HTTP {status}): set HF_TOKEN or pass a token with access")
            return HubUnreachableError(f"{self.endpoint} failed to {action} {where} (HTTP {status}); retry later")
        return HubUnreachableError(f"cannot {action} {where} on {self.endpoint}: {err.__class__.__name__}")

    def push(self, folder, repo_id, *, commit_message=None, revision=DEFAULT_BRANCH, private=False) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        folder = Path(folder)
        validate_repo_id(repo_id)
        validate_revision(revision)
        names = check_folder_files(folder)
        api = self._api()
        try:
            api.create_repo(repo_id, exist_ok=True, private=private)
            if revision != DEFAULT_BRANCH:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            remote = set(api.list_repo_files(repo_id, revision=revision))
            operations = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(folder / n)) for n in names]
            operations += [CommitOperationDelete(path_in_repo=n) for n in sorted(remote - set(names)) if n != ".gitattributes"]
            info = api.create_commit(
                repo_id, operations, commit_message=commit_message or f"Upload {folder.name}", revision=revision
            )
        except _client_errors() as err:
            raise self._translate(err, repo_id, revision, "push") from None
        return info.oid

    def resolve(self, repo_id, revision=None) -> str:
        validate_repo_id(repo_id)
        if revision is not None:
            validate_revision(revision)
        try:
            return self._api().repo_info(repo_id, revision=revision).sha
        except _client_errors() as err:
            raise self._translate(err, repo_id, revision, "resolve") from None

    def pull(self, repo_id, revision=None, *, files=None) -> Path:
        from huggingface_hub import snapshot_download

        validate_repo_id(repo_id)
        if revision is not None:
            validate_revision(revision)
        patterns = list(files) if files is not None else PULL_PATTERNS
        try:
            path = snapshot_download(
                repo_id,
                revision=revision,
                endpoint=self.endpoint,
                token=self._token,
                cache_dir=str(self.cache_dir) if self.cache_dir is not None else None,
                allow_patterns=patterns,
                library_name="fggp-hub",
            )
        except _client_errors() as err:
            raise self._translate(err, repo_id, revision, "pull") from None
        folder = Path(path)
        check_folder_files(folder)
        return folder


# ============================================================================ choice
def get_hub(hub: Hub | str | os.PathLike | None = None, *, token: str | bool | None = None) -> Hub:
    """``None`` (``$FGGP_HUB`` or the local default), ``"local"``, ``"hf"``, an http(s) URL, a folder path, or a Hub.

    ``token`` is given to a remote hub built here (a local hub needs none).
    """
    if isinstance(hub, Hub):
        return hub
    if hub is None:
        hub = os.environ.get(ENV_HUB) or "local"
    if isinstance(hub, os.PathLike):
        return LocalHub(hub)
    if not isinstance(hub, str):
        raise TypeError(f"hub must be a Hub, a string or a path, not {type(hub).__name__}")
    spec = hub.strip()
    if spec == "local":
        return LocalHub()
    if spec in ("hf", "huggingface", "hf-hub"):
        return HfHub(token=token)
    if spec.startswith(("http://", "https://")):
        return HfHub(endpoint=spec, token=token)
    if spec.startswith("file://"):
        return LocalHub(spec[len("file://"):])
    if spec.startswith(("/", ".", "~")) or os.sep in spec:
        return LocalHub(spec)
    raise InvalidNameError(f"unknown hub {hub!r}: use 'local', 'hf', an http(s):// endpoint or a folder path")


# ============================================================================ public calls
def push(
    out_dir: str | os.PathLike,
    repo_id: str,
    hub: Hub | str | os.PathLike | None = None,
    *,
    revision: str = DEFAULT_BRANCH,
    commit_message: str | None = None,
    token: str | bool | None = None,
    private: bool = False,
) -> str:
    """Publish an export folder as one commit of ``repo_id`` on ``hub``; returns the commit sha.

    The folder is checked first (config.json's sparsity block, file names, weight hashes),
    so a damaged export is never published.
    """
    folder = Path(out_dir).expanduser()
    if not folder.is_dir():
        raise FolderNotFoundError(f"{folder} is not a folder: export the model first (fggp_hub.export)")
    validate_repo_id(repo_id)
    check_folder_files(folder)
    config = read_config(folder)
    # A zoo folder ships the compact file only (load rebuilds the dense weights from it): every
    # weight file that is present must match config.json, and at least one must be.
    present = [name for name in config["sparsity"]["files"] if (folder / name).exists()]
    if not present:
        raise CorruptCheckpointError(f"{folder} holds none of the weight files its config.json lists "
                                     f"({', '.join(config['sparsity']['files'])}): re-export the model")
    for name in present:
        verify_weight_file(folder, name, config)
    return get_hub(hub, token=token).push(folder, repo_id, commit_message=commit_message, revision=revision, private=private)


def pull(
    repo_id: str,
    revision: str | None = None,
    hub: Hub | str | os.PathLike | None = None,
    *,
    token: str | bool | None = None,
    files: Iterable[str] | None = None,
) -> Path:
    """A local folder with ``repo_id`` (``org/name[@rev]``) at ``revision``; its name is the commit sha.

    Remote hubs download into huggingface_hub's cache (offline from it when ``HF_HUB_OFFLINE=1``);
    a local hub returns its commit folder. ``files`` limits what is fetched (glob patterns).
    """
    repo_id, revision = split_revision(repo_id, revision)
    return get_hub(hub, token=token).pull(repo_id, revision, files=files)
