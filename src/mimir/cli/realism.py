"""`mimir realism`: how alike two sources of traffic for one application are (mimir.realism)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mimir.cli.options import EXIT_CODE_TEXT, Commands, add_force, command
from mimir.spec import CLOCK, WINDOW

DESCRIPTION = """\
Compare two sources of traffic for one application, REFERENCE (e.g. a real capture) and CANDIDATE (e.g. a
synthetic run), window by window, and say how alike they are.

A side is either
  - a run bundle folder (capture/, entities.jsonl, run.json: from mimir synth, collect or import-legacy); its
    capture files (run.json capture.files) are read at 1 s bins, cut into whole windows from the run's start;
  - one or more files (comma-separated) of `tshark -z conv,ip` tables, the prototype's format: each table is one
    window, in file order; its addresses are the prototype's minikube (load generator 192.168.99.1, node
    192.168.99.100 and 10.0.2.15, bridge gateway 172.17.0.1, pods 172.17.0.0/16, services 10.96.0.0/12) and its
    entities come from --reference-log / --candidate-log: the prototype's pickled cluster-creation log or an
    entities.jsonl."""

EPILOG = """\
categories (from the roles of a pair's two ends, per window):
  client ↔ node            the load generator and a node address (NodePort ingress)
  client ↔ S vip           ingress through service S's VIP
  client ↔ S pod           the client and a pod: after a VIP's DNAT, or NodePort's half-NAT view of the responses
  node ↔ S pod / S vip     the node (its addresses, the pod bridge gateway, loopback) and S: SNAT-ed ingress, probes
  S pod ↔ T vip            calls before the DNAT
  S pod ↔ T pod            calls after the DNAT (caller first where the run's VIP traffic says who calls whom)
  within S                 pod ↔ pod of one service (replication)
  dns                      a pod ↔ kube-dns (pod or VIP); the node ↔ kube-dns (probes) is platform
  platform                 any end in kube-system other than DNS, the `kubernetes` VIP, node ↔ node
  egress                   an end outside the cluster's ranges
  unknown                  an in-cluster address no entity held
figures (medians over the windows):
  all: IP conversations, frames, bytes, bytes per conversation (median, p90, max), the share of conversations
  seen in the first and the last second of the window; graph: nodes (the node's addresses as one), edges, degree
  (mean, max), service pairs only one side has; per category: pairs, frames, bytes, bytes per frame,
  response/request bytes, bytes per pair (median), per-pair coefficient of variation of bytes across the
  windows (median, p90; needs two windows), pair churn (the share of pairs absent in some window), and for
  within-service pairs the max/min ratio of their two directions.
distance and tolerance:
  counts, bytes, ratios: candidate / reference, within [0.6, 1.4]; CVs: candidate / reference, within [0.5, 2];
  shares: candidate - reference, within ±0.15; n/a where a side lacks the figure.
output (DIR, each file written under a temporary name, then renamed; none may exist unless --force):
  realism.csv   figure, category, reference, candidate, distance, tolerance, within
  realism.md    the same as a markdown table, with notes on the windows and the time alignment
  realism.png, realism.svg   per-pair bytes, bytes per frame per category, per-pair CVs, both sides
  and one summary line on stdout.

"""


def add_realism(commands: Commands) -> None:
    parser = command(
        commands,
        "realism",
        description=DESCRIPTION,
        epilog=EPILOG + EXIT_CODE_TEXT,
    )
    parser.add_argument("reference", metavar="REFERENCE", help="run bundle folder, or conversation table file(s)")
    parser.add_argument("candidate", metavar="CANDIDATE", help="run bundle folder, or conversation table file(s)")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("realism"), metavar="DIR", help="output folder (default: realism)"
    )
    add_force(parser, "the realism.* files")
    parser.add_argument(
        "--window",
        type=WINDOW.option,
        default=10,
        metavar="SECONDS",
        help=f"window length, {WINDOW}; a conversation table is one window of this length (default: 10)",
    )
    parser.add_argument(
        "--peak",
        action="store_true",
        help="for run bundles, only the windows inside the busiest of run.json's load phases (24 equal phases "
        "over the run); a side without phases keeps every window",
    )
    for side in ("reference", "candidate"):
        parser.add_argument(
            f"--{side}-log",
            type=Path,
            metavar="LOG",
            help=f"the cluster log naming the {side}'s conversation tables: the prototype's pickle or an "
            "entities.jsonl",
        )
        parser.add_argument(
            f"--{side}-at",
            type=CLOCK.option,
            metavar="SECOND",
            help=f"the log's time of the {side}'s first table, {CLOCK} (log seconds for the pickle, the events' "
            "clock for entities.jsonl); default: an editcap split's number times the window when the pickle covers "
            "it, else the time whose entities hold the most of the tables' in-cluster addresses",
        )
    parser.add_argument(
        "--rename",
        metavar="OLD=NEW,...",
        help="rename services on both sides so their rows line up (wwwppp-wordpress=wordpress); a service "
        "named <release>-<name> on one side only is matched to <name> on the other only without asking",
    )
    parser.set_defaults(handler=run_realism)


def run_realism(args: argparse.Namespace) -> None:
    from mimir.realism import SideSpec, parse_renames, realism

    comparison = realism(
        SideSpec.parse(args.reference, args.reference_log, args.reference_at),
        SideSpec.parse(args.candidate, args.candidate_log, args.candidate_at),
        args.output,
        window=args.window,
        peak=args.peak,
        renames=parse_renames(args.rename),
        force=args.force,
    )
    print(comparison.summary)
