"""How fast `mimir synth` writes synthetic runs, against crafting the same packets with scapy.

One run prints, for a one-hour Sock Shop run at 100 users (the issue's target: under a minute) and for each
application at a shorter length: wall time of the `mimir synth` command pinned to one core (`taskset -c 0`),
packets, packets/s and MB/s written; and scapy building and writing the same kind of packets (Linux cooked v2,
IPv4, TCP) on a slice, extrapolated to the same packet count.

    .venv/bin/python benchmarks/synth.py [--dir DIR]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mimir-bench-synth")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"# mimir synth benchmark, {os.cpu_count()} cores, the command pinned to one core\n")
    synth(args.dir / "warm", "sockshop", 60, 5)  # load the numba kernels' cache once
    scapy_pps = scapy_rate(args.dir / "scapy.pcap")
    print("| run | seconds | packets | M packets/s | MB/s written | scapy, same packets (extrapolated) |")
    print("|---|---:|---:|---:|---:|---:|")
    for app, duration, users in (("sockshop", 3600, 100), ("wordpress", 1800, 100), ("online-boutique", 1800, 100)):
        seconds, packets, size = synth(args.dir / app, app, duration, users)
        scapy_seconds = packets / scapy_pps
        print(
            f"| {app}, {duration} s, {users} users | {seconds:.1f} | {packets:,} | {packets / seconds / 1e6:.2f} | "
            f"{size / seconds / 1e6:,.0f} | {scapy_seconds:,.0f} s ({scapy_seconds / seconds:,.0f}x slower) |"
        )
    print(f"\nscapy: {scapy_pps:,.0f} packets/s building and writing (20,000-packet slice)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
