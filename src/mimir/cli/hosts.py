"""Setting up the machines that collect runs: `provision` (the project's Ansible playbook)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mimir.cli.options import EXIT_CODE_TEXT, Commands, command

ROLES = "base, docker, minikube, kubectl, helm, capture, sbcl, loadgen, mimir"


def add_provision(commands: Commands) -> None:
    provision = command(
        commands,
        "provision",
        description="Run the project's playbook (ansible/site.yml) on the hosts of an Ansible inventory: Docker, "
        "a pinned single-node minikube cluster (kube-proxy in iptables mode, bridge CNI, metrics-server), kubectl, "
        "Helm, tcpdump and tshark, SBCL, Locust, and mimir itself from this checkout (its tracked files, sent as "
        "a source archive, installed from requirements.lock). Shows one line per task and per host result on "
        "stderr and a recap at the end; stops at a failed task and names the host, the task and the module's "
        "message. Needs a checkout of the project (the ansible/ folder beside src/).",
        epilog=f"roles (each is also a tag): {ROLES};\n"
        "their settings: ansible/roles/<ROLE>/defaults/main.yml and README.md (override with -e or in the "
        "inventory).\n\n"
        "examples:\n"
        "  cp ansible/inventory.example.ini hosts.ini   # then edit it\n"
        "  mimir provision --inventory hosts.ini --check\n"
        "  mimir provision --inventory hosts.ini\n"
        "  mimir provision --inventory hosts.ini --tags capture,loadgen --limit collector-1\n"
        "  mimir provision --inventory hosts.ini -e minikube_cpus=8 -e minikube_memory=16384\n\n" + EXIT_CODE_TEXT,
    )
    option = provision.add_argument
    option("-i", "--inventory", required=True, type=Path, metavar="FILE", help="Ansible inventory (INI or YAML)")
    option(
        "--tags",
        action="append",
        default=[],
        metavar="TAG[,TAG...]",
        help="run only these roles (repeatable or comma-separated; default: all)",
    )
    option("--check", action="store_true", help="dry run: report what would change and change nothing (check mode)")
    option("--limit", metavar="PATTERN", help="only these hosts or groups of the inventory")
    option(
        "-e",
        "--extra-var",
        action="append",
        default=[],
        dest="extra_vars",
        metavar="KEY=VALUE",
        help="set a role variable, the value read as YAML (repeatable), e.g. -e minikube_cpus=8",
    )
    option("-q", "--quiet", action="store_true", help="no progress lines, only the result")
    provision.set_defaults(handler=run_provision)


def run_provision(args: argparse.Namespace) -> None:
    from mimir.provision import parse_extra_vars, provision

    tags = [tag.strip() for text in args.tags for tag in text.split(",") if tag.strip()]
    result = provision(
        args.inventory,
        tags=tags or None,
        check=args.check,
        extra_vars=parse_extra_vars(args.extra_vars),
        limit=args.limit,
        progress=not args.quiet,
    )
    verb = "would change" if result.check else "changed"
    done = "checked" if result.check else "provisioned"
    print(f"{args.inventory}: {len(result.recap)} host(s) {done}, {result.changed} task result(s) {verb}")
