"""`mimir testbed up|run|down`: the real testbed in network namespaces (a source of runs, and a lab to look into)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from mimir.cli.options import EXIT_CODE_TEXT, Commands, add_run_options, command, run_spec
from mimir.errors import UsageError
from mimir.spec import SEED, Fault, TestbedSpec


def add_testbed(commands: Commands) -> None:
    testbed = command(
        commands,
        "testbed",
        description="WordPress (nginx + php-fpm pods), a 3-member MariaDB Galera cluster, Redis and dnsmasq as "
        "cluster DNS, each pod a network namespace on a node namespace's bridge, Services as nftables DNAT VIPs "
        "with kube-proxy's random endpoint choice, a NodePort with SNAT, a load generator and an outside world "
        "behind SNAT. Nothing links to the root namespace. Needs root and the Debian packages of `make setup`.",
        epilog="examples:\n"
        "  mimir testbed run --app wordpress --users 12 --duration 900 -o data/runs/tb-1 \\\n"
        "      --exfil 'path=my-release-pxc,wordpress,ingress;rate=0.1MB/min;start=300;duration=120'\n"
        "  mimir testbed up            # prints the testbed's name and how to reach it\n"
        "  mimir testbed down NAME     # or --all\n\n" + EXIT_CODE_TEXT,
    )
    actions = testbed.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="bring the testbed up, load it, capture, write a run bundle, tear everything down",
        description="One run on the testbed: up (about 30 s), then tcpdump on the node's 'any' interface, one "
        "Locust process playing the 24-phase daily curve from the load generator's namespace, the CPU autoscaler "
        "of the WordPress pods, the fault schedule and the physical exfiltration windows; then everything is torn "
        "down, always (also on Ctrl-C, SIGTERM and failures). The bundle (capture/, entities.jsonl, load/, "
        "run.json, testbed-logs/) is what `mimir ingest`, `edges` and `features` read; run.json lists each "
        "exfiltration window's start, end, path and bytes sent, the faults and the autoscaler's decisions.",
        epilog=EXIT_CODE_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(run, users="peak number of Locust users", seed="seeds names, content and the users' choices")
    run.add_argument(
        "--exfil",
        action="append",
        default=[],
        metavar="SPEC",
        help="physical exfiltration by real processes, repeatable: path=my-release-pxc,wordpress,ingress;"
        "rate=0.1MB/min;start=300;duration=120[;shape=bursts] (the window within the run, the rate up to 1GB/s). "
        "The path starts at a service and ends with "
        "ingress (a client pulls through the front door), outside (egress) or kube-dns,outside (DNS queries)",
    )
    run.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="kill a pod and bring it back, repeatable: target=database|wordpress;at=300[;down=30] "
        "(seconds after the load began)",
    )
    _testbed_options(run)
    run.set_defaults(handler=run_testbed_command)
    up = actions.add_parser(
        "up",
        help="bring the testbed up and leave it running",
        description="Bring the testbed up (no load, no capture) and print how to reach it: commands run in its "
        "namespaces with `ip netns exec NAME-lg ...` (the load generator) or `ip netns exec NAME-node ...` (the "
        "node, where tcpdump -i any sees every pod). `mimir testbed down NAME` removes it.",
        epilog=EXIT_CODE_TEXT,
    )
    up.add_argument(
        "--seed", type=SEED.option, default=0, metavar="K", help=f"seeds names and content, {SEED} (default 0)"
    )
    _testbed_options(up)
    up.set_defaults(handler=run_up)
    down = actions.add_parser(
        "down",
        help="remove a testbed: its processes, namespaces, /etc/netns entries and data",
        description="Remove testbeds by name (as `up` printed them), or every testbed this machine has with "
        "--all, including what a killed run left behind.",
        epilog=EXIT_CODE_TEXT,
    )
    down.add_argument("names", nargs="*", metavar="NAME", help="testbeds to remove")
    down.add_argument("--all", action="store_true", help="remove every testbed of this machine")
    down.set_defaults(handler=run_down)


def _testbed_options(parser: argparse.ArgumentParser) -> None:
    d, ranges = TestbedSpec(), TestbedSpec.RANGES
    group = parser.add_argument_group("testbed")
    group.add_argument(
        "--wordpress-pods",
        type=ranges["wordpress_pods"].option,
        default=d.wordpress_pods,
        metavar="N",
        help=f"WordPress pods at least, {ranges['wordpress_pods']} (default %(default)s)",
    )
    group.add_argument(
        "--max-wordpress-pods",
        type=ranges["max_wordpress_pods"].option,
        default=d.max_wordpress_pods,
        metavar="N",
        help=f"WordPress pods at most, as the autoscaler may add them, {ranges['max_wordpress_pods']} "
        "(default %(default)s)",
    )
    group.add_argument(
        "--cpu-per-pod",
        type=ranges["cpu_per_pod"].option,
        default=d.cpu_per_pod,
        metavar="CORES",
        help=f"the autoscaler's CPU target per WordPress pod, {ranges['cpu_per_pod']} (default %(default)s)",
    )
    group.add_argument(
        "--scale-period",
        type=ranges["scale_period"].option,
        default=d.scale_period,
        metavar="SECONDS",
        help=f"seconds between the autoscaler's decisions, {ranges['scale_period']} (default %(default)s)",
    )
    for site in ("posts", "pages"):
        group.add_argument(
            f"--{site}",
            type=ranges[site].option,
            default=getattr(d, site),
            metavar="N",
            help=f"{site}, {ranges[site]} (default %(default)s)",
        )
    group.add_argument(
        "--accounts",
        type=ranges["accounts"].option,
        default=d.accounts,
        metavar="N",
        help=f"user accounts besides the administrator, {ranges['accounts']} (default %(default)s)",
    )
    group.add_argument(
        "--spawn-rate",
        type=ranges["spawn_rate"].option,
        default=d.spawn_rate,
        metavar="USERS/S",
        help=f"Locust spawn rate, {ranges['spawn_rate']} (default %(default)s)",
    )
    group.add_argument(
        "--buffer",
        dest="buffer_kib",
        type=ranges["buffer_kib"].option,
        default=d.buffer_kib,
        metavar="KIB",
        help=f"kernel capture buffer, {ranges['buffer_kib']} (default %(default)s)",
    )
    group.add_argument(
        "--ready-timeout",
        type=ranges["ready_timeout"].option,
        default=d.ready_timeout,
        metavar="SECONDS",
        help=f"how long each daemon may take to be ready, {ranges['ready_timeout']} (default %(default)s)",
    )


def _spec(args: argparse.Namespace, faults: tuple[Fault, ...] = ()) -> TestbedSpec:
    if args.max_wordpress_pods < args.wordpress_pods:
        raise UsageError(
            f"--max-wordpress-pods {args.max_wordpress_pods} is below --wordpress-pods {args.wordpress_pods}"
        )
    # every option of the testbed group is a field of TestbedSpec by the same name (the faults come apart)
    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(TestbedSpec) if f.name != "faults"}
    return TestbedSpec(**settings, faults=faults)


def run_testbed_command(args: argparse.Namespace) -> None:
    from mimir.io import Claim
    from mimir.sources.cluster.collect import progress_printer
    from mimir.sources.testbed.run import TestbedConfig, run_testbed

    faults = tuple(Fault.from_text(text) for text in args.fault)
    spec = run_spec(args, args.exfil)
    for text, fault in zip(args.fault, faults, strict=True):
        fault.check_within(spec.duration, f"--fault {text!r}")
    testbed = _spec(args, faults)
    Claim("testbed run", args.force).clear(args.output)  # a bundle is filled in place: --force removes the previous
    run = run_testbed(TestbedConfig(spec, testbed, args.output), progress=progress_printer())
    capture = run.get("capture", {})
    sent = sum(w.get("bytes", 0) for w in run.get("exfiltration", []))
    print(
        f"{args.output}: {run['status']}: {capture.get('packets')} packets in {len(capture.get('files', []))} "
        f"capture file(s), {capture.get('dropped')} dropped by the kernel, {run['load'].get('requests')} requests, "
        f"{len(run.get('exfiltration', []))} exfiltration window(s) sending {sent} bytes"
    )


def run_up(args: argparse.Namespace) -> None:
    from mimir.sources.cluster.collect import progress_printer
    from mimir.sources.testbed.run import check_host
    from mimir.sources.testbed.testbed import ENTRY_URL, Testbed

    check_host()
    spec = _spec(args)
    testbed = Testbed(spec, args.seed, progress=progress_printer())
    try:
        facts = testbed.up()
    except BaseException:
        testbed.down()
        raise
    testbed.state.info = {
        "entry": ENTRY_URL,
        "admin_user": "mimir",
        "admin_password": testbed.admin_password,
        "entities": str(testbed.entities),
        **facts,
    }
    testbed.state.save()
    print(json.dumps({"name": testbed.name, "namespaces": testbed.state.namespaces, **testbed.state.info}, indent=2))
    print(
        f"try: ip netns exec {testbed.net.loadgen} curl -s {ENTRY_URL}/ | head\n"
        f"remove it with: mimir testbed down {testbed.name}"
    )


def run_down(args: argparse.Namespace) -> None:
    from mimir.sources.testbed.processes import State, states, sweep

    names = states() if args.all else args.names
    if not names and not args.all:
        raise UsageError("name the testbeds to remove, or give --all")
    for name in names:
        sweep(State.load(name))
        print(f"testbed {name}: removed")
    if args.all and not names:
        print("no testbed is up")
