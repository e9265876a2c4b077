"""Decompressing a gzip capture as a stream that keeps every byte before a cut-off end."""

from __future__ import annotations

import zlib
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib's window size, plus 16: expect a gzip header and trailer
READ_BYTES = 1 << 20  # compressed bytes read at a time


class Gunzip:
    """Decompress a gzip file (one or more members) on demand, keeping all data up to a cut-off end.

    Python's GzipFile drops what it decompressed in the call that meets a truncated stream; a capture that was
    compressed while still being written must instead give every complete packet before the cut.
    """

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.inflater = zlib.decompressobj(wbits=GZIP_WBITS)
        self.pending = b""  # compressed bytes not yet given to the inflater
        self.ended = False
        self.cut_short = False

    def readinto(self, view: memoryview) -> int:
        got = 0
        while got < len(view) and not self.ended:
            data = self.inflater.unconsumed_tail or self.pending
            self.pending = b""
            if not data:
                data = self.raw.read(READ_BYTES)
                if not data:
                    self.ended = True
                    self.cut_short = not self.inflater.eof
                    break
            chunk = self.inflater.decompress(data, len(view) - got)
            view[got : got + len(chunk)] = chunk
            got += len(chunk)
            if self.inflater.eof:  # a member ends: another may follow, after zero padding some tools add
                self.pending = self.inflater.unused_data.lstrip(b"\x00") or self.raw.read(READ_BYTES).lstrip(b"\x00")
                self.inflater = zlib.decompressobj(wbits=GZIP_WBITS)
                self.ended = not self.pending
        return got

    @property
    def consumed(self) -> int:
        """Compressed bytes inflated so far: those read but still waiting for the inflater are not counted."""
        return self.raw.tell() - len(self.inflater.unconsumed_tail) - len(self.pending)

    def close(self) -> None:
        self.raw.close()
