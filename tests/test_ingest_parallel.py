"""Ingest with several workers: a rotated capture read file by file in parallel, one large file counted block by
block in parallel, and the same flows table and summary, byte for byte, as one worker reading it whole."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import math
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import run_mimir

from mimir.capture.formats import BLOCK_BYTES, RecordBlock
from mimir.capture.generate import write_capture
from mimir.capture.ingest import IngestSummary, ingest, write_flows
from mimir.errors import CaptureError

COUNTS = ("packets", "ip_packets", "ipv4_packets", "ipv6_packets", "non_ip_packets", "unreadable_ip_packets")
COUNTS += ("truncated_records", "frame_bytes", "flows", "first_ts", "last_ts", "bin_seconds")


def counts(summary: IngestSummary) -> dict[str, object]:
    """What a summary says of the packets, whatever the files they came in."""
    return {name: getattr(summary, name) for name in COUNTS}


def rotate(capture: Path, every: int, folder: Path) -> list[Path]:
    """The capture cut every `every` packets by editcap (classic pcap, as tcpdump rotates), in time order."""
    folder.mkdir()
    subprocess.run(["editcap", "-F", "pcap", "-c", str(every), str(capture), str(folder / "part.pcap")], check=True)
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20011 packets of 200 host pairs over about a second and a half."""
    path = tmp_path_factory.mktemp("capture") / "whole.pcap"
    write_capture(path, 20_011, seed=11, rate=13_000.0)
    return path


@pytest.mark.parametrize("bin_seconds", [1, 7])
@pytest.mark.parametrize("every", [1009, 7919])
def test_a_rotated_capture_gives_the_flows_of_the_whole(
    capture: Path, tmp_path: Path, every: int, bin_seconds: int
) -> None:
    whole, whole_summary = ingest([capture], bin_seconds, progress=False)
    parts = rotate(capture, every, tmp_path / "parts")
    assert len(parts) == math.ceil(20_011 / every)
    # the cuts fall inside a second (and a bin): a bin's rows are summed across files
    spans = [ingest([part], progress=False)[1] for part in parts]
    assert any(int(a.last_ts) == int(b.first_ts) for a, b in itertools.pairwise(spans))
    for workers in (1, 2, 3):
        flows, summary = ingest(parts, bin_seconds, progress=False, workers=workers)
        assert flows.equals(whole), workers
        assert flows.schema.equals(whole.schema, check_metadata=True)
        assert counts(summary) == counts(whole_summary)
        assert [f.path for f in summary.files] == list(map(str, parts))


def test_rotated_files_of_mixed_formats_are_read_in_parallel(capture: Path, tmp_path: Path) -> None:
    """Each file is read on its own: a pcapng part and a gzip part among classic pcap ones change nothing."""
    parts = rotate(capture, 4999, tmp_path / "parts")
    subprocess.run(["editcap", "-F", "pcapng", str(parts[1]), str(tmp_path / "1.pcapng")], check=True)
    parts[1] = tmp_path / "1.pcapng"
    with parts[2].open("rb") as raw, gzip.open(tmp_path / "2.pcap.gz", "wb") as packed:
        shutil.copyfileobj(raw, packed)
    parts[2] = tmp_path / "2.pcap.gz"
    whole, whole_summary = ingest([capture], progress=False)
    one, one_summary = ingest(parts, progress=False)
    two, two_summary = ingest(parts, progress=False, workers=2)
    assert one.equals(whole) and two.equals(whole)
    assert counts(one_summary) == counts(two_summary) == counts(whole_summary)
    assert dataclasses.asdict(one_summary) == dataclasses.asdict(two_summary)
    assert [f.format for f in two_summary.files][:3] == ["pcap", "pcapng", "pcap"]
    assert [f.compressed for f in two_summary.files][:3] == [False, False, True]


def test_the_first_bad_file_in_order_is_the_one_reported(capture: Path, tmp_path: Path) -> None:
    parts = rotate(capture, 4001, tmp_path / "parts")
    parts[1].write_bytes(b"not a capture at all")
    parts[3].write_bytes(b"")
    messages = []
    for workers in (1, 2):
        with pytest.raises(CaptureError) as caught:
            ingest(parts, progress=False, workers=workers)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and str(parts[1]) in messages[0]


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A capture of short records that spans several read buffers and several record blocks."""
    path = tmp_path_factory.mktemp("large") / "large.pcap"
    write_capture(path, 700_000, seed=12, snaplen=96, pairs=1000, rate=50_000.0)
    assert path.stat().st_size > 3 * BLOCK_BYTES and 2 * RecordBlock().off.shape[0] < 700_000
    return path


def test_one_large_file_is_the_same_table_byte_for_byte_whatever_the_workers(large: Path, tmp_path: Path) -> None:
    written = []
    for workers in (1, 2, 3):
        flows, summary = ingest([large], 1, progress=False, workers=workers)
        out = tmp_path / f"flows-{workers}.parquet"
        write_flows(flows, summary, out)
        written.append((out.read_bytes(), json.loads(out.with_name(out.stem + ".summary.json").read_text())))
    assert written[0] == written[1] == written[2]
    assert written[0][1]["packets"] == 700_000


def test_the_command_takes_workers_within_its_range(large: Path, tmp_path: Path) -> None:
    for workers in ("1", "2"):
        done = run_mimir("ingest", large, "-o", tmp_path / f"{workers}.parquet", "--workers", workers)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()
    for bad in ("0", "257", "1.5"):
        done = run_mimir("ingest", large, "-o", tmp_path / "bad.parquet", "--workers", bad)
        assert done.returncode == 2 and "--workers" in done.stderr, done.stderr
        assert not (tmp_path / "bad.parquet").exists()


def test_the_merged_table_keeps_the_flows_schema(large: Path) -> None:
    flows, _ = ingest([large], progress=False, workers=2)
    assert flows.schema.field("proto").type == pa.uint8() and flows.schema.field("sport").type == pa.uint16()
