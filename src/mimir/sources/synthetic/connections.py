"""The connection table: what the simulation produces and the packet expansion consumes.

One row per connection, as columns: start time and duration (seconds since the run's start), how it unfolds into
packets (`mode`), its ends in up to three views (`c1`/`s1`; `c2`/`s2` when a NAT rewrites an end; `c3`/`s3` for
the half-NAT view that shows only what the server sends; 0 when a view is absent), ports, the bytes of the requests
and of the responses over its `rounds` exchanges, the payload bytes per captured segment (`mss`: 0 means MSS,
larger when the capture sees offloaded segments) and the probability that a data segment is retransmitted
(`loss`). Working on connections keeps the simulation small; only the expansion deals in packets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MODE_TCP = 0  # handshake, `rounds` request/response exchanges, FIN close
MODE_STREAM = 1  # exchanges on an already open connection (replication, HTTP/2, gRPC): no handshake, no close
MODE_UDP = 2  # `rounds` datagrams each way (DNS); no answers when resp is 0
MODE_REFUSED = 3  # SYN, then RST/ACK from the server (a call to a pod that is gone)
MODE_RESET = 4  # as MODE_TCP, but the server ends the connection with an RST instead of the FINs
MODE_OPEN = 5  # handshake and exchanges, no close (the start of a long-lived connection)

RTT = 0.0002  # seconds, on one node
MSS = 1448  # TCP payload bytes per segment on a 1500-byte MTU with timestamps: the default of the `mss` column


class Connections:
    """Column lists of connections; `table()` concatenates them into arrays.

    `add` takes any subset of the columns, as arrays of one length or scalars (which apply to every row); a
    column left out is 0, except `rounds` (1).
    """

    COLUMNS = (
        "t0", "dur", "mode", "c1", "s1", "c2", "s2", "c3", "s3",
        "sport", "dport", "req", "resp", "rounds", "mss", "loss",
    )  # fmt: skip
    FLOATS = frozenset({"t0", "dur", "loss"})
    DEFAULTS = {"rounds": 1}  # noqa: RUF012

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {c: [] for c in self.COLUMNS}

    def add(self, **cols: Any) -> None:
        unknown = set(cols) - set(self.COLUMNS)
        if unknown:
            raise TypeError(f"not columns of the connection table: {sorted(unknown)}")
        n = next((np.shape(v)[0] for v in cols.values() if np.ndim(v) > 0), 1)  # scalars apply to every row
        for c in self.COLUMNS:
            self.parts[c].append(np.broadcast_to(np.asarray(cols.get(c, self.DEFAULTS.get(c, 0))), (n,)).copy())

    def table(self) -> dict[str, np.ndarray]:
        return {
            c: (np.concatenate(v) if v else np.zeros(0)).astype(np.float64 if c in self.FLOATS else np.int64)
            for c, v in self.parts.items()
        }
