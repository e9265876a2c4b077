"""How fast `mimir ingest` turns captures into flows, against the tools a user would pick instead.

One run prints, for a generated capture of at least 1 GB (full frames) and a small-record one (snaplen 96):
packets/s and MB/s of `mimir ingest`, of `tshark -T fields` with the same fields, of a dpkt loop doing the same
aggregation, of pyshark (on a slice, extrapolated), and of `cat FILE > /dev/null`, with ratios; and mimir's peak
memory on captures of different sizes (it must not grow with the capture).

It then times the whole `mimir ingest` command (start-up included) against tshark at its fastest on a capture of
4 M packets and 500 connections (1000 host pairs: the generator's odd pairs answer the even ones), with one worker
and with every core, in wall and CPU seconds (best of several runs; the load average is printed beside them).

    .venv/bin/python benchmarks/ingest.py [--dir DIR] [--packets 2000000] [--scale-packets 4000000] [--only-scale]

Page cache: each file is read once before timing, so the numbers are for a warm cache.
"""

from __future__ import annotations

import argparse
import os
import resource
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


# tshark at its fastest for these fields: no name resolution, and no TCP analysis, timestamps, reassembly or
# bytes-in-flight tracking (disabling every protocol but the link, IP and transport ones saves nothing more)
TSHARK_FAST = [
    "-n",
    *("-o", "tcp.analyze_sequence_numbers:FALSE", "-o", "tcp.calculate_timestamps:FALSE"),
    *("-o", "tcp.desegment_tcp_streams:FALSE", "-o", "tcp.track_bytes_in_flight:FALSE"),
    *("-o", "tcp.relative_sequence_numbers:FALSE"),
]


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


def children_cpu() -> float:
    """CPU seconds (user and system) of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_child(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one command."""
    cpu = children_cpu()
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start, children_cpu() - cpu


def bench_scale(work: Path, packets: int, repeats: int = 5) -> None:
    """The whole `mimir ingest` command against tshark at its fastest, on 500 connections."""
    path = work / "connections.pcap"
    write_capture(path, packets, seed=5, pairs=1000)
    size = path.stat().st_size
    run_cat(path)
    mimir = str(Path(sys.executable).with_name("mimir"))
    out = work / "scale.parquet"
    tiny = work / "tiny.pcap"
    print(f"\n### Whole command: {path.name}, {size / 1e9:.2f} GB, {packets:,} packets, 500 connections\n")
    print("| command | wall s (best) | CPU s (of that run) | load average | tshark / this |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    whole = [mimir, "ingest", str(path), "-o", str(out), "--force"]
    for label, cmd in [
        ("mimir --help", [mimir, "--help"]),
        ("mimir ingest --help", [mimir, "ingest", "--help"]),
        ("mimir ingest tiny.pcap (1000 packets)", [mimir, "ingest", str(tiny), "-o", str(out), "--force"]),
        *[(f"mimir ingest --workers {n}", [*whole, "--workers", str(n)]) for n in sorted({1, os.cpu_count() or 1})],
    ]:
        wall, cpu = min(timed_child(cmd) for _ in range(repeats))
        rows.append((label, wall, cpu, os.getloadavg()[0]))
    start = time.perf_counter()
    flows, summary = ingest([path], progress=False, workers=os.cpu_count() or 1)
    write_flows(flows, summary, work / "inprocess.parquet")
    rows.append(("mimir, in process (ingest + write)", time.perf_counter() - start, float("nan"), os.getloadavg()[0]))
    cmd = ["tshark", "-r", str(path), *TSHARK_FAST, "-T", "fields", "-E", "occurrence=f"]
    for name in TSHARK_FIELDS:
        cmd += ["-e", name]
    tshark, tshark_cpu = timed_child(cmd)
    for label, wall, cpu, load in rows:
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {load:.1f} | {tshark / wall:,.1f}x |")
    print(f"| tshark {' '.join(TSHARK_FAST)} -T fields (same fields) | {tshark:.2f} | {tshark_cpu:.2f} | "
          f"{os.getloadavg()[0]:.1f} | 1.0x |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "mimir-bench", help="where captures are written"
    )
    parser.add_argument("--packets", type=int, default=2_000_000, help="packets in the full-frame capture")
    parser.add_argument("--scale-packets", type=int, default=4_000_000, help="packets of the 500-connection capture")
    parser.add_argument("--only-scale", action="store_true", help="time only the whole command against tshark")
    args = parser.parse_args()
    work = args.dir
    work.mkdir(parents=True, exist_ok=True)
    python = sys.version.split()[0]
    print(f"# mimir ingest benchmark on {socket.gethostname()}, {os.cpu_count()} cores, Python {python}")

    tiny = work / "tiny.pcap"
    write_capture(tiny, 1000, seed=3)
    run_mimir(tiny, work / "tiny.parquet")  # compile (or load) the numba kernels before timing
    if args.only_scale:
        bench_scale(work, args.scale_packets)
        return 0

    full = work / "full.pcap"
    write_capture(full, args.packets, seed=1)
    small = work / "small.pcap"
    small_packets = 5 * args.packets
    write_capture(small, small_packets, seed=2, snaplen=96, rate=100_000.0)

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
    bench_scale(work, args.scale_packets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
