"""A real Hugging Face Hub-compatible server for tests: olah serving git repositories.

olah (``pip install olah``) is a self-hosted Hub mirror. In offline mode with ``mirrors-path``
set it serves every git repository under ``<mirrors>/models/<org>/<name>`` through the same
HTTP endpoints the official client downloads from. It has no upload endpoints, so publishing
is tested at the ``huggingface_hub`` call boundary instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HubServer", "missing_tools", "start_server"]

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
