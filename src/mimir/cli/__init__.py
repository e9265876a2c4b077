"""The `mimir` command line: one subcommand per stage, errors as messages and documented exit codes.

Each subcommand lives with its kin (`stages`: ingest, edges, features; `sources`: synth, collect, import-legacy;
`testbed`: testbed up, run, down; `hosts`: provision) as one function that declares its options and one that
runs it. Option defaults come from the run specification (`mimir.spec`), the same place the workflow's config
takes them from.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from mimir import __version__
from mimir.cli import hosts, realism, sources, stages, testbed
from mimir.cli.options import EXIT_CODE_TEXT
from mimir.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, MimirError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimir",
        description="Detect data exfiltration in microservice applications from their network traffic.",
        epilog=EXIT_CODE_TEXT + "\n\nSet MIMIR_DEBUG=1 to see the traceback of an internal error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mimir {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    stages.add_ingest(commands)
    sources.add_synth(commands)
    stages.add_edges(commands)
    sources.add_import_legacy(commands)
    stages.add_features(commands)
    sources.add_collect(commands)
    testbed.add_testbed(commands)
    hosts.add_provision(commands)
    realism.add_realism(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except MimirError as e:
        print(f"mimir: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("mimir: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: say so plainly, keep the traceback for MIMIR_DEBUG
        if os.environ.get("MIMIR_DEBUG"):
            traceback.print_exc()
        print(f"mimir: internal error: {type(e).__name__}: {e} (set MIMIR_DEBUG=1 for details)", file=sys.stderr)
        return EXIT_INTERNAL
    return 0
