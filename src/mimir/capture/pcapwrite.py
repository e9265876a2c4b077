"""Writing classic pcap: the file header and numba helpers that put fields into a record buffer.

Shared by the capture generator (tests, benchmarks) and the synthetic source of runs.
"""

from __future__ import annotations

import struct

from numba import njit


def pcap_header(snaplen: int, linktype: int) -> bytes:
    """A little-endian, microsecond pcap file header."""
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


@njit(inline="always", cache=True)
def put_be(out, o, value, width):
    """A big-endian (network order) field of `width` bytes."""
    for k in range(width):
        out[o + k] = (value >> (8 * (width - 1 - k))) & 0xFF


@njit(inline="always", cache=True)
def put_le(out, o, value, width):
    """A little-endian field (the pcap record header)."""
    for k in range(width):
        out[o + k] = (value >> (8 * k)) & 0xFF


@njit(inline="always", cache=True)
def put_record_header(out, o, sec, usec, caplen, length):
    put_le(out, o, sec, 4)
    put_le(out, o + 4, usec, 4)
    put_le(out, o + 8, caplen, 4)
    put_le(out, o + 12, length, 4)


@njit(inline="always", cache=True)
def put_ipv4(out, ip, total_length, proto, src, dst):
    """A 20-byte IPv4 header (TTL 64, no checksum); returns where the transport header starts."""
    out[ip] = 0x45
    put_be(out, ip + 2, total_length, 2)
    out[ip + 8] = 64
    out[ip + 9] = proto
    put_be(out, ip + 12, src, 4)
    put_be(out, ip + 16, dst, 4)
    return ip + 20


@njit(inline="always", cache=True)
def put_ports(out, t, end, sport, dport):
    """Source and destination ports, where the snaplen leaves room for them."""
    if t + 4 <= end:
        put_be(out, t, sport, 2)
        put_be(out, t + 2, dport, 2)
