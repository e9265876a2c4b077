"""The capture reader's hostile and odd cases, each decided with the real tshark as the oracle (README, "Conformance
with tshark"): IP headers whose lengths lie, link-layer fields that lead away from IP, old pcap versions, lengths
and timestamps beyond any capture, cut-short section headers and gzip bombs."""

from __future__ import annotations

import gzip
import ipaddress
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from craft import (
    ETH_IPV4,
    Interface,
    Record,
    Section,
    arista,
    chdlc,
    ether,
    ipv4,
    ipv6,
    ipv6_option_header,
    macsec,
    mpls,
    nsh,
    null,
    pcap,
    pcapng,
    ppp,
    pppoe_session,
    tcp,
)
from oracle import flow_totals, tshark_totals

from mimir.capture import formats
from mimir.capture.ingest import ingest
from mimir.errors import EXIT_BAD_INPUT, CaptureError, MimirError

T0 = 1_700_000_000
SEEDS = Path(__file__).parent / "fuzz" / "corpus" / "capture"
V4 = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1000, 2000, b"x" * 20))
V6 = ipv6("fd00::1", "fd00::2", 6, tcp(1000, 2000, b"x" * 20))
Packet = tuple[str, str, int] | None  # (src, dst, source port or 0); None: no pair of addresses


def ipv4_header(total: int, ihl: int = 5, proto: int = 6, flags: int = 0) -> bytes:
    options = bytes(range(1, ihl * 4 - 20 + 1))  # NOP, then option 2 of length 3, ... as a fuzzer makes them
    return (
        struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 7, flags, 64, proto, 0, b"\n\0\0\1", b"\n\0\0\2") + options
    )


def ipv6_header(payload_length: int, next_header: int = 6) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, payload_length, next_header, 64, b"\xfd" + bytes(14) + b"\1",
                       b"\xfd" + bytes(14) + b"\2")  # fmt: skip


def sll(payload: bytes, protocol: int, hatype: int = 1) -> bytes:
    return struct.pack("!HHH8sH", 0, hatype, 6, bytes(8), protocol) + payload


def sll2(payload: bytes, protocol: int, hatype: int = 1) -> bytes:
    return struct.pack("!HHIHBB8s", protocol, 0, 1, hatype, 0, 6, bytes(8)) + payload


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def tshark_packets(path: Path) -> list[Packet]:
    """Per frame, the outermost address pair tshark shows and the first TCP/UDP/SCTP source port."""
    fields = ["frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport", "udp.srcport",
              "sctp.srcport"]  # fmt: skip
    command = ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "occurrence=f"]
    done = subprocess.run(command + [a for f in fields for a in ("-e", f)], capture_output=True, text=True, check=True)
    packets: list[Packet] = []
    for line in done.stdout.splitlines():
        protocols, ip_src, ip_dst, ip6_src, ip6_dst, *ports = line.split("\t")
        layers = protocols.split(":")
        v4_first = "ip" in layers and ("ipv6" not in layers or layers.index("ip") < layers.index("ipv6"))
        src, dst = (ip_src, ip_dst) if ip_src and (v4_first or not ip6_src) else (ip6_src, ip6_dst)
        port = int(next((p for p in ports if p), 0))
        packets.append((src, dst, port) if src and dst else None)
    return packets


def mimir_packets(path: Path, count: int) -> list[Packet]:
    """The same from mimir, for a capture of one packet per second from T0 (each its own flow row)."""
    flows, summary = ingest([path], progress=False)
    rows = {r["ts"] - T0: (r["src"], r["dst"], r["sport"]) for r in flows.to_pylist()}
    assert summary.packets == count and len(rows) == summary.ip_packets
    return [rows.get(k) for k in range(count)]


def one_per_second(frames: list[bytes], origlen_extra: int = 0) -> list[Record]:
    return [Record((T0 + k) * 10**6, f, origlen=len(f) + origlen_extra) for k, f in enumerate(frames)]


def check_packets(path: Path, count: int) -> list[Packet]:
    expected = tshark_packets(path)
    assert len(expected) == count
    assert mimir_packets(path, count) == expected
    return expected


def test_ip_lengths_bound_addresses_and_ports_as_in_tshark(tmp_path: Path) -> None:
    """A total length below the header hides the addresses; any other total, or an IPv6 payload length, only
    bounds where ports can be read (SCTP's need its 12-byte common header)."""
    segment = tcp(1000, 2000, b"x" * 10)
    frames = [
        ipv4_header(10) + segment,  # below the header: "Bogus IP length", no addresses
        ipv4_header(22, ihl=6) + segment,  # below a header with options
        ipv4_header(500) + segment,  # beyond the frame: addresses and ports
        ipv4_header(0) + segment,  # segmentation offload: the frame's end
        ipv4_header(20) + segment,  # no payload: no ports
        ipv4_header(23) + segment,  # 3 bytes of TCP: no ports
        ipv4_header(24) + segment,  # 4: ports
        ipv4_header(31, proto=132) + segment,  # 11 bytes of SCTP: no ports
        ipv4_header(32, proto=132) + segment,
        ipv6_header(0) + segment,  # IPv6 payload length 0 (no jumbogram): no ports
        ipv6_header(3, 17) + segment,
        ipv6_header(4, 17) + segment,
        ipv6_header(11, 132) + segment,
        ipv6_header(12, 132) + segment,
        ipv6_header(10, 0) + ipv6_option_header(6) + segment,  # the transport starts past the payload length
        ipv6_header(12, 0) + ipv6_option_header(6) + segment,
    ]
    path = write(tmp_path, "lengths.pcap", pcap(one_per_second(frames), 101))
    expected = check_packets(path, len(frames))
    assert expected[:2] == [None, None] and [p[2] if p else None for p in expected[2:6]] == [1000, 1000, 0, 0]
    _, summary = ingest([path], progress=False)
    assert summary.unreadable_ip_packets == 2


def test_ipv4_options_cut_by_the_snaplen_keep_the_header_addresses(tmp_path: Path) -> None:
    """tshark walks the captured options for a source route before it shows the destination, and shows none when
    the walk runs past the capture; mimir counts the fixed header's addresses (a deliberate difference)."""
    walk_past = ether(ipv4_header(60, ihl=7) + bytes(40), ETH_IPV4)[: 14 + 24]  # NOP, option 2 whose length is cut
    walk_ends = ether(ipv4_header(60, ihl=6) + bytes(40), ETH_IPV4)[: 14 + 23]  # NOP, option 2 of 3 bytes: the end
    path = write(tmp_path, "options-cut.pcap", pcap(one_per_second([walk_past, walk_ends], 100), 1, snaplen=38))
    assert tshark_packets(path) == [None, ("10.0.0.1", "10.0.0.2", 0)]
    assert tshark_totals(path).totals[(ipaddress.ip_address("10.0.0.1"), "", "packets")] == 1  # the source alone
    assert mimir_packets(path, 2) == [("10.0.0.1", "10.0.0.2", 0)] * 2


def link_layer_cases() -> list[tuple[str, int, list[bytes]]]:
    """Frames whose link-layer fields lead to IP in some places and away from it in others."""
    tagged = b"\x00\x0a\x08\x00" + V4
    return [
        ("sll-device-types", 113, [
            sll(p, proto, hatype)
            for hatype in (1, 772, 778, 824, 776)  # Ethernet, loopback, IP-in-GRE, netlink, SIT
            for proto, p in ((0x0800, V4), (0x86DD, V6), (0x0800, V6), (0x8100, tagged), (0x8847, mpls(V4, (16,))),
                             (0x8848, mpls(V6, (16,))), (0x894F, nsh(V4, 1)))
        ]),
        ("sll2-device-types", 276, [
            sll2(p, proto, hatype)
            for hatype in (1, 778, 824)
            for proto, p in ((0x0800, V4), (0x86DD, V6), (0x8100, tagged), (0x8847, mpls(V4, (16,))))
        ]),
        ("cisco-hdlc-protocols", 104, [
            chdlc(p, proto)
            for proto, p in ((0x0800, V4), (0x86DD, V6), (0x0800, V6), (0x86DD, V4), (0x8100, tagged),
                             (0x88A8, tagged), (0x8847, mpls(V4, (16,))), (0x8848, mpls(V4, (16,))),
                             (0x8864, pppoe_session(V4, 0x21)), (0x894F, nsh(V4, 1)), (0x88E5, macsec(V4, 0x0800)),
                             (0xD28B, arista(V4, 0x0800)))
        ]),
        ("mpls-reserved-labels", 1, [
            ether(mpls(p, labels), 0x8847)
            for labels in ((0,), (2,), (13,), (14,), (13, 20), (20, 13), (20, 14), (16,))
            for p in (V4, V6)
        ]),
        ("nsh-next-protocols", 1, [
            ether(nsh(p, next_protocol), 0x894F) for next_protocol in (1, 2, 3, 4) for p in (V4, V6, ether(V4, 0x0800))
        ]),
        ("bsd-loopback-families", 0, [
            header + p
            for header in (null(b"", 2), null(b"", 2, ">"), b"\x00\x02\x00\x00", b"\x00\x00\x02\x00", null(b"", 24),
                           null(b"", 30, ">"), b"\x00\x00\x08\x00", b"\x00\x08\x00\x00", b"\x00\x00\x86\xdd",
                           b"\xdd\x86\x00\x00", b"\x86\xdd\x00\x00", b"\x00\x18\x00\x00")
            for p in (V4, V6)
        ] + [ppp(V4, 0x21), ppp(V6, 0x57), ppp(V4, 0x57)]),
        ("ppp-protocols", 9, [
            ppp(p, proto, compressed=compressed)
            for proto, compressed in ((0x21, False), (0x57, False), (0x21, True), (0x281, False), (0x2B, False))
            for p in (V4, V6, mpls(V4, (16,)))
        ]),
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "linktype", "frames"), link_layer_cases(), ids=[c[0] for c in link_layer_cases()])
def test_link_layer_fields_lead_to_ip_as_in_tshark(
    tmp_path: Path, name: str, linktype: int, frames: list[bytes]
) -> None:
    path = write(tmp_path, f"{name}.pcap", pcap(one_per_second(frames), linktype))
    expected = check_packets(path, len(frames))
    assert None in expected and any(expected)  # each case has frames of both kinds


def old_pcap(major: int, minor: int, records: list[tuple[int, int, bytes]]) -> bytes:
    """A classic pcap with the record lengths written as given: (first length field, second, data)."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, major, minor, 0, 0, 65535, 1)
    for k, (first, second, data) in enumerate(records):
        out += struct.pack("<IIII", T0 + k, 0, first, second) + data
    return out


@pytest.mark.parametrize(("major", "minor"), [(2, 0), (2, 1), (2, 2), (543, 0), (2, 3), (2, 4)])
def test_pcap_versions_before_2_3_swap_the_lengths_as_libpcap(tmp_path: Path, major: int, minor: int) -> None:
    frame = ether(V4, ETH_IPV4)
    swapped = major == 543 or minor < 3
    written = (len(frame) + 500, len(frame)) if swapped else (len(frame), len(frame) + 500)  # original 654
    records = [(*written, frame), (len(frame), len(frame), frame)]
    if minor == 3:
        records.append((len(frame) + 1000, len(frame), frame))  # 2.3 with the old order: seen by captured > original
    path = write(tmp_path, f"v{major}.{minor}.pcap", old_pcap(major, minor, records))
    oracle = tshark_totals(path)
    assert oracle.returncode == 0, oracle.stderr
    flows, summary = ingest([path], progress=False)
    assert flow_totals(flows) == oracle.totals
    assert summary.frame_bytes == sum(max(a, b) for a, b, _ in records) and not summary.warnings


@pytest.mark.parametrize(("major", "minor"), [(1, 0), (3, 0)])
def test_other_pcap_versions_are_refused(tmp_path: Path, major: int, minor: int) -> None:
    path = write(tmp_path, "old.pcap", old_pcap(major, minor, [(10, 10, bytes(10))]))
    with pytest.raises(CaptureError, match=rf"old.pcap, byte offset 4: unsupported pcap version {major}\.{minor}"):
        ingest([path], progress=False)


def test_original_lengths_beyond_2_gib_are_clamped_as_tshark(tmp_path: Path) -> None:
    frame = ether(V4, ETH_IPV4)
    huge = Record(T0 * 10**6, frame, origlen=0xFFFFFFFF)
    captures = {
        "pcap": pcap([huge, Record(T0 * 10**6, frame)], 1),
        "epb": pcapng([Section([Interface(1)], [("epb", 0, huge), ("epb", 0, Record(T0 * 10**6, frame))])]),
        "opb": pcapng([Section([Interface(1)], [("opb", 0, huge)])]),
        "spb": pcapng([Section([Interface(1, snaplen=64)], [("epb", 0, Record(T0 * 10**6, frame)),
                                                             ("spb", 0, Record(0, frame[:64], origlen=0xFFFFFFFF))])]),
    }  # fmt: skip
    for name, data in captures.items():
        path = write(tmp_path, f"{name}.pcap", data)
        oracle = tshark_totals(path)
        flows, summary = ingest([path], progress=False)
        assert flow_totals(flows) == oracle.totals, name
        assert summary.frame_bytes == 2**31 - 1 + (len(frame) if name != "opb" else 0)


@pytest.mark.parametrize(
    ("name", "origlen", "data", "snaplen"),
    [
        ("longer-than-the-block", 0xFFFFFFFF, b"\x00" * 64, 0),
        ("original-length-shorter-than-the-block", 60, b"\x00" * 64, 0),
        ("snaplen-shorter-than-the-block", 1000, b"\x00" * 100, 96),
    ],
)
def test_simple_packet_block_that_does_not_fit_its_lengths_is_refused(
    tmp_path: Path, name: str, origlen: int, data: bytes, snaplen: int
) -> None:
    """tshark refuses these too; the offset is the block's."""
    first = Record(T0 * 10**6, ether(V4, ETH_IPV4))
    capture = pcapng(
        [Section([Interface(1, snaplen=snaplen)], [("epb", 0, first), ("spb", 0, Record(0, data, origlen))])]
    )
    path = write(tmp_path, f"{name}.pcapng", capture)
    assert tshark_totals(path).returncode != 0
    spb_at = capture.index(struct.pack("<I", 3) + struct.pack("<I", 16 + len(data)))
    with pytest.raises(CaptureError, match=rf"byte offset {spb_at}: simple packet block's size") as error:
        ingest([path], progress=False)
    assert error.value.exit_code == EXIT_BAD_INPUT


def test_cut_section_header_is_an_error_at_the_start_and_a_cut_record_at_the_end(tmp_path: Path) -> None:
    whole = pcapng([Section([Interface(1)], [("epb", 0, Record(T0 * 10**6, ether(V4, ETH_IPV4)))])])
    for cut in (4, 8, 20):
        with pytest.raises(CaptureError, match=r"cut.pcapng, byte offset 0: the pcapng section header is cut short"):
            ingest([write(tmp_path, "cut.pcapng", whole[:cut])], progress=False)
    path = write(tmp_path, "then-cut.pcapng", whole + whole[:20])  # a second section, stopped mid-write
    oracle = tshark_totals(path)
    assert oracle.cut_short
    flows, summary = ingest([path], progress=False)
    assert flow_totals(flows) == oracle.totals
    assert summary.truncated_records == 1 and f"byte offset {len(whole)}" in summary.warnings[0]


@pytest.mark.parametrize(
    ("seconds", "tsresol", "tsoffset"),
    [
        (253402300799, 0, None),  # the last second of year 9999, in units of a second
        (-62135596800, 6, -62135596800),  # the first of year 1: a negative if_tsoffset
        (32503680000, 6, None),  # year 3000: past what int64 nanoseconds hold (2262)
    ],
)
def test_timestamps_far_from_now_do_not_overflow(
    tmp_path: Path, seconds: int, tsresol: int, tsoffset: int | None
) -> None:
    units = 10**tsresol
    ts = (seconds - (tsoffset or 0)) * units + units // 2
    capture = pcapng([Section([Interface(1, tsresol=tsresol, tsoffset=tsoffset)],
                              [("epb", 0, Record(ts, ether(V4, ETH_IPV4)))])])  # fmt: skip
    flows, summary = ingest([write(tmp_path, "far.pcapng", capture)], progress=False)
    assert flows.column("ts").to_pylist() == [seconds]
    assert summary.first_ts == summary.last_ts == pytest.approx(seconds + units // 2 / units, abs=1e-3)


@pytest.mark.parametrize(
    ("ts", "tsoffset", "at"),
    [(2**64 - 1, None, "packet timestamp lies outside"), (253402300800, None, "packet timestamp lies outside"),
     (0, 2**62, "if_tsoffset of 4611686018427387904 s")],
)  # fmt: skip
def test_timestamps_beyond_year_9999_are_refused(tmp_path: Path, ts: int, tsoffset: int | None, at: str) -> None:
    capture = pcapng(
        [Section([Interface(1, tsresol=0, tsoffset=tsoffset)], [("epb", 0, Record(ts, ether(V4, 0x800)))])]
    )
    with pytest.raises(CaptureError, match=rf"far.pcapng, byte offset \d+: {at}"):
        ingest([write(tmp_path, "far.pcapng", capture)], progress=False)


def test_gzip_bomb_of_empty_records_is_refused(tmp_path: Path) -> None:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [deflate.compress(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))]
    parts += [deflate.compress(bytes(1 << 20)) for _ in range(64)]  # 4 M records of zero length, at time 0
    path = write(tmp_path, "bomb.pcap.gz", b"".join(parts) + deflate.flush())
    with pytest.raises(CaptureError, match=r"bomb.pcap.gz, uncompressed byte offset \d+: \d+ records from \d+ "
                       "compressed bytes, more than 16 per byte") as error:  # fmt: skip
        ingest([path], progress=False)
    assert error.value.exit_code == EXIT_BAD_INPUT


def test_gzip_of_the_most_repetitive_real_traffic_still_reads(tmp_path: Path) -> None:
    """A flood of one 60-byte frame, every record the same (same timestamp): 4.2 records per compressed byte."""
    frame = ether(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2)), ETH_IPV4)
    record = struct.pack("<IIII", T0, 0, len(frame), len(frame)) + frame
    count = formats.GZIP_SLACK_RECORDS + 300_000
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + record * count
    flows, summary = ingest([write(tmp_path, "flood.pcap.gz", gzip.compress(data, compresslevel=9))], progress=False)
    assert summary.packets == count and flows.column("packets").to_pylist() == [count]


def test_every_capture_seed_is_read_or_refused_with_its_name(tmp_path: Path) -> None:
    """The fuzzing seeds: the normal ones read, the hostile ones give a result or an error naming the file."""
    seeds = sorted(SEEDS.iterdir())
    assert len(seeds) >= 10
    for seed in seeds:
        if seed.suffix == ".md":
            continue
        try:
            _, summary = ingest([seed], progress=False)
        except MimirError as e:
            assert isinstance(e, CaptureError) and str(seed) in str(e), seed
            assert not seed.name.startswith("valid-"), f"{seed.name}: {e}"
        else:
            assert summary.packets > 0 or not seed.name.startswith("valid-"), seed
