"""The connection table: what the simulation produces and the packet expansion consumes.

One row per connection, as columns: start time and duration (seconds since the run's start), how it unfolds into
packets (`mode`), its two ends in one or two views (`c1`/`s1` and, when a NAT rewrites an end, `c2`/`s2`; 0 when
there is no second view), ports, and the bytes of the request and of the response. Working on connections keeps
the simulation small; only the expansion deals in packets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MODE_TCP = 0  # handshake, request, response, close
MODE_STREAM = 1  # data on an open connection (replication): data and an ACK each way
MODE_UDP = 2  # one datagram each way (DNS)

RTT = 0.0002  # seconds, on one node


class Connections:
    """Column lists of connections; `table()` concatenates them into arrays."""

    COLUMNS = ("t0", "dur", "mode", "c1", "s1", "c2", "s2", "sport", "dport", "req", "resp")

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {c: [] for c in self.COLUMNS}

    def add(self, **cols: Any) -> None:
        n = next((np.shape(v)[0] for v in cols.values() if np.ndim(v) > 0), 1)  # scalars apply to every row
        for c in self.COLUMNS:
            self.parts[c].append(np.broadcast_to(np.asarray(cols.get(c, 0)), (n,)).copy())

    def table(self) -> dict[str, np.ndarray]:
        out = {c: np.concatenate(v) if v else np.zeros(0) for c, v in self.parts.items()}
        for c in self.COLUMNS[2:]:
            out[c] = out[c].astype(np.int64)
        return out
