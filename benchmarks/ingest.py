"""How fast `mimir ingest` turns captures into flows, against the tools a user would pick instead.

One run prints, for a generated capture of at least 1 GB (full frames) and a small-record one (snaplen 96):
packets/s and MB/s of `mimir ingest`, of `tshark -T fields` with the same fields, of a dpkt loop doing the same
aggregation, of pyshark (on a slice, extrapolated), and of `cat FILE > /dev/null`, with ratios; and mimir's peak
memory on captures of different sizes (it must not grow with the capture).

    .venv/bin/python benchmarks/ingest.py [--dir DIR] [--packets 2000000]

Page cache: each file is read once before timing, so the numbers are for a warm cache.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import dpkt

from mimir.capture.generate import write_capture
from mimir.capture.ingest import ingest, write_flows

TSHARK_FIELDS = [
    "frame.time_epoch", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.proto", "ipv6.nxt",
    "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "frame.len",
]  # fmt: skip


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_mimir(path: Path, out: Path) -> None:
    flows, summary = ingest([path], progress=False)
    write_flows(flows, summary, out)


def run_cat(path: Path) -> None:
    with path.open("rb") as f:
        subprocess.run(["cat"], stdin=f, stdout=subprocess.DEVNULL, check=True)


def run_tshark(path: Path) -> None:
    cmd = ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "occurrence=f"]
    for name in TSHARK_FIELDS:
        cmd += ["-e", name]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def run_dpkt(path: Path) -> None:
    """What a user writes with dpkt: decode every frame, aggregate per (second, src, dst, proto, ports)."""
    table: Counter = Counter()
    with path.open("rb") as f:
        for ts, frame in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                continue
            transport = ip.data
            sport = getattr(transport, "sport", 0)
            dport = getattr(transport, "dport", 0)
            proto = ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt
            key = (int(ts), ip.src, ip.dst, proto, sport, dport)
            table[key, "packets"] += 1
            table[key, "bytes"] += len(frame)


def run_pyshark(path: Path) -> None:
    import pyshark

    capture = pyshark.FileCapture(str(path), keep_packets=False)
    table: Counter = Counter()
    for packet in capture:
        layer = getattr(packet, "ip", None) or getattr(packet, "ipv6", None)
        if layer is not None:
            table[int(float(packet.sniff_timestamp)), layer.src, layer.dst] += int(packet.length)
    capture.close()


def head_slice(path: Path, packets: int, out: Path) -> Path:
    subprocess.run(["editcap", "-r", str(path), str(out), f"1-{packets}"], check=True, stderr=subprocess.DEVNULL)
    return out


PEAK_MEMORY_PROBE = """
import sys
from mimir.cli import main
code = main(sys.argv[1:])
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(peak, file=sys.stderr)
sys.exit(code)
"""


def peak_rss_mb(path: Path, out: Path) -> float:
    """Peak resident memory of `mimir ingest` in a fresh process (the whole program, Python included).

    VmHWM belongs to the process's own address space; getrusage's ru_maxrss would include what a child inherits
    from this (large) benchmark process across fork and exec.
    """
    done = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_PROBE, "ingest", str(path), "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True,
    )  # fmt: skip
    return int(done.stderr.split()[-1]) / 1024


def row(name: str, seconds: float, capture: tuple[int, int], mimir_seconds: float, note: str = "") -> str:
    """One table row; `capture` is (packets, bytes) of the file read."""
    packets, size = capture
    return (
        f"| {name} | {seconds:.2f} | {packets / seconds / 1e6:.3f} | {size / seconds / 1e6:,.0f} | "
        f"{seconds / mimir_seconds:,.1f}x | {note} |"
    )


def bench_file(label: str, path: Path, packets: int, work: Path, full: bool) -> None:
    size = path.stat().st_size
    run_cat(path)  # warm the page cache
    mimir_s = min(timed(lambda: run_mimir(path, work / "flows.parquet")) for _ in range(3))
    print(f"\n### {label}: {path.name}, {size / 1e9:.2f} GB, {packets:,} packets ({size / packets:.0f} B/record)\n")
    print("| reader | seconds | M packets/s | MB/s | time vs mimir | note |")
    print("|---|---:|---:|---:|---:|---|")
    print(row("mimir ingest (in process, best of 3)", mimir_s, (packets, size), mimir_s))
    cli = timed(lambda: subprocess.run(
        [str(Path(sys.executable).with_name("mimir")), "ingest", str(path), "-o", str(work / "cli.parquet")],
        stdout=subprocess.DEVNULL, check=True,
    ))  # fmt: skip
    print(row("mimir ingest (command, incl. start-up)", cli, (packets, size), mimir_s))
    cat_s = min(timed(lambda: run_cat(path)) for _ in range(3))
    print(row("cat FILE > /dev/null", cat_s, (packets, size), mimir_s))
    if full:
        print(row("tshark -T fields (same fields)", timed(lambda: run_tshark(path)), (packets, size), mimir_s))
        print(row("dpkt decode + Counter", timed(lambda: run_dpkt(path)), (packets, size), mimir_s))
    else:
        part = 200_000
        sliced = head_slice(path, part, work / "slice.pcap")
        t = timed(lambda: run_tshark(sliced)) * packets / part
        print(row("tshark -T fields (same fields)", t, (packets, size), mimir_s, f"{part:,}-packet slice, scaled"))
    part = 5_000
    sliced = head_slice(path, part, work / "slice.pcap")
    t = timed(lambda: run_pyshark(sliced)) * packets / part
    print(row("pyshark FileCapture", t, (packets, size), mimir_s, f"{part:,}-packet slice, scaled"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "mimir-bench", help="where captures are written"
    )
    parser.add_argument("--packets", type=int, default=2_000_000, help="packets in the full-frame capture")
    args = parser.parse_args()
    work = args.dir
    work.mkdir(parents=True, exist_ok=True)
    python = sys.version.split()[0]
    print(f"# mimir ingest benchmark on {socket.gethostname()}, {os.cpu_count()} cores, Python {python}")

    full = work / "full.pcap"
    write_capture(full, args.packets, seed=1)
    small = work / "small.pcap"
    small_packets = 5 * args.packets
    write_capture(small, small_packets, seed=2, snaplen=96, rate=100_000.0)
    tiny = work / "tiny.pcap"
    write_capture(tiny, 1000, seed=3)
    run_mimir(tiny, work / "tiny.parquet")  # compile (or load) the numba kernels before timing

    bench_file("Full frames", full, args.packets, work, full=True)
    bench_file("Small records (snaplen 96)", small, small_packets, work, full=False)

    print("\n### Peak memory of `mimir ingest` (whole process)\n")
    print("| capture | size | peak RSS |")
    print("|---|---:|---:|")
    for packets in (args.packets // 20, args.packets):
        path = work / f"mem-{packets}.pcap"
        write_capture(path, packets, seed=4)
        rss = peak_rss_mb(path, work / "mem.parquet")
        print(f"| {packets:,} packets | {path.stat().st_size / 1e6:,.0f} MB | {rss:,.0f} MB |")
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
