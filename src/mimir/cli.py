"""The `mimir` command line: one subcommand per stage, errors as messages and documented exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from mimir import __version__
from mimir.errors import EXIT_CODES, EXIT_INTERNAL, MimirError

EXIT_CODE_TEXT = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _ingest_help() -> str:
    from mimir.capture.decode import SUPPORTED_LINKTYPES

    kinds = "\n".join(f"  {number:>4}  {name}" for number, name in sorted(SUPPORTED_LINKTYPES.items()))
    return (
        "input formats (decided by the magic number, never the file name):\n"
        "  classic pcap (microsecond and nanosecond, either byte order), pcapng (several sections and\n"
        "  interfaces, enhanced, simple and obsolete packet blocks), and either one gzip-compressed.\n"
        f"link types:\n{kinds}\n"
        "output:\n"
        "  FLOWS.parquet: one row per (ts, src, dst, proto, sport, dport) with packets and bytes, where ts is\n"
        "  the bin start in integer epoch seconds, bytes the original frame lengths, the addresses those of\n"
        "  the outermost IP header, and the ports 0 where there is no TCP/UDP/SCTP/DCCP header (or it was\n"
        "  not captured, or the packet is a later fragment). FLOWS.summary.json beside it: packets read, IP\n"
        "  and non-IP packets, truncated records, per-file formats and link types, first and last timestamp.\n"
        "  A truncated last record (a capture stopped mid-write) is a warning; anything else malformed is\n"
        "  an error naming the file and byte offset, and nothing is written.\n\n" + EXIT_CODE_TEXT
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimir",
        description="Detect data exfiltration in microservice applications from their network traffic.",
        epilog=EXIT_CODE_TEXT + "\n\nSet MIMIR_DEBUG=1 to see the traceback of an internal error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mimir {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ingest = commands.add_parser(
        "ingest",
        help="turn capture files into a per-time-bin flows table",
        description="Read capture files (one run, given in time order: a rotated capture makes one table) "
        "in a single streaming pass and write its flows table and summary.",
        epilog=_ingest_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingest.add_argument("captures", nargs="+", type=Path, metavar="CAPTURE", help="pcap, pcapng or gzip file")
    ingest.add_argument("-o", "--output", required=True, type=Path, metavar="FLOWS.parquet", help="flows table")
    ingest.add_argument(
        "--bin",
        type=_positive_int,
        default=1,
        metavar="SECONDS",
        help="time bin in whole seconds (default: 1)",
    )
    progress = ingest.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show a progress bar"
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show one (default: on a terminal)"
    )
    ingest.set_defaults(handler=_run_ingest)
    return parser


def _run_ingest(args: argparse.Namespace) -> None:
    from mimir.capture.ingest import ingest, write_flows

    flows, summary = ingest(args.captures, args.bin, progress=args.progress)
    for warning in summary.warnings:
        print(f"mimir: warning: {warning}", file=sys.stderr)
    write_flows(flows, summary, args.output)
    print(
        f"{args.output}: {summary.flows} flows from {summary.packets} packets "
        f"({summary.ip_packets} IP, {summary.non_ip_packets} non-IP, {summary.truncated_records} truncated) "
        f"in {len(summary.files)} file(s)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except MimirError as e:
        print(f"mimir: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("mimir: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so plainly, keep the traceback for MIMIR_DEBUG
        if os.environ.get("MIMIR_DEBUG"):
            traceback.print_exc()
        print(f"mimir: internal error: {type(e).__name__}: {e} (set MIMIR_DEBUG=1 for details)", file=sys.stderr)
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
