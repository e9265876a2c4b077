"""The `mimir` command line: one subcommand per stage, errors as messages and documented exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from mimir import __version__
from mimir.errors import EXIT_CODES, EXIT_INTERNAL, MimirError, UsageError

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


def _command(commands: argparse._SubParsersAction, name: str, **kwargs: str) -> argparse.ArgumentParser:
    """A subcommand whose help keeps its line breaks and ends with the exit codes (unless it gives its own)."""
    kwargs.setdefault("epilog", EXIT_CODE_TEXT)
    return commands.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def _run_options(parser: argparse.ArgumentParser, users: str, seed: str) -> None:
    """What a run is, for the sources that make one (synth, collect): application, load, mix, seed, output."""
    parser.add_argument("--app", required=True, metavar="APP", help="sockshop, wordpress, online-boutique or a YAML")
    parser.add_argument("--duration", type=_positive_float, required=True, metavar="SECONDS", help="run length")
    parser.add_argument("--users", type=_positive_int, required=True, metavar="N", help=users)
    parser.add_argument(
        "--mix",
        default="browse=0.5,buy=0.3,register=0.2",
        metavar="KIND=P,...",
        help="probabilities of the request types (default: browse=0.5,buy=0.3,register=0.2)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="K", help=seed)
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="RUN_DIR", help="run bundle folder")
    parser.add_argument(
        "--snaplen", type=_positive_int, default=128, metavar="BYTES", help="bytes captured per frame (default 128)"
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

    ingest = _command(
        commands,
        "ingest",
        help="turn capture files into a per-time-bin flows table",
        description="Read capture files (one run, given in time order: a rotated capture makes one table) "
        "in a single streaming pass and write its flows table and summary.",
        epilog=_ingest_help(),
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

    synth = _command(
        commands,
        "synth",
        help="generate a synthetic run (capture, entities, run.json) of an application under load",
        description="Simulate a microservice application on a one-node Kubernetes cluster under a daily load "
        "curve (24 phases) and write the run bundle a capture on the node's 'any' interface would give: "
        "capture/*.pcap (Linux cooked v2, rotated), entities.jsonl and run.json. Same arguments, same bytes.",
        epilog="applications: config/apps/<APP>.yaml (schema: config/schemas/app.schema.json), or a path to "
        "such a file.\n\n" + EXIT_CODE_TEXT,
    )
    _run_options(synth, users="peak number of active users", seed="random seed (default 0)")
    synth.add_argument(
        "--rotate", type=_positive_float, default=600.0, metavar="SECONDS", help="capture file rotation (default 600)"
    )
    synth.add_argument(
        "--start", type=int, default=1_767_225_600, metavar="EPOCH", help="start time (default 2026-01-01T00:00Z)"
    )
    synth.add_argument(
        "--exfil",
        action="append",
        default=[],
        metavar="SPEC",
        help="physical exfiltration, repeatable: path=user-db,user,front-end,outside;rate=100KB/min;start=1200;"
        "duration=120 (seconds from the run's start)",
    )
    synth.set_defaults(handler=_run_synth)

    edges = _command(
        commands,
        "edges",
        help="resolve a flows table's addresses to the run's entities, per second",
        description="Attribute every flow to the entity that held its addresses at that time (entities.jsonl "
        "replayed: IP reuse, pods added and removed, services by selector) and write one row per (second, src "
        "entity, dst entity) with packets, bytes and both ends' kind (pod, vip, ingress, outside, infra, unknown) "
        "and service, plus EDGES.summary.json.",
    )
    edges.add_argument("flows", type=Path, metavar="FLOWS.parquet", help="from mimir ingest")
    edges.add_argument("run", type=Path, metavar="RUN_DIR", help="the run bundle (entities.jsonl, run.json)")
    edges.add_argument("-o", "--output", required=True, type=Path, metavar="EDGES.parquet", help="edges table")
    edges.add_argument(
        "--keep-infra",
        action="store_true",
        help="keep infrastructure (the node, kube-system other than DNS); dropped by default, DNS never is",
    )
    edges.set_defaults(handler=_run_edges)

    legacy = _command(
        commands,
        "import-legacy",
        help="convert an experiment of the MIMIR prototype into a run bundle",
        description="Convert a prototype experiment (its pcap, its pickled cluster-creation log and, optionally, "
        "its analysis JSON) into a run bundle: capture/, entities.jsonl and run.json. The log's second 0 is the "
        "capture's first packet. The pickle is read with an unpickler that refuses every global: a log that "
        "would run code is rejected, never executed.",
    )
    legacy.add_argument("--pcap", required=True, type=Path, metavar="P", help="the experiment's capture")
    legacy.add_argument("--cluster-log", required=True, type=Path, metavar="L", help="the cluster-creation log")
    legacy.add_argument("--analysis-json", type=Path, metavar="J", help="the experiment's analysis JSON")
    legacy.add_argument("-o", "--output", required=True, type=Path, metavar="RUN_DIR", help="run bundle folder")
    legacy.set_defaults(handler=_run_import_legacy)

    features = _command(
        commands,
        "features",
        help="inject exfiltration and compute the labelled feature tables of a run",
        description="For each exfiltration rate, inject attacks once at the 1 s bin along paths from the "
        "sensitive services to outside (learned from benign traffic), aggregate to every granularity, and "
        "write OUT/attacks/{rate}.parquet and OUT/features/{tg}s/{rate}.parquet: per interval the MIMIR "
        "features, the label, the attack id and path, and the split.",
    )
    features.add_argument("edges", type=Path, metavar="EDGES.parquet", help="from mimir edges")
    features.add_argument("run", type=Path, metavar="RUN_DIR", help="the run bundle (run.json)")
    features.add_argument("-o", "--output", required=True, type=Path, metavar="OUT_DIR", help="results folder")
    features.add_argument("--tg", default="10,60", metavar="S,...", help="granularities in seconds (default 10,60)")
    features.add_argument(
        "--rates", default="10,1,0.1,0.05,0.01", metavar="R,...", help="MB per minute (default: the paper's five)"
    )
    features.add_argument(
        "--split",
        default="train=0.6,validation=0.2,test=0.2",
        metavar="NAME=SHARE,...",
        help="time split of the run's intervals (default train=0.6,validation=0.2,test=0.2)",
    )
    features.add_argument("--attacked-share", type=float, default=0.2, metavar="F", help="share of time attacked")
    features.add_argument("--attack-seconds", type=_positive_int, default=60, metavar="S", help="attack length")
    features.add_argument("--rate-sd", type=float, default=0.1, metavar="F", help="rate spread, share of the rate")
    features.add_argument("--max-path-length", type=_positive_int, default=5, metavar="N", help="services per path")
    features.add_argument("--seed", type=int, default=0, metavar="K", help="combined with the run and the rate")
    features.add_argument(
        "--benign-edges",
        type=Path,
        metavar="EDGES.parquet",
        help="learn the allowed paths from this (training) run instead of the run itself",
    )
    features.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="allowed service pairs (YAML: allow: [[a, b], ...], 'outside' for the world) instead of benign traffic",
    )
    features.add_argument(
        "--jobs",
        type=_positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="rates computed in parallel (default: all cores)",
    )
    features.set_defaults(handler=_run_features)

    collect = _command(
        commands,
        "collect",
        help="collect a run on a Kubernetes cluster: deploy, populate, load, capture and watch",
        description="Deploy the application from its pinned manifests (config/k8s/<APP>/) with the Kubernetes API, "
        "set replicas and autoscalers from config/apps/<APP>.yaml, wait for readiness through the API, populate it, "
        "then record a run bundle: tcpdump on the node's 'any' interface (capture/*.pcap, rotated), the API's watch "
        "of pods, services, endpoints and nodes (entities.jsonl, a full listing first), and one Locust process "
        "following the 24-phase daily curve with the request mix (load/). run.json holds the clock of every step "
        "(UTC epoch), tool and cluster versions, and capture statistics with kernel drops. The application is torn "
        "down at the end, on an error and on Ctrl-C; run.json's status then says complete or incomplete.",
        epilog="example (minikube with the docker driver, as ansible/ provisions it; run as root for tcpdump):\n"
        "  mimir collect --app sockshop --users 100 --duration 3600 -o data/runs/sockshop-100\n\n" + EXIT_CODE_TEXT,
    )
    _run_options(collect, users="peak number of Locust users", seed="seeds the users' choices (default 0)")
    collect.add_argument(
        "--spawn-rate", type=_positive_float, default=10.0, metavar="USERS/S", help="Locust spawn rate (default 10)"
    )
    api = collect.add_argument_group("cluster")
    api.add_argument("--kubeconfig", type=Path, metavar="FILE", help="default: $KUBECONFIG or ~/.kube/config")
    api.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    api.add_argument("--server", metavar="URL", help="an API server URL to use instead of a kubeconfig (no auth)")
    api.add_argument("--manifests", type=Path, metavar="DIR", help="the app's manifests (default config/k8s/<APP>)")
    api.add_argument("--locustfile", type=Path, metavar="FILE", help="the app's Locust behaviours (default: built in)")
    api.add_argument("--target", metavar="URL", help="the entry URL (default: the node's address and entry NodePort)")
    api.add_argument(
        "--cpu-percent", type=_positive_int, default=50, metavar="P", help="autoscalers' CPU target (default 50)"
    )
    api.add_argument(
        "--customers", type=int, default=1000, metavar="N", help="Sock Shop customers to register first (default 1000)"
    )
    api.add_argument("--no-populate", dest="populate", action="store_false", help="skip populating the application")
    api.add_argument(
        "--ready-timeout",
        type=_positive_float,
        default=900.0,
        metavar="SECONDS",
        help="how long deployment, population and the entry point may take (default 900)",
    )
    api.add_argument(
        "--no-least-privilege-watch",
        dest="least_privilege_watch",
        action="store_false",
        help="watch with your own credentials instead of the mimir-watcher ServiceAccount (list and watch only)",
    )
    api.add_argument("--keep", action="store_true", help="leave the application deployed afterwards")
    cap = collect.add_argument_group("capture")
    cap.add_argument(
        "--capture-netns",
        default="container:minikube",
        metavar="WHERE",
        help="network namespace of the node: container:NAME (minikube's docker driver; default container:minikube), "
        "host (mimir runs on the node), or a namespace file such as /proc/PID/ns/net",
    )
    cap.add_argument("--interface", default="any", metavar="IF", help="capture interface (default any)")
    cap.add_argument(
        "--rotate", type=_positive_int, default=600, metavar="SECONDS", help="capture file rotation (default 600)"
    )
    cap.add_argument(
        "--buffer", type=_positive_int, default=32768, metavar="KIB", help="kernel capture buffer (default 32768)"
    )
    cap.add_argument(
        "--service-network",
        default="10.96.0.0/12",
        metavar="CIDR",
        help="the cluster's service range, for address classes (default 10.96.0.0/12)",
    )
    collect.set_defaults(handler=_run_collect)

    provision = _command(
        commands,
        "provision",
        help="provision collection hosts with Ansible (docker, minikube, capture tools, Locust, mimir)",
        description="Run the project's playbook (ansible/site.yml) on the hosts of an Ansible inventory: Docker, "
        "a pinned single-node minikube cluster (kube-proxy in iptables mode, bridge CNI, metrics-server), kubectl, "
        "Helm, tcpdump and tshark, SBCL, Locust, and mimir itself from this checkout (its tracked files, sent as "
        "a source archive, installed from requirements.lock). Shows one line per task and per host result on "
        "stderr and a recap at the end; stops at a failed task and names the host, the task and the module's "
        "message. Needs a checkout of the project (the ansible/ folder beside src/).",
        epilog="roles (each is also a tag): base, docker, minikube, kubectl, helm, capture, sbcl, loadgen, mimir;\n"
        "their settings: ansible/roles/<ROLE>/defaults/main.yml (override with -e or in the inventory).\n\n"
        "examples:\n"
        "  cp ansible/inventory.example.ini hosts.ini   # then edit it\n"
        "  mimir provision --inventory hosts.ini --check\n"
        "  mimir provision --inventory hosts.ini\n"
        "  mimir provision --inventory hosts.ini --tags capture,loadgen --limit collector-1\n"
        "  mimir provision --inventory hosts.ini -e minikube_cpus=8 -e minikube_memory=16384\n\n" + EXIT_CODE_TEXT,
    )
    provision.add_argument(
        "-i", "--inventory", required=True, type=Path, metavar="FILE", help="Ansible inventory (INI or YAML)"
    )
    provision.add_argument(
        "--tags",
        action="append",
        default=[],
        metavar="TAG[,TAG...]",
        help="run only these roles (repeatable or comma-separated; default: all)",
    )
    provision.add_argument(
        "--check", action="store_true", help="dry run: report what would change and change nothing (Ansible check mode)"
    )
    provision.add_argument("--limit", metavar="PATTERN", help="only these hosts or groups of the inventory")
    provision.add_argument(
        "-e",
        "--extra-var",
        action="append",
        default=[],
        dest="extra_vars",
        metavar="KEY=VALUE",
        help="set a role variable, the value read as YAML (repeatable), e.g. -e minikube_cpus=8",
    )
    provision.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the result")
    provision.set_defaults(handler=_run_provision)
    return parser


def _number_list(text: str, name: str, kind: type) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{name}: {text!r} is not a comma-separated list of numbers") from None
    if not values or min(values) <= 0:
        raise UsageError(f"{name}: {text!r}: give positive numbers")
    return values


def _run_provision(args: argparse.Namespace) -> None:
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


def _run_features(args: argparse.Namespace) -> None:
    from mimir.attacks import InjectionConfig
    from mimir.dataset import build, parse_split

    if not 0 <= args.attacked_share < 1 or args.rate_sd < 0:
        raise UsageError("--attacked-share is in [0, 1) and --rate-sd is not negative")
    cfg = InjectionConfig(args.attack_seconds, args.attacked_share, args.rate_sd, args.max_path_length, args.seed)
    summary = build(
        args.edges,
        args.run,
        args.output,
        granularities=_number_list(args.tg, "--tg", int),
        rates=_number_list(args.rates, "--rates", float),
        split=parse_split(args.split),
        cfg=cfg,
        benign_edges_path=args.benign_edges,
        jobs=args.jobs,
        policy=args.policy,
    )
    print(f"{args.output}: {len(summary['tables'])} feature tables over {len(summary['paths'])} attack paths")


def _run_import_legacy(args: argparse.Namespace) -> None:
    from mimir.sources.legacy import import_legacy

    run = import_legacy(args.pcap, args.cluster_log, args.analysis_json, args.output)
    events = sum(1 for _ in (args.output / "entities.jsonl").open())
    print(f"{args.output}: {run['app']} run imported, {events} entity events")


def _run_edges(args: argparse.Namespace) -> None:
    from mimir.edges import write_edges

    summary = write_edges(args.flows, args.run, args.output, keep_infra=args.keep_infra)
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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _run_synth(args: argparse.Namespace) -> None:
    from mimir.apps import load_app
    from mimir.sources.synthetic import Exfiltration, SynthConfig, parse_mix, synthesize

    app = load_app(args.app)
    if args.snaplen < 68:
        raise UsageError("--snaplen must be at least 68 bytes (the link, IP and TCP headers)")
    cfg = SynthConfig(
        app=app,
        duration=args.duration,
        users=args.users,
        mix=parse_mix(args.mix, list(app.requests)),
        seed=args.seed,
        start=args.start,
        snaplen=args.snaplen,
        rotate=args.rotate,
        exfiltration=[Exfiltration.parse(spec, app) for spec in args.exfil],
    )
    result = synthesize(cfg, args.output)
    print(
        f"{args.output}: {result.packets} packets in {len(result.files)} capture file(s), {app.name}, "
        f"{args.users} users, {args.duration:g} s"
    )


def _run_collect(args: argparse.Namespace) -> None:
    from mimir.apps import load_app
    from mimir.sources.cluster.collect import CollectConfig, collect, progress_printer
    from mimir.sources.synthetic import parse_mix

    app = load_app(args.app)
    if args.snaplen < 68:
        raise UsageError("--snaplen must be at least 68 bytes (the link, IP and TCP headers)")
    if args.customers < 0:
        raise UsageError("--customers must not be negative")
    cfg = CollectConfig(
        app=app,
        users=args.users,
        mix=parse_mix(args.mix, list(app.requests)),
        duration=args.duration,
        out=args.output,
        seed=args.seed,
        spawn_rate=args.spawn_rate,
        kubeconfig=args.kubeconfig,
        context=args.context,
        server=args.server,
        manifests=args.manifests,
        locustfile=args.locustfile,
        target=args.target,
        capture_netns=args.capture_netns,
        interface=args.interface,
        rotate=args.rotate,
        snaplen=args.snaplen,
        buffer_kib=args.buffer,
        customers=args.customers,
        populate=args.populate,
        cpu_percent=args.cpu_percent,
        ready_timeout=args.ready_timeout,
        service_network=args.service_network,
        least_privilege_watch=args.least_privilege_watch,
        keep=args.keep,
    )
    run = collect(cfg, progress=progress_printer())
    capture = run.get("capture", {})
    print(
        f"{args.output}: {run['status']}: {capture.get('packets')} packets in {len(capture.get('files', []))} "
        f"capture file(s), {capture.get('dropped')} dropped by the kernel, {run['load'].get('requests')} requests"
    )


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
