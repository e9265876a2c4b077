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
