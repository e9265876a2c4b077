"""Shared fixtures: the reference corpus, running mimir as a user does (the installed command), and the emulated
Kubernetes API (kmock: no real API server can run here) with a client connected to it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kmockserver import KubeServer

from mimir.sources.cluster import kube

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("MIMIR_CORPUS", REPO.parent / "shared" / "corpus"))
MIMIR = Path(sys.executable).with_name("mimir")


@pytest.fixture
def server() -> Iterator[KubeServer]:
    with KubeServer() as running:
        yield running


@pytest.fixture
def api(server: KubeServer) -> Iterator[Any]:
    connected = kube.connect(host=server.url)
    yield connected
    connected.close()


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the reference corpus is not at {CORPUS} (set MIMIR_CORPUS)")
    return CORPUS


def run_mimir(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess:
    """The `mimir` command as a user runs it; stderr is never a traceback."""
    done = subprocess.run([str(MIMIR), *map(str, args)], capture_output=True, text=True, timeout=600, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    if check:
        assert done.returncode == 0, done.stderr
    return done
