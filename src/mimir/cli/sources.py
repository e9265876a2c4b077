"""The sources of runs: `synth` (generated), `collect` (a Kubernetes cluster), `import-legacy` (the prototype)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mimir.cli.options import (
    EXIT_CODE_TEXT,
    Commands,
    add_force,
    add_run_options,
    command,
    run_spec,
)
from mimir.spec import DEFAULT_START, ClusterSpec, RunSpec


def add_synth(commands: Commands) -> None:
    synth = command(
        commands,
        "synth",
        description="Simulate a microservice application on a one-node Kubernetes cluster under a daily load "
        "curve (24 phases) and write the run bundle a capture on the node's 'any' interface would give: "
        "capture/*.pcap (Linux cooked v2, rotated), entities.jsonl and run.json. Same arguments, same bytes.",
        epilog="applications: config/apps/<APP>.yaml (schema: config/schemas/app.schema.json), or a path to "
        "such a file.\n\n" + EXIT_CODE_TEXT,
    )
    add_run_options(synth, users="peak number of active users", seed="random seed")
    start = RunSpec.RANGES["start"]
    synth.add_argument(
        "--start",
        type=start.option,
        default=DEFAULT_START,
        metavar="EPOCH",
        help=f"start time, {start} (the run ends before 2106) (default 2026-01-01T00:00Z)",
    )
    synth.add_argument(
        "--exfil",
        action="append",
        default=[],
        metavar="SPEC",
        help="physical exfiltration, repeatable: path=user-db,user,front-end,outside;rate=100KB/min;start=1200;"
        "duration=120;shape=bursts (seconds from the run's start; duration 60 if not given; the window within "
        "the run; rate up to 1GB/s, at most 10 GB in all). The path ends with "
        "outside (egress), kube-dns,outside (DNS tunnelling) or the entry service and ingress (pulled by a "
        "client); shape constant (default) or bursts (four bursts of 3 s)",
    )
    synth.set_defaults(handler=run_synth)


def run_synth(args: argparse.Namespace) -> None:
    from mimir.sources.synthetic import synthesize

    spec = run_spec(args, args.exfil, start=args.start)
    spec.check_synthetic("--{}".format)
    result = synthesize(spec, args.output, force=args.force)
    print(
        f"{args.output}: {result.packets} packets in {len(result.files)} capture file(s), {spec.app.name}, "
        f"{spec.users} users, {spec.duration:g} s"
    )


def add_import_legacy(commands: Commands) -> None:
    legacy = command(
        commands,
        "import-legacy",
        description="Convert a prototype experiment (its pcap, its pickled cluster-creation log and, optionally, "
        "its analysis JSON) into a run bundle: capture/, entities.jsonl and run.json. The log's second 0 is the "
        "capture's first packet. The pickle is never given to Python's unpickler: a bounded interpreter of the data "
        "opcodes reads it (size, depth, memo and expanded size limited), refuses every global, so a log that "
        "would run code is rejected, never executed, and every field is checked against the format.",
    )
    legacy.add_argument("--pcap", required=True, type=Path, metavar="P", help="the experiment's capture")
    legacy.add_argument("--cluster-log", required=True, type=Path, metavar="L", help="the cluster-creation log")
    legacy.add_argument("--analysis-json", type=Path, metavar="J", help="the experiment's analysis JSON")
    legacy.add_argument(
        "-o", "--output", required=True, type=Path, metavar="RUN_DIR", help="run bundle folder: new or empty"
    )
    add_force(legacy, "a run bundle")
    legacy.set_defaults(handler=run_import_legacy)


def run_import_legacy(args: argparse.Namespace) -> None:
    from mimir.sources.legacy import import_legacy

    run = import_legacy(args.pcap, args.cluster_log, args.analysis_json, args.output, force=args.force)
    events = sum(1 for _ in (args.output / "entities.jsonl").open())
    print(f"{args.output}: {run['app']} run imported, {events} entity events")


def add_collect(commands: Commands) -> None:
    collect = command(
        commands,
        "collect",
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
    add_run_options(collect, users="peak number of Locust users", seed="seeds the users' choices")
    _cluster_options(collect.add_argument_group("cluster"))
    _capture_options(collect.add_argument_group("capture"))
    collect.set_defaults(handler=run_collect)


def _cluster_options(api: argparse._ArgumentGroup) -> None:
    d = ClusterSpec()
    api.add_argument(
        "--spawn-rate",
        type=d.RANGES["spawn_rate"].option,
        default=d.spawn_rate,
        metavar="USERS/S",
        help=f"Locust spawn rate, {d.RANGES['spawn_rate']} (default %(default)s)",
    )
    api.add_argument("--kubeconfig", type=Path, metavar="FILE", help="default: $KUBECONFIG or ~/.kube/config")
    api.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    api.add_argument("--server", metavar="URL", help="an API server URL to use instead of a kubeconfig (no auth)")
    api.add_argument("--manifests", type=Path, metavar="DIR", help="the app's manifests (default config/k8s/<APP>)")
    api.add_argument("--locustfile", type=Path, metavar="FILE", help="the app's Locust behaviours (default: built in)")
    api.add_argument("--target", metavar="URL", help="the entry URL (default: the node's address and entry NodePort)")
    api.add_argument(
        "--cpu-percent",
        type=d.RANGES["cpu_percent"].option,
        default=d.cpu_percent,
        metavar="P",
        help=f"autoscalers' CPU target, {d.RANGES['cpu_percent']} (default %(default)s)",
    )
    api.add_argument(
        "--customers",
        type=d.RANGES["customers"].option,
        default=d.customers,
        metavar="N",
        help=f"Sock Shop customers to register first, {d.RANGES['customers']} (default %(default)s)",
    )
    api.add_argument("--no-populate", dest="populate", action="store_false", help="skip populating the application")
    api.add_argument(
        "--ready-timeout",
        type=d.RANGES["ready_timeout"].option,
        default=d.ready_timeout,
        metavar="SECONDS",
        help=f"how long deployment, population and the entry point may take, {d.RANGES['ready_timeout']} "
        "(default %(default)s)",
    )
    api.add_argument(
        "--no-least-privilege-watch",
        dest="least_privilege_watch",
        action="store_false",
        help="watch with your own credentials instead of the mimir-watcher ServiceAccount (list and watch only)",
    )
    api.add_argument("--keep", action="store_true", help="leave the application deployed afterwards")


def _capture_options(cap: argparse._ArgumentGroup) -> None:
    d = ClusterSpec()
    cap.add_argument(
        "--capture-netns",
        default=d.capture_netns,
        metavar="WHERE",
        help="network namespace of the node: container:NAME (minikube's docker driver; default %(default)s), "
        "host (mimir runs on the node), or a namespace file such as /proc/PID/ns/net",
    )
    cap.add_argument("--interface", default=d.interface, metavar="IF", help="capture interface (default %(default)s)")
    cap.add_argument(
        "--buffer",
        type=d.RANGES["buffer_kib"].option,
        default=d.buffer_kib,
        metavar="KIB",
        help=f"kernel capture buffer, {d.RANGES['buffer_kib']} (default %(default)s)",
    )
    cap.add_argument(
        "--service-network",
        default=d.service_network,
        metavar="CIDR",
        help="the cluster's service range, for address classes (default %(default)s)",
    )


def run_collect(args: argparse.Namespace) -> None:
    from mimir.io import Claim
    from mimir.sources.cluster.collect import CollectConfig, collect, progress_printer

    cluster = ClusterSpec(
        kubeconfig=args.kubeconfig,
        context=args.context,
        server=args.server,
        manifests=args.manifests,
        locustfile=args.locustfile,
        target=args.target,
        capture_netns=args.capture_netns,
        interface=args.interface,
        buffer_kib=args.buffer,
        spawn_rate=args.spawn_rate,
        customers=args.customers,
        populate=args.populate,
        cpu_percent=args.cpu_percent,
        ready_timeout=args.ready_timeout,
        service_network=args.service_network,
        least_privilege_watch=args.least_privilege_watch,
        keep=args.keep,
    )
    spec = run_spec(args)
    Claim("collect", args.force).clear(args.output)  # a bundle is filled in place: --force removes the previous one
    run = collect(CollectConfig(spec, cluster, args.output), progress=progress_printer())
    capture = run.get("capture", {})
    print(
        f"{args.output}: {run['status']}: {capture.get('packets')} packets in {len(capture.get('files', []))} "
        f"capture file(s), {capture.get('dropped')} dropped by the kernel, {run['load'].get('requests')} requests"
    )
