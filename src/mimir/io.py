"""Writing files so that a reader never sees half of one: write to a temporary name, then rename."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mimir.errors import IOFailure


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise IOFailure(f"{target.parent}: cannot create the folder: {e.strerror}") from None


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside target; rename it onto target only if the block completes."""
    _make_parent(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        tmp.replace(target)
    except OSError as e:
        raise IOFailure(f"{target}: cannot write: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside target; it replaces target (and whatever it held) only on success."""
    _make_parent(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        yield tmp
        if target.exists():
            target.replace(old)
        tmp.replace(target)
    except OSError as e:
        raise IOFailure(f"{target}: cannot write: {e.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
