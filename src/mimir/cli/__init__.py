"""The `mimir` command line: one subcommand per stage, errors as messages and documented exit codes.

Each subcommand lives with its kin (`stages`: ingest, edges, features; `sources`: synth, collect, import-legacy;
`testbed`: testbed up, run, down; `hosts`: provision; `live`) as one function that declares its options and one that
runs it. Option defaults come from the run specification (`mimir.spec`), the same place the workflow's config
takes them from.

A call builds only the subcommand it runs (and one line for each of the others, for `mimir --help` and for
argparse's list of choices), so that `mimir ingest` imports what ingest needs and nothing of the other stages.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from mimir import __version__
from mimir.errors import EXIT_CODES, EXIT_INTERNAL, EXIT_INTERRUPTED, MimirError

# Every subcommand, in the order `mimir --help` lists them: its module in mimir.cli, the function that declares
# it, and its one-line help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ingest": ("stages", "add_ingest", "turn capture files into a per-time-bin flows table"),
    "synth": (
        "sources",
        "add_synth",
        "generate a synthetic run (capture, entities, run.json) of an application under load",
    ),
    "edges": ("stages", "add_edges", "resolve a flows table's addresses to the run's entities, per second"),
    "import-legacy": ("sources", "add_import_legacy", "convert an experiment of the MIMIR prototype into a run bundle"),
    "features": ("stages", "add_features", "inject exfiltration and compute the labelled feature tables of a run"),
    "collect": (
        "sources",
        "add_collect",
        "collect a run on a Kubernetes cluster: deploy, populate, load, capture and watch",
    ),
    "testbed": (
        "testbed",
        "add_testbed",
        "a real WordPress testbed in network namespaces: run it as a source of runs, or bring it up to explore",
    ),
    "provision": (
        "hosts",
        "add_provision",
        "provision collection hosts with Ansible (docker, minikube, capture tools, Locust, mimir)",
    ),
    "realism": ("realism", "add_realism", "compare two sources of traffic for one application: how alike are they?"),
    "live": ("live", "add_live", "score a trained model on live traffic, interval by interval: alerts as JSON lines"),
}
EXIT_CODE_TEXT = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; given `only` (a command name, or "" for none), that subcommand in full and the others
    as their one-line help, which is all that parsing a call of `only` (or `mimir --help`) reads of them."""
    parser = argparse.ArgumentParser(
        prog="mimir",
        description="Detect data exfiltration in microservice applications from their network traffic.",
        epilog=EXIT_CODE_TEXT + "\n\nSet MIMIR_DEBUG=1 to see the traceback of an internal error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mimir {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, adder, summary) in COMMANDS.items():
        if only is None or name == only:
            getattr(importlib.import_module(f"mimir.cli.{module}"), adder)(commands)
        else:
            commands.add_parser(name, help=summary)
    return parser


def _command(argv: list[str]) -> str:
    """The subcommand a call names: its first word that is not an option (the top level takes no values)."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command(argv)).parse_args(argv)
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
