"""Who holds which address, as `mimir live` learns it: an `entities.jsonl` followed as it grows, written by a
collection, a replay, or by `mimir live`'s own Kubernetes watch (the collector's watcher, with its resume).

The address timeline is rebuilt from every event seen whenever new ones arrive (`entities.timeline`, as the batch
path builds it), so an interval is resolved with what was known when it closed: the lateness allowance is also
the time a pod's event has to arrive after its first packet.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from mimir.entities import Addressing, parse_event, read_run, timeline
from mimir.errors import EntitiesError, IOFailure, UsageError


class EntityLog:
    """An entities.jsonl read as it grows: each `poll` reads the complete lines written since the last one (a line
    still being written waits for its newline)."""

    def __init__(self, path: Path):
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._line = 0
        self._partial = b""
        self._spans: pd.DataFrame | None = None

    def poll(self) -> bool:
        """Read what was appended; True when new events came (the timeline changes)."""
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return False  # not written yet: every address is unknown or outside until it is
        except OSError as e:
            raise IOFailure(f"{self.path}: cannot read: {e.strerror}") from None
        if not data:
            return False
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        fresh = []
        for raw in lines:
            self._line += 1
            event = parse_event(raw, self.path, self._line)
            if event is not None:
                fresh.append(event)
        if not fresh:
            return False
        self.events.extend(fresh)
        self.events.sort(key=lambda e: e["ts"])  # stable: the watcher's threads may stamp a little out of order
        self._spans = None
        return True

    def forget_before(self, cutoff: float) -> None:
        """Bound memory over days of churn: events before `cutoff` (older than any interval still to resolve)
        shrink to the last one of each entity, and an entity deleted before it is forgotten. The timeline from
        `cutoff` on stays the same: who holds what then depends only on each entity's last event before it."""
        last: dict[tuple[str, str, str], dict[str, Any]] = {}
        kept = []
        for event in self.events:
            if event["ts"] >= cutoff:
                kept.append(event)
            elif event["kind"] != "endpoints":  # the timeline never reads endpoints
                last[(event["kind"], event.get("namespace", ""), event["name"])] = event
        older = sorted((e for e in last.values() if e["event"] != "deleted"), key=lambda e: e["ts"])
        if len(older) + len(kept) < len(self.events):
            self.events = older + kept
            self._spans = None

    @property
    def spans(self) -> pd.DataFrame:
        """The address timeline of every event read so far."""
        if self._spans is None:
            self._spans = timeline(self.events)
        return self._spans

    def close(self) -> None:
        """Nothing to release: the file is opened per poll (it may be replaced or rotated by its writer)."""


class KubeEntities(EntityLog):
    """The cluster's pods, services, endpoints and nodes through the API watch (the collector's `EntityWatcher`:
    listed once, then followed, resumed from the last resourceVersion when a stream drops), written to
    `folder/entities.jsonl` and read back as a log."""

    def __init__(self, api: Any, namespaces: list[str] | None, folder: Path):
        from mimir.sources.cluster.watcher import EntityWatcher

        super().__init__(folder / "entities.jsonl")
        self._watcher = EntityWatcher(api, namespaces, self.path)
        self._watcher.start()

    def close(self) -> None:
        self._watcher.stop()


def addressing_of(entities: Path, networks: list[str], load_generators: list[str]) -> Addressing:
    """The cluster's ranges and the load generator: given on the command line, else from the run.json beside an
    entities.jsonl (a run bundle), else none (then every address no entity holds is `outside`)."""
    if networks or load_generators:
        nets = []
        for text in networks:
            try:
                nets.append(ipaddress.ip_network(text))
            except ValueError as e:
                raise UsageError(f"--cluster-network {text}: {e}") from None
        for text in load_generators:
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise UsageError(f"--load-generator {text}: not an IP address") from None
        return Addressing(nets, set(load_generators))
    bundle = entities.parent if entities.name == "entities.jsonl" else entities
    if (bundle / "run.json").is_file():
        run = read_run(bundle)
        return Addressing.from_run(run, bundle / "run.json")
    print(
        "mimir live: warning: no cluster ranges (--cluster-network) and no run.json beside the entities: addresses "
        "no entity holds count as outside, never as unknown",
        file=sys.stderr,
    )
    return Addressing()


def entity_log_path(spec: Path) -> Path:
    """An entities.jsonl, or the run bundle folder that holds one."""
    if spec.is_dir():
        return spec / "entities.jsonl"
    if spec.exists() or spec.parent.is_dir():
        return spec
    raise EntitiesError(f"--entities {spec}: no such file or folder")
