"""A Hugging Face-compatible hub on 127.0.0.1 for tests (standard library only).

Implements the calls huggingface_hub makes to publish and fetch a model repo (see
shared/HUB_NOTES.md): repo creation, YAML validation, preupload (always "regular", so
file contents travel inside the commit: no LFS, no Xet), NDJSON commits, repo info,
tree listing and ``resolve`` (HEAD/GET) downloads. Every commit is kept, so branches
and commit shas work as revisions. Repos live in memory.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["LoopbackHub"]


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class _Repo:
    repo_id: str
    private: bool = False
    commits: dict[str, _Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> _Commit | None:
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        return self.commits.get(revision)


class _HubState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: list[str] = []
        self.write_token: str | None = None
        self.counter = 0
        self.collections: dict[str, dict] = {}  # slug -> the Hub's collection JSON
        self.broken: tuple[int, str, bytes] | None = None  # (status, content type, body) for every GET: faults

    def new_commit(self, repo: _Repo, parent: str | None, message: str, files: dict[str, bytes]) -> _Commit:
        self.counter += 1
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_id}\n{parent}\n{message}\n{self.counter}\n".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + _git_blob_sha(files[path]).encode())
        commit = _Commit(digest.hexdigest(), parent, message, dict(files))
        repo.commits[commit.sha] = commit
        return commit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    @property
    def state(self) -> _HubState:
        return self.server.state

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = message
        self._json(status, {"error": message}, extra)

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        parts = urlsplit(self.path)
        with self.state.lock:
            self.state.requests.append((self.command, parts.path))
            auth = self.headers.get("Authorization")
            if auth:
                self.state.auth_headers.append(auth)
        return [unquote(p) for p in parts.path.split("/")[1:]], parse_qs(parts.query)

    def _authorized_to_write(self) -> bool:
        token = self.state.write_token
        if token is None or self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self._error(401, None, "Invalid credentials in Authorization header")
        return False

    def _repo(self, org: str, name: str) -> _Repo | None:
        repo = self.state.repos.get(f"{org}/{name}")
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return repo

    def _commit(self, repo: _Repo, revision: str) -> _Commit | None:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    # ------------------------------------------------------------------ verbs
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        segments, query = self._route()
        if self.state.broken is not None:
            status, content_type, body = self.state.broken
            return self._send(status, body, content_type=content_type)
        with self.state.lock:
            if segments[:2] == ["api", "models"] and len(segments) >= 4:
                org, name, rest = segments[2], segments[3], segments[4:]
                repo = self._repo(org, name)
                if repo is None:
                    return
                if not rest or rest[0] == "revision":
                    return self._model_info(repo, rest[1] if len(rest) > 1 else "main")
                if rest[0] == "tree" and len(rest) >= 2:
                    return self._tree(repo, rest[1], "/".join(rest[2:]), query)
            elif segments[:2] == ["api", "collections"] and len(segments) == 4:
                collection = self.state.collections.get(f"{segments[2]}/{segments[3]}")
                if collection is None:
                    return self._error(404, None, "Collection not found")
                return self._json(200, collection)
            elif len(segments) >= 5 and segments[2] == "resolve":
                org, name, revision, path = segments[0], segments[1], segments[3], "/".join(segments[4:])
                repo = self._repo(org, name)
                if repo is None:
                    return
                return self._resolve(repo, revision, path)
        self._error(404, None, f"no route for {self.command} {self.path}")

    def do_POST(self) -> None:
        segments, _ = self._route()
        body = self._body()
        with self.state.lock:
            if segments == ["api", "repos", "create"]:
                return self._create_repo(json.loads(body or b"{}"))
            if segments == ["api", "validate-yaml"]:
                content = json.loads(body or b"{}").get("content", "")
                if not content.startswith("---\n") or "\n---" not in content[3:]:
                    return self._json(400, {"errors": [{"message": "README.md has no YAML front matter"}], "warnings": []})
                return self._json(200, {"errors": [], "warnings": []})
            if segments == ["api", "collections"]:
                return self._create_collection(json.loads(body or b"{}"))
            if segments[:2] == ["api", "collections"] and len(segments) == 5 and segments[4] == "items":
                return self._add_collection_item(f"{segments[2]}/{segments[3]}", json.loads(body or b"{}"))
            if segments[:2] == ["api", "models"] and len(segments) == 6 and segments[4] in ("preupload", "commit"):
                if not self._authorized_to_write():
                    return
                repo = self._repo(segments[2], segments[3])
                if repo is None:
                    return
                if segments[4] == "preupload":
                    return self._preupload(json.loads(body or b"{}"))
                return self._apply_commit(repo, segments[5], body)
        self._error(404, None, f"no route for {self.command} {self.path}")

    # ------------------------------------------------------------------ endpoints
    def _create_repo(self, payload: dict) -> None:
        if not self._authorized_to_write():
            return
        repo_id = f"{payload.get('organization')}/{payload.get('name')}"
        if repo_id in self.state.repos:  # the Hub's 409 names the existing repo
            message = "You already created this model repo"
            return self._json(409, {"error": message, "url": f"{self.server.url}/{repo_id}"}, {"X-Error-Message": message})
        repo = _Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        first = self.state.new_commit(repo, None, "initial commit", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
        repo.refs["main"] = first.sha
        self.state.repos[repo_id] = repo
        self._json(200, {"url": f"{self.server.url}/{repo_id}", "name": repo_id})

    def _create_collection(self, payload: dict) -> None:
        """POST /api/collections: one collection per (namespace, title), 409 with its slug on a repeat."""
        if not self._authorized_to_write():
            return
        namespace, title = payload.get("namespace"), payload.get("title")
        for slug, existing in self.state.collections.items():
            if existing["owner"]["name"] == namespace and existing["title"] == title:
                message = "You already have a collection with this title"
                return self._json(409, {"error": message, "slug": slug}, {"X-Error-Message": message})
        self.state.counter += 1
        slug = f"{namespace}/{'-'.join(str(title).lower().split())}-{self.state.counter:024x}"
        collection = {"slug": slug, "title": title, "owner": {"name": namespace, "type": "org"}, "items": [],
                      "lastUpdated": "2026-01-01T00:00:00.000Z", "position": 0, "private": bool(payload.get("private")),
                      "theme": "indigo", "upvotes": 0, "description": payload.get("description")}
        self.state.collections[slug] = collection
        self._json(200, collection)

    def _add_collection_item(self, slug: str, payload: dict) -> None:
        if not self._authorized_to_write():
            return
        collection = self.state.collections.get(slug)
        if collection is None:
            return self._error(404, None, "Collection not found")
        item = payload.get("item") or {}
        if any(i["id"] == item.get("id") and i["type"] == item.get("type") for i in collection["items"]):
            message = "Item already in collection"
            return self._json(409, {"error": message}, {"X-Error-Message": message})
        self.state.counter += 1
        entry = {"_id": f"{self.state.counter:024x}", "id": item.get("id"), "type": item.get("type"),
                 "position": len(collection["items"])}
        if payload.get("note"):
            entry["note"] = {"text": payload["note"]}
        collection["items"].append(entry)
        self._json(200, collection)

    def _preupload(self, payload: dict) -> None:
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in payload.get("files", [])]
        self._json(200, {"files": files, "commitOid": None})

    def _apply_commit(self, repo: _Repo, branch: str, body: bytes) -> None:
        if branch not in repo.refs:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        head = repo.commits[repo.refs[branch]]
        files = dict(head.files)
        message = "commit"
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                message = value.get("summary") or message
                parent = value.get("parentCommit")
                if parent and parent != head.sha:
                    return self._error(412, None, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                if value.get("encoding") != "base64":
                    return self._error(400, None, "only base64 file contents are supported")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    return self._error(404, "EntryNotFound", "A file with this name doesn't exist")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            else:
                return self._error(400, None, f"unsupported commit operation {key!r} (this server stores regular files only)")
        commit = self.state.new_commit(repo, head.sha, message, files)
        repo.refs[branch] = commit.sha
        self._json(200, {"commitUrl": f"{self.server.url}/{repo.repo_id}/commit/{commit.sha}", "commitOid": commit.sha, "pullRequestUrl": None})

    def _model_info(self, repo: _Repo, revision: str) -> None:
        commit = self._commit(repo, revision)
        if commit is None:
            return
        self._json(
            200,
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit.sha,
                "private": repo.private,
                "library_name": "timm",
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            },
        )

    def _tree(self, repo: _Repo, revision: str, path: str, query: dict[str, list[str]]) -> None:
        commit = self._commit(repo, revision)
        if commit is None:
            return
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        below = {p: d for p, d in commit.files.items() if p.startswith(prefix)}
        if prefix and not below:
            return self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": commit.sha})
        entries, folders = [], set()
        for p, data in sorted(below.items()):
            rel = p[len(prefix):].split("/")
            for depth in range(1, len(rel)):
                folders.add("/".join(rel[:depth]))
            if recursive or len(rel) == 1:
                entries.append({"type": "file", "oid": _git_blob_sha(data), "size": len(data), "path": p})
        for folder in sorted(folders):
            if recursive or "/" not in folder:
                entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0, "path": prefix + folder})
        self._json(200, entries)

    def _resolve(self, repo: _Repo, revision: str, path: str) -> None:
        commit = self._commit(repo, revision)
        if commit is None:
            return
        data = commit.files.get(path)
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{_git_blob_sha(data)}"'}
        self._send(200, data, headers, content_type="application/octet-stream")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _HubState
    url: str


class LoopbackHub:
    """``with LoopbackHub() as hub: HfApi(endpoint=hub.url)...``"""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _HubState()
        self._server.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="loopback-hub", daemon=True)

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def state(self) -> _HubState:
        return self._server.state

    def require_token(self, token: str | None) -> None:
        """Make repo creation, preupload and commits demand ``Authorization: Bearer <token>``."""
        self.state.write_token = token

    def start(self) -> "LoopbackHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "LoopbackHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # test helpers
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self.state.lock:
            return dict(self.state.repos[repo_id].resolve(revision).files)

    def corrupt(self, repo_id: str, path: str, data: bytes, revision: str = "main") -> None:
        """Replace a file's bytes in place (same commit sha), as a broken mirror or disk would."""
        with self.state.lock:
            self.state.repos[repo_id].resolve(revision).files[path] = data

    def request_count(self) -> int:
        with self.state.lock:
            return len(self.state.requests)
