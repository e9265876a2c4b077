"""Packet decoding and flow aggregation, compiled with numba.

The record walkers (formats.py) hand over, for a block of records in the read buffer, where each frame starts,
how much of it was captured, its original length, its link type and its timestamp. `aggregate` decodes the
link layer and the outermost IP header of each frame and adds it to the flow table in one pass: interning both
addresses, then finding or creating the row of (bin, src, dst, proto, sport, dport). All state lives in numpy
arrays owned by `FlowTable`; when a table is full the kernel stops and reports where, the table grows, and the
call resumes there.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Link types (https://www.tcpdump.org/linktypes.html) whose frames the decoder reaches IP through.
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in the writer's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW_12 = 12  # DLT_RAW on most systems
LINKTYPE_RAW_14 = 14  # DLT_RAW on OpenBSD
LINKTYPE_PPP_HDLC = 50
LINKTYPE_RAW = 101
LINKTYPE_C_HDLC = 104
LINKTYPE_LOOP = 108  # OpenBSD loopback: address family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "BSD loopback (null)",
    LINKTYPE_ETHERNET: "Ethernet, with 802.1Q/802.1ad/QinQ tags, LLC/SNAP, PPPoE and MPLS",
    LINKTYPE_PPP: "PPP",
    LINKTYPE_RAW_12: "raw IP (DLT_RAW, 12)",
    LINKTYPE_RAW_14: "raw IP (OpenBSD DLT_RAW, 14)",
    LINKTYPE_PPP_HDLC: "PPP in HDLC-like framing",
    LINKTYPE_RAW: "raw IP (101)",
    LINKTYPE_C_HDLC: "Cisco HDLC",
    LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked v1 (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

# Indices into the counters array the kernel updates.
STAT_IPV4 = 0
STAT_IPV6 = 1
STAT_NON_IP = 2
STAT_BAD_IP = 3  # an IP version nibble, but the header is cut short or impossible: no addresses to count
N_STATS = 4

# Kernel outcomes.
DONE = 0
GROW = 1  # a table is full: grow it and resume at the returned record

_ADDRESS_FAMILY_V4 = 4
_ADDRESS_FAMILY_V6 = 6
_NO_IP = 0


@njit(inline="always", cache=True)
def _u16(buf, o):
    return (np.int64(buf[o]) << 8) | np.int64(buf[o + 1])


@njit(inline="always", cache=True)
def _u32(buf, o):
    return (np.int64(buf[o]) << 24) | (np.int64(buf[o + 1]) << 16) | (np.int64(buf[o + 2]) << 8) | np.int64(buf[o + 3])


@njit(inline="always", cache=True)
def _u64(buf, o):
    v = np.uint64(0)
    for k in range(8):
        v = (v << np.uint64(8)) | np.uint64(buf[o + k])
    return v


@njit(inline="always", cache=True)
def _ip_version(buf, o, end):
    """The IP version a header announces (4 or 6), or 0 where none is captured or it is neither."""
    if o >= end:
        return _NO_IP
    v = buf[o] >> 4
    if v == 4:
        return _ADDRESS_FAMILY_V4
    if v == 6:
        return _ADDRESS_FAMILY_V6
    return _NO_IP


@njit(inline="always", cache=True)
def _ipv6_only(buf, o, end):
    """What tshark's IPv6 dissector accepts: an IPv6 promise (EtherType, link type) holds only for version 6."""
    return _ADDRESS_FAMILY_V6 if _ip_version(buf, o, end) == _ADDRESS_FAMILY_V6 else _NO_IP


@njit(cache=True)
def _after_ethertype(buf, o, end, ethertype):
    """Follow an EtherType through tags and shims (VLAN, PPPoE, MPLS, MACsec, NSH, Arista timestamps) to IP.

    Returns (offset of the IP header, its family) or (o, 0) where the frame carries no IP we can reach.
    """
    for _ in range(32):
        if ethertype == 0x0800:
            return o, _ip_version(buf, o, end)
        if ethertype == 0x86DD:
            return o, _ipv6_only(buf, o, end)
        if ethertype == 0x8100 or ethertype == 0x88A8 or ethertype == 0x9100 or ethertype == 0x9200:
            if o + 4 > end:
                return o, _NO_IP
            ethertype = _u16(buf, o + 2)
            o += 4
        elif ethertype == 0x8864:  # PPPoE session stage: 6-byte header, then a PPP protocol number
            if o + 8 > end:
                return o, _NO_IP
            ethertype = _ppp_to_ethertype(_u16(buf, o + 6))
            o += 8
        elif ethertype == 0x8847 or ethertype == 0x8848:  # MPLS: pop labels to the bottom of the stack
            while o + 4 <= end:
                bottom = buf[o + 2] & 1
                o += 4
                if bottom:
                    return o, _ip_version(buf, o, end)
            return o, _NO_IP
        elif ethertype == 0x88E5:  # MACsec: only an unencrypted, unmodified payload is readable
            if o + 8 > end or buf[o] & 0x0C:
                return o, _NO_IP
            o += 14 if buf[o] & 0x20 else 6  # TCI, SL, packet number, SCI if present
            if o + 2 > end:
                return o, _NO_IP
            ethertype = _u16(buf, o)
            o += 2
        elif ethertype == 0x894F:  # Network Service Header: length in 4-byte words, next protocol
            if o + 4 > end:
                return o, _NO_IP
            next_protocol = buf[o + 3]
            o += (np.int64(buf[o + 1]) & 0x3F) * 4
            if next_protocol == 1 or next_protocol == 2:
                return o, _ip_version(buf, o, end)
            if next_protocol != 3 or o + 14 > end:
                return o, _NO_IP
            ethertype = _u16(buf, o + 12)  # an Ethernet frame inside
            o += 14
        elif ethertype == 0xD28B:  # Arista vendor header: a timestamp of 8 or 6 bytes, then the EtherType
            if o + 4 > end or _u16(buf, o) != 1:
                return o, _NO_IP
            version = buf[o + 3]
            if version == 0x10:
                o += 12
            elif version == 0x20:
                o += 10
            else:
                return o, _NO_IP
            if o + 2 > end:
                return o, _NO_IP
            ethertype = _u16(buf, o)
            o += 2
        else:
            return o, _NO_IP
    return o, _NO_IP


@njit(inline="always", cache=True)
def _ppp_to_ethertype(protocol):
    if protocol == 0x21:
        return 0x0800
    if protocol == 0x57:
        return 0x86DD
    if protocol == 0x281:
        return 0x8847
    if protocol == 0x283:
        return 0x8848
    return 0


@njit(cache=True)
def _ppp(buf, o, end):
    """PPP with or without HDLC-like address/control bytes and protocol-field compression."""
    if o + 2 <= end and buf[o] == 0xFF and buf[o + 1] == 0x03:
        o += 2
    if o >= end:
        return o, _NO_IP
    if buf[o] & 1:  # a compressed, one-byte protocol field
        protocol = np.int64(buf[o])
        o += 1
    else:
        if o + 2 > end:
            return o, _NO_IP
        protocol = _u16(buf, o)
        o += 2
    return _after_ethertype(buf, o, end, _ppp_to_ethertype(protocol))


@njit(cache=True)
def _network_layer(buf, p, end, linktype):
    """Where the outermost IP header of a frame starts, and its family (0: not IP or not captured)."""
    if linktype == LINKTYPE_ETHERNET:
        if p + 14 > end:
            return p, _NO_IP
        ethertype = _u16(buf, p + 12)
        o = p + 14
        if ethertype <= 1500:  # an 802.3 length: IP only behind LLC/SNAP
            if o + 8 <= end and buf[o] == 0xAA and buf[o + 1] == 0xAA and buf[o + 2] == 0x03:
                return _after_ethertype(buf, o + 8, end, _u16(buf, o + 6))
            return o, _NO_IP
        return _after_ethertype(buf, o, end, ethertype)
    if linktype == LINKTYPE_LINUX_SLL2:
        if p + 20 > end:
            return p, _NO_IP
        return _after_ethertype(buf, p + 20, end, _u16(buf, p))
    if linktype == LINKTYPE_LINUX_SLL:
        if p + 16 > end:
            return p, _NO_IP
        return _after_ethertype(buf, p + 16, end, _u16(buf, p + 14))
    if linktype == LINKTYPE_RAW or linktype == LINKTYPE_RAW_12 or linktype == LINKTYPE_RAW_14:
        return p, _ip_version(buf, p, end)
    if linktype == LINKTYPE_IPV4:  # like tshark's IPv4 dissector, follow a version-6 header
        return p, _ip_version(buf, p, end)
    if linktype == LINKTYPE_IPV6:
        return p, _ipv6_only(buf, p, end)
    if linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
        if p + 4 > end:
            return p, _NO_IP
        family = _u32(buf, p)
        if linktype == LINKTYPE_NULL and family > 0xFFFF:  # written in the other byte order
            family = ((family & 0xFF) << 24) | ((family & 0xFF00) << 8) | ((family >> 8) & 0xFF00) | (family >> 24)
        if family == 2:
            return p + 4, _ip_version(buf, p + 4, end)
        if family == 24 or family == 28 or family == 30:  # AF_INET6 of NetBSD/OpenBSD, FreeBSD, macOS
            return p + 4, _ipv6_only(buf, p + 4, end)
        return p + 4, _NO_IP
    if linktype == LINKTYPE_PPP or linktype == LINKTYPE_PPP_HDLC:
        return _ppp(buf, p, end)
    if linktype == LINKTYPE_C_HDLC:
        if p + 4 > end:
            return p, _NO_IP
        return _after_ethertype(buf, p + 4, end, _u16(buf, p + 2))
    return p, _NO_IP


@njit(inline="always", cache=True)
def _has_ports(proto):
    # TCP, UDP, DCCP, SCTP and UDP-Lite all begin with 16-bit source and destination ports.
    return proto == 6 or proto == 17 or proto == 33 or proto == 132 or proto == 136


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


@njit(cache=True)
def aggregate(
    buf,
    rec_off,
    rec_caplen,
    rec_origlen,
    rec_link,
    rec_sec,
    start,
    n_records,
    bin_seconds,
    stats,
    counts,
    flow_slots,
    f_bin,
    f_src,
    f_dst,
    f_proto,
    f_sport,
    f_dport,
    f_packets,
    f_bytes,
    ip_slots,
    ip_family,
    ip_hi,
    ip_lo,
):
    """Add records [start, n_records) to the flow table; return (DONE, n) or (GROW, first record not added)."""
    flow_mask = np.uint64(flow_slots.shape[0] - 1)
    for i in range(start, n_records):
        p = rec_off[i]
        end = p + rec_caplen[i]
        o, family = _network_layer(buf, p, end, rec_link[i])
        proto = 0
        sport = 0
        dport = 0
        transport = -1
        src_hi = src_lo = dst_hi = dst_lo = np.uint64(0)
        if family == _ADDRESS_FAMILY_V4:
            header = (buf[o] & 0x0F) * 4 if o < end else 0
            total = _u16(buf, o + 2) if o + 4 <= end else 0
            # like tshark: no addresses without a whole header, a header length of 20 or more, and a total
            # length (0 means segmentation offload) not below it
            if o + 20 > end or header < 20 or (total != 0 and total < header):
                stats[STAT_BAD_IP] += 1
                continue
            else:
                src_lo = np.uint64(_u32(buf, o + 12))
                dst_lo = np.uint64(_u32(buf, o + 16))
                proto = np.int64(buf[o + 9])
                if (_u16(buf, o + 6) & 0x1FFF) == 0:
                    transport = o + (buf[o] & 0x0F) * 4
        elif family == _ADDRESS_FAMILY_V6:
            if o + 40 > end:
                stats[STAT_BAD_IP] += 1
                continue
            else:
                src_hi = _u64(buf, o + 8)
                src_lo = _u64(buf, o + 16)
                dst_hi = _u64(buf, o + 24)
                dst_lo = _u64(buf, o + 32)
                proto = np.int64(buf[o + 6])
                t = o + 40
                first_fragment = True
                for _ in range(32):  # walk the extension headers to the upper-layer protocol
                    if proto == 0 or proto == 43 or proto == 60 or proto == 135 or proto == 139 or proto == 140:
                        if t + 2 > end:
                            break
                        proto = np.int64(buf[t])
                        t += (np.int64(buf[t + 1]) + 1) * 8
                    elif proto == 44:  # fragment header: only the first fragment carries the ports
                        if t + 8 > end:
                            break
                        first_fragment = (_u16(buf, t + 2) & 0xFFF8) == 0
                        proto = np.int64(buf[t])
                        t += 8
                    elif proto == 51:  # authentication header, length in 4-byte units
                        if t + 2 > end:
                            break
                        proto = np.int64(buf[t])
                        t += (np.int64(buf[t + 1]) + 2) * 4
                    else:
                        break
                if first_fragment:
                    transport = t
        if family == _NO_IP:
            stats[STAT_NON_IP] += 1
            continue
        if counts[0] >= f_bin.shape[0] or counts[1] + 2 > ip_family.shape[0]:
            return GROW, i
        stats[STAT_IPV4 if family == _ADDRESS_FAMILY_V4 else STAT_IPV6] += 1
        if transport >= 0 and _has_ports(proto) and transport + 4 <= end:
            sport = _u16(buf, transport)
            dport = _u16(buf, transport + 2)

        src = _intern_ip(family, src_hi, src_lo, ip_slots, ip_family, ip_hi, ip_lo, counts)
        dst = _intern_ip(family, dst_hi, dst_lo, ip_slots, ip_family, ip_hi, ip_lo, counts)
        sec = rec_sec[i]
        b = sec - sec % bin_seconds
        s = _flow_hash(b, src, dst, proto, sport, dport) & flow_mask
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
                break
            if (
                f_bin[row] == b
                and f_src[row] == src
                and f_dst[row] == dst
                and f_dport[row] == dport
                and f_sport[row] == sport
                and f_proto[row] == proto
            ):
                break
            s = (s + np.uint64(1)) & flow_mask
        f_packets[row] += 1
        f_bytes[row] += rec_origlen[i]
    return DONE, n_records


@njit(cache=True)
def rehash(slots, key_hash):
    """Rebuild an open-addressing slot array of a new size from the precomputed hash of every row."""
    slots[:] = -1
    mask = np.uint64(slots.shape[0] - 1)
    for row in range(key_hash.shape[0]):
        s = key_hash[row] & mask
        while slots[s] >= 0:
            s = (s + np.uint64(1)) & mask
        slots[s] = row


@njit(cache=True)
def flow_hashes(f_bin, f_src, f_dst, f_proto, f_sport, f_dport):
    out = np.empty(f_bin.shape[0], dtype=np.uint64)
    for row in range(f_bin.shape[0]):
        out[row] = _flow_hash(f_bin[row], f_src[row], f_dst[row], f_proto[row], f_sport[row], f_dport[row])
    return out


@njit(cache=True)
def ip_hashes(ip_family, ip_hi, ip_lo):
    out = np.empty(ip_family.shape[0], dtype=np.uint64)
    for row in range(ip_family.shape[0]):
        out[row] = _ip_hash(ip_family[row], ip_hi[row], ip_lo[row])
    return out
