"""`mimir live`: a trained model scored on live traffic, one JSON line per interval (mimir.live)."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from mimir.cli.options import EXIT_CODE_TEXT, Commands, command
from mimir.spec import Range

LATENESS = Range(0, 3600, "s")
METRICS_PORT = Range(0, 65535, whole=True)
SNAPLEN = Range(68, 262144, "bytes", whole=True)
ORIGIN = Range(0, 4294967295, "s", whole=True)

DESCRIPTION = """\
Score a model the workflow trained (results/models/METHOD/TRAINING/) on traffic as it is captured, interval by
interval, and write one JSON line per scored interval; alerts can also go to a webhook, and counters to Prometheus.

Intervals are the model's coarsest granularity, aligned on multiples of it in capture time (UTC epoch seconds);
each granularity is computed from the same 1 s flow bins, entities and feature code as the batch path, so a
capture scored live gives the numbers the workflow gives. An interval is scored once the capture clock has passed
its end by --lateness (packets up to that late still count; later ones are counted as late and dropped); while
no packet arrives, the capture clock runs on with the wall clock.

capture SOURCE (--capture):
  -                    a pcap or pcapng stream on stdin: `tcpdump -i IF -U -w - | mimir live --capture - ...`
  interface:IF         mimir runs tcpdump on IF (in --capture-netns), and starts it again if it stops
  FOLDER               rotated capture files still being written (tcpdump -G, mimir collect): every file in
                       name order, the last one followed as it grows, new ones as they appear
  FILE                 one capture file, read to its end as fast as it goes (a dry run)

entities SOURCE (--entities):
  kube                 the cluster's API watch (pods, services, endpoints, nodes), with --kubeconfig,
                       --context or --server; its events are kept in --state/entities.jsonl
  FILE or RUN_DIR      an entities.jsonl (or the run bundle holding it), followed as it grows"""

EPILOG = """\
output (stdout, or appended to --alerts FILE), one JSON object per line:
  start, end           the interval, epoch seconds; partial: true for the last one when the capture ended in it
  score, threshold     the model's score in [0, 1] and its frozen threshold; alert: score >= threshold
  packets, bytes       what the capture held in the interval
  top_features         the features that raised the score most: name, granularity, value, contribution
                       (coefficient times scaled value; for iforest the scaled value's size; none for a
                       baseline), and the heaviest service pairs behind each (src, dst, bytes)
  unknown_addresses    in-cluster addresses no entity held (kept as unknown/IP, warned about once)
  lag                  seconds from the interval's end (capture time) to its scoring (wall time); null
                       for a capture FILE, scored long after it was made
metrics (--metrics-port): mimir_live_packets_total, _bytes_total, _intervals_scored_total, _alerts_total,
  _late_packets_total, _unknown_addresses_total, _capture_restarts_total, _webhook_failures_total,
  mimir_live_last_score, mimir_live_threshold, mimir_live_lag_seconds (histogram).
webhook (--webhook URL): each alert line POSTed as JSON from a background thread, retried with back-off on
  errors, 429 and 5xx; never slows the reading (a bounded queue drops the oldest alert when it is full).
Ctrl-C or SIGTERM stops the capture, scores the interval reached, and exits 130.

"""


def add_live(commands: Commands) -> None:
    parser = command(commands, "live", description=DESCRIPTION, epilog=EPILOG + EXIT_CODE_TEXT)
    parser.add_argument(
        "--model", type=Path, required=True, metavar="DIR", help="a model folder: model.joblib and model.json"
    )
    parser.add_argument("--capture", required=True, metavar="SOURCE", help="-, interface:IF, a FOLDER or a FILE")
    parser.add_argument("--entities", required=True, metavar="SOURCE", help="kube, an entities.jsonl or a RUN_DIR")
    parser.add_argument("--alerts", type=Path, metavar="FILE", help="append the JSON lines here (default: stdout)")
    parser.add_argument(
        "--metrics-port",
        type=METRICS_PORT.option,
        metavar="N",
        help=f"serve Prometheus metrics on this port, {METRICS_PORT} (0: any free port, printed)",
    )
    parser.add_argument(
        "--metrics-address", default="127.0.0.1", metavar="ADDR", help="address to serve them on (default %(default)s)"
    )
    parser.add_argument("--webhook", metavar="URL", help="POST every alert here (http or https)")
    parser.add_argument(
        "--lateness",
        type=LATENESS.option,
        default=2.0,
        metavar="SECONDS",
        help=f"how long after its end an interval waits for late packets and entity events, {LATENESS} "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--origin",
        type=ORIGIN.option,
        metavar="EPOCH",
        help=f"intervals start at EPOCH + k times the coarsest granularity, {ORIGIN} (default: multiples of it)",
    )
    parser.add_argument(
        "--sensitive",
        metavar="SERVICE,...",
        help="the sensitive services (default: the model card's, those of its training run)",
    )
    parser.add_argument(
        "--keep-infra", action="store_true", help="keep infrastructure traffic, as `mimir edges --keep-infra`"
    )
    net = parser.add_argument_group("addresses (default: the run.json beside the entities, if any)")
    net.add_argument(
        "--cluster-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="a cluster range (pods, services), repeatable: its addresses no entity holds are unknown, not outside",
    )
    net.add_argument(
        "--load-generator", action="append", default=[], metavar="IP", help="a load generator's address, repeatable"
    )
    cap = parser.add_argument_group("capture on an interface")
    cap.add_argument(
        "--capture-netns",
        default="host",
        metavar="WHERE",
        help="network namespace of the interface: host (default), a namespace file such as /run/netns/NAME or "
        "/proc/PID/ns/net, or container:NAME (minikube's docker driver node)",
    )
    cap.add_argument(
        "--snaplen",
        type=SNAPLEN.option,
        default=128,
        metavar="BYTES",
        help=f"bytes captured per frame, {SNAPLEN} (default %(default)s: every header mimir reads)",
    )
    cap.add_argument("--filter", metavar="BPF", help="a tcpdump filter expression")
    api = parser.add_argument_group("the Kubernetes API (--entities kube)")
    api.add_argument("--kubeconfig", type=Path, metavar="FILE", help="default: $KUBECONFIG or ~/.kube/config")
    api.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    api.add_argument("--server", metavar="URL", help="an API server URL to use instead of a kubeconfig (no auth)")
    api.add_argument(
        "--namespace", action="append", metavar="NS", help="watch only these namespaces, repeatable (default: all)"
    )
    api.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="where the watch's entities.jsonl is kept (default: a temporary folder, removed at the end)",
    )
    parser.set_defaults(handler=run_live)


def _feed(args: argparse.Namespace) -> tuple[Any, bool]:
    """The capture feed SOURCE names, and whether its clock follows the wall clock while it is quiet."""
    from mimir.errors import UsageError
    from mimir.live.capture import FileFeed, FolderFeed, InterfaceFeed, StreamFeed

    source = args.capture
    if source == "-":
        if sys.stdin.isatty():
            raise UsageError("--capture -: stdin is a terminal, not a capture: pipe tcpdump -U -w - into mimir live")
        return StreamFeed(sys.stdin.buffer, "stdin"), True
    if source.startswith("interface:"):
        from mimir.sources.cluster.capture import namespace_file

        interface = source.split(":", 1)[1]
        if not interface:
            raise UsageError("--capture interface:IF: no interface named")
        netns = namespace_file(args.capture_netns)
        return InterfaceFeed(interface, netns=netns, snaplen=args.snaplen, bpf=args.filter), True
    path = Path(source)
    if path.is_dir():
        return FolderFeed(path), True
    if path.is_file():
        return FileFeed(path), False
    raise UsageError(f"--capture {source}: no such file or folder (or give -, interface:IF)")


def _entities(args: argparse.Namespace, stack: ExitStack) -> tuple[Any, Any]:
    """The entity source and the addressing of the cluster."""
    from mimir.live.entities import EntityLog, KubeEntities, addressing_of, entity_log_path

    if args.entities == "kube":
        from mimir.errors import UsageError
        from mimir.extras import require_extra

        require_extra("cluster", "mimir live --entities kube")
        from mimir.sources.cluster.kube import connect

        if not args.cluster_network:
            raise UsageError("--entities kube: give the cluster's ranges with --cluster-network (pods and services)")
        folder = args.state or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mimir-live-")))
        api = connect(args.kubeconfig, args.context, args.server)
        stack.callback(api.close)
        log = KubeEntities(api, args.namespace, folder)
        stack.callback(log.close)
        return log, addressing_of(Path(), args.cluster_network, args.load_generator)
    path = entity_log_path(Path(args.entities))
    return EntityLog(path), addressing_of(path, args.cluster_network, args.load_generator)


def _status(scored: Any) -> None:
    """A terminal's line per scored interval."""
    import time

    when = time.strftime("%H:%M:%S", time.gmtime(scored.start))
    flag = "  ALERT" if scored.alert else ""
    print(
        f"\r{when}Z +{scored.end - scored.start}s  {scored.packets:>9} packets  score {scored.score:.3f} "
        f"(threshold {scored.threshold:.3f}){flag}",
        file=sys.stderr,
    )


def run_live(args: argparse.Namespace) -> None:
    from mimir.extras import require_extra

    require_extra("live", "mimir live")
    from mimir.live.detect import IntervalScorer, LiveModel
    from mimir.live.outputs import AlertLog, LiveMetrics, Webhook
    from mimir.live.run import LiveLoop

    sensitive = [s.strip() for s in args.sensitive.split(",") if s.strip()] if args.sensitive else None
    model = LiveModel.load(args.model, sensitive)
    with ExitStack() as stack:
        entities, addressing = _entities(args, stack)
        metrics = LiveMetrics(args.metrics_port, args.metrics_address)
        stack.callback(metrics.close)
        if args.metrics_port is not None:
            print(f"mimir live: metrics on http://{args.metrics_address}:{metrics.port}/metrics", file=sys.stderr)
        alerts = AlertLog(args.alerts)
        stack.callback(alerts.close)
        webhook = None
        if args.webhook:
            webhook = Webhook(args.webhook, on_failure=lambda why: _webhook_failed(metrics, why))
            stack.callback(webhook.close)
        feed, follow = _feed(args)
        loop = LiveLoop(
            IntervalScorer(model, origin=args.origin, keep_infra=args.keep_infra),
            feed,
            entities,
            addressing,
            alerts,
            metrics,
            webhook,
            lateness=args.lateness,
            follow_wall_clock=follow,
            on_scored=_status if sys.stderr.isatty() else None,
        )
        stopped: list[int] = []

        def stop(signum: int, _frame: Any) -> None:
            stopped.append(signum)
            loop.stop.set()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            summary = loop.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for warning in summary.warnings:
            print(f"mimir live: warning: {warning}", file=sys.stderr)
        print(
            f"mimir live: {summary.packets} packets, {summary.intervals} intervals scored, {summary.alerts} alerts, "
            f"{summary.late_packets} late packets, {len(summary.unknown_addresses)} unknown addresses, "
            f"{summary.capture_restarts} capture restarts",
            file=sys.stderr,
        )
    if stopped:
        raise KeyboardInterrupt


def _webhook_failed(metrics: Any, why: str) -> None:
    metrics.webhook_failures.inc()
    print(f"mimir live: warning: webhook: {why}", file=sys.stderr)
