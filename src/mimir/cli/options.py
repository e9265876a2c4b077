"""What several subcommands share: value types, the subcommand builder, and the options that define a run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimir.errors import EXIT_CODES, UsageError
from mimir.loadmodel import DEFAULT_MIX
from mimir.spec import ExfilWindow, RunSpec

EXIT_CODE_TEXT = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())

Commands = Any  # argparse's private _SubParsersAction: what add_subparsers() returns


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def number_list(text: str, option: str, kind: type) -> list:
    """`10,60` → [10, 60]; every value positive."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a comma-separated list of numbers") from None
    if not values or min(values) <= 0:
        raise UsageError(f"{option}: {text!r}: give positive numbers")
    return values


def command(commands: Commands, name: str, **kwargs: str) -> argparse.ArgumentParser:
    """A subcommand whose help keeps its line breaks and ends with the exit codes (unless it gives its own)."""
    kwargs.setdefault("epilog", EXIT_CODE_TEXT)
    return commands.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def add_run_options(parser: argparse.ArgumentParser, users: str, seed: str) -> None:
    """What a run is, for the sources that make one (synth, collect): application, load, mix, seed, capture."""
    mix = ",".join(f"{kind}={weight:g}" for kind, weight in DEFAULT_MIX.items())
    parser.add_argument("--app", required=True, metavar="APP", help="sockshop, wordpress, online-boutique or a YAML")
    parser.add_argument("--duration", type=positive_float, required=True, metavar="SECONDS", help="run length")
    parser.add_argument("--users", type=positive_int, required=True, metavar="N", help=users)
    parser.add_argument(
        "--mix", default=mix, metavar="KIND=W,...", help=f"weights of the user behaviours (default: {mix})"
    )
    parser.add_argument("--seed", type=int, default=RunSpec.seed, metavar="K", help=f"{seed} (default {RunSpec.seed})")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="RUN_DIR", help="run bundle folder")
    parser.add_argument(
        "--snaplen",
        type=positive_int,
        default=RunSpec.snaplen,
        metavar="BYTES",
        help=f"bytes captured per frame (default {RunSpec.snaplen}, at least {RunSpec.MIN_SNAPLEN})",
    )
    parser.add_argument(
        "--rotate",
        type=positive_int,
        default=RunSpec.rotate,
        metavar="SECONDS",
        help=f"capture file rotation, whole seconds as tcpdump -G (default {RunSpec.rotate})",
    )


def run_spec(args: argparse.Namespace, exfil: Sequence[str] = (), **source_only: Any) -> RunSpec:
    """The run the options describe: `exfil` holds --exfil texts, `source_only` what only one source knows (the
    start time)."""
    from mimir.apps import load_app
    from mimir.loadmodel import parse_mix

    app = load_app(args.app)
    if args.snaplen < RunSpec.MIN_SNAPLEN:
        raise UsageError(f"--snaplen must be at least {RunSpec.MIN_SNAPLEN} bytes (the link, IP and TCP headers)")
    return RunSpec(
        app=app,
        users=args.users,
        duration=args.duration,
        mix=parse_mix(args.mix, list(app.requests), "--mix"),
        seed=args.seed,
        snaplen=args.snaplen,
        rotate=args.rotate,
        exfil=tuple(ExfilWindow.from_text(text, app) for text in exfil),
        **source_only,
    )
