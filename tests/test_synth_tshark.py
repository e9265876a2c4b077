"""Synthetic captures stay tshark-clean: where the snaplen keeps payload bytes that a dissector reads (tshark picks
it by port), they hold the first bytes of a plausible message of the server port's protocol (the protocol payloads
of mimir.capture.pcapwrite), not zeros that DNS, MySQL, GSM over IP or Gryphon take for malformed messages.
Checked on hand-made connections for each protocol, and on short runs of the three applications."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mimir.apps import load_app
from mimir.capture.pcapwrite import (
    AMQP_FRAME,
    DNS_ANSWER,
    DNS_QUERY,
    GRPC_REQUEST,
    GRPC_RESPONSE,
    MYSQL_REQUEST,
    MYSQL_RESPONSE,
    TAIL,
    TLS_RECORDS,
    ZEROS,
    payload_kinds,
    payload_refs,
    write_records,
)
from mimir.loadmodel import DEFAULT_MIX, parse_mix
from mimir.network import KUBE_DNS_VIP, NODE_IP
from mimir.sources.synthetic import synthesize
from mimir.sources.synthetic.bundle import _CaptureWriter
from mimir.sources.synthetic.connections import MODE_OPEN, MODE_STREAM, MODE_TCP, MODE_UDP, Connections
from mimir.sources.synthetic.packets import OPTION_BYTES, ordered_packets
from mimir.spec import ExfilWindow, RunSpec

REPO = Path(__file__).parents[1]
CLIENT, SERVER, SERVER_NAT = 0x0A000105, 0x0A000207, 0x0A600010  # SERVER_NAT: a service address, DNAT-ed


def tshark(path: Path, *args: str) -> str:
    done = subprocess.run(["tshark", "-r", str(path), "-n", *args], capture_output=True, text=True, check=True)
    return done.stdout


def expert(path: Path, *args: str) -> dict[str, list[tuple[int, str, str, str]]]:
    """tshark's expert information by severity section: (count, group, protocol, summary) per line."""
    sections: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
    section = ""
    for line in tshark(path, *args, "-q", "-z", "expert").splitlines():
        heading = re.match(r"^(Errors|Warns|Notes|Chats) \(\d+\)$", line)
        if heading:
            section = heading.group(1)
            continue
        fields = re.split(r"\s{2,}", line.strip())
        if section and len(fields) == 4 and fields[0].isdigit():
            sections[section].append((int(fields[0]), fields[1], fields[2], fields[3]))
    return sections


def assert_clean(path: Path, *args: str) -> list[tuple[int, str, str, str]]:
    """No error (malformed packets among them) and no warning but TCP's own; the warnings that remain."""
    items = expert(path, *args)
    assert not items["Errors"], items["Errors"]
    payload_warnings = [w for w in items["Warns"] if w[2] != "TCP"]
    assert not payload_warnings, payload_warnings
    return items["Warns"]


def packets(port: int, req, resp, rounds=1, mode=MODE_TCP, loss=0.0, seed=0, nat=False) -> dict[str, np.ndarray]:
    """The packets of one connection per size, to `port`, in time order (with `nat`, also as the client sees the
    service's address)."""
    req = np.atleast_1d(np.asarray(req))
    n = req.shape[0]
    conns = Connections()
    conns.add(t0=np.arange(n) * 0.1 + 1.0, dur=0.05, mode=mode, c1=CLIENT, s1=SERVER, sport=40000 + np.arange(n),
              dport=port, req=req, resp=resp, rounds=rounds, loss=loss, c2=CLIENT if nat else 0,
              s2=SERVER_NAT if nat else 0)  # fmt: skip
    return next(ordered_packets(conns.table(), np.random.default_rng(seed), 1e9, 100_000))[0]


def write(path: Path, pk: dict[str, np.ndarray], snaplen: int = 128) -> Path:
    """The packets as a capture file, by the synthetic source's own writer."""
    writer = _CaptureWriter(path.parent, SimpleNamespace(start=1_767_225_600, rotate=3600, snaplen=snaplen), False)
    writer.write(pk)
    writer.close()
    writer.files[0].rename(path)
    return path


def sizes(low: int, high: int, n: int = 40, seed: int = 0) -> np.ndarray:
    return np.exp(np.random.default_rng(seed).uniform(np.log(low), np.log(high), n)).astype(np.int64)


def test_old_calls_write_the_same_bytes_and_kinds_change_only_payloads() -> None:
    pk = packets(3306, [300, 40], [9000, 30])
    n = pk["t"].shape[0]
    header = 40 + 20 + OPTION_BYTES[pk["opt"]]  # SLL2, IPv4, TCP with its options
    frame = header + pk["payload"]
    v4, zero = np.full(n, 4, np.int64), np.zeros(n, np.int64)
    args = [pk["t"].astype(np.int64), zero, frame, 128, 276, 2, v4, zero, pk["src"], zero, pk["dst"], pk["proto"],
            pk["sport"], pk["dport"], pk["seq"], pk["ack"], pk["flags"], 64240, True, pk["opt"], pk["mss"]]  # fmt: skip
    old, zeros, filled = (np.zeros(n * 144, np.uint8) for _ in range(3))
    used = write_records(old, *args)
    assert write_records(zeros, *args, np.zeros(n, np.int8), np.full(n, -1)) == used
    assert np.array_equal(old, zeros)
    assert write_records(filled, *args, payload_kinds(pk["proto"], pk["sport"], pk["dport"])) == used
    o = 0
    for i in range(n):
        size = 16 + min(frame[i], 128)
        same = 16 + header[i] if pk["payload"][i] else size  # the record header and the frame's headers
        assert np.array_equal(old[o : o + same], filled[o : o + same])
        assert not pk["payload"][i] or not np.array_equal(old[o : o + size], filled[o : o + size])
        o += size


def test_payload_kinds_follow_the_server_port_and_direction() -> None:
    proto = np.array([6, 6, 17, 17, 6, 17, 6, 6, 6, 6, 6, 6, 1, 6, 6])
    sport = np.array([40000, 3306, 40000, 53, 40000, 40000, 443, 40000, 40000, 7000, 40000, 8080, 0, 3306, 50051])
    dport = np.array([3306, 40000, 53, 40000, 53, 3306, 40000, 5672, 50051, 40000, 80, 40000, 0, 50051, 3306])
    assert payload_kinds(proto, sport, dport).tolist() == [
        MYSQL_REQUEST, MYSQL_RESPONSE, DNS_QUERY, DNS_ANSWER, DNS_QUERY, ZEROS, TLS_RECORDS, AMQP_FRAME,
        GRPC_REQUEST, GRPC_RESPONSE, ZEROS, ZEROS, ZEROS,
        MYSQL_RESPONSE, MYSQL_REQUEST,  # a client's ephemeral port that is also a gRPC service's: the lower wins
    ]  # fmt: skip


def test_a_dns_answer_refers_to_its_query() -> None:
    kind = np.array([DNS_QUERY, DNS_QUERY, DNS_ANSWER, DNS_ANSWER, DNS_ANSWER, ZEROS])
    pk = {
        "src": np.array([1, 1, 2, 2, 2, 1]),
        "dst": np.array([2, 2, 1, 1, 1, 2]),
        "sport": np.array([40000, 40001, 53, 53, 53, 40000]),
        "dport": np.array([53, 53, 40001, 40000, 40002, 80]),
        "proto": np.array([17, 17, 17, 17, 17, 6]),
        "seq": np.zeros(6, np.int64),
        "flags": np.zeros(6, np.int64),
        "payload": np.array([60, 70, 86, 130, 90, 10]),
    }
    ref = payload_refs(kind, np.array([1000, 2000, 3000, 4000, 5000, 6000]), pk)
    assert (ref[:5] >> 16).tolist() == [60, 70, 70, 60, 0] and ref[5] == -1  # the last answer's query is not there
    assert ref[2] & 0xFFFF == ref[1] & 0xFFFF and ref[3] & 0xFFFF == ref[0] & 0xFFFF


def test_a_short_last_segment_continues_the_message_before_it() -> None:
    pk = packets(3306, [1450, 5, 2 * 1448 + 3], [1448 + 4, 1448 + 5, 7])
    kind = payload_kinds(pk["proto"], pk["sport"], pk["dport"])
    ref = payload_refs(kind, np.zeros(pk["t"].shape[0], np.int64), pk)
    data = pk["payload"] > 0
    tails = data & (pk["payload"] < 5)
    assert (ref[tails] == TAIL).all() and sorted(pk["payload"][tails].tolist()) == [2, 3, 4]
    heads = ref > 0
    assert sorted(ref[heads].tolist()) == [2, 3, 4] and (pk["payload"][heads] == 1448).all()
    assert (ref[data & ~heads & ~tails] == -1).all()  # a write of 5 bytes is a message of its own


@pytest.mark.parametrize("snaplen", [128, 96])
def test_mysql_queries_and_result_sets(tmp_path: Path, snaplen: int) -> None:
    # at least 5 bytes a round: a MySQL packet's header and a command (smaller writes cannot be MySQL)
    pk = packets(3306, sizes(15, 3000), sizes(15, 80_000, seed=1), rounds=np.arange(40) % 3 + 1, loss=0.05)
    path = write(tmp_path / "mysql.pcap", pk, snaplen)
    assert_clean(path)
    fields = tshark(path, "-Y", "mysql && tcp.len > 0", "-T", "fields", "-e", "tcp.dstport", "-e", "mysql.command",
                    "-e", "mysql.num_fields")  # fmt: skip
    rows = [line.split("\t") for line in fields.splitlines()]
    assert {r[1].split(",")[0] for r in rows if r[0] == "3306"} == {"3"}  # every request a COM_QUERY
    answers = [r for r in rows if r[0] != "3306"]
    assert not any(r[1] for r in answers) and any(r[2] == "0" for r in answers)  # result sets of rows


@pytest.mark.parametrize("snaplen", [128, 65535])
def test_dns_queries_and_answers(tmp_path: Path, snaplen: int) -> None:
    rng = np.random.default_rng(3)
    query = rng.integers(29 + 10, 29 + 70, 60)
    answer = query + rng.choice([16, 70], 60)  # an A record, or an NXDOMAIN's SOA
    pk = packets(53, query, answer, mode=MODE_UDP, nat=True)
    forward = packets(53, np.full(5, 2 * (29 + 17)), np.full(5, 2 * (29 + 17 + 16)), rounds=2, mode=MODE_UDP)
    path = write(tmp_path / "dns.pcap", {k: np.concatenate([pk[k], forward[k]]) for k in pk}, snaplen)
    items = expert(path)
    assert not items["Errors"] and not items["Warns"] and not items["Notes"], items
    fields = tshark(path, "-Y", "dns", "-T", "fields", "-e", "udp.srcport", "-e", "dns.id", "-e", "dns.flags.response",
                    "-e", "dns.count.queries", "-e", "dns.count.answers", "-e", "dns.flags.rcode",
                    "-e", "dns.count.auth_rr")  # fmt: skip
    rows = [line.split("\t") for line in fields.splitlines()]
    assert all(r[3] == "1" for r in rows) and all((r[0] == "53") == (r[2] == "1") for r in rows)
    ids = defaultdict(set)
    for r in rows:
        ids[r[1]].add(r[2])
    assert all(v == {"0", "1"} for v in ids.values())  # each ID is a query and its answer
    kinds = {(r[4], r[5], r[6]) for r in rows if r[2] == "1"}
    assert kinds == {("1", "0", "0"), ("0", "3", "1")}  # NOERROR with an A record, NXDOMAIN with the SOA


@pytest.mark.parametrize(
    ("port", "decode", "protocol"),
    [
        (27017, "mongo", "mongo"),
        (6379, "", "resp"),
        (5672, "", "amqp"),
        (443, "", "tls"),
        (3550, "http2", "http2"),
        (5000, "", "data"),
        (7000, "", "gryphon"),
    ],
)
def test_other_protocols(tmp_path: Path, port: int, decode: str, protocol: str) -> None:
    # gRPC writes of at least 41 bytes: a smaller HTTP/2 frame's length reads as GSM over IP's A-bis RSL (port 5000)
    pk = packets(port, sizes(90, 3000, seed=port), sizes(90, 70_000, seed=port + 1), rounds=np.arange(40) % 2 + 1,
                 loss=0.03)  # fmt: skip
    path = write(tmp_path / f"{port}.pcap", pk)
    as_ = ["-d", f"tcp.port=={port},{decode}"] if decode else []
    assert_clean(path, *as_)
    assert protocol in tshark(path, *as_, "-q", "-z", "io,phs")
    if decode == "mongo":  # OP_MSG; an answer's first segment has the request's ID as its responseTo
        fields = tshark(path, *as_, "-Y", "mongo", "-T", "fields", "-e", "tcp.srcport", "-e", "mongo.opcode",
                        "-e", "mongo.request_id", "-e", "mongo.response_to")  # fmt: skip
        rows = [line.split("\t") for line in fields.splitlines()]
        assert {r[1].split(",")[0] for r in rows} == {"2013"}
        requests = {r[2].split(",")[0] for r in rows if r[0] != str(port)}
        assert requests <= {r[3].split(",")[0] for r in rows if r[0] == str(port)}
    if decode == "http2":  # HEADERS, then DATA frames; an answer's first segment is on its request's stream
        fields = tshark(path, *as_, "-Y", "http2", "-T", "fields", "-e", "tcp.srcport", "-e", "http2.type",
                        "-e", "http2.streamid")  # fmt: skip
        rows = [line.split("\t") for line in fields.splitlines()]
        assert all(r[1].startswith("1,0") for r in rows)
        streams = {r[2].split(",")[0] for r in rows if r[0] != str(port)}
        assert streams <= {r[2].split(",")[0] for r in rows if r[0] == str(port)}


@pytest.mark.parametrize(("port", "snaplen"), [(3306, 128), (3306, 65535), (443, 128), (5000, 128), (6379, 128)])
def test_short_last_segments_continue_their_message(tmp_path: Path, port: int, snaplen: int) -> None:
    rest = np.arange(1, 46)  # writes of one or two full segments and 1 to 45 bytes
    pk = packets(port, np.where(rest % 2 == 0, 1448 + rest, 100), 2 * 1448 + rest)
    path = write(tmp_path / "tails.pcap", pk, snaplen)
    assert_clean(path)


def test_tls_writes_too_short_for_a_record_are_ciphertext(tmp_path: Path) -> None:
    conns = Connections()  # records first, so that tshark takes the connection for TLS, then writes of 5 bytes
    conns.add(t0=np.arange(4) * 0.5 + 1.0, dur=0.05, mode=[MODE_OPEN, MODE_STREAM, MODE_STREAM, MODE_STREAM],
              c1=CLIENT, s1=SERVER, sport=40000, dport=443, req=[300, 5, 5, 6], resp=[300, 5, 6, 5])  # fmt: skip
    pk = next(ordered_packets(conns.table(), np.random.default_rng(0), 1e9, 100))[0]
    assert_clean(write(tmp_path / "tls.pcap", pk))


def test_same_packets_same_bytes_retransmissions_and_views_alike(tmp_path: Path) -> None:
    pk = packets(3306, sizes(20, 3000), sizes(20, 30_000, seed=2), rounds=2, loss=0.2, nat=True, seed=4)
    a, b = write(tmp_path / "a.pcap", pk), write(tmp_path / "b.pcap", pk)
    assert a.read_bytes() == b.read_bytes()
    fields = tshark(a, "-Y", "tcp.len > 0", "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e",
                    "tcp.seq_raw", "-e", "tcp.payload", "-e", "tcp.analysis.retransmission")  # fmt: skip
    payloads, copies = defaultdict(set), defaultdict(int)
    for line in fields.splitlines():
        sport, dport, seq, payload = line.split("\t")[:4]
        payloads[(sport, dport, seq)].add(payload)
        copies[(sport, dport, seq)] += 1
    assert all(len(p) == 1 for p in payloads.values())
    assert max(copies.values()) >= 3  # both views of a segment and a retransmission, the same bytes


def config(app: str, duration: float, users: int) -> RunSpec:
    model = load_app(app)
    mix = parse_mix(",".join(f"{k}={w}" for k, w in DEFAULT_MIX.items()), list(model.requests))
    return RunSpec(app=model, duration=duration, users=users, mix=mix, seed=1)


@pytest.mark.parametrize("app", ["wordpress", "sockshop", "online-boutique"])
def test_application_runs_are_tshark_clean(tmp_path: Path, app: str) -> None:
    result = synthesize(config(app, 120, 10), tmp_path / app)
    for path in result.files:
        assert_clean(path)


def test_dns_tunnelling_asks_kube_dns_and_is_forwarded_upstream(tmp_path: Path) -> None:
    """A window through `kube-dns, outside` is real DNS: queries of at most 250 bytes from the pod to the DNS VIP,
    each forwarded by a CoreDNS pod to the application's upstream resolver, tshark-clean with whole names."""
    upstream = "198.51.100.53"
    text = (REPO / "config" / "apps" / "sockshop.yaml").read_text().replace("name: sockshop", "name: resolving")
    path = tmp_path / "resolving.yaml"
    path.write_text(text.replace("dns: {ttl: 0}", f"dns: {{ttl: 0, upstream: {upstream}}}"))
    app = load_app(str(path))
    window = ExfilWindow.from_text("path=user-db,user,kube-dns,outside;rate=300KB/min;start=10;duration=30", app)
    spec = RunSpec(app=app, duration=60, users=2, seed=1, snaplen=65535, exfil=(window,))
    (capture,) = synthesize(spec, tmp_path / "run").files
    assert_clean(capture)
    fields = tshark(capture, "-Y", "dns.flags.response == 0 && udp.dstport == 53", "-T", "fields", "-e", "ip.src",
                    "-e", "ip.dst", "-e", "udp.length", "-e", "dns.qry.name.len")  # fmt: skip
    queries = [line.split("\t") for line in fields.splitlines()]
    tunnel = [q for q in queries if int(q[2]) - 8 > 100]  # the pods' own lookups ask for short names
    to_vip = [q for q in tunnel if q[1] == KUBE_DNS_VIP]
    forwarded = [q for q in tunnel if q[1] == upstream and q[0] != NODE_IP]  # CoreDNS's view, before the SNAT
    assert all(int(q[2]) - 8 <= 250 for q in tunnel) and all(int(q[3]) > 200 for q in to_vip)
    assert len({q[0] for q in to_vip}) == 1  # the user pod
    sent = sum(int(q[2]) - 8 for q in to_vip)
    assert 300e3 / 2 < sent < 1.2 * 300e3 / 2 and len(to_vip) >= 150e3 / 250  # the window's bytes, many queries
    assert len(forwarded) == len(to_vip) and len([q for q in tunnel if q[0] == NODE_IP]) == len(to_vip)
