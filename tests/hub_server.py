"""A small Hugging Face Hub-compatible HTTP server for the tests (standard library; PyYAML for cardData if present).

It speaks the Hub's wire protocol as the real huggingface_hub / datasets clients use it (see
shared/recipes/hub-server.md §5-§6), so the tests drive the unmocked clients over 127.0.0.1:

- model / dataset / space repos: create (409 still carries `url`), delete, settings (visibility), info (+ at a
  revision), tree (recursive, expand), paths-info, refs, commits, whoami-v2, validate-yaml (real YAML parsing);
- writes: preupload (regular vs LFS from the repo's .gitattributes, size, binary sample; `oid` of unchanged files),
  NDJSON commit (file / lfsFile / deletedFile / deletedFolder, parentCommit checked), git-LFS batch + PUT upload
  (sha256 and size verified);
- reads: HEAD / GET resolve with X-Repo-Commit, ETag, X-Linked-Etag/-Size for LFS, Range -> 206;
- branches and tags (create from a revision, delete, 409 when they exist), revisions by branch, tag or commit sha;
- auth with fixed tokens `user -> (token, "read" | "write")`: private repos are visible to their owner only
  (anonymous 401, other users 404, both `RepoNotFound`); writes need a write token on one's own namespace
  (anonymous 401, unknown token 401 "Invalid credentials in Authorization header", read token or other namespace
  403). Xet is not implemented: clients must run with HF_HUB_DISABLE_XET=1.

State (repos, commits, refs) lives in memory; file bytes are stored content-addressed under `data_dir/blobs`.
The request log (`log_path`) records method, path and status only, never headers, so no token reaches it.

    python tests/hub_server.py --port 0 --data-dir /tmp/hub --token alice=hf_alice:write
    server = make_server("127.0.0.1", 0, data_dir, {"hf_alice": ("alice", "write")}); start_in_thread(server)
"""

from __future__ import annotations

import argparse
import base64
import copy
import fnmatch
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

try:  # cardData in repo info; without PyYAML the server still works, cards are just not parsed
    import yaml
except ImportError:  # pragma: no cover
    yaml = None

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
# What a repo created on the Hub starts with (an abridged copy of the Hub's default .gitattributes).
DEFAULT_GITATTRIBUTES = "\n".join(
    f"{p} filter=lfs diff=lfs merge=lfs -text" for p in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
        "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl",
        "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz",
        "*.zip", "*.zst", "*tfevents*", "*.png", "*.jpg", "*.jpeg", "*.webp")) + "\n"
REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
SHA1 = re.compile(r"^[0-9a-f]{40}$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubError(Exception):
    """An HTTP error answer: status, X-Error-Code (optional) and a message (X-Error-Message + JSON body)."""

    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


@dataclass
class Entry:
    size: int
    sha256: str          # content address of the bytes in the blob store
    oid: str             # git oid: of the blob, or of the LFS pointer file
    lfs: bool
    last_commit: str     # commit that last wrote this path

    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass
class Commit:
    oid: str
    parents: list[str]
    title: str
    message: str
    date: str
    author: str
    files: dict[str, Entry]


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    created: str
    sdk: str | None = None
    gated: bool | str = False
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.id.split("/")[0]


class HubState:
    """Repos, refs and commits in memory; blobs on disk by sha256. One lock: plenty for tests."""

    def __init__(self, data_dir: str | Path, tokens: dict[str, tuple[str, str]]):
        self.blob_dir = Path(data_dir) / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self._counter = 0

    # -- blobs ------------------------------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_dir / sha
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def has_blob(self, sha256: str) -> bool:
        return (self.blob_dir / sha256).exists()

    def blob(self, sha256: str) -> bytes:
        return (self.blob_dir / sha256).read_bytes()

    # -- repos and revisions ----------------------------------------------------------------------------------
    def new_commit(self, repo: Repo, parent: Commit | None, files: dict[str, Entry], title: str, message: str,
                   author: str, touched: set[str]) -> Commit:
        self._counter += 1
        seed = json.dumps([repo.type, repo.id, parent.oid if parent else None, title, time.time(), self._counter,
                           sorted((p, e.oid) for p, e in files.items())])
        oid = hashlib.sha1(seed.encode()).hexdigest()
        files = {p: (Entry(e.size, e.sha256, e.oid, e.lfs, oid) if p in touched else e) for p, e in files.items()}
        commit = Commit(oid, [parent.oid] if parent else [], title, message, _now(), author, files)
        repo.commits[oid] = commit
        return commit

    def resolve(self, repo: Repo, rev: str) -> Commit:
        oid = repo.branches.get(rev) or repo.tags.get(rev)
        if oid is None and SHA1.match(rev) and rev in repo.commits:
            oid = rev
        if oid is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo.commits[oid]


def _matches_lfs(path: str, gitattributes: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    for line in gitattributes.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "filter=lfs" in parts[1:]:
            pattern = parts[0]
            if fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern):
                return True
    return False


def _front_matter(text: str) -> tuple[dict | None, str | None]:
    """(parsed YAML front matter or None, error message or None)."""
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not m:
        return None, None
    if yaml is None:
        return None, None
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError as exc:
        return None, f"Invalid YAML in README.md front matter: {exc}"
    if data is not None and not isinstance(data, dict):
        return None, "README.md front matter must be a YAML mapping"
    return data or {}, None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out separately: without this, 40 ms per request
    server: "HubServer"

    # -- plumbing ---------------------------------------------------------------------------------------------
    def log_message(self, format, *args):  # no stderr chatter; method/path/status go to the server's log file
        pass

    def _log(self, status: int) -> None:
        if self.server.log_path is not None:
            with self.server.log_lock, open(self.server.log_path, "a") as f:
                f.write(f"{self.command} {urlsplit(self.path).path} {status}\n")

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('Host', '%s:%d' % self.server.server_address[:2])}"

    def _body(self) -> bytes:
        return self._request_body

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str | None = None,
              head: bool = False) -> None:
        self.send_response(status)
        hdrs = dict(headers or {})
        if content_type:
            hdrs.setdefault("Content-Type", content_type)
        hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
        self._log(status)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers, "application/json")

    def _error(self, err: HubError, head: bool = False) -> None:
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        body = {"error": err.message, **(err.body or {})}
        self._send(err.status, b"" if head else json.dumps(body).encode(), headers, "application/json", head=head)

    def _dispatch(self, method: str) -> None:
        head = method == "HEAD"
        # Read the whole body first, even for requests refused early: on a keep-alive connection, unread bytes
        # would be parsed as the next request.
        self._request_body = self._read_body()
        try:
            self._route(method)
        except HubError as err:
            self._error(err, head)
        except Exception as exc:  # a server bug must not look like a hang to the client
            self._error(HubError(500, f"internal test-server error: {type(exc).__name__}: {exc}"), head)

    do_GET = lambda self: self._dispatch("GET")  # noqa: E731
    do_HEAD = lambda self: self._dispatch("HEAD")  # noqa: E731
    do_POST = lambda self: self._dispatch("POST")  # noqa: E731
    do_PUT = lambda self: self._dispatch("PUT")  # noqa: E731
    do_DELETE = lambda self: self._dispatch("DELETE")  # noqa: E731

    # -- auth -------------------------------------------------------------------------------------------------
    def _caller(self) -> tuple[str, str] | None:
        """(user, role) of the bearer token; None when anonymous; 401 for a token the server does not know."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        token = auth.split(" ", 1)[1].strip() if " " in auth else auth.strip()
        who = self.server.state.tokens.get(token)
        if who is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return who

    def _readable(self, repo: Repo | None, caller, what: str) -> Repo:
        if repo is None or (repo.private and (caller is None or caller[0] != repo.namespace)):
            # The Hub does not reveal private repos: anonymous 401, signed-in strangers 404, both RepoNotFound.
            raise HubError(401 if caller is None else 404, f"Repository not found: {what}", "RepoNotFound")
        return repo

    def _writable(self, repo: Repo | None, caller, what: str) -> Repo:
        if caller is None:
            raise HubError(401, "You must be authenticated to write to a repository (pass a write token)")
        repo = self._readable(repo, caller, what)
        if caller[1] != "write":
            raise HubError(403, "Your token has read access only; a write token is needed to push")
        if caller[0] != repo.namespace:
            raise HubError(403, f"You don't have the rights to write to {what}")
        return repo

    # -- routing ----------------------------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        segs = [unquote(s) for s in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        st = self.server.state
        with st.lock:
            if segs[:1] == ["api"]:
                return self._api(method, segs[1:], query)
            if segs[:1] == ["_lfs"] and method == "PUT" and len(segs) == 2:
                return self._lfs_put(segs[1])
            rtype = "model"
            if segs[:1] in (["datasets"], ["spaces"]):
                rtype, segs = REPO_TYPES[segs[0]], segs[1:]
            if len(segs) >= 2 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch(rtype, f"{segs[0]}/{segs[1][:-4]}")
            if len(segs) >= 4 and segs[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(rtype, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]), method == "HEAD")
            raise HubError(404, f"no route for {method} {url.path}")

    def _api(self, method: str, segs: list[str], query: dict) -> None:
        if segs == ["whoami-v2"] and method == "GET":
            caller = self._caller()
            if caller is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            return self._json({"type": "user", "name": caller[0], "fullname": caller[0], "orgs": [],
                               "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": caller[1]}}})
        if segs == ["validate-yaml"] and method == "POST":
            payload = json.loads(self._body() or b"{}")
            _, err = _front_matter(payload.get("content", ""))
            if err:
                return self._json({"errors": [{"message": err}], "warnings": []}, 400)
            return self._json({"errors": [], "warnings": []})
        if segs[:1] == ["repos"] and len(segs) == 2:
            return self._repos(method, segs[1])
        if segs and segs[0] in REPO_TYPES:
            rtype = REPO_TYPES[segs[0]]
            if len(segs) < 3:  # a repo id without a namespace: the Hub answers RepoNotFound (datasets relies on it)
                raise HubError(404 if self._caller() else 401, "Repository not found", "RepoNotFound")
            rid, rest = f"{segs[1]}/{segs[2]}", segs[3:]
            return self._repo_api(method, rtype, rid, rest, query)
        raise HubError(404, f"no route for {method} /api/{'/'.join(segs)}")

    # -- /api/repos/create, /api/repos/delete ------------------------------------------------------------------
    def _repos(self, method: str, action: str) -> None:
        st = self.server.state
        caller = self._caller()
        payload = json.loads(self._body() or b"{}")
        rtype = payload.get("type") or "model"
        name, org = payload.get("name"), payload.get("organization")
        if rtype not in URL_PREFIX or not name:
            raise HubError(400, "create/delete needs a name and a type in model|dataset|space")
        if caller is None:
            raise HubError(401, "You must be authenticated to create or delete a repository")
        ns = org or caller[0]
        rid = f"{ns}/{name}"
        if action == "create" and method == "POST":
            if caller[1] != "write":
                raise HubError(403, "Your token has read access only; a write token is needed to create a repo")
            if ns != caller[0]:
                raise HubError(403, f"You don't have the rights to create a repo under the namespace {ns!r}")
            if not REPO_NAME.match(name):
                raise HubError(400, f"Invalid repo name {name!r}")
            url = f"{self.base_url}/{URL_PREFIX[rtype]}{rid}"
            if (rtype, rid) in st.repos:
                raise HubError(409, "You already created this repo", body={"url": url})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            if rtype == "space" and not payload.get("sdk"):
                raise HubError(400, "A space needs an sdk")
            repo = Repo(rtype, rid, private, _now(), sdk=payload.get("sdk"))
            sha = st.put_blob(DEFAULT_GITATTRIBUTES.encode())
            files = {".gitattributes": Entry(len(DEFAULT_GITATTRIBUTES), sha, git_blob_oid(DEFAULT_GITATTRIBUTES.encode()),
                                             False, "")}
            c = st.new_commit(repo, None, files, "initial commit", "", caller[0], {".gitattributes"})
            repo.branches["main"] = c.oid
            st.repos[(rtype, rid)] = repo
            return self._json({"url": url, "name": rid, "id": rid})
        if action == "delete" and method == "DELETE":
            self._writable(st.repos.get((rtype, rid)), caller, rid)
            del st.repos[(rtype, rid)]
            return self._send(200)
        raise HubError(405, f"{method} /api/repos/{action} is not supported")

    # -- /api/{type}s/{ns}/{name}/... ---------------------------------------------------------------------------
    def _repo_api(self, method: str, rtype: str, rid: str, rest: list[str], query: dict) -> None:
        st = self.server.state
        caller = self._caller()
        repo = st.repos.get((rtype, rid))
        key = (method, rest[0] if rest else "")
        if key in {("GET", ""), ("GET", "revision"), ("GET", "tree"), ("POST", "paths-info"), ("GET", "refs"),
                   ("GET", "commits")}:
            repo = self._readable(repo, caller, rid)
            if key == ("GET", ""):
                return self._json(self._info(repo, st.resolve(repo, "main")))
            if key == ("GET", "revision") and len(rest) == 2:
                return self._json(self._info(repo, st.resolve(repo, rest[1])))
            if key == ("GET", "tree") and len(rest) >= 2:
                return self._tree(repo, st.resolve(repo, rest[1]), "/".join(rest[2:]).strip("/"), query)
            if key == ("POST", "paths-info") and len(rest) == 2:
                return self._paths_info(repo, st.resolve(repo, rest[1]))
            if key == ("GET", "refs"):
                return self._json({
                    "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()],
                    "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in repo.tags.items()],
                    "converts": []})
            if key == ("GET", "commits") and len(rest) == 2:
                return self._json(self._history(repo, st.resolve(repo, rest[1])))
        if key == ("GET", "xet-write-token") or key == ("GET", "xet-read-token"):
            raise HubError(501, "Xet storage is not implemented by this test server: run the client with "
                                "HF_HUB_DISABLE_XET=1 (git-LFS is)")
        if key in {("POST", "preupload"), ("POST", "commit"), ("POST", "branch"), ("DELETE", "branch"),
                   ("POST", "tag"), ("DELETE", "tag"), ("PUT", "settings")}:
            repo = self._writable(repo, caller, rid)
            if "create_pr" in query:
                raise HubError(400, "pull requests are not supported by this test server")
            if key == ("POST", "preupload") and len(rest) == 2:
                return self._preupload(repo, st.resolve(repo, rest[1]))
            if key == ("POST", "commit") and len(rest) == 2:
                return self._commit(repo, rest[1], caller[0])
            if key[1] == "branch" and len(rest) == 2:
                return self._branch(repo, method, rest[1])
            if key[1] == "tag" and len(rest) == 2:
                return self._tag(repo, method, rest[1])
            if key == ("PUT", "settings"):
                payload = json.loads(self._body() or b"{}")
                if "visibility" in payload:
                    repo.private = payload["visibility"] == "private"
                if "private" in payload:
                    repo.private = bool(payload["private"])
                if "gated" in payload:
                    repo.gated = payload["gated"]
                return self._json({})
        raise HubError(404, f"no route for {method} /api/{rtype}s/{rid}/{'/'.join(rest)}")

    def _info(self, repo: Repo, commit: Commit) -> dict:
        st = self.server.state
        siblings = []
        for path, e in sorted(commit.files.items()):
            s = {"rfilename": path, "size": e.size, "blobId": e.oid}
            if e.lfs:
                s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": e.pointer_size()}
            siblings.append(s)
        info = {"_id": hashlib.md5(repo.id.encode()).hexdigest()[:24], "id": repo.id, "author": repo.namespace,
                "sha": commit.oid, "private": repo.private, "gated": repo.gated, "disabled": False, "downloads": 0,
                "likes": 0, "tags": [], "createdAt": repo.created, "lastModified": commit.date, "siblings": siblings}
        if "README.md" in commit.files:
            card, _ = _front_matter(st.blob(commit.files["README.md"].sha256).decode("utf-8", "replace"))
            if card:
                info["cardData"] = card
                tags = card.get("tags") or []
                info["tags"] = [str(t) for t in tags] if isinstance(tags, list) else [str(tags)]
        if repo.type == "model":
            info["modelId"] = repo.id
        if repo.type == "space":
            info.update(sdk=repo.sdk, runtime={"stage": "NO_APP_FILE", "hardware": {"current": None}})
        return info

    def _entry_json(self, path: str, e: Entry, repo: Repo, expand: bool) -> dict:
        out = {"type": "file", "oid": e.oid, "size": e.size, "path": path}
        if e.lfs:
            out["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": e.pointer_size()}
        if expand:
            c = repo.commits.get(e.last_commit)
            if c is not None:
                out["lastCommit"] = {"id": c.oid, "title": c.title, "date": c.date}
        return out

    def _dir_json(self, path: str, commit: Commit) -> dict:
        inside = sorted((p, e.oid) for p, e in commit.files.items() if p.startswith(path + "/"))
        return {"type": "directory", "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(), "size": 0,
                "path": path}

    def _tree(self, repo: Repo, commit: Commit, path: str, query: dict) -> None:
        recursive = query.get("recursive", ["False"])[0].lower() in ("1", "true")
        expand = query.get("expand", ["False"])[0].lower() in ("1", "true")
        prefix = path + "/" if path else ""
        files = {p: e for p, e in commit.files.items() if p.startswith(prefix)}
        if path and not files:
            if path in commit.files:
                raise HubError(400, f"{path!r} is a file, not a directory")
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        out, dirs = [], set()
        for p, e in sorted(files.items()):
            rel = p[len(prefix):]
            parts = rel.split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    dirs.add(prefix + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                out.append(self._entry_json(p, e, repo, expand))
        out += [self._dir_json(d, commit) for d in sorted(dirs)]
        self._json(sorted(out, key=lambda x: x["path"]))

    def _paths_info(self, repo: Repo, commit: Commit) -> None:
        form = parse_qs(self._body().decode())
        expand = form.get("expand", ["False"])[0].lower() in ("1", "true")
        out = []
        for p in form.get("paths", []):
            p = p.strip("/")
            if p in commit.files:
                out.append(self._entry_json(p, commit.files[p], repo, expand))
            elif any(q.startswith(p + "/") for q in commit.files):
                out.append(self._dir_json(p, commit))
        self._json(out)

    def _history(self, repo: Repo, commit: Commit) -> list[dict]:
        out, c = [], commit
        while c is not None:
            out.append({"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
                        "authors": [{"user": c.author}]})
            c = repo.commits.get(c.parents[0]) if c.parents else None
        return out

    # -- writes -----------------------------------------------------------------------------------------------
    def _preupload(self, repo: Repo, commit: Commit) -> None:
        st = self.server.state
        payload = json.loads(self._body() or b"{}")
        ga = commit.files.get(".gitattributes")
        gitattributes = st.blob(ga.sha256).decode() if ga else ""
        out = []
        for f in payload.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            lfs = f.get("size", 0) >= LFS_SIZE_THRESHOLD or b"\0" in sample or _matches_lfs(f["path"], gitattributes)
            entry = commit.files.get(f["path"])
            oid = None if entry is None else (entry.sha256 if entry.lfs else entry.oid)
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": oid})
        self._json({"files": out, "commitOid": commit.oid})

    def _commit(self, repo: Repo, rev: str, author: str) -> None:
        st = self.server.state
        if rev not in repo.branches:
            if rev in repo.tags or rev in repo.commits:
                raise HubError(400, f"cannot commit to {rev!r}: commits go to a branch")
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        head = repo.commits[repo.branches[rev]]
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and parent != head.oid:
            raise HubError(412, f"A commit has happened since {parent}; the head of {rev} is {head.oid}")
        files = dict(head.files)
        touched: set[str] = set()
        for line in lines[1:]:
            key, v = line.get("key"), line.get("value", {})
            path = v.get("path", "")
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise HubError(400, f"invalid path in commit: {path!r}")
            if key == "file":
                if v.get("encoding", "base64") != "base64":
                    raise HubError(400, f"unsupported encoding {v.get('encoding')!r}")
                data = base64.b64decode(v["content"])
                files[path] = Entry(len(data), st.put_blob(data), git_blob_oid(data), False, "")
            elif key == "lfsFile":
                sha = v["oid"]
                if not st.has_blob(sha):
                    raise HubError(400, f"LFS object {sha} for {path!r} was never uploaded")
                size = len(st.blob(sha))
                if v.get("size") is not None and int(v["size"]) != size:
                    raise HubError(400, f"LFS object {sha}: size {v['size']} differs from the stored {size}")
                files[path] = Entry(size, sha, git_blob_oid(lfs_pointer(sha, size)), True, "")
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                gone = [p for p in files if p.startswith(path.rstrip("/") + "/")]
                if not gone:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in gone:
                    del files[p]
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
            touched.add(path)
        c = st.new_commit(repo, head, files, header.get("summary", ""), header.get("description", ""), author,
                          touched)
        repo.branches[rev] = c.oid
        url = f"{self.base_url}/{URL_PREFIX[repo.type]}{repo.id}/commit/{c.oid}"
        self._json({"success": True, "commitOid": c.oid, "commitUrl": url, "pullRequestUrl": None})

    def _branch(self, repo: Repo, method: str, name: str) -> None:
        st = self.server.state
        if method == "POST":
            payload = json.loads(self._body() or b"{}")
            if name in repo.branches:
                raise HubError(409, f"Branch {name} already exists")
            start = st.resolve(repo, payload.get("startingPoint") or "main")
            repo.branches[name] = start.oid
            return self._json({})
        if name not in repo.branches:
            raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
        if name == "main":
            raise HubError(403, "the main branch cannot be deleted")
        del repo.branches[name]
        self._json({})

    def _tag(self, repo: Repo, method: str, rev_or_tag: str) -> None:
        st = self.server.state
        if method == "POST":
            payload = json.loads(self._body() or b"{}")
            tag = payload.get("tag")
            if not tag:
                raise HubError(400, "a tag name is required")
            if tag in repo.tags:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = st.resolve(repo, rev_or_tag).oid
            return self._json({})
        if rev_or_tag not in repo.tags:
            raise HubError(404, f"Invalid rev id: {rev_or_tag}", "RevisionNotFound")
        del repo.tags[rev_or_tag]
        self._json({})

    # -- git-LFS ----------------------------------------------------------------------------------------------
    def _lfs_batch(self, rtype: str, rid: str) -> None:
        st = self.server.state
        caller = self._caller()
        payload = json.loads(self._body() or b"{}")
        repo = st.repos.get((rtype, rid))
        if payload.get("operation") == "upload":
            self._writable(repo, caller, rid)
        else:
            self._readable(repo, caller, rid)
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            item = {"oid": oid, "size": size, "authenticated": True}
            if payload.get("operation") == "upload" and not st.has_blob(oid):
                item["actions"] = {"upload": {"href": f"{self.base_url}/_lfs/{oid}", "header": {},
                                              "expires_in": 3600}}
            elif payload.get("operation") == "download":
                item["actions"] = {"download": {"href": f"{self.base_url}/_lfs/{oid}"}}
            objects.append(item)
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, oid: str) -> None:
        # Like the Hub's pre-signed storage URLs: no auth header; the content must match the announced sha256.
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"uploaded bytes do not match the LFS oid {oid}")
        self.server.state.put_blob(data)
        self._send(200)

    # -- resolve ----------------------------------------------------------------------------------------------
    def _resolve(self, rtype: str, rid: str, rev: str, path: str, head: bool) -> None:
        st = self.server.state
        repo = self._readable(st.repos.get((rtype, rid)), self._caller(), rid)
        commit = st.resolve(repo, rev)
        e = commit.files.get(path)
        if e is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = st.blob(e.sha256)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{e.sha256 if e.lfs else e.oid}"', "Accept-Ranges": "bytes",
                   "Content-Disposition": f'inline; filename="{quote(path.rsplit("/", 1)[-1])}"'}
        if e.lfs:
            headers["X-Linked-Etag"] = f'"{e.sha256}"'
            headers["X-Linked-Size"] = str(e.size)
        rng = self.headers.get("Range")
        if rng:
            m = re.match(r"bytes=(\d*)-(\d*)$", rng.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                raise HubError(416, f"unsupported Range {rng!r}")
            if m.group(1) == "":
                start, end = max(0, len(data) - int(m.group(2))), len(data) - 1
            else:
                start = int(m.group(1))
                end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
            if start >= len(data) or start > end:
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}", **headers}, head=head)
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start:end + 1], headers, "application/octet-stream", head=head)
        self._send(200, data, headers, "application/octet-stream", head=head)


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, state: HubState, log_path: str | Path | None = None):
        super().__init__(address, Handler)
        self.state = state
        self.log_path = Path(log_path) if log_path else None
        self.log_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(host: str, port: int, data_dir: str | Path, tokens: dict[str, tuple[str, str]],
                log_path: str | Path | None = None) -> HubServer:
    """A server bound to host:port (0 = any free port); tokens: token -> (user, "read" | "write")."""
    return HubServer((host, port), HubState(data_dir, tokens), log_path)


def start_in_thread(server: HubServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, name="hub-server", daemon=True)
    t.start()
    return t


def snapshot(server: HubServer) -> dict:
    """A deep copy of the repo table (for tests that inspect server state)."""
    with server.state.lock:
        return copy.deepcopy(server.state.repos)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="A Hub-compatible test server on loopback.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--token", action="append", default=[], help="user=token:role (role: read|write)")
    ap.add_argument("--log", default=None, help="append 'METHOD PATH STATUS' lines here")
    args = ap.parse_args(argv)
    tokens = {}
    for spec in args.token:
        user, rest = spec.split("=", 1)
        token, role = rest.rsplit(":", 1)
        tokens[token] = (user, role)
    server = make_server(args.host, args.port, args.data_dir, tokens, args.log)
    print(f"LISTENING {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
