"""Shared fixtures: the reference corpus, and running mimir as a user does (the installed command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("MIMIR_CORPUS", REPO.parent / "shared" / "corpus"))
MIMIR = Path(sys.executable).with_name("mimir")

sys.path.insert(0, str(Path(__file__).parent))


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
