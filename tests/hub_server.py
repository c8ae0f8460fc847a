"""A real Hugging Face Hub-compatible server for tests: olah serving git repositories, and a
small server for the Hub's write API that commits into those repositories.

olah (``pip install olah``) is a self-hosted Hub mirror. In offline mode with ``mirrors-path``
set it serves every git repository under ``<mirrors>/models/<org>/<name>`` through the same
HTTP endpoints the official client downloads from. It has no upload endpoints, so
:class:`HubWriter` answers the ones ``huggingface_hub`` uses to publish (create a repository,
a branch or a pull request, preupload, commit), writing git commits that olah serves at once:
a push through the real client can be pulled back through the real client.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HubServer", "HubWriter", "missing_tools", "start_server"]

_CONFIG = """\
[basic]
host = "127.0.0.1"
port = {port}
ssl-key = ""
ssl-cert = ""
repos-path = "{repos}"
cache-size-limit = ""
cache-clean-strategy = "LRU"
hf-scheme = "http"
hf-netloc = "127.0.0.1:9"
hf-lfs-netloc = "127.0.0.1:9"
mirror-scheme = "http"
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"
mirrors-path = ["{mirrors}"]

[accessibility]
offline = true
"""


def _olah_cli() -> str | None:
    beside_python = Path(sys.executable).parent / "olah-cli"  # the venv's bin may not be on PATH
    return str(beside_python) if beside_python.is_file() else shutil.which("olah-cli")


def missing_tools() -> str | None:
    """Why the server cannot run here (``None`` when it can)."""
    if _olah_cli() is None:
        return "olah is not installed (pip install olah, or pip install 'unetzoo[test]')"
    if shutil.which("git") is None:
        return "the git binary is not installed (olah serves git repositories)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(*args: str, cwd: Path) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    fast = ["-c", "core.compression=0", "-c", "core.looseCompression=0"]  # weights do not compress
    subprocess.run(["git", *fast, *args], cwd=cwd, check=True, capture_output=True, env={**os.environ, **env})


@dataclass
class HubServer:
    """A running olah server: its URL, the mirrors folder it serves, and its process."""

    url: str
    mirrors: Path
    process: subprocess.Popen

    def publish(self, repo_id: str, folder: Path) -> str:
        """Commit the files of ``folder`` as the model repository ``repo_id``; returns the commit hash."""
        repo = self.mirrors / "models" / repo_id
        repo.mkdir(parents=True, exist_ok=True)
        if not (repo / ".git").exists():
            _git("init", "-q", "-b", "main", cwd=repo)
        for f in Path(folder).iterdir():
            if f.is_file():
                shutil.copy2(f, repo / f.name)
        _git("add", "-A", cwd=repo)
        _git("commit", "-q", "-m", "publish", "--allow-empty", cwd=repo)
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"olah exited with code {process.returncode}; log: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:  # any HTTP answer means it is up (offline mode answers / with 500)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"olah did not answer on {url} within {timeout:.0f} s; log: {log.read_text()[-2000:]}")


def start_server(root: Path) -> HubServer:
    """Start olah on a free port of 127.0.0.1, serving ``root/mirrors``."""
    port = _free_port()
    mirrors, repos, logs = root / "mirrors", root / "repos", root / "logs"
    for d in (mirrors / "models", repos, logs):
        d.mkdir(parents=True, exist_ok=True)
    config = root / "olah.toml"
    config.write_text(_CONFIG.format(port=port, repos=repos, mirrors=mirrors))
    log = logs / "stdout.txt"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [_olah_cli(), "-c", str(config), "--log-path", str(logs)], cwd=root, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
    except Exception:
        process.kill()
        process.wait()
        raise
    return HubServer(url=url, mirrors=mirrors, process=process)


# ------------------------------------------------------------------ the write API
class HubWriter:
    """The Hub's write endpoints, as ``huggingface_hub`` calls them, over olah's git repositories.

    Like the Hub it answers: a new repository gets an initial commit on ``main``; creating an
    existing repository or branch is a 409; a preupload or commit to a branch that does not
    exist is a 404 ``RevisionNotFound`` (the Hub does not create branches on commit); every
    write needs ``Authorization: Bearer <token>``. Every file is uploaded "regular" (inline in
    the commit), so no LFS or Xet storage is involved.
    """

    def __init__(self, mirrors: Path, token: str = "hf_test_write_token") -> None:
        self.mirrors, self.token = Path(mirrors), token
        self.private: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._pulls: dict[str, int] = {}
        writer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                writer._handle(self, "GET")

            def do_POST(self) -> None:
                writer._handle(self, "POST")

            def log_message(self, *args) -> None:  # quiet
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -------------------------------------------------------------- git
    def repo(self, repo_id: str) -> Path:
        return self.mirrors / "models" / repo_id

    def git(self, repo_id: str, *args: str, input: bytes | None = None, env: dict | None = None) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "hub", "GIT_AUTHOR_EMAIL": "hub@test", "GIT_COMMITTER_NAME": "hub",
               "GIT_COMMITTER_EMAIL": "hub@test", **(env or {})}
        out = subprocess.run(["git", *args], cwd=self.repo(repo_id), input=input, capture_output=True, check=True,
                             env=env)
        return out.stdout.decode().strip()

    def ref_sha(self, repo_id: str, revision: str) -> str | None:
        """The commit a branch, ``refs/...`` name or commit hash points at (None if none)."""
        try:
            return self.git(repo_id, "rev-parse", "--verify", "-q", f"{_full_ref(revision)}^{{commit}}")
        except subprocess.CalledProcessError:
            return None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision``, read back from git."""
        names = self.git(repo_id, "ls-tree", "-r", "--name-only", _full_ref(revision)).splitlines()
        return {
            name: subprocess.run(["git", "show", f"{_full_ref(revision)}:{name}"], cwd=self.repo(repo_id),
                                 capture_output=True, check=True).stdout
            for name in names
        }

    def _commit(self, repo_id: str, ref: str, parent: str | None, message: str,
                add: dict[str, bytes], delete: list[str]) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if parent:
                self.git(repo_id, "read-tree", parent, env=env)
            for path, data in add.items():
                blob = self.git(repo_id, "hash-object", "-w", "--stdin", input=data)
                self.git(repo_id, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            for path in delete:
                self.git(repo_id, "update-index", "--force-remove", path, env=env)
            tree = self.git(repo_id, "write-tree", env=env)
        sha = self.git(repo_id, "commit-tree", tree, *(["-p", parent] if parent else []), "-m", message)
        self.git(repo_id, "update-ref", ref, sha)
        return sha

    # -------------------------------------------------------------- HTTP
    def _handle(self, req: http.server.BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(req.path)
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        query = urllib.parse.parse_qs(url.query)
        try:
            if method == "POST" and req.headers.get("Authorization") != f"Bearer {self.token}":
                status, payload = 401, {"error": "Invalid credentials in Authorization header"}
            else:
                with self._lock:
                    status, payload = self._route(method, parts, query, body)
        except Exception as err:  # a bug here must show in the test, not hang it
            status, payload = 500, {"error": f"{type(err).__name__}: {err}"}
        data = json.dumps(payload).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        if status >= 400 and "code" in payload:
            req.send_header("X-Error-Code", payload.pop("code"))
        req.end_headers()
        req.wfile.write(data)

    def _route(self, method: str, parts: list[str], query: dict, body: bytes) -> tuple[int, dict]:
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return _validate_card(json.loads(body)["content"])
        if method == "GET" and parts[:2] == ["api", "models"] and (len(parts) == 4 or parts[4:5] == ["revision"]):
            return self._repo_info(f"{parts[2]}/{parts[3]}")
        if len(parts) < 5 or parts[:2] != ["api", "models"]:
            return 404, {"error": f"not an endpoint of this test server: /{'/'.join(parts)}"}
        repo_id, action, rest = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
        if not (self.repo(repo_id) / ".git").is_dir():
            return 404, {"error": "Repository not found", "code": "RepoNotFound"}
        if method == "POST" and action == "branch":
            return self._create_branch(repo_id, rest, json.loads(body or b"{}"))
        if method == "POST" and action == "discussions":
            return self._create_pull(repo_id, json.loads(body))
        if method == "GET" and action == "discussions":
            return self._pull_details(repo_id, int(rest))
        if method == "POST" and action in ("preupload", "commit"):
            if self.ref_sha(repo_id, rest) is None:
                return 404, {"error": f"Invalid rev id: {rest}", "code": "RevisionNotFound"}
            if action == "preupload":
                files = json.loads(body)["files"]
                return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                       for f in files]}
            return self._commit_ndjson(repo_id, rest, body, create_pr="1" in query.get("create_pr", []))
        return 404, {"error": f"not an endpoint of this test server: {method} /{'/'.join(parts)}"}

    def _create_repo(self, payload: dict) -> tuple[int, dict]:
        if payload.get("type", "model") != "model":
            return 400, {"error": "this test server holds model repositories only"}
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        if (self.repo(repo_id) / ".git").is_dir():
            return 409, {"error": "You already created this model repo", "url": url}
        self.repo(repo_id).mkdir(parents=True)
        self.git(repo_id, "init", "-q", "-b", "main")
        self._commit(repo_id, "refs/heads/main", None, "initial commit", {".gitattributes": b"*.safetensors -text\n"}, [])
        self.private[repo_id] = payload.get("visibility") == "private" or bool(payload.get("private"))
        return 200, {"url": url}

    def _repo_info(self, repo_id: str) -> tuple[int, dict]:
        if not (self.repo(repo_id) / ".git").is_dir():
            return 404, {"error": "Repository not found", "code": "RepoNotFound"}
        return 200, {"id": repo_id, "private": self.private.get(repo_id, False), "sha": self.ref_sha(repo_id, "main"),
                     "siblings": [{"rfilename": name} for name in self.files(repo_id)]}

    def _create_branch(self, repo_id: str, branch: str, payload: dict) -> tuple[int, dict]:
        if self.ref_sha(repo_id, f"refs/heads/{branch}") is not None:
            return 409, {"error": f"Reference refs/heads/{branch} already exists"}
        start = self.ref_sha(repo_id, payload.get("startingPoint") or "main")
        if start is None:
            return 404, {"error": f"Invalid rev id: {payload.get('startingPoint')}", "code": "RevisionNotFound"}
        self.git(repo_id, "update-ref", f"refs/heads/{branch}", start)
        return 200, {}

    def _create_pull(self, repo_id: str, payload: dict) -> tuple[int, dict]:
        if not payload.get("pullRequest"):
            return 400, {"error": "this test server opens pull requests only"}
        num = self._pulls[repo_id] = self._pulls.get(repo_id, 0) + 1
        self.git(repo_id, "update-ref", f"refs/pr/{num}", self.ref_sha(repo_id, "main"))
        return 200, {"num": num, "title": payload.get("title", "")}

    def _pull_details(self, repo_id: str, num: int) -> tuple[int, dict]:
        if num > self._pulls.get(repo_id, 0):
            return 404, {"error": "Discussion not found"}
        return 200, {"num": num, "title": "", "author": {"name": "hub"}, "createdAt": "2026-01-01T00:00:00.000Z",
                     "status": "draft", "repo": {"name": repo_id, "type": "model"}, "isPullRequest": True,
                     "changes": {"base": "refs/heads/main"}, "filesWithConflicts": [], "events": [], "diff": ""}

    def _commit_ndjson(self, repo_id: str, revision: str, body: bytes, create_pr: bool) -> tuple[int, dict]:
        if create_pr:  # huggingface_hub opens the pull request first, then commits to refs/pr/N
            return 400, {"error": "this test server takes commits to an existing ref only"}
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        add, delete = {}, []
        for item in lines:
            value = item["value"]
            if item["key"] == "file":
                if value.get("encoding") != "base64":
                    return 400, {"error": f"unsupported encoding {value.get('encoding')!r}"}
                add[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                delete.append(value["path"])
            elif item["key"] != "header":
                return 400, {"error": f"this test server takes regular files only, not {item['key']!r}"}
        ref = _full_ref(revision)
        parent = self.ref_sha(repo_id, revision)
        if header.get("parentCommit") and header["parentCommit"] != parent:
            return 412, {"error": "A commit has happened since. Please refresh and try again."}
        message = header["summary"] + (f"\n\n{header['description']}" if header.get("description") else "")
        sha = self._commit(repo_id, ref, parent, message, add, delete)
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}


def _validate_card(content: str) -> tuple[int, dict]:
    """The Hub's check of a README's metadata: a YAML mapping between ``---`` lines, warned if missing."""
    import yaml

    head, sep, _ = content.removeprefix("---\n").partition("\n---") if content.startswith("---\n") else ("", "", "")
    if not sep:
        return 200, {"errors": [], "warnings": [{"message": "Empty or missing yaml metadata in repo card"}]}
    try:
        metadata = yaml.safe_load(head)
    except yaml.YAMLError as err:
        return 400, {"error": "Invalid YAML", "errors": [{"message": f"invalid YAML: {err}"}]}
    if not isinstance(metadata, dict):
        return 400, {"error": "Invalid metadata", "errors": [{"message": "the metadata must be a YAML mapping"}]}
    return 200, {"errors": [], "warnings": []}


def _full_ref(revision: str) -> str:
    """A branch name as ``refs/heads/NAME``; ``refs/...`` names and commit hashes as they are."""
    if revision.startswith("refs/") or (len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)):
        return revision
    return f"refs/heads/{revision}"
