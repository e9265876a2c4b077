"""The optional parts of mimir (pyproject.toml's extras) and the check a command makes before using one.

`pip install mimir` ingests captures, makes runs, edges, features, models, scores and figures. Collecting on a
Kubernetes cluster and provisioning hosts pull in large stacks (the Kubernetes client and Locust; Ansible), so
each is an extra. A command whose extra is missing stops with a message that names the extra and how to install
it, instead of an ImportError from deep inside.
"""

from __future__ import annotations

import importlib.util

from mimir.errors import MissingExtra

# Per extra, the top-level modules its commands import (module names, not the packages' names on PyPI).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "cluster": ("kubernetes", "locust", "requests", "urllib3"),
    "provision": ("ansible", "ansible_runner"),
    "live": ("prometheus_client",),
}


def _importable(module: str) -> bool:
    # find_spec looks the module up without running it: importing locust would patch the standard library.
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extra(extra: str, command: str) -> None:
    """Raise MissingExtra if a module of the extra cannot be imported; the message says what to install."""
    missing = [module for module in EXTRA_MODULES[extra] if not _importable(module)]
    if missing:
        raise MissingExtra(
            f"{command} needs the '{extra}' extra ({', '.join(missing)} not installed): pip install 'mimir[{extra}]'"
        )
