"""From connections to packets, in time order: the only layer of the synthetic source that deals in packets.

Each connection of the table (connections.py) unfolds, with numpy and no loop per packet, into the packets its
mode implies: TCP's handshake, request and response segments (at most SEGMENT bytes each, as offloading shows
them on a veth), acknowledgements and close; a stream's data and ACKs; a datagram each way. Where a NAT rewrites
an end, each packet appears in both views, a few microseconds apart, as the node's `any` interface captures it
before and after the rewrite. Packets come out sorted by time, one batch of connections at a time, so that a long
run never holds all its packets in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from mimir.sources.synthetic.connections import MODE_STREAM, MODE_TCP, MODE_UDP, RTT

SEGMENT = 32768  # largest TCP payload per captured segment (offloaded segments are normal on veths)

# packet roles within a connection
SYN, SYNACK, ACK_C, REQ, ACK_S, RESP, FIN_C, FIN_S, UDP_Q, UDP_R = range(10)
_CLIENT_SENDS = np.array([True, False, True, True, False, False, True, False, True, False])
_FLAGS = np.array([0x02, 0x12, 0x10, 0x18, 0x10, 0x18, 0x11, 0x11, 0, 0], np.int64)


class _Layout(NamedTuple):
    """Per packet: its connection, position in it, the connection's mode and request and response segment counts,
    the packet's role, and its segment's index within the request or response."""

    conn: np.ndarray
    pos: np.ndarray
    mode: np.ndarray
    q: np.ndarray
    r: np.ndarray
    role: np.ndarray
    j: np.ndarray


def _layout(mode: np.ndarray, req: np.ndarray, resp: np.ndarray) -> _Layout:
    """Which packets each connection has, and the role of each."""
    kq = np.where(req > 0, -(-req // SEGMENT), 0)
    kr = np.where(resp > 0, -(-resp // SEGMENT), 0)
    count = np.select([mode == MODE_TCP, mode == MODE_STREAM], [8 + kq + kr, kq + 1 + np.where(kr > 0, kr + 1, 0)], 2)
    c = np.repeat(np.arange(mode.shape[0]), count)
    p = np.arange(c.shape[0]) - np.repeat(np.cumsum(count) - count, count)
    m, q, r = mode[c], kq[c], kr[c]
    tcp_role = np.select(
        [p == 0, p == 1, p == 2, p < 3 + q, p == 3 + q, p < 4 + q + r, p == 4 + q + r, p == 5 + q + r, p == 6 + q + r],
        [SYN, SYNACK, ACK_C, REQ, ACK_S, RESP, ACK_C, FIN_C, FIN_S],
        ACK_C,
    )
    stream_role = np.select([p < q, p == q, p < q + 1 + r], [REQ, ACK_S, RESP], ACK_C)
    role = np.select([m == MODE_TCP, m == MODE_STREAM], [tcp_role, stream_role], np.where(p == 0, UDP_Q, UDP_R))
    j = np.select(
        [m == MODE_TCP, m == MODE_STREAM],
        [np.where(role == REQ, p - 3, p - 4 - q), np.where(role == REQ, p, p - q - 1)],
        0,
    )
    return _Layout(c, p, m, q, r, role, j)


def _times(lay: _Layout, t0: np.ndarray, d: np.ndarray) -> np.ndarray:
    """When each packet is sent: the handshake and close one round trip apart, segments 2 µs apart."""
    role, p, j = lay.role, lay.pos, lay.j
    rtt = np.minimum(RTT, d / 10)
    tcp_at = np.select(
        [
            role == SYN,
            role == SYNACK,
            (role == ACK_C) & (p == 2),
            role == REQ,
            role == ACK_S,
            role == RESP,
            role == ACK_C,
            role == FIN_C,
            role == FIN_S,
        ],
        [0.0, 0.5 * rtt, rtt, rtt + j * 2e-6, 1.5 * rtt, d - 2 * rtt + j * 2e-6, d - 1.5 * rtt, d - rtt, d - 0.5 * rtt],
        d,
    )
    stream_at = np.select([role == REQ, role == ACK_S, role == RESP], [j * 2e-6, 0.5 * rtt, rtt + j * 2e-6], 1.5 * rtt)
    return t0 + np.select(
        [lay.mode == MODE_TCP, lay.mode == MODE_STREAM], [tcp_at, stream_at], np.where(role == UDP_Q, 0.0, d)
    )


def _sequence_numbers(
    lay: _Layout, isn_c: np.ndarray, isn_s: np.ndarray, rq: np.ndarray, rs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """TCP sequence and acknowledgement numbers from each side's initial sequence number and the bytes sent."""
    role, p, j, q, r = lay.role, lay.pos, lay.j, lay.q, lay.r
    sent_c = np.select([role == SYN, (role == ACK_C) & (p == 2), role == REQ], [0, 1, 1 + j * SEGMENT], 1 + rq)
    sent_c = np.where((role == ACK_C) & (p == 7 + q + r), 2 + rq, sent_c)
    sent_s = np.select([role == SYNACK, role == ACK_S, role == RESP], [0, 1, 1 + j * SEGMENT], 1 + rs)
    client_sends = _CLIENT_SENDS[role]
    seq = np.where(client_sends, isn_c + sent_c, isn_s + sent_s) & 0xFFFFFFFF
    acked_by_client = np.where((role == FIN_C) | (role == ACK_C) & (p > 3 + q), 1 + rs, 1)
    acked_by_client = np.where((role == ACK_C) & (p == 7 + q + r), 2 + rs, acked_by_client)
    acked_by_server = np.where(role == FIN_S, 2 + rq, np.where(role == SYNACK, 1, 1 + rq))
    ack = np.where(client_sends, isn_s + acked_by_client, isn_c + acked_by_server) & 0xFFFFFFFF
    return seq, np.where(role == SYN, 0, ack)


def expand_packets(conns: dict[str, np.ndarray], isn: np.ndarray) -> dict[str, np.ndarray]:
    """Every packet of the given connections, in both views where a connection has two, unsorted."""
    lay = _layout(conns["mode"], conns["req"], conns["resp"])
    c, role = lay.conn, lay.role
    rq, rs = conns["req"][c], conns["resp"][c]
    payload = np.select(
        [role == REQ, role == RESP, role == UDP_Q, role == UDP_R],
        [np.minimum(SEGMENT, rq - lay.j * SEGMENT), np.minimum(SEGMENT, rs - lay.j * SEGMENT), rq, rs],
        0,
    )
    at = _times(lay, conns["t0"][c], conns["dur"][c])
    seq, ack = _sequence_numbers(lay, isn[0][c], isn[1][c], rq, rs)
    client_sends = _CLIENT_SENDS[role]
    proto = np.where(lay.mode == MODE_UDP, 17, 6)
    views = []
    for cip, sip, shift in (("c1", "s1", 0.0), ("c2", "s2", 4e-6)):
        has = conns[sip][c] != 0
        a, b = conns[cip][c][has], conns[sip][c][has]
        cs = client_sends[has]
        views.append(
            {
                "t": at[has] + np.where(cs, shift, -shift),
                "src": np.where(cs, a, b),
                "dst": np.where(cs, b, a),
                "sport": np.where(cs, conns["sport"][c][has], conns["dport"][c][has]),
                "dport": np.where(cs, conns["dport"][c][has], conns["sport"][c][has]),
                "proto": proto[has],
                "flags": _FLAGS[role[has]],
                "seq": seq[has],
                "ack": ack[has],
                "payload": payload[has],
            }
        )
    return {k: np.concatenate([v[k] for v in views]) for k in views[0]}


def ordered_packets(
    conns: dict[str, np.ndarray], rng: np.random.Generator, duration: float, batch: int
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """The packets of the time-sorted connections in time order, up to `duration`: per batch of `batch`
    connections, the packets that no later batch can precede, and the number of connections the batch took.

    A connection's packets can outlast the start of the next batch's first connection: those are carried over
    and sorted with the next batch. Each connection's initial sequence numbers are drawn here, from `rng`.
    """
    n = conns["t0"].shape[0]
    isn = rng.integers(0, 1 << 32, (2, n), dtype=np.int64)
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
