"""Writing classic pcap: the file header, and one numba kernel that writes the records of header-only frames.

Shared by the capture generator (tests, benchmarks) and the synthetic source of runs, so that both write their
frames (Ethernet or Linux cooked v2, IPv4 or IPv6, TCP with or without options, or UDP) the same way; the payload
is zeros, as a capture with a small snaplen would cut it anyway.
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
def put_be_cut(out, o, value, width, end):
    """A big-endian field, cut where the snaplen ends the frame (at `end`), as a capture would cut it."""
    for k in range(min(width, end - o)):
        out[o + k] = (value >> (8 * (width - 1 - k))) & 0xFF


@njit(inline="always", cache=True)
def put_byte_cut(out, o, value, end):
    if o < end:
        out[o] = value


@njit(inline="always", cache=True)
def put_tcp_options(out, o, kind, mss, tsval, tsecr, end):
    """TCP options at `o`, cut at `end`: kind 1 is a SYN's (MSS, SACK-permitted, timestamps, NOP, window scale 7:
    20 bytes, as Linux orders them), kind 2 NOP, NOP, timestamps (12 bytes); returns the options' length."""
    if kind == 1:
        put_byte_cut(out, o, 2, end)  # MSS
        put_byte_cut(out, o + 1, 4, end)
        put_be_cut(out, o + 2, mss, 2, end)
        put_byte_cut(out, o + 4, 4, end)  # SACK permitted
        put_byte_cut(out, o + 5, 2, end)
        ts = o + 6
    elif kind == 2:
        put_byte_cut(out, o, 1, end)  # NOP, NOP
        put_byte_cut(out, o + 1, 1, end)
        ts = o + 2
    else:
        return 0
    put_byte_cut(out, ts, 8, end)  # timestamps
    put_byte_cut(out, ts + 1, 10, end)
    put_be_cut(out, ts + 2, tsval, 4, end)
    put_be_cut(out, ts + 6, tsecr, 4, end)
    if kind == 1:
        put_byte_cut(out, o + 16, 1, end)  # NOP
        put_byte_cut(out, o + 17, 3, end)  # window scale: shift 7
        put_byte_cut(out, o + 18, 3, end)
        put_byte_cut(out, o + 19, 7, end)
        return 20
    return 12


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


@njit(inline="always", cache=True)
def put_ipv6(out, ip, payload_length, proto, src_hi, src_lo, dst_hi, dst_lo):
    """A 40-byte IPv6 header (hop limit 64); returns where the transport header starts."""
    out[ip] = 0x60
    put_be(out, ip + 4, payload_length, 2)
    out[ip + 6] = proto
    out[ip + 7] = 64
    put_be(out, ip + 8, src_hi, 8)
    put_be(out, ip + 16, src_lo, 8)
    put_be(out, ip + 24, dst_hi, 8)
    put_be(out, ip + 32, dst_lo, 8)
    return ip + 40


@njit(cache=True)
def write_records(  # noqa: PLR0913, PLR0917
    out, sec, usec, length, snaplen, linktype, interface, family, src_hi, src_lo, dst_hi, dst_lo,
    proto, sport, dport, seq, ack, flags, window, dont_fragment, tcp_options=None, mss=None,
):  # fmt: skip
    """Fill `out` with pcap records of header-only frames, one per packet; return the bytes used.

    Per packet: time, frame `length`, IP `family` (4 or 6; an IPv4 address is in the `_lo` word), `proto` (6: TCP,
    17: UDP), ports, and for TCP `seq`, `ack` and `flags`. Per capture: `linktype` (1: Ethernet with locally
    administered MACs, else Linux cooked v2 on interface index `interface`), the TCP `window` and whether IPv4
    sets don't-fragment. Optionally, per TCP packet, `tcp_options`: 0 none (data offset 5), 1 a SYN's options
    (data offset 10: MSS `mss`, 1460 when no `mss` is given, SACK-permitted, timestamps, window scale), 2
    timestamps (data offset 8, the window in units of 128 bytes, the SYN's window scale); the timestamp value is
    the packet's time in milliseconds, the echo 0 on a SYN and the same value otherwise. `length` counts the
    options. Headers are written only where the snaplen leaves room for them.
    """
    o = 0
    for i in range(sec.shape[0]):
        caplen = min(length[i], snaplen)
        put_record_header(out, o, sec[i], usec[i], caplen, length[i])
        f = o + 16
        end = f + caplen
        out[f:end] = 0
        ethertype = 0x86DD if family[i] == 6 else 0x0800
        if linktype == 1:  # Ethernet: locally administered MACs, then the EtherType
            out[f] = 0x02
            out[f + 6] = 0x02
            put_be(out, f + 12, ethertype, 2)
            ip = f + 14
        else:  # Linux cooked v2: protocol, reserved, interface index, ARPHRD_ETHER, packet type, address length
            put_be(out, f, ethertype, 2)
            put_be(out, f + 4, interface, 4)
            put_be(out, f + 8, 1, 2)
            out[f + 11] = 6
            ip = f + 20
        frame_left = length[i] - (ip - f)
        if family[i] == 6:
            t = put_ipv6(out, ip, max(frame_left - 40, 0), proto[i], src_hi[i], src_lo[i], dst_hi[i], dst_lo[i])
        else:
            t = put_ipv4(out, ip, frame_left, proto[i], src_lo[i], dst_lo[i])
            if dont_fragment:
                out[ip + 6] = 0x40
        put_ports(out, t, end, sport[i], dport[i])
        if proto[i] == 6:
            kind = 0 if tcp_options is None else tcp_options[i]
            if t + 14 <= end:
                put_be(out, t + 4, seq[i], 4)
                put_be(out, t + 8, ack[i], 4)
                out[t + 12] = 0xA0 if kind == 1 else 0x80 if kind == 2 else 0x50  # data offset, 32-bit words
                out[t + 13] = flags[i]
                # after a handshake that announced window scale 7, the window field counts units of 128 bytes
                put_be_cut(out, t + 14, window >> 7 if kind == 2 else window, 2, end)
            if kind != 0:
                tsval = (sec[i] * 1000 + usec[i] // 1000) & 0xFFFFFFFF
                tsecr = 0 if flags[i] & 0x12 == 0x02 else tsval
                put_tcp_options(out, t + 20, kind, 1460 if mss is None else mss[i], tsval, tsecr, end)
        elif proto[i] == 17 and t + 6 <= end:
            put_be(out, t + 4, max(frame_left - (t - ip), 8), 2)
        o = end
    return o
