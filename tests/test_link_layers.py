"""The tags, shims and serial link layers decode.py follows to IP, on hand-built frames, checked against tshark.

One capture per case: mimir's flows must be exactly what the frames carry (addresses, protocol, ports, packets,
bytes), the frames that hold no reachable IP (each rule of decode.py that gives up: truncated, encrypted, another
protocol) must be counted as such, and tshark must read the same address pairs, packets and bytes from the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from craft import (
    ETH_IPV4,
    ETH_IPV6,
    Record,
    arista,
    chdlc,
    ether,
    ipv4,
    ipv6,
    llc_snap,
    macsec,
    mpls,
    nsh,
    pcap,
    ppp,
    pppoe_session,
    tcp,
    udp,
)
from oracle import flow_totals, tshark_totals

from mimir.capture.ingest import ingest

T0 = 1_700_000_000

ETHERNET, PPP, PPP_HDLC, C_HDLC = 1, 9, 50, 104
VLAN, PPPOE, MPLS, MPLS_MULTICAST, MACSEC, NSH, ARISTA = 0x8100, 0x8864, 0x8847, 0x8848, 0x88E5, 0x894F, 0xD28B
PPP_IPV4, PPP_IPV6, PPP_MPLS, PPP_LCP = 0x21, 0x57, 0x281, 0xC021
SLARP = 0x8035
NSH_IPV4, NSH_IPV6, NSH_ETHERNET = 1, 2, 3
MACSEC_ENCRYPTED, MACSEC_CHANGED = 0x0C, 0x04


@dataclass(frozen=True)
class Packet:
    """An IP packet and the flow key mimir must give it."""

    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    data: bytes


def _v4(src: str, dst: str, sport: int, dport: int) -> Packet:
    return Packet(src, dst, 6, sport, dport, ipv4(src, dst, 6, tcp(sport, dport, b"x" * 64)))


def _v6(src: str, dst: str, sport: int, dport: int) -> Packet:
    return Packet(src, dst, 17, sport, dport, ipv6(src, dst, 17, udp(sport, dport, b"y" * 64)))


V4 = _v4("10.0.0.1", "10.0.0.2", 40000, 80)
V4B = _v4("192.0.2.7", "198.51.100.9", 1234, 443)
V6 = _v6("fd00::1", "fd00::2", 5353, 53)


@dataclass
class Case:
    """Frames of one link type; `ip` pairs a frame with the packet it carries, `non_ip` frames carry none."""

    linktype: int
    ip: list[tuple[bytes, Packet]]
    non_ip: list[bytes] = field(default_factory=list)
    bad_ip: list[bytes] = field(default_factory=list)  # an IP header, cut short

    @property
    def frames(self) -> list[bytes]:
        return [frame for frame, _ in self.ip] + self.non_ip + self.bad_ip


CASES = {
    "pppoe": Case(
        ETHERNET,
        ip=[
            (ether(pppoe_session(V4.data, PPP_IPV4), PPPOE), V4),
            (ether(pppoe_session(V6.data, PPP_IPV6), PPPOE), V6),
            (ether(pppoe_session(V4B.data, PPP_IPV4), PPPOE, (VLAN,)), V4B),  # behind an 802.1Q tag
        ],
        non_ip=[
            ether(pppoe_session(b"\x01\x01\x00\x04", PPP_LCP), PPPOE),  # a PPP control protocol
            ether(pppoe_session(V4.data, PPP_IPV4), PPPOE)[: 14 + 7],  # cut inside the PPPoE header
        ],
    ),
    "pppoe-mpls": Case(ETHERNET, ip=[(ether(pppoe_session(mpls(V4.data, (100,)), PPP_MPLS), PPPOE), V4)]),
    "mpls": Case(
        ETHERNET,
        ip=[
            (ether(mpls(V4.data, (16,)), MPLS), V4),
            (ether(mpls(V6.data, (16, 17, 18)), MPLS), V6),  # a stack of three labels
            (ether(mpls(V4B.data, (20, 21)), MPLS_MULTICAST), V4B),
        ],
        non_ip=[
            ether(mpls(bytes([0x50]) + V4.data[1:], (16,)), MPLS),  # version 5 below the stack: not IP
            ether(mpls(b"", (16, 17), bottom=False), MPLS),  # the frame ends before the bottom of the stack
        ],
        bad_ip=[ether(mpls(V4.data, (16,)), MPLS)[: 14 + 4 + 10]],  # the IPv4 header cut before its addresses
    ),
    "mpls-vlan": Case(ETHERNET, ip=[(ether(mpls(V6.data, (99,)), MPLS, (VLAN,)), V6)]),
    "macsec": Case(
        ETHERNET,
        ip=[
            (ether(macsec(V4.data, ETH_IPV4), MACSEC), V4),  # integrity only, no SCI
            (ether(macsec(V6.data, ETH_IPV6, sci=bytes.fromhex("0200000000010001")), MACSEC), V6),
        ],
        non_ip=[
            ether(macsec(V4B.data, ETH_IPV4, tci=MACSEC_ENCRYPTED), MACSEC),
            ether(macsec(V4B.data, ETH_IPV4, tci=MACSEC_CHANGED), MACSEC),
            ether(macsec(V4.data, ETH_IPV4), MACSEC)[: 14 + 5],  # cut inside the SecTAG
            ether(macsec(V4.data, ETH_IPV4, sci=bytes(8)), MACSEC)[: 14 + 6 + 7],  # cut inside the SCI
        ],
    ),
    "nsh": Case(
        ETHERNET,
        ip=[
            (ether(nsh(V4.data, NSH_IPV4), NSH), V4),  # MD type 2, no metadata
            (ether(nsh(V6.data, NSH_IPV6, context=bytes(range(16))), NSH), V6),  # MD type 1
            (ether(nsh(ether(V4B.data, ETH_IPV4), NSH_ETHERNET), NSH), V4B),  # an Ethernet frame inside
        ],
        non_ip=[
            ether(nsh(V4.data, 0x42), NSH),  # a next protocol decode.py does not follow
            ether(nsh(V4.data, NSH_IPV4), NSH)[: 14 + 3],  # cut inside the base header
            ether(nsh(ether(V4.data, ETH_IPV4), NSH_ETHERNET), NSH)[: 14 + 8 + 10],  # the inner Ethernet cut short
        ],
    ),
    "arista": Case(
        ETHERNET,
        ip=[
            (ether(arista(V4.data, ETH_IPV4), ARISTA), V4),  # 64-bit timestamp
            (ether(arista(V6.data, ETH_IPV6, version=0x20), ARISTA), V6),  # 48-bit timestamp
        ],
        non_ip=[
            ether(arista(V4B.data, ETH_IPV4, subtype=2), ARISTA),  # not a timestamp header
            ether(arista(V4B.data, ETH_IPV4, version=0x30), ARISTA),  # an unknown timestamp format
            ether(arista(V4.data, ETH_IPV4), ARISTA)[: 14 + 13],  # cut before the inner EtherType
        ],
    ),
    "llc-snap": Case(
        ETHERNET,
        ip=[
            (ether(llc_snap(V4.data, ETH_IPV4), len(llc_snap(V4.data, ETH_IPV4))), V4),
            (ether(llc_snap(V6.data, ETH_IPV6), len(llc_snap(V6.data, ETH_IPV6))), V6),
        ],
        non_ip=[
            ether(bytes([0x42, 0x42, 0x03]) + bytes(35), 38),  # 802.2 LLC without SNAP (spanning tree)
            ether(llc_snap(V4.data, ETH_IPV4), len(llc_snap(V4.data, ETH_IPV4)))[: 14 + 7],  # SNAP cut short
        ],
    ),
    "ppp": Case(
        PPP,
        ip=[
            (ppp(V4.data, PPP_IPV4), V4),  # HDLC-like address and control, 2-byte protocol
            (ppp(V6.data, PPP_IPV6, hdlc=False), V6),  # no address and control
            (ppp(V4B.data, PPP_IPV4, hdlc=False, compressed=True), V4B),  # protocol-field compression
        ],
        non_ip=[ppp(b"\x01\x01\x00\x04", PPP_LCP), ppp(V4.data, PPP_IPV4)[:3]],  # control protocol; cut
    ),
    "ppp-compressed-after-address": Case(PPP, ip=[(ppp(V6.data, PPP_IPV6, compressed=True), V6)]),
    "ppp-mpls": Case(PPP, ip=[(ppp(mpls(V4.data, (300,)), PPP_MPLS), V4)]),
    "ppp-hdlc": Case(
        PPP_HDLC,
        ip=[(ppp(V4.data, PPP_IPV4), V4), (ppp(V6.data, PPP_IPV6), V6)],
        non_ip=[ppp(b"\x01\x01\x00\x04", PPP_LCP)],
    ),
    "c-hdlc": Case(
        C_HDLC,
        ip=[
            (chdlc(V4.data, ETH_IPV4), V4),
            (chdlc(V6.data, ETH_IPV6, address=0x8F), V6),  # broadcast address
            (chdlc(mpls(V4B.data, (500,)), MPLS), V4B),
        ],
        non_ip=[chdlc(bytes(20), SLARP), chdlc(V4.data, ETH_IPV4)[:3]],  # Cisco's SLARP; cut in the header
    ),
}


def expected_rows(case: Case) -> list[tuple]:
    totals: dict[tuple, list[int]] = {}
    for frame, p in case.ip:
        row = totals.setdefault((T0, p.src, p.dst, p.proto, p.sport, p.dport), [0, 0])
        row[0] += 1
        row[1] += len(frame)
    return sorted((*key, packets, nbytes) for key, (packets, nbytes) in totals.items())


@pytest.mark.parametrize("name", sorted(CASES))
def test_link_layer_matches_the_frames_and_tshark(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(pcap([Record(T0 * 10**6 + k, frame) for k, frame in enumerate(case.frames)], case.linktype))
    flows, summary = ingest([path], progress=False)
    assert sorted(tuple(r.values()) for r in flows.to_pylist()) == expected_rows(case)
    assert (summary.packets, summary.ip_packets) == (len(case.frames), len(case.ip))
    assert (summary.non_ip_packets, summary.unreadable_ip_packets) == (len(case.non_ip), len(case.bad_ip))
    oracle = tshark_totals(path)
    assert oracle.returncode == 0, oracle.stderr
    assert flow_totals(flows) == oracle.totals
