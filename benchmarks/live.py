"""How much traffic `mimir live` keeps up with on one core, how soon an interval's alert follows its close, and
whether its memory stays flat over days of capture time.

A model is trained as the workflow trains one (`mimir@10`: 10 s intervals) on a synthetic Sock Shop run, and a
2-minute Sock Shop run at the same load is the traffic. Its records are read once into memory and fed again and
again, their times rewritten (benchmark work, not timed):

1. rate: the traffic squeezed in capture time so that it carries R packets per second, for several R; mimir's
   capture-to-alert path (`IntervalScorer`: flow bins, entities, features, scoring) over 6 intervals, in one
   thread pinned to one core. It keeps up with R when it takes less than the 60 s of capture time it was fed;
   the highest such R is the sustained rate. Beside it, the tool a user would reach for instead: tshark's
   per-interval statistics and IP conversation table (`tshark -q -z io,stat,10 -z conv,ip`) on the traffic's
   capture, which yields counts only, no entities, features or scores.
2. latency: the whole `mimir live` loop (capture thread, scoring thread, JSON lines) on one core, fed in real
   time at the target rate (capture time = wall time), for --seconds; the time from each interval's close (its
   end plus the lateness allowance) to its line being written: median and p99.
3. soak: --soak-hours of capture time at the traffic's own rate, as fast as it goes, with a pod replaced every
   minute (its events appended to the entity log): the resident memory after each hour must not grow.

    .venv/bin/python benchmarks/live.py [--rates 100000,500000,1000000,2000000,4000000] [--target 500000]
                                        [--seconds 120] [--soak-hours 6] [--parts rate,latency,soak] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from mimir.capture.formats import ByteStream, FileReport, RecordBlock, read_records
from mimir.entities import load_run
from mimir.experiment import Protocol, fit_model
from mimir.live.capture import Feed
from mimir.live.detect import IntervalScorer, LiveModel
from mimir.live.entities import EntityLog
from mimir.live.outputs import AlertLog, LiveMetrics
from mimir.live.run import LiveLoop

MIMIR = Path(sys.executable).with_name("mimir")
APP, USERS = "sockshop", 100
INTERVAL = 10
FIELDS = ("off", "caplen", "origlen", "link", "sec", "nsec")


def mimir(*args: object) -> None:
    subprocess.run([str(MIMIR), *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def prepare(folder: Path) -> tuple[Path, Path]:
    """A model trained as the workflow trains one, and the run whose traffic is fed."""
    model, run = folder / "model", folder / "traffic"
    if (model / "model.json").exists() and (run / "run.json").exists():
        return model, run
    train = folder / "train"
    mimir("synth", "--app", APP, "--duration", 1200, "--users", USERS, "--seed", 1, "-o", train, "--force")
    mimir("ingest", *sorted((train / "capture").glob("*.pcap")), "-o", folder / "flows.parquet", "--force")
    mimir("edges", folder / "flows.parquet", train, "-o", folder / "edges.parquet", "--force")
    mimir("features", folder / "edges.parquet", train, "-o", folder / "features", "--tg", INTERVAL, "--rates", 1,
          "--seeds", 3, "--force")  # fmt: skip
    tables = {INTERVAL: pd.read_parquet(folder / "features" / "features" / f"{INTERVAL}s" / "1.parquet")}
    sensitive = json.loads((train / "run.json").read_text())["sensitive"]
    fit_model(f"mimir@{INTERVAL}", {}, 1, {"train": [tables]}, model, Protocol(1, 1, 10, 0), sensitive)
    mimir("synth", "--app", APP, "--duration", 120, "--users", USERS, "--seed", 2, "-o", run, "--force")
    return model, run


class Traffic:
    """A run's records in memory, replayed with rewritten times: `squeeze` times as dense, looped for ever."""

    def __init__(self, run: Path):
        self.blocks: list[tuple[np.ndarray, RecordBlock, int]] = []
        for path in sorted((run / "capture").glob("*.pcap")):
            records = RecordBlock(1 << 14)
            with ByteStream(path) as stream:
                for n in read_records(stream, records, FileReport(path=str(path))):
                    block = RecordBlock(n)
                    for name in FIELDS:
                        getattr(block, name)[:n] = getattr(records, name)[:n]
                    self.blocks.append((stream.buf.copy(), block, n))
        times = np.concatenate([b.sec[:n] + b.nsec[:n] * 1e-9 for _, b, n in self.blocks])
        self.first, self.span = float(times.min()), float(times.max() - times.min()) + 1e-3
        self.packets = times.size
        self.rate = self.packets / self.span  # packets per second of its own capture time
        _, self.addressing, _ = load_run(run)
        self.added = [json.loads(x) for x in (run / "entities.jsonl").read_text().splitlines()]
        self.added = [e for e in self.added if e["event"] == "added"]

    def entities(self, start: float, path: Path) -> EntityLog:
        """An entity log in which everything the run ever held is there from before `start` on: the looped
        traffic stays attributed whatever time it is given."""
        path.write_text("".join(json.dumps({**e, "ts": start - 1}) + "\n" for e in self.added))
        log = EntityLog(path)
        log.poll()
        return log

    def replay(self, start: float, squeeze: float, until: float) -> Iterator[tuple[np.ndarray, RecordBlock, int]]:
        """Blocks whose times run from `start`, `squeeze` times denser than recorded, up to capture time `until`."""
        loop = 0
        while True:
            for buf, block, n in self.blocks:
                out = RecordBlock(n)
                for name in ("off", "caplen", "origlen", "link"):
                    getattr(out, name)[:n] = getattr(block, name)[:n]
                t = start + (loop * self.span + block.sec[:n] + block.nsec[:n] * 1e-9 - self.first) / squeeze
                if t[0] >= until:
                    return
                out.sec[:n] = np.floor(t)
                out.nsec[:n] = np.round((t - np.floor(t)) * 1e9).clip(0, 999_999_999)
                yield buf, out, n
            loop += 1


def pin_one_core() -> int:
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def rate_part(model: LiveModel, traffic: Traffic, rates: list[int], folder: Path) -> list[dict]:
    rows = []
    for rate in rates:
        start, seconds = 2_000_000_000.0, 6 * INTERVAL
        log = traffic.entities(start, folder / "rate-entities.jsonl")
        scorer = IntervalScorer(model, origin=int(start))
        scored, rewriting = [], 0.0
        began, cpu = time.perf_counter(), time.process_time()
        blocks = traffic.replay(start, rate / traffic.rate, start + seconds)
        while True:
            t = time.perf_counter()
            block = next(blocks, None)
            rewriting += time.perf_counter() - t  # the benchmark's own work: not mimir's
            if block is None:
                break
            scorer.add(*block)
            scored += scorer.close_until(scorer.last_ts, log.spans, traffic.addressing)
        scored += scorer.close_until(start + seconds, log.spans, traffic.addressing)
        wall = time.perf_counter() - began - rewriting
        cpu = time.process_time() - cpu - rewriting
        rows.append({"rate": rate, "packets": scorer.packets, "intervals": len(scored), "wall": wall, "cpu": cpu,
                     "throughput": scorer.packets / wall, "keeps_up": wall < seconds})  # fmt: skip
    return rows


def tshark_rate(run: Path, packets: int) -> float:
    """tshark's per-interval statistics and IP conversations over the traffic's own capture: packets/s."""
    began = time.perf_counter()
    for path in sorted((run / "capture").glob("*.pcap")):
        subprocess.run(
            ["tshark", "-n", "-q", "-r", str(path), "-z", f"io,stat,{INTERVAL}", "-z", "conv,ip"],
            capture_output=True, check=True,
        )  # fmt: skip
    return packets / (time.perf_counter() - began)


class PacedFeed(Feed):
    """Blocks handed over when their (rewritten) capture time comes on the wall clock: a live capture."""

    def __init__(self, blocks: Iterator[tuple[np.ndarray, RecordBlock, int]]):
        super().__init__("paced")
        self._blocks, self._stopping = blocks, threading.Event()

    def blocks(self) -> Iterator[tuple[np.ndarray, RecordBlock, int]]:
        for buf, block, n in self._blocks:
            wait = float(block.sec[0]) + block.nsec[0] * 1e-9 - time.time()
            if wait > 0 and self._stopping.wait(wait):
                return
            self.stats.records += n
            yield buf, block, n

    def stop(self) -> None:
        self._stopping.set()


def latency_part(model: LiveModel, traffic: Traffic, target: int, seconds: int, folder: Path) -> dict:
    start = (int(time.time()) // INTERVAL + 1) * INTERVAL + INTERVAL
    feed = PacedFeed(traffic.replay(start, target / traffic.rate, start + seconds))
    out = folder / "latency.jsonl"
    out.unlink(missing_ok=True)
    log = traffic.entities(start, folder / "latency-entities.jsonl")
    alerts, metrics = AlertLog(out), LiveMetrics()
    lateness = 1.0
    loop = LiveLoop(IntervalScorer(model), feed, log, traffic.addressing, alerts, metrics, lateness=lateness)
    summary = loop.run()
    alerts.close()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    closed = [x["lag"] - lateness for x in lines if not x["partial"]]
    return {"rate": target, "packets": summary.packets, "intervals": len(closed),
            "median": float(np.median(closed)), "p99": float(np.percentile(closed, 99)),
            "max": float(np.max(closed)), "late": summary.late_packets}  # fmt: skip


def resident_mb() -> float:
    """The process's memory now (VmRSS): the soak's figure, after the other parts' peaks."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def soak_part(model: LiveModel, traffic: Traffic, hours: int, folder: Path) -> list[tuple[int, float, int]]:
    """Capture hours at the traffic's own density as fast as they go, one pod replaced per minute."""
    start = 2_100_000_000.0
    log_path = folder / "soak-entities.jsonl"
    log = traffic.entities(start, log_path)
    pods = [e for e in traffic.added if e["kind"] == "pod" and e.get("ips")]
    scorer = IntervalScorer(model, origin=int(start))
    marks, minute = [], 0
    for buf, block, n in traffic.replay(start, 1.0, start + hours * 3600):
        scorer.add(buf, block, n)
        now = scorer.last_ts
        if now >= start + (minute + 1) * 60:  # a pod replaced: deleted, and a new one with its address
            minute += 1
            slot = minute % len(pods)
            pod, fresh = pods[slot], {**pods[slot], "ts": now, "name": f"{pods[slot]['name']}-r{minute}"}
            with log_path.open("a") as out:  # the pod's current incarnation goes, a new one takes its address
                out.write(json.dumps({**pod, "ts": now, "event": "deleted"}) + "\n")
                out.write(json.dumps(fresh) + "\n")
            pods[slot] = fresh
        log.poll()
        scorer.close_until(now - 1.0, log.spans, traffic.addressing)
        if now >= start + (len(marks) + 1) * 3600:  # `mimir live` prunes when the events double: here hourly
            log.forget_before(scorer.next_start - INTERVAL)
            marks.append((len(marks) + 1, resident_mb(), len(log.events)))
            print(f"  soak: hour {len(marks)}: resident {marks[-1][1]:.0f} MB, {marks[-1][2]} entity events kept",
                  file=sys.stderr)  # fmt: skip
    return marks


def rate_table(model: LiveModel, traffic: Traffic, args: argparse.Namespace, run: Path, folder: Path) -> None:
    """Part 1's table: every rate tried, and tshark beside it."""
    print("\n1. rate: 6 intervals of 10 s, one thread, one core")
    tshark = tshark_rate(run, traffic.packets)
    print(f"{'packets/s':>12} {'packets':>11} {'wall s':>8} {'cpu s':>7} {'mimir pkt/s':>13} keeps up "
          f"{'vs tshark':>9}")  # fmt: skip
    rows = rate_part(model, traffic, [int(r) for r in args.rates.split(",")], folder)
    for r in rows:
        print(f"{r['rate']:>12,} {r['packets']:>11,} {r['wall']:>8.2f} {r['cpu']:>7.2f} {r['throughput']:>13,.0f} "
              f"{'yes' if r['keeps_up'] else 'NO':>8} {r['throughput'] / tshark:>8.1f}x")  # fmt: skip
    print(f"tshark -z io,stat,{INTERVAL} -z conv,ip on the traffic's capture: {tshark:,.0f} packets/s")
    sustained = max((r["rate"] for r in rows if r["keeps_up"]), default=0)
    print(f"highest rate kept up with: {sustained:,} packets/s (of those tried)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100000,500000,1000000,2000000,4000000", help="packets/s of capture time")
    parser.add_argument("--target", type=int, default=500_000, help="packets/s fed in real time (latency part)")
    parser.add_argument("--seconds", type=int, default=120, help="length of the real-time part")
    parser.add_argument("--soak-hours", type=int, default=6, help="capture hours of the soak (0: skip it)")
    parser.add_argument("--dir", type=Path, help="keep the model and the traffic here (default: temporary)")
    parser.add_argument("--parts", default="rate,latency,soak", help="which parts to run (default: all three)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mimir-live-bench-") as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model_dir, run = prepare(folder)
        core = pin_one_core()
        model = LiveModel.load(model_dir)
        traffic = Traffic(run)
        print(f"traffic: {APP} at {USERS} users, {traffic.packets} packets in {traffic.span:.0f} s "
              f"({traffic.rate:,.0f} packets/s), pinned to CPU {core}; load {os.getloadavg()[0]:.2f}")  # fmt: skip
        parts = set(args.parts.split(","))
        if "rate" in parts:
            rate_table(model, traffic, args, run, folder)
        if "latency" in parts:
            print(f"\n2. latency: `mimir live`'s loop fed {args.target:,} packets/s in real time for {args.seconds} s")
            lat = latency_part(model, traffic, args.target, args.seconds, folder)
            print(f"{lat['intervals']} intervals, {lat['packets']:,} packets, {lat['late']} late: interval close to "
                  f"alert median {lat['median']:.3f} s, p99 {lat['p99']:.3f} s, max {lat['max']:.3f} s")  # fmt: skip
        if "soak" in parts and args.soak_hours:
            print(
                f"\n3. soak: {args.soak_hours} capture hours at {traffic.rate:,.0f} packets/s, a pod replaced a minute"
            )
            began = time.perf_counter()
            marks = soak_part(model, traffic, args.soak_hours, folder)
            print(f"{'hour':>5} {'RSS MB':>8} {'events kept':>12}   ({time.perf_counter() - began:.0f} s)")
            for hour, mb, kept in marks:
                print(f"{hour:>5} {mb:>8.0f} {kept:>12}")


if __name__ == "__main__":
    main()
