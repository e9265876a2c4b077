"""The flow table: one row per (bin, src, dst, proto, sport, dport), filled in place by a numba kernel.

`aggregate` takes a block of records (formats.py) and, in one pass, finds each frame's IP header (decode.py),
reads its addresses, protocol and ports, interns both addresses and finds or creates the row of its flow. All
state lives in numpy arrays owned by `FlowTable`; when a table is full the kernel stops and reports where, the
table grows, and the call resumes there. Memory grows with the number of distinct flows per bin (the output),
never with the number of packets.

numba caches a kernel by the date of its own file only; decode.py and binary.py, which are compiled into
`aggregate`, are kept track of by jitcache.py, which drops this module's cache when they change.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from numba import njit

from mimir.capture.binary import be16, be32, be64
from mimir.capture.decode import (
    FAMILY_IPV4,
    IPV4_DST_AT,
    IPV4_FRAGMENT_AT,
    IPV4_FRAGMENT_OFFSET,
    IPV4_MIN_HEADER,
    IPV4_PROTOCOL_AT,
    IPV4_SRC_AT,
    IPV4_TOTAL_LENGTH_AT,
    IPV6_DST_AT,
    IPV6_HEADER,
    IPV6_NEXT_HEADER_AT,
    IPV6_PAYLOAD_LENGTH_AT,
    IPV6_SRC_AT,
    N_STATS,
    NOT_IP,
    STAT_BAD_IP,
    STAT_IPV4,
    STAT_IPV6,
    STAT_NON_IP,
    has_ports,
    ipv6_upper_layer,
    network_layer,
    ports_header,
)
from mimir.capture.jitcache import forget_if_changed

forget_if_changed(__file__, "decode.py", "binary.py", "linktypes.py")

if TYPE_CHECKING:
    from mimir.capture.formats import RecordBlock

# Kernel outcomes.
DONE = 0
GROW = 1  # a table is full: grow it and resume at the returned record

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


@njit(inline="always", cache=True)
def _mix(h, v):
    h ^= v + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2))
    return h


@njit(inline="always", cache=True)
def _finish(h):
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(inline="always", cache=True)
def _flow_hash(b, src, dst, proto, sport, dport):
    key = (np.int64(proto) << 32) | (np.int64(sport) << 16) | np.int64(dport)
    return _finish(_mix(_mix(_mix(np.uint64(b), np.uint64(src)), np.uint64(dst)), np.uint64(key)))


@njit(inline="always", cache=True)
def _ip_hash(family, hi, lo):
    return _finish(_mix(_mix(np.uint64(family), hi), lo))


@njit(inline="always", cache=True)
def _intern_ip(family, hi, lo, ip_slots, ip_family, ip_hi, ip_lo, counts):
    """The id of an address, added if new (the caller made sure there is room)."""
    mask = np.uint64(ip_slots.shape[0] - 1)
    s = _ip_hash(family, hi, lo) & mask
    while True:
        row = ip_slots[s]
        if row < 0:
            n = counts[1]
            ip_family[n] = family
            ip_hi[n] = hi
            ip_lo[n] = lo
            ip_slots[s] = n
            counts[1] = n + 1
            return n
        if ip_lo[row] == lo and ip_hi[row] == hi and ip_family[row] == family:
            return row
        s = (s + np.uint64(1)) & mask


@njit(inline="always", cache=True)
def _flow_row(  # noqa: PLR0913, PLR0917
    b, src, dst, proto, sport, dport, counts, flow_slots, f_bin, f_src, f_dst, f_proto, f_sport, f_dport,
    f_packets, f_bytes,
):  # fmt: skip
    """The row of a flow, added with zero counts if new (the caller made sure there is room)."""
    mask = np.uint64(flow_slots.shape[0] - 1)
    s = _flow_hash(b, src, dst, proto, sport, dport) & mask
    while True:
        row = flow_slots[s]
        if row < 0:
            row = counts[0]
            f_bin[row] = b
            f_src[row] = src
            f_dst[row] = dst
            f_proto[row] = proto
            f_sport[row] = sport
            f_dport[row] = dport
            f_packets[row] = 0
            f_bytes[row] = 0
            flow_slots[s] = row
            counts[0] = row + 1
            return row
        if (
            f_bin[row] == b
            and f_src[row] == src
            and f_dst[row] == dst
            and f_dport[row] == dport
            and f_sport[row] == sport
            and f_proto[row] == proto
        ):
            return row
        s = (s + np.uint64(1)) & mask


@njit(cache=True, nogil=True)
def aggregate(  # noqa: PLR0913, PLR0917
    buf, rec_off, rec_caplen, rec_origlen, rec_link, rec_sec, start, n_records, bin_seconds, stats, counts,
    flow_slots, f_bin, f_src, f_dst, f_proto, f_sport, f_dport, f_packets, f_bytes,
    ip_slots, ip_family, ip_hi, ip_lo,
):  # fmt: skip
    """Add records [start, n_records) to the flow table; return (DONE, n) or (GROW, first record not added)."""
    for i in range(start, n_records):
        p = rec_off[i]
        end = p + rec_caplen[i]
        o, family = network_layer(buf, p, end, rec_link[i])
        if family == NOT_IP:
            stats[STAT_NON_IP] += 1
            continue
        src_hi = src_lo = dst_hi = dst_lo = np.uint64(0)
        transport = -1  # where the ports are, if this is not a later fragment
        if family == FAMILY_IPV4:
            header = (buf[o] & 0x0F) * 4
            total = be16(buf, o + IPV4_TOTAL_LENGTH_AT) if o + 4 <= end else 0
            # like tshark: no addresses without the fixed header, a header length of 20 or more, and a total length
            # (0 means segmentation offload) not below it; options cut by the snaplen leave the addresses readable
            if o + IPV4_MIN_HEADER > end or header < IPV4_MIN_HEADER or (total != 0 and total < header):
                stats[STAT_BAD_IP] += 1
                continue
            src_lo = np.uint64(be32(buf, o + IPV4_SRC_AT))
            dst_lo = np.uint64(be32(buf, o + IPV4_DST_AT))
            proto = np.int64(buf[o + IPV4_PROTOCOL_AT])
            if total != 0:  # the datagram ends where its total length says, if captured that far
                end = min(end, o + total)
            if (be16(buf, o + IPV4_FRAGMENT_AT) & IPV4_FRAGMENT_OFFSET) == 0:
                transport = o + header
        else:
            if o + IPV6_HEADER > end:
                stats[STAT_BAD_IP] += 1
                continue
            end = min(end, o + IPV6_HEADER + be16(buf, o + IPV6_PAYLOAD_LENGTH_AT))  # 0: no payload, as tshark
            src_hi = be64(buf, o + IPV6_SRC_AT)
            src_lo = be64(buf, o + IPV6_SRC_AT + 8)
            dst_hi = be64(buf, o + IPV6_DST_AT)
            dst_lo = be64(buf, o + IPV6_DST_AT + 8)
            proto, t, first_fragment = ipv6_upper_layer(
                buf, o + IPV6_HEADER, end, np.int64(buf[o + IPV6_NEXT_HEADER_AT])
            )
            if first_fragment:
                transport = t
        if counts[0] >= f_bin.shape[0] or counts[1] + 2 > ip_family.shape[0]:
            return GROW, i
        stats[STAT_IPV4 if family == FAMILY_IPV4 else STAT_IPV6] += 1
        sport = dport = 0
        if transport >= 0 and has_ports(proto) and transport + ports_header(proto) <= end:
            sport = be16(buf, transport)
            dport = be16(buf, transport + 2)
        src = _intern_ip(family, src_hi, src_lo, ip_slots, ip_family, ip_hi, ip_lo, counts)
        dst = _intern_ip(family, dst_hi, dst_lo, ip_slots, ip_family, ip_hi, ip_lo, counts)
        sec = rec_sec[i]
        b = sec - sec % bin_seconds
        row = _flow_row(
            b, src, dst, proto, sport, dport, counts, flow_slots, f_bin, f_src, f_dst, f_proto, f_sport, f_dport,
            f_packets, f_bytes,
        )  # fmt: skip
        f_packets[row] += 1
        f_bytes[row] += rec_origlen[i]
    return DONE, n_records


@njit(cache=True, nogil=True)
def merge_rows(  # noqa: PLR0913, PLR0917
    counts, flow_slots, f_bin, f_src, f_dst, f_proto, f_sport, f_dport, f_packets, f_bytes,
    ip_slots, ip_family, ip_hi, ip_lo,
    o_bin, o_src, o_dst, o_proto, o_sport, o_dport, o_packets, o_bytes, o_family, o_hi, o_lo,
):  # fmt: skip
    """Add another table's rows (its addresses given by family and words) to this one (the caller made room)."""
    for r in range(o_bin.shape[0]):
        a, z = o_src[r], o_dst[r]
        src = _intern_ip(o_family[a], o_hi[a], o_lo[a], ip_slots, ip_family, ip_hi, ip_lo, counts)
        dst = _intern_ip(o_family[z], o_hi[z], o_lo[z], ip_slots, ip_family, ip_hi, ip_lo, counts)
        row = _flow_row(
            o_bin[r], src, dst, o_proto[r], o_sport[r], o_dport[r], counts, flow_slots, f_bin, f_src, f_dst,
            f_proto, f_sport, f_dport, f_packets, f_bytes,
        )  # fmt: skip
        f_packets[row] += o_packets[r]
        f_bytes[row] += o_bytes[r]


@njit(cache=True, nogil=True)
def rehash(slots, key_hash):
    """Rebuild an open-addressing slot array of a new size from the precomputed hash of every row."""
    slots[:] = -1
    mask = np.uint64(slots.shape[0] - 1)
    for row in range(key_hash.shape[0]):
        s = key_hash[row] & mask
        while slots[s] >= 0:
            s = (s + np.uint64(1)) & mask
        slots[s] = row


@njit(cache=True, nogil=True)
def flow_hashes(f_bin, f_src, f_dst, f_proto, f_sport, f_dport):
    out = np.empty(f_bin.shape[0], dtype=np.uint64)
    for row in range(f_bin.shape[0]):
        out[row] = _flow_hash(f_bin[row], f_src[row], f_dst[row], f_proto[row], f_sport[row], f_dport[row])
    return out


@njit(cache=True, nogil=True)
def ip_hashes(ip_family, ip_hi, ip_lo):
    out = np.empty(ip_family.shape[0], dtype=np.uint64)
    for row in range(ip_family.shape[0]):
        out[row] = _ip_hash(ip_family[row], ip_hi[row], ip_lo[row])
    return out


class FlowTable:
    """Dense row arrays plus an open-addressing index (twice as many slots as rows) for flows and addresses."""

    def __init__(self, bin_seconds: int, rows: int = 1 << 16, addresses: int = 1 << 12):
        self.bin_seconds = bin_seconds
        self.counts = np.zeros(2, dtype=np.int64)  # [flow rows used, addresses used]
        self.stats = np.zeros(N_STATS, dtype=np.int64)
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

    def _grow(self, rows: int = 0, addresses: int = 2) -> None:
        """Make room for `rows` more flows and `addresses` more addresses (at least for one more packet)."""
        size = self.f_bin.shape[0]
        while self.counts[0] + max(rows, 1) > size:
            size *= 2
        if size > self.f_bin.shape[0]:
            old = self._flow_columns()
            self._alloc_flows(size)
            for grown, kept in zip(self._flow_arrays(), old, strict=True):
                grown[: kept.shape[0]] = kept
            rehash(self.flow_slots, flow_hashes(*old[:6]))
        size = self.ip_family.shape[0]
        while self.counts[1] + addresses > size:
            size *= 2
        if size > self.ip_family.shape[0]:
            n = int(self.counts[1])
            old_ip = (self.ip_family[:n], self.ip_hi[:n], self.ip_lo[:n])
            self._alloc_addresses(size)
            self.ip_family[:n], self.ip_hi[:n], self.ip_lo[:n] = old_ip
            rehash(self.ip_slots, ip_hashes(*old_ip))

    def merge(self, other: FlowTable) -> None:
        """Add another table's counts to this one: a flow in both sums its packets and bytes, as if one table had
        seen every packet (how the tables of parallel workers become one)."""
        if other.bin_seconds != self.bin_seconds:
            raise ValueError(f"cannot merge a {other.bin_seconds} s table into a {self.bin_seconds} s one")
        n_ip = int(other.counts[1])
        self._grow(int(other.counts[0]), n_ip)
        merge_rows(
            self.counts,
            self.flow_slots,
            *self._flow_arrays(),
            self.ip_slots,
            self.ip_family,
            self.ip_hi,
            self.ip_lo,
            *other._flow_columns(),
            other.ip_family[:n_ip],
            other.ip_hi[:n_ip],
            other.ip_lo[:n_ip],
        )
        self.stats += other.stats

    def add(self, buf: np.ndarray, records: RecordBlock, n: int) -> None:
        """Decode and count the first n records of a block."""
        start = 0
        while True:
            status, start = aggregate(
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
            if status == DONE:
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
        names = self.addresses()
        ts, src, dst, proto, sport, dport, packets, nbytes = self._flow_columns()
        rows = np.lexsort((dport, sport, proto, rank[dst], rank[src], ts))
        columns = [ts, src, dst, proto, sport, dport, packets, nbytes]
        return pa.Table.from_arrays(
            [
                _texts(names, values[rows]) if field.name in ("src", "dst") else _numbers(values[rows], field.type)
                for field, values in zip(FLOWS_SCHEMA, columns, strict=True)
            ],
            schema=FLOWS_SCHEMA,
        )


# The columns are built from their buffers: pa.array (and pa.table) first ask pandas whether the data is a
# DataFrame, and importing pandas for that would add most of a second to every `mimir ingest`.


def _numbers(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A numeric column, its values in the type's width."""
    data = np.ascontiguousarray(values, dtype=kind.to_pandas_dtype())
    return pa.Array.from_buffers(kind, data.shape[0], [None, pa.py_buffer(data)])


def _texts(names: list[str], codes: np.ndarray) -> pa.Array:
    """A string column of names[code] for each code (a few thousand names, any number of rows)."""
    encoded = [name.encode() for name in names]
    width = max((len(e) for e in encoded), default=1)
    lengths = np.array([len(e) for e in encoded], np.int32)
    padded = np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(-1, width)
    rows = padded[codes]
    data = rows[np.arange(width) < lengths[codes][:, None]]  # each row's bytes, rows in order
    offsets = np.zeros(codes.shape[0] + 1, np.int32)
    np.cumsum(lengths[codes], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), codes.shape[0], [None, pa.py_buffer(offsets), pa.py_buffer(data)])
