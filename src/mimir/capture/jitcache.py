"""Keeping numba's disk cache honest about the modules a kernel inlines.

numba recompiles a cached kernel when its own source file changes, but not when a module it calls into does: a
kernel of flowtable.py compiled with an older decode.py would go on decoding the old way. Each module whose
kernels inline others calls `forget_if_changed` at import, before any kernel runs: when the sources it depends on
differ from those its cache was built with, its cache files are removed and numba compiles afresh.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def forget_if_changed(module_file: str, *depends_on: str) -> None:
    """Remove the cached kernels of `module_file` when a module it depends on (a file name beside it) changed.

    Only the cache beside the sources (`__pycache__`, numba's default when it is writable) is kept track of; every
    failure to read or write is ignored, since the worst case is numba's own behaviour.
    """
    here = Path(module_file)
    cache = here.parent / "__pycache__"
    if os.environ.get("NUMBA_CACHE_DIR") or not cache.is_dir():
        return
    try:
        digest = hashlib.sha256()
        for name in depends_on:
            digest.update((here.parent / name).read_bytes())
        stamp = cache / f"{here.stem}.nbdeps"
        if stamp.is_file() and stamp.read_text() == digest.hexdigest():
            return
        for stale in cache.glob(f"{here.stem}.*.nb[ic]"):
            stale.unlink(missing_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:
        return
