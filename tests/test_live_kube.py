"""`mimir live --entities kube`: the address timeline followed through the API watch of an emulated server
(tests/kmockserver.py: no real cluster runs here), through a dropped stream, resolved as intervals close."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kmockserver import KubeServer
from test_cluster_api import NS, wait_until
from test_cluster_watcher import create, pod, service

from mimir.entities import resolve
from mimir.live.entities import KubeEntities


def held(log: KubeEntities, ip: str, at: float) -> str | None:
    """Who held ip at time `at`, as the live log knows it after a poll."""
    log.poll()
    found = resolve(pd.Series([ip]), pd.Series([at]), log.spans)["entity"].iloc[0]
    return None if pd.isna(found) else str(found)


def test_the_live_entity_log_follows_the_watch_through_a_dropped_stream(
    server: KubeServer, api: Any, tmp_path: Path
) -> None:
    create(api, "services", service("web", "10.96.0.20", {"app": "web"}))
    create(api, "pods", pod("a", "10.244.0.5", {"app": "web"}))
    log = KubeEntities(api, [NS], tmp_path)
    try:
        far = 4e9  # any time after the events: the pods are still there
        assert wait_until(lambda: held(log, "10.244.0.5", far), "pod a in the live log") == f"{NS}/a"
        assert held(log, "10.96.0.20", far) == f"{NS}/web"
        wait_until(lambda: server.open_watches() == 4, "all four watches open")
        with server.hold_watches():  # the streams are cut; a pod comes while the watcher is out
            create(api, "pods", pod("b", "10.244.0.6", {"app": "web"}))
        assert wait_until(lambda: held(log, "10.244.0.6", far), "pod b after the watch resumed") == f"{NS}/b"
        assert log.spans.set_index("entity").loc[f"{NS}/b", "service"] == "web"
    finally:
        log.close()
    assert (tmp_path / "entities.jsonl").exists()
