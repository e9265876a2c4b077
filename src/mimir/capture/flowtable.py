"""The flow table: one row per (bin, src, dst, proto, sport, dport), built in place by the numba kernel.

Its memory grows with the number of distinct flows per bin (the output), never with the number of packets.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from mimir.capture import decode

if TYPE_CHECKING:
    from mimir.capture.formats import RecordBlock

FLOWS_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("src", pa.string(), nullable=False),
        pa.field("dst", pa.string(), nullable=False),
        pa.field("proto", pa.uint8(), nullable=False),
        pa.field("sport", pa.uint16(), nullable=False),
        pa.field("dport", pa.uint16(), nullable=False),
        pa.field("packets", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
    ],
    metadata={
        b"ts": b"bin start, integer UTC epoch seconds",
        b"bytes": b"sum of original frame lengths (tshark frame.len)",
        b"src": b"outermost IP header source address",
    },
)


class FlowTable:
    """Dense row arrays plus an open-addressing index (twice as many slots as rows) for flows and addresses."""

    def __init__(self, bin_seconds: int, rows: int = 1 << 16, addresses: int = 1 << 12):
        self.bin_seconds = bin_seconds
        self.counts = np.zeros(2, dtype=np.int64)  # [flow rows used, addresses used]
        self.stats = np.zeros(decode.N_STATS, dtype=np.int64)
        self._alloc_flows(rows)
        self._alloc_addresses(addresses)

    def _alloc_flows(self, rows: int) -> None:
        self.f_bin = np.empty(rows, np.int64)
        self.f_src = np.empty(rows, np.int32)
        self.f_dst = np.empty(rows, np.int32)
        self.f_proto = np.empty(rows, np.uint8)
        self.f_sport = np.empty(rows, np.uint16)
        self.f_dport = np.empty(rows, np.uint16)
        self.f_packets = np.empty(rows, np.int64)
        self.f_bytes = np.empty(rows, np.int64)
        self.flow_slots = np.full(2 * rows, -1, np.int64)

    def _alloc_addresses(self, rows: int) -> None:
        self.ip_family = np.empty(rows, np.uint8)
        self.ip_hi = np.empty(rows, np.uint64)
        self.ip_lo = np.empty(rows, np.uint64)
        self.ip_slots = np.full(2 * rows, -1, np.int64)

    def _flow_arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self.f_bin,
            self.f_src,
            self.f_dst,
            self.f_proto,
            self.f_sport,
            self.f_dport,
            self.f_packets,
            self.f_bytes,
        )

    def _flow_columns(self) -> tuple[np.ndarray, ...]:
        n = int(self.counts[0])
        return tuple(a[:n] for a in self._flow_arrays())

    def _grow(self) -> None:
        if self.counts[0] >= self.f_bin.shape[0]:
            old = self._flow_columns()
            self._alloc_flows(2 * self.f_bin.shape[0])
            for grown, kept in zip(self._flow_arrays(), old, strict=True):
                grown[: kept.shape[0]] = kept
            decode.rehash(self.flow_slots, decode.flow_hashes(*old[:6]))
        if self.counts[1] + 2 > self.ip_family.shape[0]:
            n = int(self.counts[1])
            old_ip = (self.ip_family[:n], self.ip_hi[:n], self.ip_lo[:n])
            self._alloc_addresses(2 * self.ip_family.shape[0])
            self.ip_family[:n], self.ip_hi[:n], self.ip_lo[:n] = old_ip
            decode.rehash(self.ip_slots, decode.ip_hashes(*old_ip))

    def add(self, buf: np.ndarray, records: RecordBlock, n: int) -> None:
        """Decode and count the first n records of a block."""
        start = 0
        while True:
            status, start = decode.aggregate(
                buf,
                records.off,
                records.caplen,
                records.origlen,
                records.link,
                records.sec,
                start,
                n,
                self.bin_seconds,
                self.stats,
                self.counts,
                self.flow_slots,
                *self._flow_arrays(),
                self.ip_slots,
                self.ip_family,
                self.ip_hi,
                self.ip_lo,
            )
            if status == decode.DONE:
                return
            self._grow()

    def addresses(self) -> list[str]:
        """The text form of every interned address, in id order (one Python call per distinct address)."""
        n = int(self.counts[1])
        out = []
        for family, hi, lo in zip(self.ip_family[:n], self.ip_hi[:n], self.ip_lo[:n], strict=True):
            if family == 4:
                out.append(str(ipaddress.IPv4Address(int(lo))))
            else:
                out.append(str(ipaddress.IPv6Address((int(hi) << 64) | int(lo))))
        return out

    def to_arrow(self) -> pa.Table:
        """The flows sorted by (ts, src, dst, proto, sport, dport), addresses in numeric order, IPv4 first."""
        n_ip = int(self.counts[1])
        order = np.lexsort((self.ip_lo[:n_ip], self.ip_hi[:n_ip], self.ip_family[:n_ip]))
        rank = np.empty(n_ip, np.int64)
        rank[order] = np.arange(n_ip)
        names = pa.array(self.addresses(), pa.string())
        ts, src, dst, proto, sport, dport, packets, nbytes = self._flow_columns()
        rows = np.lexsort((dport, sport, proto, rank[dst], rank[src], ts))
        return pa.table(
            [
                pa.array(ts[rows]),
                names.take(src[rows]),
                names.take(dst[rows]),
                pa.array(proto[rows]),
                pa.array(sport[rows]),
                pa.array(dport[rows]),
                pa.array(packets[rows]),
                pa.array(nbytes[rows]),
            ],
            schema=FLOWS_SCHEMA,
        )
