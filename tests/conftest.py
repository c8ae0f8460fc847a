"""Shared pytest fixtures (keep them small and generic)."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import hub_server as _hub
import pytest


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_hub.HubServer]:
    """A real Hub-compatible server (olah) on 127.0.0.1; ``.publish(repo_id, folder)`` serves a folder."""
    reason = _hub.missing_tools()
    if reason:
        pytest.skip(f"no local Hub mirror: {reason}")
    server = _hub.start_server(tmp_path_factory.mktemp("olah"))
    try:
        yield server
    finally:
        server.stop()  # by PID: terminate, then kill


@pytest.fixture(scope="session")
def hub_writer(hub_server: _hub.HubServer) -> Iterator[_hub.HubWriter]:
    """The Hub's write API on 127.0.0.1, committing into the repositories ``hub_server`` serves."""
    writer = _hub.HubWriter(hub_server.mirrors)
    try:
        yield writer
    finally:
        writer.stop()


@pytest.fixture
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch hub and Hugging Face caches, no UNETZOO_WEIGHTS_DIR, no offline switches."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "UNETZOO_WEIGHTS_DIR", "HF_HUB_OFFLINE", "UNETZOO_OFFLINE",
                "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


class NetworkUsed(AssertionError):
    """Raised by the ``no_network`` fixture when code tries to open a connection."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every outgoing connection (sockets, urllib) raise :class:`NetworkUsed`."""

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
