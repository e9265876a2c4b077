"""From connections to packets, in time order: the only layer of the synthetic source that deals in packets.

Each connection of the table (connections.py) unfolds, with numpy and no loop per packet or per connection, into
the packets its mode implies, as TCP shows them on the wire:
- the handshake (SYN and SYN/ACK with MSS, SACK-permitted, timestamps and window scale options), or a SYN answered
  by an RST/ACK when the connection is refused;
- `rounds` exchanges, each a run of request segments and a run of response segments of at most `mss` payload bytes
  (the request and response bytes split evenly over the rounds); the receiver of a run ACKs every second segment
  (delayed ACKs), the last request segment is ACKed by the response when one follows, the last response segment by
  a delayed ACK;
- with probability `loss` per data segment, two duplicate ACKs from the receiver and a retransmission one round
  trip later (the receiver's ACKs stop at the hole until the retransmission arrives);
- the close: FINs both ways and a last ACK, an RST from the server, or nothing (open connections, streams);
- UDP: a datagram each way per round.
Every TCP segment after the handshake carries the timestamps option. Each packet appears in every view of its
connection: the first; the second, where a NAT rewrites an end, a few microseconds apart as the node's `any`
interface captures it before and after the rewrite; and the third, the half-NAT view, which shows only what the
server sends. Packets come out sorted by time, one batch of connections at a time, so that a long run never holds
all its packets in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from mimir.sources.synthetic.connections import (
    MODE_OPEN,
    MODE_REFUSED,
    MODE_RESET,
    MODE_STREAM,
    MODE_TCP,
    MODE_UDP,
    MSS,
    RTT,
)

GAP = 2e-6  # seconds between back-to-back segments of a run (less when a run must fit a short exchange)
MAX_SEGMENT = 65483  # the largest payload of an IPv4 packet with a 32-byte TCP header (offloaded segments)
# TCP options per packet (mimir.capture.pcapwrite writes them): none; a SYN's MSS, SACK-permitted, timestamps, NOP
# and window scale; NOP, NOP and timestamps
NO_OPTIONS, SYN_OPTIONS, TIMESTAMPS = 0, 1, 2
OPTION_BYTES = np.array([0, 20, 12], np.int64)
SYN, SYN_ACK, ACK, PSH_ACK, FIN_ACK, RST_ACK = 0x02, 0x12, 0x10, 0x18, 0x11, 0x14
_HANDSHAKE = (MODE_TCP, MODE_RESET, MODE_OPEN)  # the modes that open with SYN, SYN/ACK, ACK
_DEFAULTS = {"c3": 0, "s3": 0, "rounds": 1, "mss": 0, "loss": 0.0}  # columns a table written before them lacks


class _Packets:
    """Per packet, before the views: connection, whether the client sends it, time since the connection's start,
    TCP flags, sequence and acknowledgement numbers, payload bytes and TCP options; added a group at a time."""

    FIELDS = ("conn", "client", "t", "flags", "seq", "ack", "payload", "opt")

    def __init__(self) -> None:
        self.groups: list[tuple[np.ndarray, ...]] = []

    def add(self, conn, client, t, flags, seq, ack, payload=0, opt=TIMESTAMPS) -> None:
        n = conn.shape[0]
        if n:
            self.groups.append(
                tuple(np.broadcast_to(v, (n,)) for v in (conn, client, t, flags, seq, ack, payload, opt))
            )

    def columns(self) -> dict[str, np.ndarray]:
        dtypes = (np.int64, bool, np.float64, np.int64, np.int64, np.int64, np.int64, np.int8)
        if not self.groups:
            return {f: np.zeros(0, dt) for f, dt in zip(self.FIELDS, dtypes, strict=True)}
        return {
            f: np.concatenate([g[k] for g in self.groups]).astype(dt, copy=False)
            for k, (f, dt) in enumerate(zip(self.FIELDS, dtypes, strict=True))
        }


class _Runs(NamedTuple):
    """Runs of data segments one side sends in one round: per run its connection, whether the client sends it,
    segment count and bytes, payload per segment, first segment's time, gap between segments, half a round trip,
    the sender's first sequence number, the receiver's next sequence number (what data segments acknowledge),
    whether the other side's data follows (then it ACKs the last segment), the loss rate and a draw key."""

    conn: np.ndarray
    client: np.ndarray
    k: np.ndarray
    nbytes: np.ndarray
    mss: np.ndarray
    start: np.ndarray
    gap: np.ndarray
    half: np.ndarray
    seq0: np.ndarray
    peer: np.ndarray
    followed: np.ndarray
    loss: np.ndarray
    key: np.ndarray


def _uniform(key: np.ndarray) -> np.ndarray:
    """A uniform draw in [0, 1) per 64-bit key (splitmix64's finaliser): the same key, the same draw."""
    z = key.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _shares(total: np.ndarray, rounds: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bytes of round `i` of `rounds` (the total split evenly, the remainder in the first) and bytes before it."""
    base = total // rounds
    extra = total - base * rounds
    return base + np.where(i == 0, extra, 0), i * base + np.where(i > 0, extra, 0)


def _rounds(rounds: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per round of the connections `which`: its connection and its index within the connection."""
    r = rounds[which]
    conn = np.repeat(which, r)
    return conn, np.arange(conn.shape[0]) - np.repeat(np.cumsum(r) - r, r)


def _handshakes(pk: _Packets, mode: np.ndarray, rtt: np.ndarray, isn_c: np.ndarray, isn_s: np.ndarray) -> None:
    opened = np.flatnonzero(np.isin(mode, (*_HANDSHAKE, MODE_REFUSED)))
    pk.add(opened, True, 0.0, SYN, isn_c[opened], 0, opt=SYN_OPTIONS)
    ok = opened[mode[opened] != MODE_REFUSED]
    pk.add(ok, False, 0.5 * rtt[ok], SYN_ACK, isn_s[ok], isn_c[ok] + 1, opt=SYN_OPTIONS)
    pk.add(ok, True, rtt[ok], ACK, isn_c[ok] + 1, isn_s[ok] + 1)
    refused = opened[mode[opened] == MODE_REFUSED]  # a closed port answers a SYN with seq 0 and no options
    pk.add(refused, False, 0.5 * rtt[refused], RST_ACK, 0, isn_c[refused] + 1, opt=NO_OPTIONS)


def _closes(pk: _Packets, conns: dict[str, np.ndarray], rtt: np.ndarray, isn_c: np.ndarray, isn_s: np.ndarray) -> None:
    mode, d, req, resp = conns["mode"], conns["dur"], conns["req"], conns["resp"]
    f = np.flatnonzero(mode == MODE_TCP)
    pk.add(f, True, d[f] - rtt[f], FIN_ACK, isn_c[f] + 1 + req[f], isn_s[f] + 1 + resp[f])
    pk.add(f, False, d[f] - 0.5 * rtt[f], FIN_ACK, isn_s[f] + 1 + resp[f], isn_c[f] + 2 + req[f])
    pk.add(f, True, d[f], ACK, isn_c[f] + 2 + req[f], isn_s[f] + 2 + resp[f])
    r = np.flatnonzero(mode == MODE_RESET)
    pk.add(r, False, d[r], RST_ACK, isn_s[r] + 1 + resp[r], isn_c[r] + 1 + req[r])


def _datagrams(pk: _Packets, conns: dict[str, np.ndarray], rounds: np.ndarray) -> None:
    """UDP: per round, a request at the round's start and, unless the connection has no response, an answer at
    its end (listed after the request, before the next round's request at the same time)."""
    c, i = _rounds(rounds, np.flatnonzero(conns["mode"] == MODE_UDP))
    per_round = 1 + (conns["resp"][c] > 0)
    row = np.repeat(np.arange(c.shape[0]), per_round)
    answer = np.arange(row.shape[0]) - np.repeat(np.cumsum(per_round) - per_round, per_round) == 1
    c, i, r = c[row], i[row], rounds[c[row]]
    q, _ = _shares(conns["req"][c], r, i)
    a, _ = _shares(conns["resp"][c], r, i)
    pk.add(c, ~answer, (i + answer) * (conns["dur"][c] / r), 0, 0, 0, np.where(answer, a, q), NO_OPTIONS)


def _exchange_runs(
    conns: dict[str, np.ndarray], rounds: np.ndarray, mss: np.ndarray, rtt: np.ndarray, isn_c: np.ndarray,
    isn_s: np.ndarray,
) -> _Runs:  # fmt: skip
    """The runs of data segments of the TCP connections that exchange data, per round: the request at the start of
    the round's share of the connection's time, the response ending near the end of it."""
    mode = conns["mode"]
    c, i = _rounds(rounds, np.flatnonzero(np.isin(mode, (*_HANDSHAKE, MODE_STREAM))))
    r, m, d, rt = rounds[c], mode[c], conns["dur"][c], rtt[c]
    q, before_q = _shares(conns["req"][c], r, i)
    a, before_a = _shares(conns["resp"][c], r, i)
    first = np.where(m == MODE_STREAM, 0.0, 1.05 * rt)  # after the handshake's last ACK
    last = np.where((m == MODE_TCP) | (m == MODE_RESET), d - 1.05 * rt, d)  # before the client's FIN
    slot = (last - first) / r
    start = first + i * slot
    half = np.minimum(0.5 * rt, slot / 16)
    opened = (m != MODE_STREAM).astype(np.int64)  # a SYN took one sequence number; a stream's data starts at once
    isn_c, isn_s, seg = isn_c[c] + opened, isn_s[c] + opened, mss[c]
    base = (isn_c.astype(np.uint64) << np.uint64(32)) | isn_s.astype(np.uint64)
    ordinal = (2 * i).astype(np.uint64) << np.uint64(32)
    sq, sa = q > 0, a > 0
    kq, ka = -(-q[sq] // seg[sq]), -(-a[sa] // seg[sa])
    gq, ga = np.minimum(GAP, slot[sq] / (8 * kq)), np.minimum(GAP, slot[sa] / (8 * ka))
    return _Runs(
        conn=np.concatenate([c[sq], c[sa]]),
        client=np.concatenate([np.ones(kq.shape[0], bool), np.zeros(ka.shape[0], bool)]),
        k=np.concatenate([kq, ka]),
        nbytes=np.concatenate([q[sq], a[sa]]),
        mss=np.concatenate([seg[sq], seg[sa]]),
        start=np.concatenate([start[sq], (start + slot - 3 * half)[sa] - (ka - 1) * ga]),
        gap=np.concatenate([gq, ga]),
        half=np.concatenate([half[sq], half[sa]]),
        seq0=np.concatenate([(isn_c + before_q)[sq], (isn_s + before_a)[sa]]),
        peer=np.concatenate([(isn_s + before_a)[sq], (isn_c + before_q + q)[sa]]),
        followed=np.concatenate([sa[sq], np.zeros(ka.shape[0], bool)]),
        loss=conns["loss"][np.concatenate([c[sq], c[sa]])],
        key=np.concatenate([(base + ordinal)[sq], (base + ordinal + (np.uint64(1) << np.uint64(32)))[sa]]),
    )


def _segments(pk: _Packets, runs: _Runs) -> None:
    """Each run's data segments, their delayed ACKs and, where a segment is lost, its duplicate ACKs and
    retransmission."""
    k = runs.k
    first = np.cumsum(k) - k
    run = np.repeat(np.arange(k.shape[0]), k)
    j = np.arange(run.shape[0]) - first[run]
    at = runs.start[run] + j * runs.gap[run]
    seq = runs.seq0[run] + j * runs.mss[run]
    payload = np.minimum(runs.mss[run], runs.nbytes[run] - j * runs.mss[run])
    flags = np.where(j == k[run] - 1, PSH_ACK, ACK)  # the last segment of a write pushes
    pk.add(runs.conn[run], runs.client[run], at, flags, seq, runs.peer[run], payload)

    # delayed ACKs: after every second segment, and after the last unless the other side's data follows
    n_acks = np.where(runs.followed, (k - 1) // 2, (k + 1) // 2)
    acker = np.repeat(np.arange(k.shape[0]), n_acks)
    nth = np.arange(acker.shape[0]) - np.repeat(np.cumsum(n_acks) - n_acks, n_acks)
    upto = np.minimum(2 * nth + 1, k[acker] - 1)  # the segment each ACK answers
    ack_at = runs.start[acker] + upto * runs.gap[acker] + runs.half[acker]
    ack = runs.seq0[acker] + np.minimum((upto + 1) * runs.mss[acker], runs.nbytes[acker])

    lossy = runs.loss > 0
    if lossy.any():
        maybe = np.flatnonzero(lossy[run])
        draw = _uniform(runs.key[run[maybe]] + j[maybe].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        lost = maybe[draw < runs.loss[run[maybe]]]
        hole = _holes(runs, first, lost, run.shape[0])
        # the receiver's ACKs stop at the first segment still missing; the last ACK of a run with a loss comes
        # after every retransmission and acknowledges the whole run
        ack = hole(acker, upto, ack)
        had_loss = np.bincount(run[lost], minlength=k.shape[0]) > 0
        last = ~runs.followed[acker] & (nth == n_acks[acker] - 1) & had_loss[acker]
        end = runs.start[acker] + (k[acker] - 1) * runs.gap[acker]
        ack_at = np.where(last, end + 2.5 * runs.half[acker], ack_at)
        ack = np.where(last, runs.seq0[acker] + runs.nbytes[acker], ack)
        lr, half = run[lost], runs.half[run[lost]]
        dup = hole(lr, j[lost], seq[lost])
        nudge = np.minimum(1e-6, half / 8)
        for n in (1, 2):
            pk.add(runs.conn[lr], ~runs.client[lr], at[lost] + half + n * nudge, ACK, runs.peer[lr], dup)
        pk.add(runs.conn[lr], runs.client[lr], at[lost] + 2 * half, flags[lost], seq[lost], runs.peer[lr],
               payload[lost])  # fmt: skip
    pk.add(runs.conn[acker], ~runs.client[acker], ack_at, ACK, runs.peer[acker], ack)


def _holes(runs: _Runs, first: np.ndarray, lost: np.ndarray, n: int):
    """A function giving, for ACKs of run segments (the run, the segment answered, the ACK number without loss),
    the ACK number with loss: the first lost segment whose retransmission has not arrived by then, if any."""
    positions = np.full(n + 1, n, np.int64)
    positions[lost] = lost
    next_lost = np.minimum.accumulate(positions[::-1])[::-1]  # per segment: the first lost one at or after it

    def hole(run: np.ndarray, upto: np.ndarray, ack: np.ndarray) -> np.ndarray:
        # a retransmission comes one round trip after its segment: those sent within half a round trip before the
        # segment answered are still missing when the ACK leaves
        window = np.floor(runs.half[run] / np.maximum(runs.gap[run], 1e-12)).astype(np.int64)
        lo = first[run] + np.maximum(upto - window, 0)
        missing = next_lost[lo]
        still = missing <= first[run] + upto
        return np.where(still, runs.seq0[run] + (missing - first[run]) * runs.mss[run], ack)

    return hole


_SHIFT = np.array([[0.0, 0.0], [-4e-6, 4e-6], [8e-6, 8e-6]])  # per view, seconds: the server's packets, the client's


def _views(conns: dict[str, np.ndarray], pk: dict[str, np.ndarray], mss: np.ndarray) -> dict[str, np.ndarray]:
    """Each packet in the views its connection has, with addresses, ports and time: the first view, the second
    (4 µs later for what the client sends, earlier for what the server sends), then the half-NAT view of what the
    server sends (8 µs later)."""
    c, client = pk["conn"], pk["client"]
    parts, views = [np.arange(c.shape[0])], [0]
    for view, sip in ((1, "s2"), (2, "s3")):
        if (conns[sip] != 0).any():
            has = conns[sip][c] != 0
            parts.append(np.flatnonzero(has & ~client if view == 2 else has))
            views.append(view)
    idx = np.concatenate(parts)
    n = conns["t0"].shape[0]
    at = np.repeat(np.array(views, np.int64) * n, [p.shape[0] for p in parts])  # the view's row, then the connection
    c, cs = c[idx], client[idx]
    at += c
    a = np.concatenate([conns["c1"], conns["c2"], conns["c3"]]).take(at)
    b = np.concatenate([conns["s1"], conns["s2"], conns["s3"]]).take(at)
    at //= n
    at *= 2
    at += cs
    sport, dport = conns["sport"].take(c), conns["dport"].take(c)
    seq, ack = pk["seq"].take(idx), pk["ack"].take(idx)
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    return {
        "t": conns["t0"].take(c) + pk["t"].take(idx) + _SHIFT.ravel().take(at),
        "src": np.where(cs, a, b),
        "dst": np.where(cs, b, a),
        "sport": np.where(cs, sport, dport),
        "dport": np.where(cs, dport, sport),
        "proto": np.where(conns["mode"] == MODE_UDP, 17, 6).take(c),
        "flags": pk["flags"].take(idx),
        "seq": seq,
        "ack": ack,
        "payload": pk["payload"].take(idx),
        "opt": pk["opt"].take(idx),
        "mss": (np.minimum(mss, MSS) + 12).astype(np.int32).take(c),  # the MSS option: payload plus 12 option bytes
    }


def expand_packets(conns: dict[str, np.ndarray], isn: np.ndarray) -> dict[str, np.ndarray]:
    """Every packet of the given connections, in every view a connection has, unsorted.

    Per packet: time `t`, addresses, ports, `proto` (6 or 17), TCP `flags`, `seq` and `ack`, `payload` bytes, TCP
    options `opt` (NO_OPTIONS, SYN_OPTIONS or TIMESTAMPS) and the MSS option's value `mss`. `isn` holds each
    row's initial sequence numbers, the client's and the server's (a SYN's sequence number; a stream row's first
    byte's): see initial_sequence_numbers. Which segments are lost is drawn from them, so that the same connection
    loses the same segments whatever it is expanded with.
    """
    conns = {**{k: np.full(conns["t0"].shape[0], v) for k, v in _DEFAULTS.items() if k not in conns}, **conns}
    rounds = np.maximum(conns["rounds"], 1)
    mss = np.where(conns["mss"] > 0, np.minimum(conns["mss"], MAX_SEGMENT), MSS)
    rtt = np.minimum(RTT, conns["dur"] / 10)
    isn_c, isn_s = isn[0], isn[1]
    pk = _Packets()
    _handshakes(pk, conns["mode"], rtt, isn_c, isn_s)
    _segments(pk, _exchange_runs(conns, rounds, mss, rtt, isn_c, isn_s))
    _closes(pk, conns, rtt, isn_c, isn_s)
    _datagrams(pk, conns, rounds)
    return _views(conns, pk.columns(), mss)


def initial_sequence_numbers(conns: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Each row's initial sequence numbers, the client's and the server's.

    Rows with the same addresses and ports (in the first view) are one TCP connection: each continues where the
    rows before it left the sequence numbers (a keep-alive connection is a MODE_OPEN row, then MODE_STREAM rows).
    A connection's first numbers are random, from `rng` and its addresses and ports.
    """
    salt = rng.integers(0, 1 << 63, dtype=np.int64).astype(np.uint64)
    key = (conns["c1"].astype(np.uint64) << np.uint64(32)) | conns["s1"].astype(np.uint64)
    key ^= ((conns["sport"] << 16) | conns["dport"]).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    isn = np.stack([(_uniform(key ^ s) * 2.0**32).astype(np.int64) for s in (salt, ~salt)])
    order = np.argsort(key, kind="stable")  # the rows are in time order, and stay so within a connection
    starts = np.r_[True, key[order][1:] != key[order][:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(order.shape[0]), 0))
    mode = conns["mode"]
    syn = np.isin(mode, _HANDSHAKE).astype(np.int64)  # a SYN and a FIN take a sequence number each
    fin = (mode == MODE_TCP).astype(np.int64)
    refused, udp = mode == MODE_REFUSED, mode == MODE_UDP
    client = np.where(refused, 1, conns["req"] + syn + fin)  # a refused SYN takes one number, and nothing else
    server = np.where(refused, 0, conns["resp"] + syn + fin)
    for side, takes in enumerate((client, server)):
        used = np.where(udp, 0, takes)[order]
        before = np.cumsum(used) - used
        isn[side][order] += before - before[group_start]
    return isn & 0xFFFFFFFF


def ordered_packets(
    conns: dict[str, np.ndarray], rng: np.random.Generator, duration: float, batch: int
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """The packets of the time-sorted connections in time order, up to `duration`: per batch of `batch`
    connections, the packets that no later batch can precede, and the number of connections the batch took.

    A connection's packets can outlast the start of the next batch's first connection: those are carried over
    and sorted with the next batch. The initial sequence numbers come from `rng` (initial_sequence_numbers).
    """
    n = conns["t0"].shape[0]
    isn = initial_sequence_numbers(conns, rng)
    carry: dict[str, np.ndarray] | None = None
    for lo in range(0, n, batch):
        hi = min(lo + batch, n)
        part = {k: v[lo:hi] for k, v in conns.items()}
        pk = expand_packets(part, isn[:, lo:hi])
        if carry is not None:
            pk = {k: np.concatenate([carry[k], pk[k]]) for k in pk}
        order = np.argsort(pk["t"], kind="stable")
        pk = {k: v[order] for k, v in pk.items()}
        # later batches start no earlier than this; the capture stops at the end of the run
        limit = conns["t0"][hi] - 1e-5 if hi < n else duration
        cut = int(np.searchsorted(pk["t"], limit))
        yield {k: v[:cut] for k, v in pk.items()}, hi - lo
        carry = {k: v[cut:] for k, v in pk.items()}
