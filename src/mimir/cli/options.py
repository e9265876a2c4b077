"""What several subcommands share: value types, the subcommand builder, and the options that define a run."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimir.cli import COMMANDS, EXIT_CODE_TEXT

if TYPE_CHECKING:
    from mimir.spec import Range, RunSpec


Commands = Any  # argparse's private _SubParsersAction: what add_subparsers() returns


def listed(values: Range) -> Callable[[str], tuple]:
    """An argparse type for `10,60`: at least one number, each in `values` (argparse names the option)."""

    def parse(text: str) -> tuple:
        numbers = tuple(values.option(v) for v in text.split(",") if v.strip())
        if not numbers:
            raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers, each in {values}")
        return numbers

    return parse


def command(commands: Commands, name: str, **kwargs: str) -> argparse.ArgumentParser:
    """A subcommand whose help keeps its line breaks and ends with the exit codes (unless it gives its own); a
    top-level one takes its one-line help from `mimir.cli.COMMANDS`."""
    kwargs.setdefault("epilog", EXIT_CODE_TEXT)
    if name in COMMANDS and commands.dest == "command":
        kwargs.setdefault("help", COMMANDS[name][2])
    return commands.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def add_force(parser: argparse.ArgumentParser, what: str) -> None:
    """--force: the one way to write over an existing output, and only over one this same command made."""
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"replace {what} that an earlier run of this same command wrote (recognised by its own marker); "
        "without it an existing output is refused (exit 2), and nothing else (an input of this call, a file or "
        "folder mimir did not make) is ever replaced",
    )


def add_run_options(parser: argparse.ArgumentParser, users: str, seed: str) -> None:
    """What a run is, for the sources that make one (synth, collect): application, load, mix, seed, capture."""
    from mimir.loadmodel import DEFAULT_MIX
    from mimir.spec import RunSpec

    mix = ",".join(f"{kind}={weight:g}" for kind, weight in DEFAULT_MIX.items())
    ranges = RunSpec.RANGES
    parser.add_argument("--app", required=True, metavar="APP", help="sockshop, wordpress, online-boutique or a YAML")
    parser.add_argument(
        "--duration",
        type=ranges["duration"].option,
        required=True,
        metavar="SECONDS",
        help=f"run length, {ranges['duration']}",
    )
    parser.add_argument(
        "--users", type=ranges["users"].option, required=True, metavar="N", help=f"{users}, {ranges['users']}"
    )
    parser.add_argument(
        "--mix",
        default=mix,
        metavar="KIND=W,...",
        help=f"weights of the user behaviours, each in [0, 1e6], one at least positive (default: {mix})",
    )
    parser.add_argument(
        "--seed",
        type=ranges["seed"].option,
        default=RunSpec.seed,
        metavar="K",
        help=f"{seed}, {ranges['seed']} (default {RunSpec.seed})",
    )
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="RUN_DIR", help="run bundle folder: new or empty"
    )
    add_force(parser, "a run bundle")
    parser.add_argument(
        "--snaplen",
        type=ranges["snaplen"].option,
        default=RunSpec.snaplen,
        metavar="BYTES",
        help=f"bytes captured per frame, {ranges['snaplen']}: the link, IP and TCP headers at least, tcpdump's "
        f"largest at most (default {RunSpec.snaplen})",
    )
    parser.add_argument(
        "--rotate",
        type=ranges["rotate"].option,
        default=RunSpec.rotate,
        metavar="SECONDS",
        help=f"capture file rotation, whole seconds as tcpdump -G, {ranges['rotate']} (default {RunSpec.rotate})",
    )


def run_spec(args: argparse.Namespace, exfil: Sequence[str] = (), **source_only: Any) -> RunSpec:
    """The run the options describe: `exfil` holds --exfil texts, `source_only` what only one source knows (the
    start time)."""
    from mimir.apps import load_app
    from mimir.loadmodel import parse_mix
    from mimir.spec import ExfilWindow, RunSpec

    app = load_app(args.app)
    windows = tuple(ExfilWindow.from_text(text, app) for text in exfil)
    for text, window in zip(exfil, windows, strict=True):
        window.check_within(args.duration, f"--exfil {text!r}")
    return RunSpec(
        app=app,
        users=args.users,
        duration=args.duration,
        mix=parse_mix(args.mix, list(app.requests), "--mix"),
        seed=args.seed,
        snaplen=args.snaplen,
        rotate=args.rotate,
        exfil=windows,
        **source_only,
    )
