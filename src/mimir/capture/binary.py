"""Unsigned integers read out of a byte buffer: network (big-endian) fields, or a capture file's own byte order.

The numba readers are inlined into the kernels that call them (the record walkers and the packet decoder), so a
field read costs what the shifts cost. `read_u32` is the same read for the Python side of the pcapng parser.
Every numba reader returns an int64 (`be64`: a uint64), whatever the width, so callers can compare and add freely.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always", cache=True)
def be16(buf, o):
    return (np.int64(buf[o]) << 8) | np.int64(buf[o + 1])


@njit(inline="always", cache=True)
def be32(buf, o):
    return (np.int64(buf[o]) << 24) | (np.int64(buf[o + 1]) << 16) | (np.int64(buf[o + 2]) << 8) | np.int64(buf[o + 3])


@njit(inline="always", cache=True)
def be64(buf, o):
    v = np.uint64(0)
    for k in range(8):
        v = (v << np.uint64(8)) | np.uint64(buf[o + k])
    return v


@njit(inline="always", cache=True)
def le16(buf, o):
    return (np.int64(buf[o + 1]) << 8) | np.int64(buf[o])


@njit(inline="always", cache=True)
def le32(buf, o):
    return (np.int64(buf[o + 3]) << 24) | (np.int64(buf[o + 2]) << 16) | (np.int64(buf[o + 1]) << 8) | np.int64(buf[o])


@njit(inline="always", cache=True)
def u16(buf, o, big):
    """A 16-bit field in the byte order a file declared (`big`: big-endian)."""
    return be16(buf, o) if big else le16(buf, o)


@njit(inline="always", cache=True)
def u32(buf, o, big):
    """A 32-bit field in the byte order a file declared (`big`: big-endian)."""
    return be32(buf, o) if big else le32(buf, o)


def read_u32(buf: np.ndarray, o: int, big: bool) -> int:
    """`u32` for plain Python."""
    return int.from_bytes(buf[o : o + 4].tobytes(), "big" if big else "little")
