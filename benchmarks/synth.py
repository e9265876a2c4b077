"""How fast `mimir synth` writes synthetic runs, against crafting the same packets with scapy.

One run prints, for a one-hour Sock Shop run at 100 users (the issue's target: under a minute) and for each
application at a shorter length: wall time of the `mimir synth` command pinned to one core (`taskset -c 0`),
packets, packets/s (also after the command's start-up, timed on a 10 s run of the same application) and MB/s
written; and scapy building and writing the same kind of packets (Linux cooked v2, IPv4, TCP) on a slice,
extrapolated to the same packet count. Then the packet layer alone (expansion, sorting and writing, in this
process pinned to one core) on a connection table of a realistic mix: HTTP calls through a service VIP, per-page
database connections with many small queries, DNS, kubelet probes and replication streams, some with loss.

    .venv/bin/python benchmarks/synth.py [--dir DIR] [--packets-only]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mimir.network import POD_NETWORK, SERVICE_NETWORK

MIMIR = Path(sys.executable).with_name("mimir")


def synth(out: Path, app: str, duration: int, users: int) -> tuple[float, int, int]:
    """Seconds, packets and bytes of one `mimir synth` command on one core."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["taskset", "-c", "0", str(MIMIR), "synth", "--app", app, "--duration", str(duration),
           "--users", str(users), "--seed", "1", "-o", str(out)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    info = json.loads((out / "run.json").read_text())
    size = sum(p.stat().st_size for p in (out / "capture").iterdir())
    return seconds, info["capture"]["packets"], size


def scapy_rate(out: Path, packets: int = 20_000) -> float:
    """Packets per second for scapy to build SLL2/IPv4/TCP frames like mimir's and write them with wrpcap."""
    from scapy.all import IP, TCP, CookedLinuxV2, Raw, wrpcap

    pod, vip = str(ipaddress.ip_network(POD_NETWORK)[5]), str(ipaddress.ip_network(SERVICE_NETWORK)[0xC01])
    start = time.perf_counter()
    frames = []
    for k in range(packets):
        frame = (
            CookedLinuxV2(proto=0x0800)
            / IP(src=pod, dst=vip)
            / TCP(sport=40000 + k % 20000, dport=80, seq=k * 1000, ack=1, flags="PA")
            / Raw(b"\x00" * 60)
        )
        frame.time = 1_767_225_600 + k * 1e-4
        frames.append(frame)
    wrpcap(str(out), frames, snaplen=128)
    return packets / (time.perf_counter() - start)


def realistic_connections(n: int, seconds: float, seed: int = 0) -> dict[str, np.ndarray]:
    """A connection table of `n` connections over `seconds`, in the mix a microservice application makes."""
    from mimir.sources.synthetic.connections import MODE_STREAM, MODE_TCP, MODE_UDP, Connections

    rng = np.random.default_rng(seed)
    kind = rng.choice(5, n, p=[0.5, 0.1, 0.25, 0.1, 0.05])  # HTTP, database, DNS, probe, replication
    http, db, dns, probe = (np.full(n, kind == k) for k in range(4))
    response = np.minimum(rng.lognormal(8, 1.2, n), 500_000).astype(np.int64)
    conns = Connections()
    conns.add(
        t0=np.sort(rng.uniform(0, seconds, n)),
        dur=np.select([http, db, dns, probe], [rng.uniform(0.005, 0.1, n), rng.uniform(0.02, 0.3, n), 0.0005, 0.002],
                      0.001),
        mode=np.select([dns, kind == 4], [MODE_UDP, MODE_STREAM], MODE_TCP),
        c1=0x0A000010, s1=0x0A0000A0, c2=np.where(http | dns, 0x0A000010, 0), s2=np.where(http | dns, 0x0A600010, 0),
        sport=rng.integers(32768, 61000, n), dport=np.where(dns, 53, 8080),
        req=np.select([http, db, dns, probe], [rng.integers(200, 2000, n), rng.integers(100, 300, n) * 10, 40, 0], 160),
        resp=np.select([http, db, dns, probe], [response, rng.integers(200, 2000, n) * 10, 120, 0], 160),
        rounds=np.where(db, rng.integers(3, 30, n), 1), loss=np.where(rng.random(n) < 0.5, 0.001, 0.0),
    )  # fmt: skip
    return conns.table()


def packet_layer(out: Path, connections: int = 500_000, seconds: float = 3600.0) -> tuple[float, int]:
    """Seconds and packets for the packet layer alone to expand, sort and write a realistic connection table, on
    one core."""
    from mimir.sources.synthetic.bundle import _CaptureWriter
    from mimir.sources.synthetic.packets import ordered_packets

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    conns = realistic_connections(connections, seconds)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg = SimpleNamespace(start=1_767_225_600, rotate=600, snaplen=128)
    for warm in (True, False):  # the first pass loads the numba kernel's cache
        part = {k: v[:1000] for k, v in conns.items()} if warm else conns
        writer = _CaptureWriter(out, cfg, count=False)
        start = time.perf_counter()
        for packets, _ in ordered_packets(part, np.random.default_rng(1), seconds, 200_000):
            writer.write(packets)
        writer.close()
    return time.perf_counter() - start, writer.packets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mimir-bench-synth")
    parser.add_argument("--packets-only", action="store_true", help="only the packet layer, not `mimir synth`")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if not args.packets_only:
        synth_table(args.dir)
    seconds, packets = packet_layer(args.dir / "packets")
    print("\n| packet layer, realistic mix of 500,000 connections | seconds | packets | M packets/s |")
    print("|---|---:|---:|---:|")
    print(f"| expand, sort, write (one core) | {seconds:.1f} | {packets:,} | {packets / seconds / 1e6:.2f} |")
    return 0


def synth_table(folder: Path) -> None:
    """`mimir synth` on each application, against scapy."""
    print(f"# mimir synth benchmark, {os.cpu_count()} cores, the command pinned to one core\n")
    synth(folder / "warm", "sockshop", 60, 5)  # load the numba kernels' cache once
    scapy_pps = scapy_rate(folder / "scapy.pcap")
    print("| run | seconds | packets | M packets/s | after start-up | MB/s written | scapy (extrapolated) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for app, duration, users in (("sockshop", 3600, 100), ("wordpress", 1800, 100), ("online-boutique", 1800, 100)):
        startup, _, _ = synth(folder / f"{app}-tiny", app, 10, 1)  # the command's fixed cost: imports, caches
        seconds, packets, size = synth(folder / app, app, duration, users)
        scapy_seconds = packets / scapy_pps
        print(
            f"| {app}, {duration} s, {users} users | {seconds:.1f} | {packets:,} | {packets / seconds / 1e6:.2f} | "
            f"{packets / (seconds - startup) / 1e6:.2f} | {size / seconds / 1e6:,.0f} | "
            f"{scapy_seconds:,.0f} s ({scapy_seconds / seconds:,.0f}x slower) |"
        )
    print(f"\nscapy: {scapy_pps:,.0f} packets/s building and writing (20,000-packet slice)")
    print("after start-up: packets / (seconds - the seconds of a 10 s, 1-user run of the same application)")


if __name__ == "__main__":
    sys.exit(main())
