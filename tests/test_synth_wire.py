"""TCP as the wire shows it, in the synthetic source's packet layer: MSS-sized segments, delayed ACKs, rounds,
loss, the connection modes, the views and the TCP options, on small connection tables fed straight to the packet
expansion, and written as a capture that tshark reads."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from oracle import tshark_totals

from mimir.capture.pcapwrite import write_records
from mimir.sources.synthetic.bundle import _CaptureWriter
from mimir.sources.synthetic.connections import (
    MODE_OPEN,
    MODE_REFUSED,
    MODE_RESET,
    MODE_STREAM,
    MODE_TCP,
    MODE_UDP,
    Connections,
)
from mimir.sources.synthetic.packets import (
    SYN_OPTIONS,
    TIMESTAMPS,
    expand_packets,
    initial_sequence_numbers,
    ordered_packets,
)

CLIENT, SERVER, CLIENT_NAT, SERVER_NAT = 0x0A000105, 0x0A000207, 0xC0A80001, 0x0A600010
SYN, RST, FIN, PSH, ACK = 0x02, 0x04, 0x01, 0x08, 0x10


def table(**cols) -> dict[str, np.ndarray]:
    base = {"t0": 1.0, "dur": 0.05, "mode": MODE_TCP, "c1": CLIENT, "s1": SERVER, "sport": 40000, "dport": 8080}
    conns = Connections()
    conns.add(**(base | cols))
    return conns.table()


def expand(conns: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """The packets of `conns` in time order."""
    isn = np.random.default_rng(seed).integers(0, 1 << 32, (2, conns["t0"].shape[0]), dtype=np.int64)
    pk = expand_packets(conns, isn)
    order = np.argsort(pk["t"], kind="stable")
    return {k: v[order] for k, v in pk.items()}


def sent_by(pk: dict[str, np.ndarray], src: int) -> dict[str, np.ndarray]:
    keep = pk["src"] == src
    return {k: v[keep] for k, v in pk.items()}


def data(pk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keep = pk["payload"] > 0
    return {k: v[keep] for k, v in pk.items()}


def pure_acks(pk: dict[str, np.ndarray]) -> np.ndarray:
    return (pk["flags"] == ACK) & (pk["payload"] == 0)


def write(path: Path, pk: dict[str, np.ndarray], snaplen: int = 128) -> dict[tuple[str, str], list[int]]:
    """The packets as a capture file, by the synthetic source's own writer; its per-pair (packets, bytes)."""
    cfg = SimpleNamespace(start=1_767_225_600, rotate=3600, snaplen=snaplen)
    writer = _CaptureWriter(path.parent, cfg, count=True)
    writer.write(pk)
    writer.close()
    writer.files[0].rename(path)
    return writer.truth


def tshark(path: Path, *args: str) -> str:
    done = subprocess.run(["tshark", "-r", str(path), "-n", *args], capture_output=True, text=True, check=True)
    return done.stdout


def test_segments_are_mss_sized_and_offloaded_ones_larger() -> None:
    pk = expand(table(req=3000, resp=10_000))
    response = data(sent_by(pk, SERVER))
    assert response["payload"].tolist() == [1448] * 6 + [10_000 - 6 * 1448]
    assert data(sent_by(pk, CLIENT))["payload"].tolist() == [1448, 1448, 104]
    big = expand(table(req=300, resp=50_000, mss=20_000))
    assert data(sent_by(big, SERVER))["payload"].tolist() == [20_000, 20_000, 10_000]
    assert set(big["mss"][big["flags"] & SYN > 0].tolist()) == {1460}  # the SYNs still announce the wire's MSS
    last = data(sent_by(pk, SERVER))["flags"]
    assert (last[:-1] == ACK).all() and last[-1] == PSH | ACK  # the last segment of a write pushes


def test_delayed_acks_every_second_segment() -> None:
    pk = expand(table(req=3000, resp=10_000))
    response_start = data(sent_by(pk, SERVER))["t"][0]
    client = sent_by(pk, CLIENT)
    fin = client["t"][client["flags"] & FIN > 0][0]
    during = (client["t"] > response_start) & (client["t"] < fin)
    assert (pure_acks(client) & during).sum() == 4  # 7 response segments: ACKs after the 2nd, 4th, 6th and 7th
    server = sent_by(pk, SERVER)
    before = server["t"] < response_start
    assert (pure_acks(server) & before).sum() == 1  # 3 request segments: the response ACKs the last one
    alone = sent_by(expand(table(req=3000, resp=0)), SERVER)
    assert pure_acks(alone).sum() == 2  # no response: the last request segment gets its own ACK


def check_continuous(pk: dict[str, np.ndarray], src: int, dst: int) -> None:
    """Each side's data segments follow each other in sequence, and acknowledge everything the other side sent."""
    mine, theirs = data(sent_by(pk, src)), data(sent_by(pk, dst))
    assert (np.diff(mine["seq"]) == mine["payload"][:-1]).all()
    for t, ack in zip(mine["t"], mine["ack"], strict=True):
        before = theirs["t"] < t
        expected = theirs["seq"][before][-1] + theirs["payload"][before][-1] if before.any() else None
        if expected is not None:
            assert ack == expected & 0xFFFFFFFF


def test_rounds_alternate_with_continuous_sequence_numbers() -> None:
    pk = expand(table(req=1003, resp=50_000, rounds=5, dur=0.2))
    d = data(pk)
    runs = np.flatnonzero(np.diff(d["src"])) + 1
    senders = d["src"][np.r_[0, runs]].tolist()
    assert senders == [CLIENT, SERVER] * 5
    requests = np.split(d["payload"], runs)[::2]
    assert [int(r.sum()) for r in requests] == [203, 200, 200, 200, 200]  # the remainder goes to the first round
    assert [len(r) for r in np.split(d["payload"], runs)[1::2]] == [7] * 5  # 10,000 bytes a round
    check_continuous(pk, CLIENT, SERVER)
    check_continuous(pk, SERVER, CLIENT)
    fin = pk["flags"] & FIN > 0
    for side, sent in ((CLIENT, 1003), (SERVER, 50_000)):
        first = data(sent_by(pk, side))["seq"][0]
        assert pk["seq"][fin & (pk["src"] == side)][0] == (first + sent) & 0xFFFFFFFF


def test_loss_retransmits_each_lost_segment_after_two_duplicate_acks() -> None:
    clean = expand(table(req=3000, resp=10_000))
    lossy = expand(table(req=3000, resp=10_000, loss=1.0))
    assert data(lossy)["payload"].shape[0] == 2 * data(clean)["payload"].shape[0]
    assert pure_acks(lossy).sum() == pure_acks(clean).sum() + 2 * data(clean)["payload"].shape[0]
    for side in (CLIENT, SERVER):
        seqs = data(sent_by(lossy, side))["seq"]
        assert np.array_equal(np.unique(seqs, return_counts=True)[1], np.full(np.unique(seqs).shape[0], 2))
    server = sent_by(lossy, SERVER)
    first = data(sent_by(lossy, CLIENT))["seq"][0]
    dup = pure_acks(server) & (server["ack"] == first)
    assert dup.sum() >= 2  # the receiver stops at the hole
    times = lossy["t"]
    assert (np.diff(times) >= 0).all()


def test_loss_rate_is_the_share_of_retransmitted_segments() -> None:
    n = 400
    conns = table(t0=np.arange(n) * 0.1, sport=20000 + np.arange(n), req=300, resp=10_000, loss=0.1)
    pk = expand(conns, seed=7)
    d = data(pk)
    segments = n * 8  # 1 request and 7 response segments per connection
    resent = d["payload"].shape[0] - segments
    sigma = math.sqrt(segments * 0.1 * 0.9)
    assert abs(resent - 0.1 * segments) < 4 * sigma
    assert pure_acks(pk).sum() == pure_acks(expand(table(t0=np.arange(n) * 0.1, sport=20000 + np.arange(n),
                                                         req=300, resp=10_000), seed=7)).sum() + 2 * resent  # fmt: skip
    again = expand(conns, seed=7)
    assert all(np.array_equal(pk[k], again[k]) for k in pk)  # the same connections lose the same segments


def test_refused_reset_open_and_stream_connections() -> None:
    refused = expand(table(mode=MODE_REFUSED, req=500, resp=5000))
    assert refused["flags"].tolist() == [SYN, RST | ACK] and refused["src"].tolist() == [CLIENT, SERVER]
    assert refused["opt"].tolist() == [SYN_OPTIONS, 0]

    reset = expand(table(mode=MODE_RESET, req=500, resp=5000))
    assert reset["flags"][-1] == RST | ACK and reset["src"][-1] == SERVER
    assert not (reset["flags"] & FIN).any() and reset["flags"][0] == SYN

    opened = expand(table(mode=MODE_OPEN, req=500, resp=5000))
    assert opened["flags"][0] == SYN and not (opened["flags"] & (FIN | RST)).any()
    assert data(opened)["payload"].sum() == 5500

    stream = expand(table(mode=MODE_STREAM, req=500, resp=5000, rounds=3))
    assert not (stream["flags"] & (SYN | FIN | RST)).any() and data(stream)["payload"].sum() == 5500
    check_continuous(stream, CLIENT, SERVER)


def test_udp_rounds() -> None:
    pk = expand(table(mode=MODE_UDP, dport=53, req=120, resp=400, rounds=3, dur=0.003))
    assert (pk["proto"] == 17).all() and pk["src"].tolist() == [CLIENT, SERVER] * 3
    assert pk["payload"].tolist() == [40, 134, 40, 133, 40, 133]
    silent = expand(table(mode=MODE_UDP, dport=514, req=300, resp=0, rounds=3))
    assert silent["src"].tolist() == [CLIENT] * 3


def test_views_the_nat_rewrite_and_the_half_nat_response_view() -> None:
    conns = table(req=3000, resp=10_000, c2=CLIENT, s2=SERVER_NAT, c3=CLIENT_NAT, s3=SERVER)
    pk = expand(conns)
    one = (pk["src"] == CLIENT) & (pk["dst"] == SERVER) | (pk["src"] == SERVER) & (pk["dst"] == CLIENT)
    two = (pk["src"] == SERVER_NAT) | (pk["dst"] == SERVER_NAT)
    three = pk["dst"] == CLIENT_NAT
    assert one.sum() == two.sum() and one.sum() + two.sum() + three.sum() == pk["t"].shape[0]
    assert (pk["src"][three] == SERVER).all()  # only what the server sends, to the address before the NAT
    assert three.sum() == (pk["src"][one] == SERVER).sum()
    assert np.array_equal(pk["seq"][three], pk["seq"][one & (pk["src"] == SERVER)])  # 8 µs later, same order


def test_rows_of_one_keep_alive_connection_continue_its_sequence_numbers(tmp_path: Path) -> None:
    conns = table(t0=np.array([1.0, 1.5, 2.0, 2.0]), dur=0.05, mode=[MODE_OPEN, MODE_STREAM, MODE_STREAM, MODE_TCP],
                  sport=[40000, 40000, 40000, 40001], req=[700, 3000, 0, 300], resp=[9000, 20_000, 4000, 100],
                  rounds=[1, 2, 1, 1])  # fmt: skip
    pk = next(ordered_packets(conns, np.random.default_rng(5), 1e9, 2))[0]
    keep_alive = (pk["sport"] == 40000) | (pk["dport"] == 40000)
    one = {k: v[keep_alive] for k, v in pk.items()}
    check_continuous(one, CLIENT, SERVER)
    check_continuous(one, SERVER, CLIENT)
    assert (one["flags"] & SYN > 0).sum() == 2 and not (one["flags"] & (FIN | RST)).any()
    path = tmp_path / "keep-alive.pcap"
    write(path, pk)
    report = expert(path)
    assert "Warn" not in report and "Error" not in report, report


MIX = {
    "mode": np.array([MODE_TCP, MODE_TCP, MODE_RESET, MODE_REFUSED, MODE_OPEN, MODE_STREAM, MODE_UDP, MODE_TCP]),
    "req": np.array([300, 1200, 400, 300, 800, 160, 40, 0]),
    "resp": np.array([70_000, 9000, 200, 0, 3000, 160, 120, 0]),
    "rounds": np.array([1, 12, 1, 1, 3, 2, 2, 1]),
    "mss": np.array([0, 0, 0, 0, 0, 0, 0, 0]),
    "dur": np.array([0.08, 0.3, 0.01, 0.001, 0.02, 0.001, 0.0004, 0.002]),
}


def mixed(n: int, loss: float = 0.0, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(MIX["mode"]), n)
    cols = {k: v[pick] for k, v in MIX.items()}
    t0 = np.sort(rng.uniform(0, 20, n))
    nat = rng.random(n) < 0.5
    return table(t0=t0, sport=20000 + np.arange(n), c2=np.where(nat, CLIENT, 0),
                 s2=np.where(nat, SERVER_NAT, 0), dport=np.where(cols["mode"] == MODE_UDP, 5353, 8080), loss=loss,
                 **cols)  # fmt: skip


def test_times_stay_within_each_connection_and_come_out_sorted() -> None:
    conns = mixed(3000, loss=0.05)
    pk = expand_packets(conns, initial_sequence_numbers(conns, np.random.default_rng(0)))
    first = (pk["src"] != SERVER_NAT) & (pk["dst"] != SERVER_NAT)
    # every connection of the mix has its own client port: 20000 + its index
    port = np.where(pk["src"] == CLIENT, pk["sport"], pk["dport"])[first]
    idx = port - 20000
    t = pk["t"][first]
    assert (t >= conns["t0"][idx]).all() and (t <= conns["t0"][idx] + conns["dur"][idx] + 1e-12).all()
    total = 0
    last = -1.0
    for part, _ in ordered_packets(conns, np.random.default_rng(0), 1e9, 256):
        assert (np.diff(part["t"]) >= 0).all() and (part["t"].shape[0] == 0 or part["t"][0] >= last)
        last = part["t"][-1] if part["t"].shape[0] else last
        total += part["t"].shape[0]
    assert total == pk["t"].shape[0]  # the batches lose nothing and retransmissions stay in their batch


def expert(path: Path) -> str:
    return tshark(path, "-q", "-z", "expert")


def test_tshark_reads_the_options_and_sees_a_clean_connection(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pcap"
    truth = write(plain, expand(table(t0=np.arange(20) * 0.1, sport=40000 + np.arange(20), req=3000, resp=10_000,
                                      rounds=np.arange(20) % 4 + 1)))  # fmt: skip
    report = expert(plain)
    assert "Warn" not in report and "Error" not in report and "Malformed" not in report, report
    mss = tshark(plain, "-Y", "tcp.flags.syn == 1", "-T", "fields", "-e", "tcp.options.mss_val").split()
    assert mss == ["1460"] * 40  # SYNs and SYN/ACKs
    no_ts = tshark(plain, "-Y", "tcp.len > 0 && !tcp.options.timestamp.tsval", "-T", "fields", "-e", "frame.number")
    assert no_ts.strip() == ""
    fields = tshark(plain, "-Y", "tcp.len > 0", "-T", "fields", "-e", "tcp.len", "-e", "tcp.hdr_len").split("\n")
    assert {line.split("\t")[1] for line in fields if line} == {"32"}
    oracle = tshark_totals(plain)
    assert oracle.returncode == 0 and not oracle.stderr
    assert sum(v for (_, _, what), v in oracle.totals.items() if what == "bytes") == sum(b for _, b in truth.values())
    assert sum(v for (_, _, what), v in oracle.totals.items() if what == "packets") == sum(n for n, _ in truth.values())


def test_tshark_finds_nothing_malformed_in_a_mixed_capture(tmp_path: Path) -> None:
    pk = next(ordered_packets(mixed(400, loss=0.02), np.random.default_rng(1), 1e9, 10_000))[0]
    path = tmp_path / "mixed.pcap"
    write(path, pk, snaplen=96)
    report = expert(path)
    assert "Malformed" not in report and "Error" not in report, report
    assert "ACKed segment that wasn't captured" not in report and "Previous segment(s) not captured" not in report


def test_same_connections_same_bytes(tmp_path: Path) -> None:
    files = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        pk = next(ordered_packets(mixed(300, loss=0.05), np.random.default_rng(seed), 1e9, 10_000))[0]
        write(tmp_path / f"{name}.pcap", pk)
        files.append((tmp_path / f"{name}.pcap").read_bytes())
    assert files[0] == files[1] != files[2]


def test_old_keyword_set_and_old_writer_calls_still_work() -> None:
    conns = Connections()
    conns.add(t0=0.0, dur=0.01, mode=MODE_TCP, c1=CLIENT, s1=SERVER, c2=0, s2=0, sport=1, dport=2, req=10, resp=20)
    t = conns.table()
    assert t["rounds"].tolist() == [1] and t["mss"].tolist() == [0] and t["loss"].dtype == np.float64
    assert t["c3"].tolist() == [0] and t["s3"].tolist() == [0]
    with pytest.raises(TypeError, match="segment"):
        conns.add(segment=3)
    fields = {"sec": 1, "usec": 2, "length": 80, "family": 4, "hi": 0, "src": CLIENT, "dst": SERVER, "proto": 6,
              "sport": 1, "dport": 2, "seq": 7, "ack": 9, "flags": 0x12}  # fmt: skip
    one = {k: np.array([v], np.int64) for k, v in fields.items()}
    per_packet = ("family", "hi", "src", "hi", "dst", "proto", "sport", "dport", "seq", "ack", "flags")
    args = [one["sec"], one["usec"], one["length"], 128, 276, 2, *[one[k] for k in per_packet], 64240, True]
    old, new = np.zeros(200, np.uint8), np.zeros(200, np.uint8)
    used = write_records(old, *args)
    assert write_records(new, *args, np.zeros(1, np.int8), np.full(1, 1460)) == used
    assert np.array_equal(old, new)
    options = np.zeros(200, np.uint8)
    write_records(options, *args, np.full(1, SYN_OPTIONS, np.int8), np.full(1, 1460))
    tcp = 16 + 20 + 20
    assert options[tcp + 12] == 0xA0 and options[tcp + 20 : tcp + 24].tolist() == [2, 4, 0x05, 0xB4]
    write_records(options, *args, np.full(1, TIMESTAMPS, np.int8), np.full(1, 1460))
    assert options[tcp + 12] == 0x80 and options[tcp + 20 : tcp + 22].tolist() == [1, 1]
