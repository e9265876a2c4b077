"""The command line as a user meets it: help, progress, output files, reproducibility, memory."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from conftest import run_mimir

from mimir.capture.decode import SUPPORTED_LINKTYPES
from mimir.capture.generate import write_capture
from mimir.errors import EXIT_CODES


def test_help_is_complete() -> None:
    top = run_mimir("--help", check=True).stdout
    assert "ingest" in top and "exit codes" in top
    text = run_mimir("ingest", "--help", check=True).stdout
    for needle in ("CAPTURE", "-o FLOWS.parquet", "--bin SECONDS", "pcapng", "gzip", "summary.json", "--progress"):
        assert needle in text
    for number in SUPPORTED_LINKTYPES:
        assert f"{number:>4}  " in text
    for code in EXIT_CODES:
        assert f"  {code}  " in text


def test_ingest_writes_table_and_summary_quietly_off_a_terminal(tmp_path: Path) -> None:
    capture = tmp_path / "c.pcap"
    _, truth = write_capture(capture, 20_000, seed=9)
    out = tmp_path / "out" / "flows.parquet"  # the folder is created
    done = run_mimir("ingest", capture, "-o", out, "--bin", "10", check=True)
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    assert "flows from 20000 packets" in done.stdout
    summary = json.loads((tmp_path / "out" / "flows.summary.json").read_text())
    assert summary["packets"] == summary["ip_packets"] == 20_000
    assert summary["bin_seconds"] == 10 and summary["frame_bytes"] == int(truth.bytes.sum())
    import pyarrow.parquet as pq

    flows = pq.read_table(out)
    assert all(ts % 10 == 0 for ts in flows.column("ts").to_pylist())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["flows.parquet", "flows.summary.json"]


def test_progress_bar_when_asked(tmp_path: Path) -> None:
    capture = tmp_path / "c.pcap"
    write_capture(capture, 5_000, seed=1)
    done = run_mimir("ingest", capture, "-o", tmp_path / "f.parquet", "--progress", check=True)
    assert "ingest" in done.stderr and "B/s" in done.stderr


def test_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    capture = tmp_path / "c.pcap"
    write_capture(capture, 30_000, seed=4)
    run_mimir("ingest", capture, "-o", tmp_path / "a.parquet", check=True)
    run_mimir("ingest", capture, "-o", tmp_path / "b.parquet", check=True)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


PEAK_MEMORY_PROBE = """
import sys
from mimir.cli import main
main(sys.argv[1:])
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0], file=sys.stderr)
"""


def peak_rss_kib(capture: Path, out: Path) -> int:
    """The peak resident memory of a fresh process running `mimir ingest` (VmHWM: its own address space)."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_PROBE, "ingest", str(capture), "-o", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(done.stderr.split()[-1])


def test_memory_does_not_grow_with_the_capture(tmp_path: Path) -> None:
    """Ten times the capture (40 MB to 400 MB) may not cost more than a few MB of extra peak memory."""
    small, large = tmp_path / "small.pcap", tmp_path / "large.pcap"
    write_capture(small, 70_000, seed=2, rate=50_000.0)
    write_capture(large, 700_000, seed=2, rate=50_000.0)
    assert large.stat().st_size > 9 * small.stat().st_size
    grown_mib = (peak_rss_kib(large, tmp_path / "l.parquet") - peak_rss_kib(small, tmp_path / "s.parquet")) / 1024
    assert grown_mib < 48, f"peak memory grew by {grown_mib:.0f} MiB for a capture 10 times larger"


def test_every_subcommand_has_complete_help() -> None:
    expected = {
        "synth": ["--app", "--duration", "--users", "--mix", "--seed", "--rotate", "--snaplen", "--start", "--exfil"],
        "edges": ["FLOWS.parquet", "RUN_DIR", "--keep-infra", "unknown"],
        "import-legacy": ["--pcap", "--cluster-log", "--analysis-json", "refuses every global"],
        "features": ["--tg", "--rates", "--split", "--attacked-share", "--attack-seconds", "--rate-sd", "--policy"],
    }
    for command, needles in expected.items():
        text = run_mimir(command, "--help", check=True).stdout
        assert "exit codes" in text, command
        for needle in needles:
            assert needle in text, (command, needle)


def test_a_call_builds_only_its_command_yet_every_help_is_whole() -> None:
    """`mimir X` declares only X in full (so it imports only what X needs); the help it prints is the same as that
    of the parser with every command, and `mimir --help` lists every command with its line."""
    from mimir.cli import COMMANDS, build_parser

    def help_of(parser: argparse.ArgumentParser, name: str) -> str:
        (choices,) = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return choices[name].format_help()

    whole = build_parser()
    assert build_parser("").format_help() == whole.format_help()
    for name in COMMANDS:
        assert help_of(build_parser(name), name) == help_of(whole, name), name


def test_the_top_level_help_and_ingest_load_nothing_they_do_not_use() -> None:
    probe = (
        "import sys\nfrom mimir.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('numpy', 'numba', 'pyarrow', 'tqdm', 'jsonschema') if m in sys.modules))"
    )
    top = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True, text=True, check=True)
    assert top.stdout.splitlines()[-1] == "[]"
    ingest = subprocess.run(
        [sys.executable, "-c", probe, "ingest", "--help"], capture_output=True, text=True, check=True
    )
    assert "numba" not in ingest.stdout.splitlines()[-1]
