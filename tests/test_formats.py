"""Capture formats and link types, on hand-built files whose every value is known, checked against tshark too."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from craft import (
    ETH_IPV4,
    ETH_IPV6,
    Interface,
    Record,
    Section,
    ether,
    ipv4,
    ipv6,
    ipv6_fragment_header,
    ipv6_option_header,
    null,
    pcap,
    pcapng,
    sll,
    sll2,
    tcp,
    udp,
)
from oracle import flow_totals, tshark_totals

from mimir.capture.ingest import ingest

T0 = 1_700_000_000  # an epoch second


def v4_packets() -> list[bytes]:
    return [
        ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, b"x" * 100)),
        ipv4("10.0.0.2", "10.0.0.1", 6, tcp(80, 40000, b"y" * 900)),
        ipv4("10.0.0.1", "10.0.0.3", 17, udp(5353, 53, b"q" * 30)),
    ]


def v6_packets() -> list[bytes]:
    return [
        ipv6("fd00::1", "fd00::2", 6, tcp(40001, 443, b"a" * 200)),
        ipv6("fd00::2", "fd00::1", 17, udp(53, 5353, b"b" * 60)),
    ]


def rows(table: pa.Table) -> list[tuple]:
    return [tuple(r.values()) for r in table.to_pylist()]


def check_against_tshark(path: Path) -> pa.Table:
    flows, _ = ingest([path], progress=False)
    oracle = tshark_totals(path)
    assert oracle.returncode == 0, oracle.stderr
    assert flow_totals(flows) == oracle.totals
    return flows


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_classic_pcap_variants_give_the_same_flows(tmp_path: Path, big: bool, nano: bool) -> None:
    unit = 1_000_000_000 if nano else 1_000_000
    frames = [ether(p, ETH_IPV4) for p in v4_packets()] + [ether(p, ETH_IPV6) for p in v6_packets()]
    records = [Record(T0 * unit + k * unit // 3, f) for k, f in enumerate(frames)]
    path = write(tmp_path, "x.pcapng", pcap(records, 1, big=big, nano=nano))  # the name must not matter
    flows = check_against_tshark(path)
    assert rows(flows) == [
        (T0, "10.0.0.1", "10.0.0.2", 6, 40000, 80, 1, 14 + 20 + 20 + 100),
        (T0, "10.0.0.1", "10.0.0.3", 17, 5353, 53, 1, 14 + 20 + 8 + 30),
        (T0, "10.0.0.2", "10.0.0.1", 6, 80, 40000, 1, 14 + 20 + 20 + 900),
        (T0 + 1, "fd00::1", "fd00::2", 6, 40001, 443, 1, 14 + 40 + 20 + 200),
        (T0 + 1, "fd00::2", "fd00::1", 17, 53, 5353, 1, 14 + 40 + 8 + 60),
    ]


def test_pcapng_interfaces_resolutions_sections_and_block_kinds(tmp_path: Path) -> None:
    eth = ether(v4_packets()[0], ETH_IPV4)
    raw6 = v6_packets()[0]
    first = Section(
        interfaces=[Interface(1), Interface(101, tsresol=9, tsoffset=100), Interface(229, tsresol=0x80 | 20)],
        packets=[
            ("epb", 0, Record(T0 * 10**6 + 5, eth)),  # microseconds
            ("epb", 1, Record((T0 - 100) * 10**9 + 7, raw6)),  # nanoseconds, plus a 100 s offset
            ("epb", 2, Record((T0 + 2) << 20, raw6)),  # 2^-20 s units
            ("spb", 0, Record(0, eth)),  # no timestamp: it takes the previous one
        ],
    )
    second = Section(  # a big-endian section with a new set of interfaces
        interfaces=[Interface(113, tsresol=3)],
        packets=[("opb", 0, Record((T0 + 5) * 1000, sll(v4_packets()[1], ETH_IPV4)))],
        big=True,
    )
    path = write(tmp_path, "multi.pcap", pcapng([first, second]))
    flows = check_against_tshark(path)
    assert rows(flows) == [
        (T0, "10.0.0.1", "10.0.0.2", 6, 40000, 80, 1, len(eth)),
        (T0, "fd00::1", "fd00::2", 6, 40001, 443, 1, len(raw6)),
        (T0 + 2, "10.0.0.1", "10.0.0.2", 6, 40000, 80, 1, len(eth)),
        (T0 + 2, "fd00::1", "fd00::2", 6, 40001, 443, 1, len(raw6)),
        (T0 + 5, "10.0.0.2", "10.0.0.1", 6, 80, 40000, 1, 16 + len(v4_packets()[1])),
    ]
    _, summary = ingest([path], progress=False)
    assert summary.files[0].link_types == [1, 101, 229, 113]
    assert summary.first_ts == pytest.approx(T0 + 5e-6)
    assert summary.last_ts == pytest.approx(T0 + 5)


def link_type_cases() -> list[tuple[str, int, list[bytes]]]:
    v4, v6 = v4_packets(), v6_packets()
    return [
        ("ethernet-802.1Q", 1, [ether(p, ETH_IPV4, (0x8100,)) for p in v4]),
        ("ethernet-802.1ad-QinQ", 1, [ether(p, ETH_IPV6, (0x88A8, 0x8100)) for p in v6]),
        ("linux-sll", 113, [sll(p, ETH_IPV4) for p in v4] + [sll(p, ETH_IPV6) for p in v6]),
        ("linux-sll2", 276, [sll2(p, ETH_IPV4) for p in v4] + [sll2(p, ETH_IPV6) for p in v6]),
        ("raw-101", 101, v4 + v6),
        ("raw-12", 12, v4 + v6),
        ("raw-14", 14, v4 + v6),
        ("ipv4-228", 228, v4),
        ("ipv6-229", 229, v6),
        ("null-little", 0, [null(p, 2) for p in v4] + [null(p, 30) for p in v6]),
        ("null-big", 0, [null(p, 2, ">") for p in v4] + [null(p, 24, ">") for p in v6]),
        ("null-freebsd-inet6", 0, [null(p, 28) for p in v6]),
        ("openbsd-loop", 108, [null(p, 2, ">") for p in v4] + [null(p, 24, ">") for p in v6]),
    ]


@pytest.mark.parametrize(("name", "linktype", "frames"), link_type_cases(), ids=[c[0] for c in link_type_cases()])
def test_link_types(tmp_path: Path, name: str, linktype: int, frames: list[bytes]) -> None:
    path = write(tmp_path, f"{name}.pcap", pcap([Record(T0 * 10**6, f) for f in frames], linktype))
    flows = check_against_tshark(path)
    assert flows.num_rows == len(frames)
    assert sum(flows.column("bytes").to_pylist()) == sum(map(len, frames))
    assert set(flows.column("dport").to_pylist()) <= {80, 40000, 53, 443, 5353}
    assert 0 not in flows.column("dport").to_pylist()


def test_ipv6_extension_headers_and_fragments(tmp_path: Path) -> None:
    segment = tcp(1111, 2222, b"z" * 64)
    chain = ipv6_option_header(43, 1) + ipv6_option_header(60) + ipv6_option_header(6, 2)  # hop, routing, dest
    first = ipv6_fragment_header(17, 0, more=True) + udp(3333, 4444, b"f" * 40)
    later = ipv6_fragment_header(17, 48, more=False) + b"g" * 40
    frames = [
        ether(ipv6("fd00::a", "fd00::b", 0, chain + segment), ETH_IPV6),
        ether(ipv6("fd00::a", "fd00::c", 44, first), ETH_IPV6),
        ether(ipv6("fd00::a", "fd00::c", 44, later), ETH_IPV6),
    ]
    path = write(tmp_path, "ext.pcap", pcap([Record(T0 * 10**6, f) for f in frames], 1))
    flows = check_against_tshark(path)
    assert rows(flows) == [
        (T0, "fd00::a", "fd00::b", 6, 1111, 2222, 1, len(frames[0])),
        (T0, "fd00::a", "fd00::c", 17, 0, 0, 1, len(frames[2])),  # a later fragment: no ports
        (T0, "fd00::a", "fd00::c", 17, 3333, 4444, 1, len(frames[1])),
    ]


def test_ipv4_fragments_and_uncaptured_ports(tmp_path: Path) -> None:
    datagram = udp(5000, 6000, b"d" * 100)
    frames = [
        ether(ipv4("10.1.0.1", "10.1.0.2", 17, datagram[:64], fragment=(0, True)), ETH_IPV4),
        ether(ipv4("10.1.0.1", "10.1.0.2", 17, datagram[64:], fragment=(64, False)), ETH_IPV4),
        ether(ipv4("10.1.0.3", "10.1.0.4", 6, tcp(7000, 8000, b"p" * 500)), ETH_IPV4),
    ]
    records = [Record(T0 * 10**6, f) for f in frames[:2]]
    records.append(Record(T0 * 10**6, frames[2][:34], origlen=len(frames[2])))  # cut after the IP header
    path = write(tmp_path, "frag.pcap", pcap(records, 1, snaplen=96))
    flows = check_against_tshark(path)
    assert rows(flows) == [
        (T0, "10.1.0.1", "10.1.0.2", 17, 0, 0, 1, len(frames[1])),
        (T0, "10.1.0.1", "10.1.0.2", 17, 5000, 6000, 1, len(frames[0])),
        (T0, "10.1.0.3", "10.1.0.4", 6, 0, 0, 1, len(frames[2])),  # bytes: the original frame length
    ]


def test_non_ip_and_tunnels_use_the_outer_header(tmp_path: Path) -> None:
    arp = ether(b"\x00\x01\x08\x00\x06\x04\x00\x01" + bytes(20), 0x0806)
    inner = ipv4("192.168.0.1", "192.168.0.2", 6, tcp(1, 2))
    tunnel = ether(ipv4("10.9.0.1", "10.9.0.2", 4, inner), ETH_IPV4)  # IP in IP
    path = write(tmp_path, "tun.pcap", pcap([Record(T0 * 10**6, f) for f in (arp, tunnel)], 1))
    flows = check_against_tshark(path)
    assert rows(flows) == [(T0, "10.9.0.1", "10.9.0.2", 4, 0, 0, 1, len(tunnel))]
    _, summary = ingest([path], progress=False)
    assert (summary.packets, summary.ip_packets, summary.non_ip_packets) == (2, 1, 1)


def test_gzip_input_is_read_by_magic_number(tmp_path: Path) -> None:
    frames = [ether(p, ETH_IPV4) for p in v4_packets()]
    plain = pcap([Record(T0 * 10**6 + k, f) for k, f in enumerate(frames)], 1)
    ng = pcapng([Section([Interface(1)], [("epb", 0, Record(T0 * 10**6 + k, f)) for k, f in enumerate(frames)])])
    expected, _ = ingest([write(tmp_path, "plain.pcap", plain)], progress=False)
    for name, data in (("a.pcap.gz", plain), ("b.bin", plain), ("c.pcapng.gz", ng)):
        path = write(tmp_path, name, gzip.compress(data, mtime=0))
        flows, summary = ingest([path], progress=False)
        assert flows.equals(expected)
        assert summary.files[0].compressed


def test_rotated_capture_makes_one_table(tmp_path: Path) -> None:
    from mimir.capture.generate import write_capture

    whole = tmp_path / "whole.pcap"
    write_capture(whole, 30_000, seed=5, rate=3000.0)
    subprocess.run(["editcap", "-c", "7000", str(whole), str(tmp_path / "part.pcap")], check=True)
    parts = sorted(tmp_path.glob("part_*.pcap"))
    assert len(parts) == 5
    rotated, summary = ingest(parts, progress=False)
    single, _ = ingest([whole], progress=False)
    assert rotated.equals(single)  # flows that straddle a file boundary are merged, not duplicated
    assert summary.packets == 30_000 and len(summary.files) == 5
