"""Bad input through the real command: a clear message naming file and offset, a documented exit code, no
traceback, and nothing written (or overwritten) when the input is rejected."""

from __future__ import annotations

import ast
import gzip
import json
import struct
from pathlib import Path

import pytest
from conftest import run_mimir
from craft import ETH_IPV4, Interface, Record, Section, ether, ipv4, pcap, pcapng, tcp

from mimir import errors
from mimir.errors import EXIT_BAD_INPUT, EXIT_CODES, EXIT_IO, EXIT_UNSUPPORTED, EXIT_USAGE, MimirError

T0 = 1_700_000_000


def good_capture(packets: int = 5) -> bytes:
    frame = ether(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1000, 2000, b"x" * 200)), ETH_IPV4)
    return pcap([Record(T0 * 10**6 + k, frame) for k in range(packets)], 1)


def test_truncated_last_record_warns_and_keeps_the_packets_before(tmp_path: Path) -> None:
    data = good_capture(5)  # a 24-byte file header, then records of 16 + 254 bytes
    for cut in (10, 100):  # inside the last record's header, inside its data
        path = tmp_path / f"cut{cut}.pcap"
        path.write_bytes(data[: 24 + 4 * (16 + 254) + cut])
        out = tmp_path / f"cut{cut}.parquet"
        done = run_mimir("ingest", path, "-o", out, check=True)
        assert "warning" in done.stderr and "cut short" in done.stderr
        assert f"byte offset {24 + 4 * 270}" in done.stderr and str(path) in done.stderr
        summary = json.loads(out.with_name(f"cut{cut}.summary.json").read_text())
        assert (summary["packets"], summary["truncated_records"]) == (4, 1)


def test_truncated_gzip_stream_warns(tmp_path: Path) -> None:
    data = gzip.compress(good_capture(2000), mtime=0)
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(data[: len(data) // 2])
    done = run_mimir("ingest", path, "-o", tmp_path / "f.parquet", check=True)
    assert "gzip stream ends early" in done.stderr


def expect_error(tmp_path: Path, data: bytes, code: int, *words: str) -> str:
    path = tmp_path / "bad.pcap"
    path.write_bytes(data)
    out = tmp_path / "flows.parquet"
    done = run_mimir("ingest", path, "-o", out)
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith("mimir: error: ") and str(path) in done.stderr
    for word in words:
        assert word in done.stderr
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))
    return done.stderr


def test_impossible_captured_length(tmp_path: Path) -> None:
    data = bytearray(good_capture(3))
    struct.pack_into("<I", data, 24 + 270 + 8, 10_000_000)  # the second record's captured length
    expect_error(tmp_path, bytes(data), EXIT_BAD_INPUT, "byte offset 294", "captured length of 10000000")


def test_unknown_link_type(tmp_path: Path) -> None:
    data = bytearray(good_capture(1))
    struct.pack_into("<I", data, 20, 147)
    expect_error(tmp_path, bytes(data), EXIT_UNSUPPORTED, "unsupported link type 147", "byte offset 20")


def test_unknown_link_type_on_a_pcapng_interface(tmp_path: Path) -> None:
    section = Section([Interface(1), Interface(147)], [("epb", 1, Record(0, b"\x00" * 40))])
    expect_error(tmp_path, pcapng([section]), EXIT_UNSUPPORTED, "unsupported link type 147", "byte offset")


def test_not_a_capture_and_empty_files(tmp_path: Path) -> None:
    expect_error(tmp_path, b"hello, this is text\n", EXIT_BAD_INPUT, "not a pcap or pcapng capture", "byte offset 0")
    expect_error(tmp_path, b"", EXIT_BAD_INPUT, "empty file", "byte offset 0")
    expect_error(tmp_path, good_capture(1)[:20], EXIT_BAD_INPUT, "header is cut short")


def test_corrupt_pcapng_blocks(tmp_path: Path) -> None:
    section = Section([Interface(1)], [("epb", 0, Record(0, ether(b"\x45" + bytes(40), ETH_IPV4)))])
    data = bytearray(pcapng([section]))
    shb_idb = 28 + 4 + 20  # the section header (with its end-of-options) and the interface block
    struct.pack_into("<I", data, shb_idb + 8, 3)  # a packet on an interface the section never described
    expect_error(tmp_path, bytes(data), EXIT_BAD_INPUT, f"byte offset {shb_idb}", "interface 3")
    data = bytearray(pcapng([section]))
    struct.pack_into("<I", data, shb_idb + 4, 13)  # a block length that is not a multiple of 4
    expect_error(tmp_path, bytes(data), EXIT_BAD_INPUT, f"byte offset {shb_idb}", "length 13")


def test_existing_output_survives_a_rejected_input(tmp_path: Path) -> None:
    good = tmp_path / "good.pcap"
    good.write_bytes(good_capture())
    out = tmp_path / "flows.parquet"
    run_mimir("ingest", good, "-o", out, check=True)
    before = out.read_bytes()
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    assert run_mimir("ingest", good, bad, "-o", out, "--force").returncode == EXIT_BAD_INPUT
    assert out.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["ingest", "missing.pcap", "-o", "f.parquet"], EXIT_IO, "no such file"),
        (["ingest", "good.pcap", "-o", "f.parquet", "--bin", "0"], EXIT_USAGE, "outside the documented range 1..86400"),
        (["ingest", "good.pcap", "-o", "f.parquet", "--bin", "1.5"], EXIT_USAGE, "not a whole number"),
        (["ingest", "good.pcap"], EXIT_USAGE, "-o"),
        (["frobnicate"], EXIT_USAGE, "invalid choice"),
    ],
)
def test_command_line_errors(tmp_path: Path, monkeypatch, args: list[str], code: int, words: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.pcap").write_bytes(good_capture())
    done = run_mimir(*args)
    assert done.returncode == code and words in done.stderr


def test_unwritable_output(tmp_path: Path) -> None:
    good = tmp_path / "good.pcap"
    good.write_bytes(good_capture())
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    done = run_mimir("ingest", good, "-o", blocker / "flows.parquet")
    assert done.returncode == EXIT_IO and str(blocker) in done.stderr


def error_classes() -> list[type[MimirError]]:
    found, todo = [], [MimirError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_every_exit_code_is_documented_and_listed_by_the_help() -> None:
    assert all(text.strip() for text in EXIT_CODES.values())
    for cls in error_classes():
        assert cls.exit_code in EXIT_CODES, cls
        assert cls.__doc__ and cls.__doc__.strip(), cls
    shown = run_mimir("--help", check=True).stdout
    for code, text in EXIT_CODES.items():
        assert f"{code}  {text}" in shown


def test_every_error_class_is_defined_in_mimir_errors() -> None:
    names = {cls.__name__ for cls in error_classes()}
    package = Path(errors.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "errors.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                assert not bases & names, f"{path}: {node.name} is an error class outside mimir.errors"
