"""Writing classic pcap: the file header, and one numba kernel that writes the records of header-only frames.

Shared by the capture generator (tests, benchmarks) and the synthetic source of runs, so that both write their
frames (Ethernet or Linux cooked v2, IPv4 or IPv6, TCP with or without options, or UDP) the same way; the payload
is zeros, as a capture with a small snaplen would cut it anyway, unless the caller asks for protocol payloads.

Protocol payloads (payload_kinds and payload_refs, then write_records' `payload_kind` and `payload_ref`): where
the snaplen keeps payload bytes and a dissector reads them (tshark picks one by port), zeros are malformed messages
(a MySQL packet of length 0, a DNS query with ID 0 and no question, GSM over IP's A-bis on port 5000). The kernel
writes instead the first bytes of a plausible message of the server port's protocol (PROTOCOL_PORTS), sized to
fill the segment, so that a reader which cannot reassemble (the capture cut the rest) finds a whole message
where each segment starts, whatever it read before (a retransmission, the second segment of an answer):
- DNS (UDP or TCP 53): a header (an ID from the client's port and the query's time, which the answer carries;
  query or response flags; one question; the records the answer's size beyond its query implies: A records, or
  an NXDOMAIN's SOA), the question's name, type A and class IN, and an EDNS0 OPT record;
- MySQL (3306): COM_QUERY packets, the first of them whole in the captured bytes; an answer is a result-set header
  and a row of one length-encoded string, which a reader parses the same after a query or inside a result set;
- MongoDB (27017): OP_MSG (opcode 2013) with a BSON document; the requestID derives from the TCP position where
  the answer starts, whose first segment carries it as responseTo;
- Redis (6379): RESP, GET of a key and a bulk string; AMQP 0-9-1 (5672): content-body frames, heartbeats;
- TLS (443, 2379, 8443, 10250): application-data records;
- gRPC (Online Boutique's HTTP/2 ports): HEADERS (HPACK) and DATA frames with the gRPC message prefix, and the
  trailers at the end of an answer's write; the stream id derives, as MongoDB's ID, from the TCP position.
A last segment too short for a message of its kind continues the message of the segment before it. HTTP stays
zeros (continuation data to tshark), as do other ports. The bytes follow from the packet's ports, sequence
numbers, flags and length (and a DNS answer's query's), so the same packets give the same bytes, and the views
of one connection and a retransmission carry the same payload. What cannot be a message stays malformed: a MySQL
write under 5 bytes, an AMQP one under 8, a gRPC one under 41 on port 5000 (tshark's GSM over IP reads it).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np
from numba import njit


def pcap_header(snaplen: int, linktype: int) -> bytes:
    """A little-endian, microsecond pcap file header."""
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


@njit(inline="always", cache=True)
def put_be(out, o, value, width):
    """A big-endian (network order) field of `width` bytes."""
    for k in range(width):
        out[o + k] = (value >> (8 * (width - 1 - k))) & 0xFF


@njit(inline="always", cache=True)
def put_be_cut(out, o, value, width, end):
    """A big-endian field, cut where the snaplen ends the frame (at `end`), as a capture would cut it."""
    for k in range(min(width, end - o)):
        out[o + k] = (value >> (8 * (width - 1 - k))) & 0xFF


@njit(inline="always", cache=True)
def put_byte_cut(out, o, value, end):
    if o < end:
        out[o] = value


@njit(inline="always", cache=True)
def put_tcp_options(out, o, kind, mss, tsval, tsecr, end):
    """TCP options at `o`, cut at `end`: kind 1 is a SYN's (MSS, SACK-permitted, timestamps, NOP, window scale 7:
    20 bytes, as Linux orders them), kind 2 NOP, NOP, timestamps (12 bytes); returns the options' length."""
    if kind == 1:
        put_byte_cut(out, o, 2, end)  # MSS
        put_byte_cut(out, o + 1, 4, end)
        put_be_cut(out, o + 2, mss, 2, end)
        put_byte_cut(out, o + 4, 4, end)  # SACK permitted
        put_byte_cut(out, o + 5, 2, end)
        ts = o + 6
    elif kind == 2:
        put_byte_cut(out, o, 1, end)  # NOP, NOP
        put_byte_cut(out, o + 1, 1, end)
        ts = o + 2
    else:
        return 0
    put_byte_cut(out, ts, 8, end)  # timestamps
    put_byte_cut(out, ts + 1, 10, end)
    put_be_cut(out, ts + 2, tsval, 4, end)
    put_be_cut(out, ts + 6, tsecr, 4, end)
    if kind == 1:
        put_byte_cut(out, o + 16, 1, end)  # NOP
        put_byte_cut(out, o + 17, 3, end)  # window scale: shift 7
        put_byte_cut(out, o + 18, 3, end)
        put_byte_cut(out, o + 19, 7, end)
        return 20
    return 12


@njit(inline="always", cache=True)
def put_le(out, o, value, width):
    """A little-endian field (the pcap record header)."""
    for k in range(width):
        out[o + k] = (value >> (8 * k)) & 0xFF


@njit(inline="always", cache=True)
def put_record_header(out, o, sec, usec, caplen, length):
    put_le(out, o, sec, 4)
    put_le(out, o + 4, usec, 4)
    put_le(out, o + 8, caplen, 4)
    put_le(out, o + 12, length, 4)


@njit(inline="always", cache=True)
def put_ipv4(out, ip, total_length, proto, src, dst):
    """A 20-byte IPv4 header (TTL 64, no checksum); returns where the transport header starts."""
    out[ip] = 0x45
    put_be(out, ip + 2, total_length, 2)
    out[ip + 8] = 64
    out[ip + 9] = proto
    put_be(out, ip + 12, src, 4)
    put_be(out, ip + 16, dst, 4)
    return ip + 20


@njit(inline="always", cache=True)
def put_ports(out, t, end, sport, dport):
    """Source and destination ports, where the snaplen leaves room for them."""
    if t + 4 <= end:
        put_be(out, t, sport, 2)
        put_be(out, t + 2, dport, 2)


@njit(inline="always", cache=True)
def put_ipv6(out, ip, payload_length, proto, src_hi, src_lo, dst_hi, dst_lo):
    """A 40-byte IPv6 header (hop limit 64); returns where the transport header starts."""
    out[ip] = 0x60
    put_be(out, ip + 4, payload_length, 2)
    out[ip + 6] = proto
    out[ip + 7] = 64
    put_be(out, ip + 8, src_hi, 8)
    put_be(out, ip + 16, src_lo, 8)
    put_be(out, ip + 24, dst_hi, 8)
    put_be(out, ip + 32, dst_lo, 8)
    return ip + 40


# --- Protocol payloads --------------------------------------------------------------------------------------------

# per packet, what write_records puts in the captured payload (payload_kinds)
(
    ZEROS, DNS_QUERY, DNS_ANSWER, MYSQL_REQUEST, MYSQL_RESPONSE, MONGODB_REQUEST, MONGODB_RESPONSE, REDIS_REQUEST,
    REDIS_RESPONSE, AMQP_FRAME, TLS_RECORDS, GRPC_REQUEST, GRPC_RESPONSE,
) = range(13)  # fmt: skip
# the protocol of each server port, as the modelled applications and the platform use them (DNS also over UDP)
PROTOCOL_PORTS: dict[str, tuple[int, ...]] = {
    "dns": (53,),
    "mysql": (3306,),
    "mongodb": (27017,),
    "redis": (6379,),
    "amqp": (5672,),
    "tls": (443, 2379, 8443, 10250),  # HTTPS, etcd, the API server, the kubelet
    "grpc": (3550, 5000, 5050, 7000, 7070, 9555, 50051),  # Online Boutique's gRPC services
}
_KINDS = {
    "dns": (DNS_QUERY, DNS_ANSWER),
    "mysql": (MYSQL_REQUEST, MYSQL_RESPONSE),
    "mongodb": (MONGODB_REQUEST, MONGODB_RESPONSE),
    "redis": (REDIS_REQUEST, REDIS_RESPONSE),
    "amqp": (AMQP_FRAME, AMQP_FRAME),
    "tls": (TLS_RECORDS, TLS_RECORDS),
    "grpc": (GRPC_REQUEST, GRPC_RESPONSE),
}


def _port_tables(ports: dict[str, tuple[int, ...]]) -> np.ndarray:
    """Per transport (0: TCP, 1: UDP), direction (0: to the server port, 1: from it) and port: the payload kind."""
    table = np.zeros((2, 2, 65536), np.int8)
    for name, numbers in ports.items():
        for port in numbers:
            table[0, :, port] = _KINDS[name]
            if name == "dns":
                table[1, :, port] = _KINDS[name]
    return table


_PORT_TABLES = _port_tables(PROTOCOL_PORTS)


def payload_kinds(proto: np.ndarray, sport: np.ndarray, dport: np.ndarray) -> np.ndarray:
    """Per packet, the payload kind for write_records: the protocol of its server port (PROTOCOL_PORTS: the
    destination's if it has one, else the source's, the lower of the two if both have one) and whether the packet
    goes to the server or comes from it; ZEROS for other ports and protocols."""
    udp = (proto == 17).astype(np.int64)
    known = (proto == 6) | (proto == 17)
    to_server = _PORT_TABLES[udp, 0, dport & 0xFFFF]
    from_server = _PORT_TABLES[udp, 1, sport & 0xFFFF]
    # both ports known (a client's ephemeral port can be 50051): the lower one is the server's
    server_is_dst = (to_server != 0) & ((from_server == 0) | (dport < sport))
    return np.where(known, np.where(server_is_dst, to_server, from_server), 0).astype(np.int8)


TAIL = -2  # payload_ref of a segment whose bytes continue the message of the segment before it
# the smallest message of each payload kind, in bytes (0: no TCP message to continue)
_SMALLEST = np.zeros(16, np.int64)
_SMALLEST[[MYSQL_REQUEST, MYSQL_RESPONSE]] = 5  # a packet's header and a command or a length-encoded integer
_SMALLEST[[MONGODB_REQUEST, MONGODB_RESPONSE]] = 37  # an OP_MSG's header, flags and a document of one element
_SMALLEST[REDIS_REQUEST], _SMALLEST[REDIS_RESPONSE] = 10, 3  # *1 and an empty bulk string; +, CRLF
_SMALLEST[TLS_RECORDS] = 6  # (not AMQP: a frame over two segments makes tshark take the connection for AMQP 0-10)
_SMALLEST[[GRPC_REQUEST, GRPC_RESPONSE]] = 41  # a frame long enough for port 5000 (see _put_grpc)


def payload_refs(kind: np.ndarray, micros: np.ndarray, packets: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per packet, what its payload refers to, for write_records' `payload_ref`; -1: nothing.

    `packets`: per packet, in time order, `src`, `dst`, `sport`, `dport`, `proto`, `seq`, `flags` and `payload`
    (bytes); `micros`: its time in microseconds; `kind`: from payload_kinds.
    - DNS: (the query's payload length << 16) | the message ID (_dns_refs).
    - A TCP segment too short to hold a message of its kind that ends a write of several segments (the rest of
      a write split at the MSS, a few bytes): TAIL, and the segment before it (same flow, ending where it starts)
      the tail's length, so that its message runs over the tail, which a reader takes for its continuation.
    """
    ref = np.full(kind.shape[0], -1, np.int64)
    _dns_refs(ref, kind, micros, packets)
    _tail_refs(ref, kind, packets)
    return ref


def _dns_refs(ref: np.ndarray, kind: np.ndarray, micros: np.ndarray, pk: Mapping[str, np.ndarray]) -> None:
    """The ID is a hash of the client's port and the query's millisecond, so successive queries from one port
    differ, and a NAT's views of a query (microseconds apart) mostly agree. An answer takes its query's (the last
    one before it, in the packets' order, between the same addresses and client port): its records follow from
    what it adds to the query. An answer whose query is not among the packets has length 0 and an ID from its
    own time."""
    dns = np.flatnonzero((kind == DNS_QUERY) | (kind == DNS_ANSWER))
    if not dns.shape[0]:
        return
    query = kind[dns] == DNS_QUERY
    client = np.where(query, pk["src"][dns], pk["dst"][dns])
    server = np.where(query, pk["dst"][dns], pk["src"][dns])
    port = np.where(query, pk["sport"][dns], pk["dport"][dns])
    size = np.where(query, pk["payload"][dns], 0)
    when = micros[dns] // 1000
    order = np.lexsort((dns, port, server, client))
    c, s, p, q = client[order], server[order], port[order], query[order]
    pos = np.arange(order.shape[0])
    new = np.r_[True, (c[1:] != c[:-1]) | (s[1:] != s[:-1]) | (p[1:] != p[:-1])]
    start = np.maximum.accumulate(np.where(new, pos, 0))
    last_query = np.maximum.accumulate(np.where(q, pos, -1))
    answered = order[~q & (last_query >= start)]
    asked = order[last_query[~q & (last_query >= start)]]
    size[answered], when[answered] = size[asked], when[asked]
    key = (port.astype(np.uint64) << np.uint64(40)) ^ when.astype(np.uint64)
    key = (key ^ (key >> np.uint64(31))) * np.uint64(0x9E3779B97F4A7C15)
    ident = (key >> np.uint64(48)).astype(np.int64)
    ref[dns] = (size << 16) | ident


def _segment_keys(pk: Mapping[str, np.ndarray], rows: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """A 64-bit hash of a segment's flow (addresses and ports) and a sequence number."""
    with np.errstate(over="ignore"):
        a = (pk["src"][rows].astype(np.uint64) << np.uint64(32)) | pk["dst"][rows].astype(np.uint64)
        ports = (pk["sport"][rows] << 16 | pk["dport"][rows]).astype(np.uint64)
        b = (ports << np.uint64(32)) | (seq.astype(np.uint64) & np.uint64(0xFFFFFFFF))
        h = a * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
        return (h ^ b) * np.uint64(0xBF58476D1CE4E5B9)


def _tail_refs(ref: np.ndarray, kind: np.ndarray, pk: Mapping[str, np.ndarray]) -> None:
    """Short last segments (TAIL) and the segments before them (the tail's length), among the packets."""
    size = pk["payload"]
    data = (pk["proto"] == 6) & (size > 0) & (_SMALLEST[kind] > 0)
    tails = np.flatnonzero(data & (size < _SMALLEST[kind]))
    if not tails.shape[0]:
        return
    heads = np.flatnonzero(data & (pk["flags"] & 0x08 == 0))  # segments a write continues after
    tail_keys = _segment_keys(pk, tails, pk["seq"][tails])
    head_keys = _segment_keys(pk, heads, pk["seq"][heads] + size[heads])
    order = np.argsort(tail_keys, kind="stable")
    at = np.minimum(np.searchsorted(tail_keys[order], head_keys), tails.shape[0] - 1)
    sorted_keys = tail_keys[order]
    found = sorted_keys[at] == head_keys
    ref[heads[found]] = size[tails[order[at[found]]]]
    # every tail with a matched key is one (a retransmitted tail has its original's key): by runs of equal keys
    run = np.cumsum(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) - 1
    run_matched = np.zeros(run[-1] + 1, bool)
    run_matched[run[at[found]]] = True
    ref[tails[order[run_matched[run]]]] = TAIL


def _bytes(text: bytes) -> np.ndarray:
    return np.frombuffer(text, np.uint8).copy()


_SQL = _bytes(b"SELECT id, name, value FROM items WHERE id IN (1, 2, 3, 5, 8, 13, 21, 34, 55, 89) ORDER BY id")
_ROW = _bytes(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ")
_SPACE = _bytes(b" ")
_KEY = _bytes(b"cart:4f6c1d2a-9b3e-4a7c-8e5f-0d1b2c3a4e5f")
_CLUSTER = _bytes(b"\x03svc\x07cluster\x05local\x00")  # the suffix of a question name, when there is room
_BSON_DATA = _bytes(b"data\x00")
# a MySQL answer of 5 to 9 bytes: one packet whose body is one or two length-encoded integers (NULL: 0xFB; 0xFC
# and 0xFD with a 2- and a 3-byte value)
_SHORT_RESULTS = np.array(
    [[0xFB, 0, 0, 0, 0], [0xFB, 0xFB, 0, 0, 0], [0xFC, 0, 0, 0, 0], [0xFC, 0, 0, 0xFB, 0], [0xFD, 0, 0, 0, 0]], np.uint8
)
_CRLF, _OK = _bytes(b"\r\n"), _bytes(b"OK")
_GET, _ONE = _bytes(b"*2\r\n$3\r\nGET\r\n"), _bytes(b"*1\r\n")  # an array's header, up to its last element


# gRPC header blocks on a long-lived HTTP/2 connection, where HPACK's dynamic table (indices 62 and up) already
# holds the repeated fields: a request's (POST, http, the path, then content-type, te and user-agent indexed),
# an answer's (200, content-type indexed, grpc-accept-encoding) and its trailers (grpc-status 0, indexed); the
# first two take 32 bytes, a length that GSM over IP's dissector rejects as a message type
_H2_REQUEST = _bytes(b"\x83\x86\x04\x19/hipstershop.Service/Call\xc0\xbf\xbe")
_H2_RESPONSE = _bytes(b"\x88\xc0\x00\x14grpc-accept-encoding\x07deflate")
_H2_TRAILERS = _bytes(b"\xbd")
H2_MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE's default
TLS_MAX_RECORD = 16384 + 256  # the largest TLS 1.3 ciphertext


@njit(inline="always", cache=True)
def _mix(x):
    """A 31-bit hash of a non-negative integer."""
    x = (x ^ (x >> 16)) * 0x45D9F3B & 0xFFFFFFFF
    x = (x ^ (x >> 16)) * 0x45D9F3B & 0xFFFFFFFF
    return (x ^ (x >> 16)) & 0x7FFFFFFF


@njit(inline="always", cache=True)
def _put_le_cut(out, o, value, width, end):
    for k in range(min(width, end - o)):
        out[o + k] = (value >> (8 * k)) & 0xFF


@njit(cache=True)
def _put_text(out, o, stop, text, end, cyclic):
    """`text` from `o` up to `stop` (cut at `end`): repeated if `cyclic`, else followed by spaces."""
    for k in range(o, min(stop, end)):
        j = k - o
        out[k] = text[j % text.shape[0]] if cyclic or j < text.shape[0] else 0x20
    return stop


@njit(cache=True)
def _put_labels(out, o, size, h, end):
    """Labels of lowercase letters taking exactly `size` bytes (size >= 2, at most 63 letters a label)."""
    while size > 0:
        n = min(63, size - 1)
        if size - (n + 1) == 1:  # a label needs two bytes at least: leave them
            n -= 1
        put_byte_cut(out, o, n, end)
        o += 1
        for _ in range(n):
            h = (h * 1103515245 + 12345) & 0x7FFFFFFF
            put_byte_cut(out, o, 97 + (h >> 16) % 26, end)
            o += 1
        size -= n + 1
    return o


@njit(cache=True)
def _put_name(out, o, size, h, end):
    """A domain name taking exactly `size` bytes (1, or 3 and more): labels, then svc.cluster.local if it fits."""
    if size >= _CLUSTER.shape[0] + 2:
        o = _put_labels(out, o, size - _CLUSTER.shape[0], h, end)
        for k in range(_CLUSTER.shape[0]):
            put_byte_cut(out, o + k, _CLUSTER[k], end)
        return o + _CLUSTER.shape[0]
    if size >= 3:
        o = _put_labels(out, o, size - 1, h, end)
    put_byte_cut(out, o, 0, end)
    return o + 1


@njit(cache=True)
def _dns_layout(size):
    """A query of `size` bytes: its question name's length (0: no question) and whether it has an OPT record."""
    name = size - 12 - 4 - 11
    if name == 1 or name >= 3:
        return name, True
    name = size - 12 - 4
    if name == 1 or name >= 3:
        return name, False
    return 0, False


@njit(cache=True)
def _dns_sections(rest, opt):
    """How an answer fills `rest` bytes after its question: A records, an authority SOA's size (0: none) and the
    OPT record's padding option (-1: no OPT), or extra bytes left over."""
    base = 11 if opt else 0
    if rest - base >= 0 and (rest - base) % 16 == 0:
        return (rest - base) // 16, 0, -1 if not opt else 0
    if rest - base >= 12 + 20 + 4 and rest - base != 12 + 20 + 3:  # the SOA's two names take 1, or 3 and more
        return 0, rest - base, -1 if not opt else 0
    records = max((rest - 11) // 16, 0)
    left = rest - 16 * records
    if 12 <= left <= 14 and records:
        records, left = records - 1, left + 16
    if left == 11 or left >= 15:  # an OPT record, padded (EDNS option 12) to fill the rest
        return records, 0, left - 11
    return records, 0, -1


@njit(cache=True)
def _put_soa(out, o, size, pointer, ident, end):
    """An SOA record of `size` bytes (at least 36, not 35), its owner the question's name (a pointer) or the root."""
    put_be_cut(out, o, 0xC00C if pointer else 0, 2 if pointer else 1, end)
    o += 2 if pointer else 1
    put_be_cut(out, o, 6, 2, end)  # SOA, IN
    put_be_cut(out, o + 2, 1, 2, end)
    put_be_cut(out, o + 4, 30, 4, end)
    data = size - (12 if pointer else 11)
    put_be_cut(out, o + 8, data, 2, end)
    names = data - 20  # the primary server's and the mailbox's names, then five numbers
    first = names // 2 if names // 2 != 2 else 1
    o = _put_name(out, o + 10, first, ident + 1, end)
    o = _put_name(out, o, names - first, ident + 2, end)
    for value in (1, 7200, 1800, 86400, 30):  # serial, refresh, retry, expire, minimum
        put_be_cut(out, o, value, 4, end)
        o += 4
    return o


@njit(cache=True)
def _put_dns(out, o, n, end, answer, ident, query_size):
    """A DNS message of `n` bytes: header, question, answer records or an authority SOA, OPT."""
    if n < 12:
        return
    name, opt = _dns_layout(n if not answer else query_size)
    answers, authority, padding, rcode = 0, 0, 0 if opt else -1, 0
    if answer:
        rest = n - 12 - (name + 4 if name else 0)
        answers, authority, padding = _dns_sections(rest, opt)
        if query_size < 12 or 16 * answers + authority + (11 + padding if padding >= 0 else 0) != rest:
            # no query to follow, or one its size does not fit: one A record, the name as long as that leaves
            name, opt = _dns_layout(n - 16)
            answers, authority, padding = 1, 0, 0 if opt else -1
            if not name:  # too short for that: no records (NODATA)
                name, opt = _dns_layout(n)
                answers, padding = 0, 0 if opt else -1
        rcode = 3 if authority else 0  # NXDOMAIN, with the zone's SOA
    put_be_cut(out, o, ident, 2, end)
    put_be_cut(out, o + 2, 0x8180 | rcode if answer else 0x0100, 2, end)  # response, RD, RA; or query, RD
    put_be_cut(out, o + 4, 1 if name else 0, 2, end)
    put_be_cut(out, o + 6, answers, 2, end)
    put_be_cut(out, o + 8, 1 if authority else 0, 2, end)
    put_be_cut(out, o + 10, 1 if padding >= 0 else 0, 2, end)
    o += 12
    if name:
        o = _put_name(out, o, name, ident, end)
        put_be_cut(out, o, 1, 2, end)  # A, IN
        put_be_cut(out, o + 2, 1, 2, end)
        o += 4
    for k in range(answers):
        put_be_cut(out, o, 0xC00C, 2, end)  # the question's name
        put_be_cut(out, o + 2, 1, 2, end)
        put_be_cut(out, o + 4, 1, 2, end)
        put_be_cut(out, o + 6, 30, 4, end)  # CoreDNS's cache TTL
        put_be_cut(out, o + 10, 4, 2, end)
        put_be_cut(out, o + 12, (10 << 24) | (96 << 16) | ((ident + k) & 0xFFFF), 4, end)  # a service address
        o += 16
    if authority:
        o = _put_soa(out, o, authority, name > 0, ident, end)
    if padding >= 0:  # root name, OPT, UDP payload size 1232, no extended flags, then the padding option if any
        put_byte_cut(out, o, 0, end)
        put_be_cut(out, o + 1, 41, 2, end)
        put_be_cut(out, o + 3, 1232, 2, end)
        if padding:
            put_be_cut(out, o + 9, padding, 2, end)
            put_be_cut(out, o + 11, 12, 2, end)
            put_be_cut(out, o + 13, padding - 4, 2, end)


@njit(cache=True)
def _put_com_query(out, o, size, end):
    _put_le_cut(out, o, size - 4, 3, end)
    put_byte_cut(out, o + 3, 0, end)
    put_byte_cut(out, o + 4, 3, end)  # COM_QUERY
    _put_text(out, o + 5, o + size, _SQL, end, False)


@njit(cache=True)
def _put_mysql(out, o, n, end, response, whole):
    """MySQL packets filling `n` bytes: COM_QUERY packets, the first of them whole in the captured bytes (a reader
    moves to "answer expected" only after a whole command; `whole`: the capture keeps the segment's payload); or
    a result-set header whose column count is a NULL (0, which moves a reader to rows) and a row of one
    length-encoded string, which a reader inside rows also takes, the header as a row with a NULL value (a
    multi-segment answer or a retransmission parses the same)."""
    if not response:
        if n < 5:
            return
        first = n
        if not whole:
            room = end - o
            first = room if n - room >= 5 else room - (5 - (n - room))  # the next packet's header captured too
            first = n if first < 5 else first
        _put_com_query(out, o, first, end)
        if first < n:
            _put_com_query(out, o + first, n - first, end)
        return
    if n < 10:  # one packet of at most two length-encoded integers: a result-set header, or a row
        if n >= 5:
            _put_le_cut(out, o, n - 4, 3, end)
            put_byte_cut(out, o + 3, 1, end)
            for k in range(n - 4):
                put_byte_cut(out, o + 4 + k, _SHORT_RESULTS[n - 5, k], end)
        return
    for k, b in enumerate((1, 0, 0, 1, 0xFB)):  # the column count, as a NULL (0) that a row reads as a NULL value
        put_byte_cut(out, o + k, b, end)
    size = n - 9  # the row packet's body: one length-encoded string
    _put_le_cut(out, o + 5, size, 3, end)
    put_byte_cut(out, o + 8, 2, end)
    if size <= 251:
        put_byte_cut(out, o + 9, size - 1, end)
        _put_text(out, o + 10, o + n, _ROW, end, True)
    elif size < (1 << 16) + 3:
        put_byte_cut(out, o + 9, 0xFC, end)
        _put_le_cut(out, o + 10, size - 3, 2, end)
        _put_text(out, o + 12, o + n, _ROW, end, True)
    else:
        put_byte_cut(out, o + 9, 0xFD, end)
        _put_le_cut(out, o + 10, size - 4, 3, end)
        _put_text(out, o + 13, o + n, _ROW, end, True)


@njit(cache=True)
def _put_op_msg(out, o, n, end, request_id, response_to):
    """An OP_MSG of `n` bytes (n >= 37): header, flag bits 0, a body section with {data: binary}."""
    _put_le_cut(out, o, n, 4, end)
    _put_le_cut(out, o + 4, request_id, 4, end)
    _put_le_cut(out, o + 8, response_to, 4, end)
    _put_le_cut(out, o + 12, 2013, 4, end)  # OP_MSG; flag bits 0, then a body section (kind 0)
    o += 21
    _put_le_cut(out, o, n - 21, 4, end)
    put_byte_cut(out, o + 4, 5, end)  # binary
    for k in range(_BSON_DATA.shape[0]):
        put_byte_cut(out, o + 5 + k, _BSON_DATA[k], end)
    _put_le_cut(out, o + 10, n - 21 - 16, 4, end)  # subtype 0, the bytes, then the document's end


@njit(cache=True)
def _put_mongodb(out, o, n, end, response, key):
    """OP_MSG filling `n` bytes; the answer's responseTo is the request's ID. A length whose first byte would read
    as a TLS record's (tshark dissects port 27017 as TLS, and would wait for the rest of such a record) goes to
    two messages, the first of 64 bytes."""
    if n < 37:
        return
    request_id = _mix(key ^ 0x5BD1E995) if response else _mix(key)
    response_to = _mix(key) if response else 0
    low = n & 0xFF
    if n >= 64 + 37 and (low >= 0x80 or 20 <= low <= 24):
        _put_op_msg(out, o, 64, end, request_id, response_to)
        _put_op_msg(out, o + 64, n - 64, end, (request_id + 1) & 0x7FFFFFFF, response_to)
    else:
        _put_op_msg(out, o, n, end, request_id, response_to)


@njit(cache=True)
def _digits(x):
    d = 1
    while x >= 10:
        x //= 10
        d += 1
    return d


@njit(cache=True)
def _bulk_length(total, fixed):
    """The length L of a bulk string such that fixed + digits(L) + L == total, or -1."""
    for d in range(1, 8):
        length = total - fixed - d
        if length >= 0 and _digits(length) == d:
            return length
    return -1


@njit(cache=True)
def _put_bytes(out, o, text, end):
    for k in range(text.shape[0]):
        put_byte_cut(out, o + k, text[k], end)
    return o + text.shape[0]


@njit(cache=True)
def _put_decimal(out, o, value, end):
    d = _digits(value)
    for k in range(d):
        put_byte_cut(out, o + d - 1 - k, 48 + value % 10, end)
        value //= 10
    return o + d


@njit(cache=True)
def _put_bulk(out, o, length, text, end):
    """A RESP bulk string: $, its length, CRLF, `length` bytes of `text`, CRLF."""
    put_byte_cut(out, o, 36, end)
    o = _put_bytes(out, _put_decimal(out, o + 1, length, end), _CRLF, end)
    o = _put_text(out, o, o + length, text, end, True)
    return _put_bytes(out, o, _CRLF, end)


@njit(cache=True)
def _put_redis(out, o, n, end, response):
    """RESP filling `n` bytes: GET of a key (or a one-element command), answered by a bulk string."""
    if response:
        length = _bulk_length(n, 5)
        if length >= 0:
            _put_bulk(out, o, length, _ROW, end)
        elif n >= 3:  # a simple string
            put_byte_cut(out, o, 43, end)
            _put_bytes(out, _put_text(out, o + 1, o + n - 2, _OK, end, True), _CRLF, end)
        return
    length = _bulk_length(n, _GET.shape[0] + 5)
    if length > 0:
        _put_bulk(out, _put_bytes(out, o, _GET, end), length, _KEY, end)
        return
    length = _bulk_length(n, _ONE.shape[0] + 5)
    if length >= 0:
        _put_bulk(out, _put_bytes(out, o, _ONE, end), length, _KEY, end)


@njit(cache=True)
def _put_amqp(out, o, n, end):
    """An AMQP 0-9-1 frame of `n` bytes: a heartbeat if it is 8 bytes, else a content body on channel 1."""
    if n < 8:
        return
    put_byte_cut(out, o, 8 if n == 8 else 3, end)
    put_be_cut(out, o + 1, 0 if n == 8 else 1, 2, end)
    put_be_cut(out, o + 3, n - 8, 4, end)
    put_byte_cut(out, o + n - 1, 0xCE, end)


@njit(cache=True)
def _put_tls(out, o, n, end):
    """TLS 1.2 application-data records filling `n` bytes; fewer than 6, ciphertext that continues a record (no
    record of 5 bytes or less holds data: zeros would read as an empty record of type 0)."""
    if n < 6:
        _put_text(out, o, o + n, _ROW, end, True)
    while n >= 6 and o < end:
        size = min(n - 5, TLS_MAX_RECORD)
        if 0 < n - 5 - size < 6:  # leave the last record a header and a byte
            size -= 6
        put_byte_cut(out, o, 23, end)
        put_be_cut(out, o + 1, 0x0303, 2, end)
        put_be_cut(out, o + 3, size, 2, end)
        o += 5 + size
        n -= 5 + size


@njit(cache=True)
def _put_h2_frame(out, o, size, kind, flags, stream, end):
    put_be_cut(out, o, size, 3, end)
    put_byte_cut(out, o + 3, kind, end)
    put_byte_cut(out, o + 4, flags, end)
    put_be_cut(out, o + 5, stream, 4, end)
    return o + 9


@njit(cache=True)
def _put_grpc(out, o, n, end, response, last, key):
    """HTTP/2 frames filling `n` bytes: HEADERS, then DATA with the gRPC message (in frames of at most 16 KiB),
    then for an answer that ends a write the trailers. The stream id is odd and above 0x50000 (a long-lived
    channel): its third byte, 5, is a frame type that Gryphon's dissector (port 7000) accepts, and the first
    frame's length ends in a byte that GSM over IP's (port 5000) rejects; its second byte is neither 17 nor 50,
    which tshark's IPsec-over-TCP heuristic would take for a trailer's protocol at the end of a whole segment."""
    stream = 0x50001 + 2 * (_mix(key) & 0x7FFF)
    if (stream >> 8) & 0xFF == 17 or (stream >> 8) & 0xFF == 50:  # not a Cisco IPsec-over-TCP trailer's protocol
        stream += 0x100
    block = _H2_RESPONSE if response else _H2_REQUEST
    trailers = 9 + _H2_TRAILERS.shape[0] if response and last else 0
    data = n - 9 - block.shape[0] - trailers
    if data < 9 + 5:  # no room for a message: one HEADERS frame (a trailers-only answer)
        if n >= 9:
            o = _put_h2_frame(out, o, n - 9, 1, 5, stream, end)  # END_STREAM, END_HEADERS
            _put_text(out, o, o + min(n - 9, block.shape[0]), block, end, False)
        return
    o = _put_h2_frame(out, o, block.shape[0], 1, 4, stream, end)
    o = _put_text(out, o, o + block.shape[0], block, end, False)
    frames = -(-data // (9 + H2_MAX_FRAME))
    tail = data - (frames - 1) * (9 + H2_MAX_FRAME)  # the last frame's header and payload
    message = data - 9 * frames - 5
    for f in range(frames):
        size = H2_MAX_FRAME if f < frames - 1 else tail - 9
        if f == frames - 2 and tail < 9:  # leave the last frame its header
            size -= 9 - tail
        elif f == frames - 1 and tail < 9:
            size = 0
        if o >= end:
            return
        o = _put_h2_frame(out, o, size, 0, 1 if f == frames - 1 and not response else 0, stream, end)
        if f == 0:
            put_byte_cut(out, o, 0, end)  # not compressed, then the message's length
            put_be_cut(out, o + 1, message, 4, end)
        o += size
    if trailers:
        o = _put_h2_frame(out, o, _H2_TRAILERS.shape[0], 1, 5, stream, end)
        _put_text(out, o, o + _H2_TRAILERS.shape[0], _H2_TRAILERS, end, False)


@njit(cache=True)
def _put_tail(out, o, n, end, kind):
    """The last `n` bytes of a message whose start the previous segment holds: text, not zeros (a statement's,
    a string's; zeros would end a MySQL statement, read as an empty TLS record or, on port 5000, as GSM over IP),
    then RESP's CRLF or the end of a BSON document."""
    _put_text(out, o, o + n, _ROW, end, True)
    if kind == MYSQL_REQUEST:
        _put_text(out, o, o + n, _SPACE, end, True)  # the statement's padding
    elif kind == REDIS_REQUEST or kind == REDIS_RESPONSE:
        if n >= 2:
            put_byte_cut(out, o + n - 2, 13, end)
        put_byte_cut(out, o + n - 1, 10, end)
    elif kind == MONGODB_REQUEST or kind == MONGODB_RESPONSE:
        put_byte_cut(out, o + n - 1, 0, end)


@njit(cache=True)
def put_payload(out, o, n, end, kind, key, last, ref, tcp):  # noqa: PLR0913, PLR0917
    """The first bytes of a message of payload kind `kind` that fills the `n` payload bytes at `o`, cut at `end`.

    `key`: the TCP position that identifies the exchange (a request's acknowledgement number, which is where its
    answer starts, or an answer's sequence number), for DNS the client's port; `last`: the segment ends a write
    (PSH); `ref`: from payload_refs (for DNS its ID and its query's length; TAIL; else the bytes of the next
    segment that the message runs over), or -1.
    """
    if n <= 0:
        return
    if ref == TAIL:  # the end of the previous segment's message: only its last bytes are fixed
        _put_tail(out, o, n, end, kind)
        return
    whole = o + n <= end
    if ref > 0 and kind != DNS_QUERY and kind != DNS_ANSWER:  # the message runs over the next segment
        n += ref
    if kind == DNS_QUERY or kind == DNS_ANSWER:
        ident, query_size = (ref & 0xFFFF, ref >> 16) if ref >= 0 else (_mix(key) & 0xFFFF, 0)
        if tcp:  # the message's length first
            put_be_cut(out, o, n - 2, 2, end)
            o, n, query_size = o + 2, n - 2, query_size - 2
        _put_dns(out, o, n, end, kind == DNS_ANSWER, ident, query_size)
    elif kind == MYSQL_REQUEST or kind == MYSQL_RESPONSE:
        _put_mysql(out, o, n, end, kind == MYSQL_RESPONSE, whole)
    elif kind == MONGODB_REQUEST or kind == MONGODB_RESPONSE:
        _put_mongodb(out, o, n, end, kind == MONGODB_RESPONSE, key)
    elif kind == REDIS_REQUEST or kind == REDIS_RESPONSE:
        _put_redis(out, o, n, end, kind == REDIS_RESPONSE)
    elif kind == AMQP_FRAME:
        _put_amqp(out, o, n, end)
    elif kind == TLS_RECORDS:
        _put_tls(out, o, n, end)
    elif kind == GRPC_REQUEST or kind == GRPC_RESPONSE:
        _put_grpc(out, o, n, end, kind == GRPC_RESPONSE, last, key)


@njit(inline="always", cache=True)
def _payload_key(kind, sport, dport, seq, ack):
    """What a payload's IDs derive from (see put_payload)."""
    if kind == DNS_QUERY:
        return sport
    if kind == DNS_ANSWER:
        return dport
    if kind == MONGODB_RESPONSE or kind == GRPC_RESPONSE:
        return seq
    return ack


@njit(cache=True)
def write_records(  # noqa: PLR0913, PLR0917
    out, sec, usec, length, snaplen, linktype, interface, family, src_hi, src_lo, dst_hi, dst_lo,
    proto, sport, dport, seq, ack, flags, window, dont_fragment, tcp_options=None, mss=None, payload_kind=None,
    payload_ref=None,
):  # fmt: skip
    """Fill `out` with pcap records of header-only frames, one per packet; return the bytes used.

    Per packet: time, frame `length`, IP `family` (4 or 6; an IPv4 address is in the `_lo` word), `proto` (6: TCP,
    17: UDP), ports, and for TCP `seq`, `ack` and `flags`. Per capture: `linktype` (1: Ethernet with locally
    administered MACs, else Linux cooked v2 on interface index `interface`), the TCP `window` and whether IPv4
    sets don't-fragment. Optionally, per TCP packet, `tcp_options`: 0 none (data offset 5), 1 a SYN's options
    (data offset 10: MSS `mss`, 1460 when no `mss` is given, SACK-permitted, timestamps, window scale), 2
    timestamps (data offset 8, the window in units of 128 bytes, the SYN's window scale); the timestamp value is
    the packet's time in milliseconds, the echo 0 on a SYN and the same value otherwise. `length` counts the
    options. Headers are written only where the snaplen leaves room for them. Optionally, per packet,
    `payload_kind` (payload_kinds: 0 keeps the payload zeros) and `payload_ref` (payload_refs, or -1) put the first
    bytes of a protocol message in the captured payload.
    """
    o = 0
    for i in range(sec.shape[0]):
        caplen = min(length[i], snaplen)
        put_record_header(out, o, sec[i], usec[i], caplen, length[i])
        f = o + 16
        end = f + caplen
        out[f:end] = 0
        ethertype = 0x86DD if family[i] == 6 else 0x0800
        if linktype == 1:  # Ethernet: locally administered MACs, then the EtherType
            out[f] = 0x02
            out[f + 6] = 0x02
            put_be(out, f + 12, ethertype, 2)
            ip = f + 14
        else:  # Linux cooked v2: protocol, reserved, interface index, ARPHRD_ETHER, packet type, address length
            put_be(out, f, ethertype, 2)
            put_be(out, f + 4, interface, 4)
            put_be(out, f + 8, 1, 2)
            out[f + 11] = 6
            ip = f + 20
        frame_left = length[i] - (ip - f)
        if family[i] == 6:
            t = put_ipv6(out, ip, max(frame_left - 40, 0), proto[i], src_hi[i], src_lo[i], dst_hi[i], dst_lo[i])
        else:
            t = put_ipv4(out, ip, frame_left, proto[i], src_lo[i], dst_lo[i])
            if dont_fragment:
                out[ip + 6] = 0x40
        put_ports(out, t, end, sport[i], dport[i])
        header = 8  # the transport header's length, where the payload starts
        if proto[i] == 6:
            kind = 0 if tcp_options is None else tcp_options[i]
            if t + 14 <= end:
                put_be(out, t + 4, seq[i], 4)
                put_be(out, t + 8, ack[i], 4)
                out[t + 12] = 0xA0 if kind == 1 else 0x80 if kind == 2 else 0x50  # data offset, 32-bit words
                out[t + 13] = flags[i]
                # after a handshake that announced window scale 7, the window field counts units of 128 bytes
                put_be_cut(out, t + 14, window >> 7 if kind == 2 else window, 2, end)
            if kind != 0:
                tsval = (sec[i] * 1000 + usec[i] // 1000) & 0xFFFFFFFF
                tsecr = 0 if flags[i] & 0x12 == 0x02 else tsval
                put_tcp_options(out, t + 20, kind, 1460 if mss is None else mss[i], tsval, tsecr, end)
            header = 20 + (20 if kind == 1 else 12 if kind == 2 else 0)
        elif proto[i] == 17 and t + 6 <= end:
            put_be(out, t + 4, max(frame_left - (t - ip), 8), 2)
        if payload_kind is not None and payload_kind[i] != 0 and t + header < end:
            what = payload_kind[i]
            put_payload(out, t + header, length[i] - (t + header - f), end, what,
                        _payload_key(what, sport[i], dport[i], seq[i], ack[i]), flags[i] & 0x08 != 0,
                        -1 if payload_ref is None else payload_ref[i], proto[i] == 6)  # fmt: skip
        o = end
    return o
