"""Manifests as a collection reads them: every Kubernetes object in a folder's YAML files, checked before any of
them reaches the cluster (a bad file is named with its line or document, and nothing is deployed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mimir.errors import IOFailure, ManifestError


def load_manifests(folder: Path) -> list[dict[str, Any]]:
    """Every object in the folder's *.yaml files, by file name then document order (`kind: List` is expanded)."""
    if not folder.is_dir():
        raise IOFailure(f"{folder}: no such manifest folder")
    objects: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except OSError as e:
            raise IOFailure(f"{path}: cannot read: {e.strerror}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            raise ManifestError(f"{path}{where}: not YAML: {getattr(e, 'problem', None) or e}") from None
        for index, document in enumerate(documents):
            if document is None:
                continue
            items = document.get("items") if isinstance(document, dict) and document.get("kind") == "List" else None
            for obj in items if isinstance(items, list) else [document]:
                name = obj.get("metadata", {}).get("name") if isinstance(obj, dict) else None
                if not (isinstance(obj, dict) and obj.get("apiVersion") and obj.get("kind") and name):
                    raise ManifestError(
                        f"{path}: document {index}: not a Kubernetes object (apiVersion, kind, "
                        "metadata.name are required)"
                    )
                objects.append(obj)
    if not objects:
        raise ManifestError(f"{folder}: no Kubernetes objects in any *.yaml file")
    return objects
