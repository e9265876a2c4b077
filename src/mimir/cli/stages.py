"""The stages after a run exists: `ingest` (captures → flows), `edges` (flows → entity edges), `features`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mimir.cli.options import EXIT_CODE_TEXT, Commands, add_force, command, listed
from mimir.spec import BIN, DEFAULT_BIN_SECONDS, JOBS, SEED, FeatureSpec, check_granularities, check_rate_names


def _ingest_help() -> str:
    from mimir.capture.linktypes import SUPPORTED_LINKTYPES

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
        "  not captured, or the packet is a later fragment); the table's metadata records the bin.\n"
        "  FLOWS.summary.json beside it: packets read, IP and non-IP packets, truncated records, per-file\n"
        "  formats and link types, first and last timestamp (also in the table's metadata, which is the\n"
        "  authority: while a table is replaced its summary file is missing, never stale).\n"
        "  An existing output is refused (exit 2): give --force to replace a previous flows table.\n"
        "  A truncated last record (a capture stopped mid-write) is a warning; anything else malformed is\n"
        "  an error naming the file and byte offset, and nothing is written.\n\n" + EXIT_CODE_TEXT
    )


def add_ingest(commands: Commands) -> None:
    ingest = command(
        commands,
        "ingest",
        description="Read capture files (one run, given in time order: a rotated capture makes one table) "
        "in a single streaming pass and write its flows table and summary.",
        epilog=_ingest_help(),
    )
    ingest.add_argument("captures", nargs="+", type=Path, metavar="CAPTURE", help="pcap, pcapng or gzip file")
    ingest.add_argument("-o", "--output", required=True, type=Path, metavar="FLOWS.parquet", help="flows table")
    add_force(ingest, "a flows table and its summary")
    ingest.add_argument(
        "--bin",
        type=BIN.option,
        default=DEFAULT_BIN_SECONDS,
        metavar="SECONDS",
        help=f"time bin in whole seconds, {BIN} (default: {DEFAULT_BIN_SECONDS})",
    )
    ingest.add_argument(
        "--workers",
        type=JOBS.option,
        default=None,
        metavar="N",
        help=f"threads, {JOBS}: several files are read at once, or one file's blocks counted in parallel; the table "
        "is the same, byte for byte, whatever N (default: the cores this process may use)",
    )
    progress = ingest.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show a progress bar"
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show one (default: on a terminal)"
    )
    ingest.set_defaults(handler=run_ingest)


def run_ingest(args: argparse.Namespace) -> None:
    from mimir.capture.ingest import default_workers, ingest, write_flows
    from mimir.io import Claim

    claim = Claim("ingest", args.force, inputs=tuple(args.captures))
    claim.check_table(args.output)  # before the pass over the captures
    workers = args.workers or default_workers()
    flows, summary = ingest(args.captures, args.bin, progress=args.progress, workers=workers)
    for warning in summary.warnings:
        print(f"mimir: warning: {warning}", file=sys.stderr)
    write_flows(flows, summary, args.output, claim)
    print(
        f"{args.output}: {summary.flows} flows from {summary.packets} packets "
        f"({summary.ip_packets} IP, {summary.non_ip_packets} non-IP, {summary.truncated_records} truncated) "
        f"in {len(summary.files)} file(s)"
    )


def add_edges(commands: Commands) -> None:
    edges = command(
        commands,
        "edges",
        description="Attribute every flow to the entity that held its addresses at that time (entities.jsonl "
        "replayed: IP reuse, pods added and removed, services by selector) and write one row per (time bin, src "
        "entity, dst entity) with packets, bytes and both ends' kind (pod, vip, ingress, outside, infra, unknown) "
        "and service, plus EDGES.summary.json. The bin is the one the flows table records.",
    )
    edges.add_argument("flows", type=Path, metavar="FLOWS.parquet", help="from mimir ingest")
    edges.add_argument("run", type=Path, metavar="RUN_DIR", help="the run bundle (entities.jsonl, run.json)")
    edges.add_argument("-o", "--output", required=True, type=Path, metavar="EDGES.parquet", help="edges table")
    add_force(edges, "an edges table and its summary")
    edges.add_argument(
        "--keep-infra",
        action="store_true",
        help="keep infrastructure (the node, kube-system other than DNS); dropped by default, DNS never is",
    )
    edges.set_defaults(handler=run_edges)


def run_edges(args: argparse.Namespace) -> None:
    from mimir.edges import write_edges

    summary = write_edges(args.flows, args.run, args.output, keep_infra=args.keep_infra, force=args.force)
    unknown = summary["unknown_in_cluster_addresses"]
    if unknown:
        print(
            f"mimir: warning: {len(unknown)} in-cluster address(es) no entity held, kept as unknown/<ip> "
            f"({summary['unknown_in_cluster_packets']} packets): {', '.join(unknown[:10])}",
            file=sys.stderr,
        )
    print(
        f"{args.output}: {summary['edges']} edges from {summary['flow_rows']} flow rows "
        f"({summary['infra_packets']} infrastructure packets {'kept' if summary['infra_kept'] else 'dropped'})"
    )


def _listed(values: tuple | dict) -> str:
    if isinstance(values, dict):
        return ",".join(f"{name}={share:g}" for name, share in values.items())
    return ",".join(f"{value:g}" for value in values)


def add_features(commands: Commands) -> None:
    d = FeatureSpec()
    features = command(
        commands,
        "features",
        description="For each exfiltration rate, inject attacks SEEDS times (each injection from its own seed; every\n"
        "rate gets the same attacks, only scaled) at the flows' bin, aggregate them to every granularity and\n"
        "write OUT/attacks/{rate}.parquet (every injection, with a seed column) and\n"
        "OUT/features/{tg}s/{rate}.parquet: one row per injection and interval, ordered by seed then interval,\n"
        "with the MIMIR features, the label, the attack id, its path, policy class (abiding, violating) and shape\n"
        "(constant, bursts, mimicry), the seed and the split.\n\n"
        "Attacks alternate between policy-abiding paths (every hop rides a call benign traffic makes, pushed in\n"
        "its requests or pulled in its responses; out through a client of the entry service, a service that\n"
        "sends to outside, or kube-dns forwarding upstream) and policy-violating ones. The policy is learned\n"
        "from benign traffic (the run's, or --benign-edges) unless --policy gives it; an application with no\n"
        "policy-abiding path gets a note, never an invented path.",
    )
    features.add_argument("edges", type=Path, metavar="EDGES.parquet", help="from mimir edges")
    features.add_argument("run", type=Path, metavar="RUN_DIR", help="the run bundle (run.json)")
    features.add_argument("-o", "--output", required=True, type=Path, metavar="OUT_DIR", help="results folder")
    add_force(features, "the attack and feature tables")
    option = features.add_argument
    ranges = FeatureSpec.RANGES
    option(
        "--tg",
        type=listed(ranges["granularities"]),
        default=_listed(d.granularities),
        metavar="S,...",
        help=f"granularities, each {ranges['granularities']} (default {_listed(d.granularities)})",
    )
    option(
        "--rates",
        type=listed(ranges["rates"]),
        default=_listed(d.rates),
        metavar="R,...",
        help=f"exfiltration rates, each {ranges['rates']} (default {_listed(d.rates)})",
    )
    option(
        "--split",
        default=_listed(d.split),
        metavar="NAME=SHARE,...",
        help=f"time split of the run's intervals, shares {ranges['split']} adding up to 1 (default {_listed(d.split)})",
    )
    option(
        "--attacked-share",
        type=ranges["attacked_share"].option,
        default=d.attacked_share,
        metavar="F",
        help=f"share of the run's time attacked, {ranges['attacked_share']} (default {d.attacked_share:g})",
    )
    option(
        "--attack-seconds",
        type=ranges["attack_seconds"].option,
        default=d.attack_seconds,
        metavar="S",
        help=f"attack length, {ranges['attack_seconds']} (default {d.attack_seconds})",
    )
    option(
        "--rate-sd",
        type=ranges["rate_sd"].option,
        default=d.rate_sd,
        metavar="F",
        help=f"spread of an attack's rate, share of the rate, {ranges['rate_sd']} (default {d.rate_sd:g})",
    )
    option(
        "--max-path-length",
        type=ranges["max_path_length"].option,
        default=d.max_path_length,
        metavar="N",
        help=f"services per attack path, ingress and outside not counted, {ranges['max_path_length']} "
        f"(default {d.max_path_length})",
    )
    option(
        "--seeds",
        type=ranges["seeds"].option,
        default=d.seeds,
        metavar="N",
        help=f"injections per rate, stacked in each table, {ranges['seeds']} (default {d.seeds})",
    )
    option(
        "--seed",
        type=SEED.option,
        default=0,
        metavar="K",
        help=f"combined with the run and the injection's number; the rate only adds per-second noise, {SEED} "
        "(default 0)",
    )
    option(
        "--benign-edges",
        type=Path,
        metavar="EDGES.parquet",
        help="learn the network policy (calls, entry and egress services, upstream DNS) from this (training) run "
        "instead of the run itself",
    )
    option(
        "--policy",
        type=Path,
        metavar="FILE",
        help="the network policy instead of benign traffic (YAML: allow: [[a, b], ...], a opens connections to b; "
        "'ingress' or 'outside' for the world: [ingress, a] makes a an entry service, [a, outside] lets a send out)",
    )
    option(
        "--jobs",
        type=JOBS.option,
        default=min(os.cpu_count() or 1, int(JOBS.high)),
        metavar="N",
        help=f"rates in parallel, {JOBS} (default: all cores)",
    )
    features.set_defaults(handler=run_features)


def run_features(args: argparse.Namespace) -> None:
    from mimir.capture.ingest import recorded_bin
    from mimir.dataset import FeatureInputs, FeatureOutputs, build, parse_split

    split = parse_split(args.split)
    for name, share in split.items():  # parse_split lets NaN through (its sum is no number)
        FeatureSpec.RANGES["split"].check(share, f"--split {name}")
    check_rate_names(args.rates, "--rates")
    spec = FeatureSpec(
        granularities=args.tg,
        rates=args.rates,
        attack_seconds=args.attack_seconds,
        attacked_share=args.attacked_share,
        rate_sd=args.rate_sd,
        max_path_length=args.max_path_length,
        seeds=args.seeds,
        split=split,
    )
    bin_seconds = recorded_bin(args.edges, "edges")
    check_granularities(spec.granularities, bin_seconds, "--tg")
    inputs = FeatureInputs(args.edges, args.run, bin_seconds, benign_edges=args.benign_edges, policy=args.policy)
    summary = build(inputs, FeatureOutputs(args.output, args.force), spec, seed=args.seed, jobs=args.jobs)
    paths = summary["paths"]
    print(
        f"{args.output}: {len(summary['tables'])} feature tables of {spec.seeds} injection(s) over "
        f"{len(paths['abiding'])} policy-abiding and {len(paths['violating'])} policy-violating attack paths"
    )
    for window in summary["physical"]:
        print(f"physical exfiltration {window['path']}: labelled physical (as an injected attack: {window['class']})")
    for note in summary["notes"]:
        print(f"note: {note}")
