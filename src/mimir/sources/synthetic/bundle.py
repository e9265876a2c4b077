"""The run bundle of a synthetic run: capture/*.pcap, entities.jsonl and run.json, as any source of runs writes it.

The capture is what the node's `any` interface would give: Linux cooked v2 frames with a small snaplen, rotated
into files every `rotate` seconds of capture time. entities.jsonl replays who held which address when (the node,
the services' VIPs, every pod as it came and went); run.json says what the run was, with the generator's seed and
a digest of the application so that the same file and arguments give the same bytes. The bundle appears at once,
complete, or not at all.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from mimir import __version__, network
from mimir.apps import App
from mimir.capture.decode import LINKTYPE_LINUX_SLL2
from mimir.capture.pcapwrite import payload_kinds, payload_refs, pcap_header, write_records
from mimir.io import Claim, atomic_dir
from mimir.loadmodel import daily_curve
from mimir.sources.synthetic.packets import OPTION_BYTES, ordered_packets
from mimir.sources.synthetic.simulation import Simulation

if TYPE_CHECKING:
    from mimir.spec import RunSpec

SLL2_INTERFACE = 2  # the interface index every frame carries (the first one after lo)
TCP_WINDOW = 64240  # Linux's initial receive window


@dataclass
class SynthResult:
    files: list[Path]
    packets: int
    truth: dict[tuple[str, str], tuple[int, int]]  # (src, dst) -> (packets, bytes), when asked for


class _CaptureWriter:
    """Writes sorted packets into pcap files rotated every `rotate` seconds of capture time."""

    def __init__(self, folder: Path, cfg: RunSpec, count: bool):
        self.folder, self.cfg = folder, cfg
        self.files: list[Path] = []
        self.current: int | None = None
        self.handle = None
        self.packets = 0
        self.truth: dict[int, list[int]] | None = {} if count else None

    def write(self, pk: dict[str, np.ndarray]) -> None:
        if not pk["t"].shape[0]:
            return
        micros = np.floor(pk["t"] * 1e6).astype(np.int64) + self.cfg.start * 1_000_000
        index = ((micros // 1_000_000 - self.cfg.start) // int(self.cfg.rotate)).astype(np.int64)
        # SLL2 and IPv4, then a TCP header with its options or a UDP header, then the payload
        frame = 40 + np.where(pk["proto"] == 6, 20 + OPTION_BYTES[pk["opt"]], 8) + pk["payload"]
        # what the captured part of the payload holds: a message of the server port's protocol, or zeros
        kind = payload_kinds(pk["proto"], pk["sport"], pk["dport"])
        ref = payload_refs(kind, micros, pk)
        bounds = np.flatnonzero(np.diff(index)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, index.shape[0]], strict=True):
            self._switch(int(index[lo]))
            sl = slice(lo, hi)
            ipv4, no_high_word = np.full(hi - lo, 4, np.int64), np.zeros(hi - lo, np.int64)
            out = np.empty((hi - lo) * (16 + self.cfg.snaplen), np.uint8)
            used = write_records(
                out, micros[sl] // 1_000_000, micros[sl] % 1_000_000, frame[sl], self.cfg.snaplen,
                LINKTYPE_LINUX_SLL2, SLL2_INTERFACE, ipv4, no_high_word, pk["src"][sl], no_high_word, pk["dst"][sl],
                pk["proto"][sl], pk["sport"][sl], pk["dport"][sl], pk["seq"][sl], pk["ack"][sl], pk["flags"][sl],
                TCP_WINDOW, True, pk["opt"][sl], pk["mss"][sl], kind[sl], ref[sl],
            )  # fmt: skip
            self.handle.write(memoryview(out)[:used])
        self.packets += pk["t"].shape[0]
        if self.truth is not None:
            self._count(pk["src"], pk["dst"], frame)

    def _count(self, src: np.ndarray, dst: np.ndarray, frame: np.ndarray) -> None:
        """The generator's own packets and bytes per address pair (an oracle for the capture readers)."""
        key = (src.astype(np.uint64) << np.uint64(32)) | dst.astype(np.uint64)
        keys, inverse = np.unique(key, return_inverse=True)
        packets = np.bincount(inverse)
        nbytes = np.bincount(inverse, weights=frame).astype(np.int64)
        for k, n, b in zip(keys.tolist(), packets.tolist(), nbytes.tolist(), strict=True):
            entry = self.truth.setdefault(k, [0, 0])
            entry[0] += n
            entry[1] += b

    def _switch(self, index: int) -> None:
        if index == self.current:
            return
        self.close()
        path = self.folder / f"capture-{index:05d}.pcap"
        self.files.append(path)
        self.handle = path.open("wb")
        self.handle.write(pcap_header(self.cfg.snaplen, LINKTYPE_LINUX_SLL2))
        self.current = index

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _ip(v: int) -> str:
    return str(ipaddress.IPv4Address(int(v)))


def synthesize(
    cfg: RunSpec,
    out: Path,
    *,
    truth: bool = False,
    progress: bool | None = None,
    batch: int = 200_000,
    force: bool = False,
) -> SynthResult:
    """Write the run bundle (capture/, entities.jsonl, run.json) into `out`; same config, same bytes.

    `out` is a new or empty folder, or with force a previous bundle of synth (checked before the work starts).
    With truth=True the result also carries the generator's own packet and byte count per address pair.
    """
    claim = Claim("synth", force)
    claim.check(out, folder=True)
    sim = Simulation(cfg)
    conns = sim.run()
    n = conns["t0"].shape[0]
    show = sys.stderr.isatty() if progress is None else progress
    with atomic_dir(out, claim) as tmp, tqdm(total=n, unit="conn", desc="synth", disable=not show, leave=False) as bar:
        (tmp / "capture").mkdir(parents=True)
        writer = _CaptureWriter(tmp / "capture", cfg, truth)
        for packets, done in ordered_packets(conns, sim.rng, cfg.duration, batch):
            writer.write(packets)
            bar.update(done)
        writer.close()
        files = [out / "capture" / p.name for p in writer.files]
        (tmp / "entities.jsonl").write_text(_entities(sim))
        (tmp / "run.json").write_text(json.dumps(_run_info(sim, writer, files), indent=2) + "\n")
    counted = {(_ip(k >> 32), _ip(k & 0xFFFFFFFF)): (v[0], v[1]) for k, v in sorted((writer.truth or {}).items())}
    return SynthResult(files, writer.packets, counted)


def _entities(sim: Simulation) -> str:
    """entities.jsonl: the node, kube-dns and the application's services at the start, then every pod's life."""
    cfg, app = sim.cfg, sim.app
    lines = []

    def event(ts: float, kind: str, what: str, **rest: Any) -> None:
        lines.append((ts, len(lines), json.dumps({"ts": ts, "event": kind, "kind": what, **rest}, sort_keys=True)))

    t0 = float(cfg.start)
    event(
        t0,
        "added",
        "node",
        namespace="",
        name="node-1",
        ips=[network.NODE_IP, network.POD_GATEWAY],
        labels={},
        selector={},
        owner="",
        app="",
    )
    dns_labels = {"k8s-app": "kube-dns"}
    event(
        t0,
        "added",
        "service",
        namespace="kube-system",
        name="kube-dns",
        ips=[network.KUBE_DNS_VIP],
        labels=dns_labels,
        selector=dns_labels,
        owner="",
        app="kube-dns",
    )
    event(
        t0,
        "added",
        "service",
        namespace="default",
        name="kubernetes",
        ips=[network.API_VIP],
        labels={"component": "apiserver", "provider": "kubernetes"},
        selector={},
        owner="",
        app="kubernetes",
    )
    for j, name in enumerate(sim.names):
        svc = app.services[name]
        event(
            t0,
            "added",
            "service",
            namespace=app.namespace,
            name=name,
            ips=[_ip(sim.vip[j])],
            labels=svc.labels,
            selector=svc.labels,
            owner="",
            app=name,
        )
    labels_of = {name: svc.labels for name, svc in app.services.items()} | {"kube-dns": dns_labels}
    for pod, _service in enumerate(sim.pods.service):
        common = {
            "namespace": sim.pods.namespace[pod],
            "name": sim.pods.name[pod],
            "ips": [_ip(sim.pods.ip[pod])],
            "labels": labels_of.get(sim.pods.app[pod], {"app": sim.pods.app[pod]}),
            "selector": {},
            "owner": sim.pods.owner[pod],
            "app": sim.pods.app[pod],
        }
        event(t0 + sim.pods.added[pod], "added", "pod", **common)
        if sim.pods.deleted[pod] < cfg.duration:
            event(t0 + sim.pods.deleted[pod], "deleted", "pod", **common)
    return "".join(line + "\n" for _, _, line in sorted(lines, key=lambda e: (e[0], e[1])))


def _run_info(sim: Simulation, writer: _CaptureWriter, files: list[Path]) -> dict[str, Any]:
    cfg = sim.cfg
    return {
        "app": cfg.app.name,
        "source": "synthetic",
        "start": cfg.start,
        "end": cfg.start + cfg.duration,
        "load": {"users": cfg.users, "curve": "normal", "phases": daily_curve(cfg.users).tolist()},
        "mix": cfg.mix,
        "sensitive": list(cfg.app.sensitive),
        "exfiltration": sim.exfil_windows,
        "addresses": {
            "node": network.NODE_IP,
            "gateway": network.POD_GATEWAY,
            "load_generator": network.LOAD_GENERATOR_IP,
            "pod_network": network.POD_NETWORK,
            "service_network": network.SERVICE_NETWORK,
            "kube_dns": network.KUBE_DNS_VIP,
        },
        "generator": {
            "seed": cfg.seed,
            "snaplen": cfg.snaplen,
            "rotate_seconds": float(cfg.rotate),  # run.json has always said 600.0
            "app_sha256": _app_digest(cfg.app),
        },
        "tools": {"mimir": __version__},
        "capture": {
            "files": [f"capture/{p.name}" for p in files],
            "packets": writer.packets,
            "dropped": 0,
            "link_type": LINKTYPE_LINUX_SLL2,
        },
    }


def _app_digest(app: App) -> str:
    return hashlib.sha256(repr(app).encode()).hexdigest()
