"""A seeded generator of plausible capture files, for the demo job, the tests and the benchmarks.

It writes Ethernet (or Linux cooked v2) frames carrying TCP and UDP over IPv4 and IPv6 between a set of hosts,
with realistic frame-length mixes, as classic pcap with a chosen snaplen. It also returns its own ground truth
(packets and bytes per address pair), an oracle independent of any capture reader. The application-level
synthetic source of runs (`mimir synth`) is a different thing: this is only traffic-shaped noise.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from mimir.capture.decode import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2
from mimir.capture.pcapwrite import pcap_header, write_records
from mimir.io import atomic_path
from mimir.network import EPHEMERAL_PORTS

START = 1_700_000_000.0  # the first packet's time: 2023-11-14T22:13:20Z, arbitrary but fixed
_CHUNK = 1 << 20  # packets generated and written at a time


@dataclass(frozen=True)
class Traffic:
    """The host pairs of a generated capture and their frame-length mix."""

    src: list[str]
    dst: list[str]
    proto: np.ndarray  # per pair: 6 (TCP) or 17 (UDP)
    sport: np.ndarray
    dport: np.ndarray


def make_traffic(pairs: int, ipv6_share: float, rng: np.random.Generator) -> Traffic:
    hosts4 = [str(ipaddress.IPv4Address(0x0A000000 + int(h))) for h in rng.choice(1 << 16, 400, replace=False)]
    hosts6 = [str(ipaddress.IPv6Address((0xFD00 << 112) + int(h))) for h in rng.choice(1 << 30, 100, replace=False)]
    src, dst = [], []
    for k in range(pairs):
        pool = hosts6 if rng.random() < ipv6_share else hosts4
        a, b = rng.choice(len(pool), 2, replace=False)
        src.append(pool[a])
        dst.append(pool[b])
        if k % 2:  # the responses of the previous pair
            src[-1], dst[-1] = dst[-2], src[-2]
    proto = np.where(rng.random(pairs) < 0.85, 6, 17).astype(np.int64)
    sport = rng.integers(*EPHEMERAL_PORTS, pairs)
    # service ports whose tshark dissectors take a zero-filled payload in their stride (DNS and MySQL over TCP
    # raise an exception per zero byte pair, which would make the tshark comparison unfair)
    dport = rng.choice(np.array([80, 443, 8080, 8443, 9090, 50051]), pairs)
    reply = np.arange(1, pairs, 2)  # a response pair mirrors its request pair's protocol and ports
    proto[reply] = proto[reply - 1]
    sport[reply], dport[reply] = dport[reply - 1], sport[reply - 1]
    return Traffic(src, dst, proto, sport, dport)


def _address_words(addresses: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    family = np.array([ipaddress.ip_address(a).version for a in addresses], np.int64)
    values = [int(ipaddress.ip_address(a)) for a in addresses]
    hi = np.array([v >> 64 for v in values], np.uint64)
    lo = np.array([v & ((1 << 64) - 1) for v in values], np.uint64)
    return family, hi, lo


@njit(cache=True)
def _tcp_streams(pair, length, link, family, proto, sent, seq, ack, flags):  # noqa: PLR0913, PLR0917
    """Sequence and acknowledgement numbers and flags of the TCP packets, in capture order.

    sent[k] is what pair k has sent so far: its next segment continues it and acknowledges the reverse pair
    (k ^ 1), so that analysers see well-formed streams. A segment with data is PSH+ACK, a bare one ACK.
    """
    for i in range(pair.shape[0]):
        k = pair[i]
        if proto[k] != 6:
            continue
        payload = max(length[i] - link - (40 if family[k] == 6 else 20) - 20, 0)
        seq[i] = (sent[k] + 1) & 0xFFFFFFFF
        ack[i] = (sent[k ^ 1] + 1) & 0xFFFFFFFF
        flags[i] = 0x18 if payload else 0x10
        sent[k] += payload


@dataclass
class GroundTruth:
    """Packets and bytes per (src, dst) pair index of a `Traffic`, accumulated while generating."""

    packets: np.ndarray
    bytes: np.ndarray

    def by_pair(self, traffic: Traffic) -> dict[tuple[str, str], tuple[int, int]]:
        out: dict[tuple[str, str], list[int]] = {}
        for k in np.flatnonzero(self.packets):
            entry = out.setdefault((traffic.src[k], traffic.dst[k]), [0, 0])
            entry[0] += int(self.packets[k])
            entry[1] += int(self.bytes[k])
        return {key: (p, b) for key, (p, b) in out.items()}


def _packet_chunks(
    packets: int, family: np.ndarray, rate: float, start: float, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per chunk: pair index, frame length, seconds and microseconds of each packet."""
    pairs = family.shape[0]
    ack_length = np.where(family == 6, 86, 66)  # a bare TCP ACK over IPv4 or IPv6, with room for a link header
    weights = 1.0 / np.arange(1, pairs + 1) ** 0.8  # a few heavy conversations, a long tail
    weights /= weights.sum()
    now = start
    for first in range(0, packets, _CHUNK):
        n = min(_CHUNK, packets - first)
        pair = rng.choice(pairs, n, p=weights)
        acks = rng.random(n) < 0.35
        length = np.where(acks, ack_length[pair], rng.integers(100, 1515, n)).astype(np.int64)
        stamps = now + np.cumsum(rng.exponential(1.0 / rate, n))
        now = float(stamps[-1])
        sec = np.floor(stamps).astype(np.int64)
        usec = np.minimum(((stamps - sec) * 1e6).astype(np.int64), 999_999)
        yield pair, length, sec, usec


def write_capture(
    path: Path,
    packets: int,
    *,
    seed: int = 0,
    snaplen: int = 65535,
    linktype: int = LINKTYPE_ETHERNET,
    pairs: int = 200,
    rate: float = 20_000.0,
    ipv6_share: float = 0.2,
) -> tuple[Traffic, GroundTruth]:
    """Write a pcap of `packets` frames; same arguments, same bytes."""
    if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2):
        raise ValueError("the generator writes Ethernet (1) or Linux cooked v2 (276) frames")
    rng = np.random.default_rng(seed)
    traffic = make_traffic(pairs, ipv6_share, rng)
    family, s_hi, s_lo = _address_words(traffic.src)
    _, d_hi, d_lo = _address_words(traffic.dst)
    truth = GroundTruth(np.zeros(pairs, np.int64), np.zeros(pairs, np.int64))
    sent = np.zeros(pairs + 1, np.int64)  # TCP bytes sent per pair (one spare for the last pair's reverse)
    out = np.empty(_CHUNK * (16 + min(snaplen, 1514)), np.uint8)
    link = 14 if linktype == LINKTYPE_ETHERNET else 20  # link header bytes
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(pcap_header(snaplen, linktype))
        for pair, length, sec, usec in _packet_chunks(packets, family, rate, START, rng):
            n = pair.shape[0]
            seq, ack, flags = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
            _tcp_streams(pair, length, link, family, traffic.proto, sent, seq, ack, flags)
            used = write_records(
                out, sec, usec, length, snaplen, linktype, 0, family[pair], s_hi[pair], s_lo[pair],
                d_hi[pair], d_lo[pair], traffic.proto[pair], traffic.sport[pair], traffic.dport[pair],
                seq, ack, flags, 65535, False,
            )  # fmt: skip
            f.write(memoryview(out)[:used])
            truth.packets += np.bincount(pair, minlength=pairs)
            truth.bytes += np.bincount(pair, weights=length, minlength=pairs).astype(np.int64)
    return traffic, truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mimir.capture.generate",
        description="Write a seeded pcap of plausible TCP/UDP traffic (Ethernet or Linux cooked v2).",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="pcap file to write")
    parser.add_argument("--packets", type=int, default=1_000_000, help="number of packets (default 1000000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--snaplen", type=int, default=65535, help="bytes captured per frame (default 65535)")
    parser.add_argument("--sll2", action="store_true", help="Linux cooked v2 frames instead of Ethernet")
    args = parser.parse_args(argv)
    if args.packets < 1 or args.snaplen < 64:
        parser.error("--packets must be at least 1 and --snaplen at least 64")
    linktype = LINKTYPE_LINUX_SLL2 if args.sll2 else LINKTYPE_ETHERNET
    write_capture(args.output, args.packets, seed=args.seed, snaplen=args.snaplen, linktype=linktype)
    print(f"{args.output}: {args.packets} packets, {args.output.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
