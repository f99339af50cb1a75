"""One notion of "a hub": a local folder of repos, or a Hugging Face-compatible endpoint.

Both kinds answer the same three calls:

- ``push(folder, repo_id)`` publishes a flat folder as ONE commit and returns its sha;
- ``pull(repo_id, revision)`` returns a folder holding that commit's files (named by the
  commit sha): the commit folder itself for a local hub, the huggingface_hub cache
  snapshot for a remote one (served from the cache when ``HF_HUB_OFFLINE=1``);
- ``resolve(repo_id, revision)`` returns the commit sha a revision points to.

Which hub is used: the ``hub`` argument, else the ``FGGP_HUB`` environment variable, else
the local hub under ``$FGGP_HUB_HOME/hub`` (``$XDG_CACHE_HOME/fggp_hub/hub``, ``~/.cache/fggp_hub/hub``). ``hub`` may be
``"local"``, a folder path, ``"hf"`` (``HF_ENDPOINT``, huggingface.co by default), an
``http(s)://`` endpoint, or a :class:`Hub` instance. Tokens come from the ``token``
argument or huggingface_hub's usual sources (``HF_TOKEN``, the login file) and are
never printed.

Network calls are bounded: every request to a remote hub has a connect and a read timeout
(``FGGP_HUB_TIMEOUT`` seconds, default 30; connect at most 10) and an operation gives up
after ``FGGP_HUB_RETRIES`` (default 3) failed attempts, in one line naming the endpoint.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path

from .._io import fsync_path, write_text_atomic
from ..constants import (
    DEFAULT_HUB,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    ENV_HOME,
    ENV_HUB,
    ENV_RETRIES,
    ENV_TIMEOUT,
    EXPORT_FILES,
    home_dir,
)
from .errors import (
    CorruptCheckpointError,
    FggpHubError,
    FolderNotFoundError,
    HubAccessError,
    HubResponseError,
    HubUnreachableError,
    InvalidNameError,
    NotInCacheError,
    RepoExistsError,
    RepoNotFoundError,
    RevisionNotFoundError,
    UnsafePathError,
)
from .integrity import (
    CONFIG_NAME,
    check_folder_files,
    read_config,
    read_export,
    split_revision,
    validate_repo_id,
    validate_filename,
    validate_revision,
    verify_weight_file,
)
from .sparsity_info import SparsityInfo

__all__ = ["Hub", "LocalHub", "HfHub", "get_hub", "push", "pull", "home_dir", "default_local_root", "ENV_HUB", "ENV_HOME"]

DEFAULT_BRANCH = "main"
#: What a pull fetches from a remote repo: never pickles, never anything else.
PULL_PATTERNS = ["*.safetensors", "*.json", "*.md", "*.yaml", "*.yml", "*.png", "*.txt"]
_SHA = re.compile(r"^[0-9a-f]{40}$")
logger = logging.getLogger("fggp_hub")


# ============================================================================ bounded network calls
def _timeout() -> float:
    try:
        value = float(os.environ.get(ENV_TIMEOUT) or DEFAULT_TIMEOUT)
    except ValueError:
        raise InvalidNameError(f"{ENV_TIMEOUT}={os.environ.get(ENV_TIMEOUT)!r} is not a number of seconds") from None
    if not 0 < value < 3600:
        raise InvalidNameError(f"{ENV_TIMEOUT}={value} must be between 0 and 3600 seconds")
    return value


def _retries() -> int:
    try:
        value = int(os.environ.get(ENV_RETRIES) or DEFAULT_RETRIES)
    except ValueError:
        raise InvalidNameError(f"{ENV_RETRIES}={os.environ.get(ENV_RETRIES)!r} is not a whole number") from None
    return min(max(value, 1), 10)


class _GaveUp(Exception):
    """Raised by the transport once an operation used up its attempts (not retried by huggingface_hub)."""


#: {"failures": int, "limit": int} of the operation running in this context (None outside one).
_ATTEMPTS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("fggp_hub_attempts", default=None)


def _bounded_transport():
    """An httpx transport that caps every request's timeouts and counts failed attempts."""
    import httpx2

    class BoundedTransport(httpx2.HTTPTransport):
        def handle_request(self, request):
            state = _ATTEMPTS.get()
            if state is not None and state["failures"] >= state["limit"]:
                raise _GaveUp()
            cap = _timeout()
            wanted = dict(request.extensions.get("timeout") or {})
            bounds = {"connect": min(cap, 10.0), "read": cap, "write": cap, "pool": cap}
            request.extensions["timeout"] = {k: min(v, wanted[k]) if wanted.get(k) is not None else v for k, v in bounds.items()}
            try:
                return super().handle_request(request)
            except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError):
                if state is not None:
                    state["failures"] += 1
                raise

    return BoundedTransport()


def _install_bounded_client() -> None:
    """Make huggingface_hub's shared client use the bounded transport (unless the user set a factory of their own)."""
    from huggingface_hub.utils import _http

    if getattr(_http._GLOBAL_CLIENT_FACTORY, "_fggp_bounded", False) or _http._GLOBAL_CLIENT_FACTORY is not _http.default_client_factory:
        return

    def factory():
        import httpx2

        return httpx2.Client(event_hooks={"request": [_http.hf_request_event_hook]}, follow_redirects=True, timeout=None,
                             transport=_bounded_transport())

    factory._fggp_bounded = True
    _http.set_client_factory(factory)


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

    def published_config(self, repo_id: str, revision: str | None = None) -> tuple[str, dict | None] | None:
        """(commit sha, its config.json or None when it has no fggp-hub config) of a branch, or None when there is none yet."""
        return None

    def commit(self, repo_id: str, files: Mapping[str, bytes | str | os.PathLike], message: str, *,
               revision: str = DEFAULT_BRANCH) -> str:
        """Add or replace some files of an existing repo's branch as one commit (the rest stay); returns its sha.

        ``files`` maps a name in the repo to its new content (bytes) or a local file holding it.
        For updates of a published repo that are not a whole export (a card with new results), so
        callers need no hub internals. Hubs that cannot do it raise NotImplementedError.
        """
        raise NotImplementedError(f"{self.describe()} cannot commit single files")

    def exists(self, repo_id: str, revision: str | None = None) -> bool:
        try:
            self.resolve(repo_id, revision)
        except (RepoNotFoundError, RevisionNotFoundError):
            return False
        return True

    def describe(self) -> str:
        return self.kind


def _write_files(folder: Path, files: Mapping[str, bytes | str | os.PathLike]) -> None:
    """Write ``files`` (name -> bytes or a local file) into ``folder``, names validated as a repo's."""
    for name, content in files.items():
        target = folder / validate_filename(name, where=str(folder))
        target.unlink(missing_ok=True)  # a commit's files may be read-only copies
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)


def _config_or_none(folder: Path) -> dict | None:
    """config.json of a published commit folder, or None when it holds none (an empty repo)."""
    if not (folder / CONFIG_NAME).exists():
        return None
    try:
        return read_config(folder)
    except FggpHubError:
        return {}  # something that is not an fggp-hub export: replacing it needs overwrite too


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

    def _inside(self, path: Path) -> Path:
        """``path`` if it resolves inside the hub root (no symbolic link or crafted ref leads out of it)."""
        root = self.root.resolve()
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            raise UnsafePathError(f"{path} is a symbolic link or leads outside the local hub {root}: refusing it; "
                                  "the hub folder was tampered with (remove the link)")
        return path

    def _repo_dir(self, repo_id: str) -> Path:
        org, name = validate_repo_id(repo_id).split("/")
        for path in (self.root / org, self.root / org / name):
            if path.exists() or path.is_symlink():
                self._inside(path)
        return self.root / org / name

    def _read_ref(self, ref: Path) -> str:
        self._inside(ref)
        text = ref.read_text(errors="replace").strip()
        if not text:
            raise RevisionNotFoundError(f"ref file {ref} is empty (an interrupted push?): push again, or delete the file")
        if not _SHA.fullmatch(text):
            raise UnsafePathError(f"ref file {ref} holds {text[:60]!r}, not a commit sha: the hub folder is damaged; "
                                  "push again or delete the file")
        return text

    def _check_ref_path(self, repo_dir: Path, revision: str) -> Path:
        """The ref file of branch ``revision``; refused when it collides with another branch (``a`` vs ``a/b``)."""
        refs = repo_dir / "refs"
        ref = refs / revision
        for parent in list(ref.parents)[: len(Path(revision).parts) - 1]:
            if parent.is_file() or parent.is_symlink():
                raise InvalidNameError(f"branch {revision!r} collides with branch {str(parent.relative_to(refs))!r} in "
                                       f"{repo_dir}: choose another branch name")
        if ref.is_dir() and not ref.is_symlink():
            raise InvalidNameError(f"branch {revision!r} collides with branches under {revision}/ in {repo_dir}: choose another branch name")
        return ref

    def _cleanup_stale(self, repo_dir: Path) -> None:
        """Remove what a killed push left (staging folders, temporary ref/commit files of dead processes)."""
        from .export import _pid_alive

        for folder in (repo_dir / "commits", repo_dir / "refs"):
            if not folder.is_dir():
                continue
            for entry in folder.rglob(".*"):
                match = re.fullmatch(r"\.(?:tmp-[0-9a-f]{40}|.+\.tmp)-(\d+)(?:-[0-9a-f]+)?", entry.name)
                if match and not entry.is_symlink() and not _pid_alive(int(match[1])):
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)

    def _commit_folder(self, repo_dir: Path, sha: str, repo_id: str) -> Path:
        folder = repo_dir / "commits" / sha
        if not folder.is_dir() and not folder.is_symlink():
            raise RevisionNotFoundError(f"commit {sha} of {repo_id!r} is missing from {self.describe()}; the hub folder is damaged")
        return self._inside(folder)

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
        if not _SHA.fullmatch(str(sha)):
            raise UnsafePathError(f"commit record names parent {str(sha)[:60]!r}, not a commit sha: {repo_dir} is damaged")
        path = self._inside(repo_dir / "commits" / f"{sha}.json")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise CorruptCheckpointError(f"commit record {path} is missing or not JSON: the hub folder is damaged") from None
        if not isinstance(info, dict) or not isinstance(info.get("files"), dict):
            raise CorruptCheckpointError(f"commit record {path} is malformed: the hub folder is damaged")
        return info

    def push(self, folder, repo_id, *, commit_message=None, revision=DEFAULT_BRANCH, private=False) -> str:
        folder = Path(folder)
        validate_revision(revision)
        names = check_folder_files(folder)
        repo_dir = self._repo_dir(repo_id)
        self._check_ref_path(repo_dir, revision)
        tree = {}
        for name in names:
            h = hashlib.sha256()
            with open(folder / name, "rb") as f:
                while block := f.read(1 << 23):
                    h.update(block)
            tree[name] = h.hexdigest()
        message = commit_message or f"Upload {folder.name}"
        with self._locked(repo_dir):
            self._cleanup_stale(repo_dir)
            ref = self._check_ref_path(repo_dir, revision)
            parent = self._read_ref(ref) if ref.is_file() or ref.is_symlink() else None
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
            write_text_atomic(commits / f"{sha}.json", json.dumps(info, indent=2))
            ref.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(ref, sha + "\n")
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
        if ref.is_file() or ref.is_symlink():
            return self._read_ref(ref)
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
        folder = self._commit_folder(self._repo_dir(repo_id), sha, repo_id)
        check_folder_files(folder)  # no links, no sub-folders
        return folder

    def published_config(self, repo_id: str, revision: str | None = None) -> tuple[str, dict | None] | None:
        try:
            sha = self.resolve(repo_id, revision)
        except (RepoNotFoundError, RevisionNotFoundError):
            return None
        return sha, _config_or_none(self._commit_folder(self._repo_dir(repo_id), sha, repo_id))

    def commit(self, repo_id, files, message, *, revision=DEFAULT_BRANCH) -> str:
        """The branch's current files with ``files`` added or replaced, pushed as the next commit."""
        import tempfile

        validate_revision(revision)
        source = self.pull(repo_id, revision)  # the branch must exist
        with tempfile.TemporaryDirectory(prefix="fggp-commit-") as tmp:
            work = Path(tmp) / "repo"
            shutil.copytree(source, work)
            _write_files(work, files)
            return self.push(work, repo_id, commit_message=message, revision=revision)

    def history(self, repo_id: str, revision: str | None = None) -> list[dict]:
        """Commits from ``revision`` back to the first, newest first."""
        repo_dir = self._repo_dir(repo_id)
        sha, out, seen = self.resolve(repo_id, revision), [], set()
        while sha:
            if sha in seen:
                raise CorruptCheckpointError(f"the history of {repo_id!r} in {self.describe()} loops at {sha}: the hub folder is damaged")
            seen.add(sha)
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

        _install_bounded_client()
        return HfApi(endpoint=self.endpoint, token=self._token, library_name="fggp-hub")

    @contextlib.contextmanager
    def _network(self, action: str, repo_id: str, revision: str | None):
        """Bounded attempts for one operation; every failure becomes one typed line naming the endpoint."""
        _install_bounded_client()
        state = {"failures": 0, "limit": _retries()}
        token = _ATTEMPTS.set(state)
        try:
            yield
        except FggpHubError:
            raise
        except Exception as err:  # noqa: BLE001 - translated below, or re-raised as it is
            raise self._translate(err, repo_id, revision, action, state) from None
        finally:
            _ATTEMPTS.reset(token)

    def _translate(self, err: Exception, repo_id: str, revision: str | None, action: str, state: dict | None = None) -> FggpHubError:
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
        chain, cause = [], err
        while cause is not None and len(chain) < 8:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        if any(isinstance(e, _GaveUp) for e in chain) or (state and state["failures"] >= state["limit"]):
            return HubUnreachableError(f"{self.endpoint} did not answer to {action} {where} ({state['failures'] if state else '?'} attempts "
                                       f"of at most {_timeout():g} s each): check the endpoint and the network, or raise {ENV_TIMEOUT}")
        if any(isinstance(e, json.JSONDecodeError) for e in chain):
            return HubResponseError(f"{self.endpoint} answered {action} {where} with something that is not the Hub API's JSON "
                                    "(an HTML page?): check that the URL is a Hugging Face-compatible hub")
        http = next((e for e in chain if isinstance(e, HfHubHTTPError) and e.response is not None
                     and not isinstance(e, (_RevNotFound, _RepoNotFound))), None)
        if http is not None and http.response.status_code >= 500:
            return HubResponseError(f"{self.endpoint} failed to {action} {where} with HTTP {http.response.status_code} "
                                    "(a server error: it was reached); retry later")
        if not isinstance(err, _client_errors()):
            raise err
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
            return HubResponseError(f"{self.endpoint} refused to {action} {where} (HTTP {status}); check the repo id and the endpoint")
        return HubUnreachableError(f"cannot {action} {where} on {self.endpoint}: {err.__class__.__name__}")

    def push(self, folder, repo_id, *, commit_message=None, revision=DEFAULT_BRANCH, private=False, delete_others=False) -> str:
        """Add the folder's files; delete only remote files an export of ours writes (all others with ``delete_others``)."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        folder = Path(folder)
        validate_repo_id(repo_id)
        validate_revision(revision)
        names = check_folder_files(folder)
        api = self._api()
        with self._network("push", repo_id, revision):
            api.create_repo(repo_id, exist_ok=True, private=private)
            if revision != DEFAULT_BRANCH:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            remote = set(api.list_repo_files(repo_id, revision=revision))
            stale = sorted(n for n in remote - set(names) if n != ".gitattributes" and (delete_others or n in EXPORT_FILES))
            kept = sorted(n for n in remote - set(names) - set(stale) if n != ".gitattributes")
            if kept:
                logger.info("kept %d file(s) of %s that fggp-hub export does not write: %s (delete_others=True removes them)",
                            len(kept), repo_id, ", ".join(kept[:5]))
            operations = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(folder / n)) for n in names]
            operations += [CommitOperationDelete(path_in_repo=n) for n in stale]
            info = api.create_commit(
                repo_id, operations, commit_message=commit_message or f"Upload {folder.name}", revision=revision
            )
        return info.oid

    def commit(self, repo_id, files, message, *, revision=DEFAULT_BRANCH) -> str:
        """One ``create_commit`` adding ``files`` to the branch (others untouched)."""
        from huggingface_hub import CommitOperationAdd

        validate_repo_id(repo_id)
        validate_revision(revision)
        operations = [CommitOperationAdd(path_in_repo=validate_filename(name, where=repo_id),
                                         path_or_fileobj=content if isinstance(content, bytes) else str(content))
                      for name, content in files.items()]
        api = self._api()
        with self._network("push", repo_id, revision):
            return api.create_commit(repo_id, operations, commit_message=message, revision=revision).oid

    def resolve(self, repo_id, revision=None) -> str:
        validate_repo_id(repo_id)
        if revision is not None:
            validate_revision(revision)
        api = self._api()
        with self._network("resolve", repo_id, revision):
            return api.repo_info(repo_id, revision=revision, timeout=_timeout()).sha

    def published_config(self, repo_id: str, revision: str | None = None) -> tuple[str, dict | None] | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        api = self._api()
        with self._network("push", repo_id, revision):
            try:
                sha = api.repo_info(repo_id, revision=revision, timeout=_timeout()).sha
            except Exception as err:  # noqa: BLE001 - only "not there yet" is an answer here
                from huggingface_hub.errors import RepositoryNotFoundError as _RepoNotFound
                from huggingface_hub.errors import RevisionNotFoundError as _RevNotFound

                if isinstance(err, (_RepoNotFound, _RevNotFound)):
                    return None
                raise
            try:
                path = hf_hub_download(repo_id, CONFIG_NAME, revision=sha, endpoint=self.endpoint, token=self._token,
                                       cache_dir=str(self.cache_dir) if self.cache_dir is not None else None, library_name="fggp-hub")
            except EntryNotFoundError:
                return sha, None
        return sha, _config_or_none(Path(path).parent)

    def pull(self, repo_id, revision=None, *, files=None, force_download: bool = False) -> Path:
        from huggingface_hub import snapshot_download

        validate_repo_id(repo_id)
        if revision is not None:
            validate_revision(revision)
        patterns = list(files) if files is not None else PULL_PATTERNS
        with self._network("pull", repo_id, revision):
            path = snapshot_download(
                repo_id,
                revision=revision,
                endpoint=self.endpoint,
                token=self._token,
                cache_dir=str(self.cache_dir) if self.cache_dir is not None else None,
                allow_patterns=patterns,
                library_name="fggp-hub",
                force_download=force_download,
            )
        folder = Path(path)
        if not folder.is_dir():
            raise HubResponseError(f"{repo_id}@{revision or DEFAULT_BRANCH} on {self.endpoint} holds none of the files fggp-hub reads "
                                   f"({', '.join(patterns)}): it is not an fggp-hub export")
        # snapshot files are links into the cache's blobs of this repo; anything else is refused
        check_folder_files(folder, links_within=folder.parent.parent)
        return folder


# ============================================================================ choice
def get_hub(hub: Hub | str | os.PathLike | None = None, *, token: str | bool | None = None) -> Hub:
    """``None`` (``$FGGP_HUB`` or the local default), ``"local"``, ``"hf"``, an http(s) URL, a folder path, or a Hub.

    ``token`` is given to a remote hub built here (a local hub needs none).
    """
    if isinstance(hub, Hub):
        return hub
    if hub is None:
        hub = os.environ.get(ENV_HUB) or DEFAULT_HUB
    if isinstance(hub, os.PathLike):
        return LocalHub(_local_hub_folder(Path(hub), str(hub)))
    if not isinstance(hub, str):
        raise InvalidNameError(f"hub must be a Hub, a string or a path, not {type(hub).__name__}")
    spec = hub.strip()
    if spec == "local":
        return LocalHub()
    if spec in ("hf", "huggingface", "hf-hub"):
        return HfHub(token=token)
    if re.match(r"^https?://[^/\s]+", spec, re.IGNORECASE):
        return HfHub(endpoint=spec, token=token)
    if spec.lower().startswith("file://"):
        return LocalHub(_local_hub_folder(Path(spec[len("file://"):]), hub))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", spec) and not re.match(r"^[A-Za-z]:[\\/]", spec):
        raise InvalidNameError(f"unsupported hub {hub!r}: only 'local', 'hf', an http(s):// endpoint or a local folder are supported")
    if spec and (spec.startswith(("/", ".", "~")) or os.sep in spec or Path(spec).is_dir()):
        return LocalHub(_local_hub_folder(Path(spec), hub))
    raise InvalidNameError(f"unknown hub {hub!r}: use 'local', 'hf', an http(s):// endpoint or a folder path")


def _local_hub_folder(path: Path, spec: str) -> Path:
    """A folder to use as a local hub: an existing folder, or a new one whose parent exists."""
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidNameError(f"hub {spec!r} is a file, not a folder: pass a folder for a local hub")
    if not path.exists() and not path.absolute().parent.is_dir():
        raise InvalidNameError(f"hub folder {spec!r} does not exist and neither does its parent: create it first, "
                               "or use 'local', 'hf' or an http(s):// endpoint")
    return path


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
    overwrite: bool = False,
    delete_others: bool = False,
) -> str:
    """Publish an export folder as one commit of ``repo_id`` on ``hub``; returns the commit sha.

    The folder is checked first (config.json's sparsity block, file names, weight hashes),
    so a damaged export is never published. When the branch already holds another model
    (other weights), the push is refused unless ``overwrite=True``; either way the old and
    new top-1 are named, and the old commit stays addressable by its sha. On a remote hub
    only files an export of ours writes are removed from the repo (``delete_others=True``
    removes the rest too, e.g. a LICENSE or other weight formats).
    """
    hub_obj = get_hub(hub, token=token)  # an unsupported hub is refused before anything else
    folder = Path(out_dir).expanduser()
    if not folder.is_dir():
        raise FolderNotFoundError(f"{folder} is not a folder: export the model first (fggp_hub.export)")
    validate_repo_id(repo_id)
    check_folder_files(folder)
    _, info = read_export(folder)
    # A zoo folder ships the compact file only (load rebuilds the dense weights from it): every
    # weight file that is present must match config.json, and at least one must be.
    present = [name for name in info.files if (folder / name).exists()]
    if not present:
        raise CorruptCheckpointError(f"{folder} holds none of the weight files its config.json lists "
                                     f"({', '.join(info.files)}): re-export the model")
    for name in present:
        verify_weight_file(folder, name, info)
    validate_revision(revision)
    _check_replacing(hub_obj, repo_id, revision, info, overwrite)
    kwargs = {"delete_others": True} if delete_others and isinstance(hub_obj, HfHub) else {}
    return hub_obj.push(folder, repo_id, commit_message=commit_message, revision=revision, private=private, **kwargs)


def _top1(info: SparsityInfo | None) -> str:
    top1 = info.top1 if info is not None else None
    return f"{top1:.2f}%" if top1 is not None else "unknown"


def _check_replacing(hub: Hub, repo_id: str, revision: str, info: SparsityInfo, overwrite: bool) -> None:
    """Refuse (or, with overwrite, announce) publishing other weights over a published model."""
    published = hub.published_config(repo_id, revision)
    if published is None:
        return
    sha, old = published
    if old is None:
        return  # an empty repo (only .gitattributes, a LICENSE...)
    old_info = SparsityInfo.of_config_or_none(old)  # None: something that is not an fggp-hub export
    new_w = {n: f.sha256 for n, f in info.files.items()}
    old_w = {n: f.sha256 for n, f in old_info.files.items()} if old_info is not None else {}
    if old_w and all(old_w.get(n) == h for n, h in new_w.items() if n in old_w):
        return  # the same model (a re-rendered card, new results): no flag needed
    old_name = (old_info.name if old_info is not None else None) or "a model that is not an fggp-hub export"
    new_name = info.name or "this export"
    what = (f"{repo_id}@{revision} on {hub.describe()} holds {old_name} (top-1 {_top1(old_info)}, commit {sha[:12]}); "
            f"this folder is {new_name} (top-1 {_top1(info)})")
    if not overwrite:
        raise RepoExistsError(f"{what}: pass overwrite=True (fggp-hub push --overwrite) to publish over it, "
                              f"or push to another repo id or branch")
    logger.warning("%s: publishing over it (the old commit stays addressable as %s@%s)", what, repo_id, sha[:12])


def pull(
    repo_id: str,
    revision: str | None = None,
    hub: Hub | str | os.PathLike | None = None,
    *,
    token: str | bool | None = None,
    files: Iterable[str] | None = None,
    force_download: bool = False,
) -> Path:
    """A local folder with ``repo_id`` (``org/name[@rev]``) at ``revision``; its name is the commit sha.

    Remote hubs download into huggingface_hub's cache (offline from it when ``HF_HUB_OFFLINE=1``);
    a local hub returns its commit folder. ``files`` limits what is fetched (glob patterns).
    """
    repo_id, revision = split_revision(repo_id, revision)
    hub_obj = get_hub(hub, token=token)
    if force_download and isinstance(hub_obj, HfHub):  # a damaged cached file is fetched again
        return hub_obj.pull(repo_id, revision, files=files, force_download=True)
    return hub_obj.pull(repo_id, revision, files=files)
