"""Hand-built frames and capture files for tests: every field is set here, so every expected value is known."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD


def _addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def tcp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x10, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, fragment: tuple[int, bool] = (0, False)) -> bytes:
    """An IPv4 packet; `fragment` is (byte offset of the payload in the datagram, whether more fragments follow)."""
    offset, more = fragment
    flags = (0x2000 if more else 0) | (offset // 8)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 7, flags, 64, proto, 0, _addr(src), _addr(dst))
    return header + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64, _addr(src), _addr(dst)) + payload


def ipv6_option_header(next_header: int, units: int = 0) -> bytes:
    """A hop-by-hop, destination-options or routing header of (units + 1) * 8 bytes."""
    return bytes([next_header, units]) + bytes(6 + 8 * units)


def ipv6_fragment_header(next_header: int, offset: int, more: bool) -> bytes:
    return struct.pack("!BBHI", next_header, 0, offset | (1 if more else 0), 99)


def ether(payload: bytes, ethertype: int, tags: tuple[int, ...] = ()) -> bytes:
    """An Ethernet frame; tags are the TPIDs of stacked VLAN tags, outermost first (0x88A8 for 802.1ad)."""
    header = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"
    vid = 10
    for tpid in tags:
        header += struct.pack("!HH", tpid, vid)
        vid += 1
    return header + struct.pack("!H", ethertype) + payload


def sll(payload: bytes, protocol: int) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00", protocol) + payload


def sll2(payload: bytes, protocol: int) -> bytes:
    return struct.pack("!HHIHBB8s", protocol, 0, 1, 1, 0, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00") + payload


def null(payload: bytes, family: int, byteorder: str = "<") -> bytes:
    return struct.pack(byteorder + "I", family) + payload


def pppoe_session(payload: bytes, ppp_protocol: int, session: int = 0x1234) -> bytes:
    """A PPPoE session-stage header (version 1, type 1, code 0) and PPP protocol number; EtherType 0x8864."""
    return struct.pack("!BBHHH", 0x11, 0, session, 2 + len(payload), ppp_protocol) + payload


def mpls(payload: bytes, labels: tuple[int, ...], *, bottom: bool = True) -> bytes:
    """An MPLS label stack, outermost first, the last entry marked bottom of stack (unless not bottom); 0x8847."""
    entries = b""
    for k, label in enumerate(labels):
        s_bit = 1 if bottom and k == len(labels) - 1 else 0
        entries += struct.pack("!I", (label << 12) | (s_bit << 8) | 64)
    return entries + payload


def macsec(payload: bytes, ethertype: int, *, sci: bytes | None = None, tci: int = 0) -> bytes:
    """A MACsec frame body (EtherType 0x88E5): SecTAG, the protected EtherType and payload, a 16-byte ICV.

    tci holds the E (0x08) and C (0x04) bits; the SC bit (0x20) is set when an 8-byte SCI is given. The short length
    is 0 (48 bytes of data or more) and the packet number 1.
    """
    sectag = struct.pack("!BBI", tci | (0x20 if sci is not None else 0), 0, 1) + (sci or b"")
    return sectag + struct.pack("!H", ethertype) + payload + bytes(16)


def nsh(payload: bytes, next_protocol: int, context: bytes = b"") -> bytes:
    """A Network Service Header (EtherType 0x894F): MD type 1 with 16 bytes of context, else MD type 2 and no TLVs.

    next_protocol: 1 IPv4, 2 IPv6, 3 Ethernet. Service path 7, service index 255, TTL 63.
    """
    words = 2 + len(context) // 4
    md_type = 1 if context else 2
    return (
        struct.pack("!BBBBI", 63 >> 2, ((63 & 3) << 6) | words, md_type, next_protocol, (7 << 8) | 255)
        + context
        + payload
    )


def arista(payload: bytes, ethertype: int, *, version: int = 0x10, subtype: int = 1) -> bytes:
    """An Arista vendor-specific header (EtherType 0xD28B): sub-type, version, a 64-bit (0x10) or 48-bit (0x20)
    timestamp, then the EtherType of what follows."""
    stamp = struct.pack("!II", 1_700_000_000, 123) if version != 0x20 else struct.pack("!HI", 1, 123)
    return struct.pack("!HH", subtype, version) + stamp + struct.pack("!H", ethertype) + payload


def llc_snap(payload: bytes, ethertype: int) -> bytes:
    """An 802.2 LLC header with a SNAP extension (SAPs 0xAA, UI, OUI 0) for an 802.3 frame: ether(x, len(x))."""
    return bytes([0xAA, 0xAA, 0x03, 0, 0, 0]) + struct.pack("!H", ethertype) + payload


def ppp(payload: bytes, protocol: int, *, hdlc: bool = True, compressed: bool = False) -> bytes:
    """A PPP frame (link types 9 and 50): address and control 0xFF 0x03 if hdlc, a 1-byte protocol if compressed."""
    field = bytes([protocol]) if compressed else struct.pack("!H", protocol)
    return (b"\xff\x03" if hdlc else b"") + field + payload


def chdlc(payload: bytes, protocol: int, *, address: int = 0x0F) -> bytes:
    """A Cisco HDLC frame (link type 104): address (0x0F unicast, 0x8F broadcast), control 0, an EtherType."""
    return struct.pack("!BBH", address, 0, protocol) + payload


@dataclass
class Record:
    """One packet: timestamp in the writer's units, the captured bytes, the original length (default: all)."""

    ts: int
    data: bytes
    origlen: int | None = None

    @property
    def length(self) -> int:
        return len(self.data) if self.origlen is None else self.origlen


def pcap(records: list[Record], linktype: int, *, big: bool = False, nano: bool = False, snaplen: int = 65535) -> bytes:
    """A classic pcap; Record.ts is in microseconds (or nanoseconds with nano=True) since the epoch."""
    order = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    per_second = 1_000_000_000 if nano else 1_000_000
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    for r in records:
        sec, frac = divmod(r.ts, per_second)
        out += struct.pack(order + "IIII", sec, frac, len(r.data), r.length) + r.data
    return out


@dataclass
class Interface:
    linktype: int
    tsresol: int | None = None  # the if_tsresol byte; None: microseconds
    tsoffset: int | None = None  # if_tsoffset seconds
    snaplen: int = 0


@dataclass
class Section:
    interfaces: list[Interface]
    packets: list[tuple[str, int, Record]] = field(default_factory=list)  # (epb|spb|opb, interface, record)
    big: bool = False


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", btype, length) + body + struct.pack(order + "I", length)


def _option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def pcapng(sections: list[Section]) -> bytes:
    """A pcapng file; Record.ts is in the units of the packet's interface."""
    out = b""
    for section in sections:
        o = ">" if section.big else "<"
        out += _block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _option(o, 0, b""))
        for iface in section.interfaces:
            options = b""
            if iface.tsresol is not None:
                options += _option(o, 9, bytes([iface.tsresol]))
            if iface.tsoffset is not None:
                options += _option(o, 14, struct.pack(o + "q", iface.tsoffset))
            options += _option(o, 0, b"") if options else b""
            out += _block(o, 1, struct.pack(o + "HHI", iface.linktype, 0, iface.snaplen) + options)
        for kind, index, r in section.packets:
            hi, lo = r.ts >> 32, r.ts & 0xFFFFFFFF
            if kind == "epb":
                out += _block(o, 6, struct.pack(o + "IIIII", index, hi, lo, len(r.data), r.length) + r.data)
            elif kind == "opb":
                out += _block(o, 2, struct.pack(o + "HHIIII", index, 0, hi, lo, len(r.data), r.length) + r.data)
            else:
                out += _block(o, 3, struct.pack(o + "I", r.length) + r.data)
        out += _block(o, 4, _option(o, 0, b""))  # a name resolution block, to be skipped
    return out
