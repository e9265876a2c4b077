"""The outputs of `mimir live` against real servers on loopback: the webhook's retries, refusals and bounded queue,
the metrics as Prometheus scrapes them, and the alert log as a reader sees it while it is written."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mimir.errors import IOFailure, UsageError
from mimir.live.outputs import AlertLog, LiveMetrics, Webhook


class Receiver:
    """What a webhook receiver saw and how it answers: scripted statuses first, then 200; optionally holding the
    first request until `release` is set."""

    def __init__(self, statuses: tuple[int, ...] = (), hold: bool = False) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[int, bytes, str]] = []  # (status answered, body, content type)
        self.lock = threading.Lock()
        self.hold = hold
        self.arrived = threading.Event()
        self.release = threading.Event()

    def accepted(self) -> list[dict]:
        return [json.loads(body) for status, body, _ in self.requests if status == 200]


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads: nothing is left behind


@contextmanager
def receiving(receiver: Receiver) -> Iterator[str]:
    """A real HTTP server on loopback answering as the receiver says; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if receiver.hold and not receiver.arrived.is_set():
                receiver.arrived.set()
                receiver.release.wait()
            with receiver.lock:
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append((status, body, self.headers["Content-Type"]))
            self.send_response(status)
            if status == 302:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook"
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def no_thread_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before


@pytest.mark.usefixtures("no_thread_left")
def test_webhook_retries_5xx_until_delivered_in_order() -> None:
    receiver = Receiver(statuses=(503, 503))
    failures: list[str] = []
    first = {"interval": 3, "score": 0.91, "alert": True}
    second = {"interval": 4, "score": np.float32(0.5), "alert": np.bool_(True)}
    with receiving(receiver) as url:
        hook = Webhook(url, attempts=5, backoff=0.001, on_failure=failures.append)
        hook.post(first)
        hook.post(second)
        hook.close()
    assert [status for status, _, _ in receiver.requests] == [503, 503, 200, 200]
    assert receiver.accepted() == [first, {"interval": 4, "score": 0.5, "alert": True}]
    assert {kind for _, _, kind in receiver.requests} == {"application/json"}
    assert (hook.delivered, hook.failed, hook.dropped) == (2, 0, 0)
    assert failures == []


@pytest.mark.usefixtures("no_thread_left")
def test_webhook_4xx_is_not_retried() -> None:
    receiver = Receiver(statuses=(400,))
    failures: list[str] = []
    with receiving(receiver) as url:
        hook = Webhook(url, attempts=5, backoff=0.001, on_failure=failures.append)
        hook.post({"interval": 1})
        hook.close()
    assert len(receiver.requests) == 1
    assert (hook.delivered, hook.failed, hook.dropped) == (0, 1, 0)
    assert len(failures) == 1
    assert "HTTP 400" in failures[0]
    assert "not retried" in failures[0]


@pytest.mark.usefixtures("no_thread_left")
def test_webhook_429_is_retried_and_a_redirect_fails() -> None:
    """429 is the receiver asking to slow down, so it is retried; a redirect would turn the POST into a GET."""
    receiver = Receiver(statuses=(429, 302))
    failures: list[str] = []
    with receiving(receiver) as url:
        hook = Webhook(url, attempts=5, backoff=0.001, on_failure=failures.append)
        hook.post({"interval": 1})
        hook.close()
    assert [status for status, _, _ in receiver.requests] == [429, 302]
    assert (hook.delivered, hook.failed) == (0, 1)
    assert len(failures) == 1
    assert "HTTP 302" in failures[0]


@pytest.mark.usefixtures("no_thread_left")
def test_webhook_gives_up_after_its_attempts_when_nothing_listens() -> None:
    failures: list[str] = []
    with socket.socket() as closed:  # bound, never listening: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        hook = Webhook(f"http://127.0.0.1:{port}/hook", attempts=3, backoff=0.001, on_failure=failures.append)
        hook.post({"interval": 1})
        hook.close()
    assert (hook.delivered, hook.failed, hook.dropped) == (0, 1, 0)
    assert len(failures) == 1
    assert "after 3 attempts" in failures[0]
    assert "refused" in failures[0]


@pytest.mark.usefixtures("no_thread_left")
def test_webhook_post_never_blocks_and_drops_the_oldest() -> None:
    receiver = Receiver(hold=True)
    failures: list[str] = []
    size = 10
    alerts = [{"interval": i} for i in range(size + 6)]
    with receiving(receiver) as url:
        hook = Webhook(url, timeout=60, queue_size=size, backoff=0.001, on_failure=failures.append)
        hook.post(alerts[0])
        assert receiver.arrived.wait(30), "the first alert never reached the receiver"
        for alert in alerts[1:]:  # the thread is held in the receiver: the queue fills, then overflows
            hook.post(alert)
        assert hook.dropped == 5
        receiver.release.set()
        hook.close()
    assert hook.delivered + hook.dropped + hook.failed == len(alerts)
    assert (hook.delivered, hook.failed) == (size + 1, 0)
    assert receiver.accepted() == [alerts[0], *alerts[6:]]  # the oldest queued were dropped, in order otherwise
    assert len(failures) == 5
    assert all("queue full" in message for message in failures)


@pytest.mark.usefixtures("no_thread_left")
def test_webhook_close_drops_what_it_has_no_time_for() -> None:
    receiver = Receiver(hold=True)
    failures: list[str] = []
    with receiving(receiver) as url:
        hook = Webhook(url, timeout=60, on_failure=failures.append)
        hook.post({"interval": 0})
        assert receiver.arrived.wait(30)
        closer = threading.Thread(target=hook.close, kwargs={"timeout": 0})
        closer.start()
        posted = 1
        while True:  # until close() has begun: post() refuses from then on
            try:
                hook.post({"interval": posted})
            except RuntimeError:
                break
            posted += 1
        receiver.release.set()
        closer.join()
    assert (hook.delivered, hook.failed, hook.dropped) == (1, 0, posted - 1)  # the one sent before close() began
    assert len(failures) == hook.dropped
    assert len(receiver.requests) == 1


def test_webhook_refuses_what_it_cannot_send() -> None:
    for url in ("ftp://example.org/hook", "http://", "localhost:8080/hook", "http://host:99999/"):
        with pytest.raises(UsageError, match="webhook URL"):
            Webhook(url)
    with pytest.raises(UsageError, match="attempts"):
        Webhook("http://127.0.0.1/hook", attempts=0)


@pytest.mark.usefixtures("no_thread_left")
def test_webhook_refuses_nan_at_post() -> None:
    with receiving(Receiver()) as url:
        hook = Webhook(url)
        with pytest.raises(ValueError, match="score"):
            hook.post({"interval": 1, "score": float("nan")})
        hook.close()
    assert (hook.delivered, hook.failed, hook.dropped) == (0, 0, 0)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        s.name + str(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


@pytest.mark.usefixtures("no_thread_left")
def test_metrics_are_served_as_counted() -> None:
    metrics = LiveMetrics(port=0)
    try:
        assert metrics.port
        metrics.packets.inc(1200)
        metrics.bytes.inc(987654)
        metrics.intervals.inc(3)
        metrics.alerts.inc()
        metrics.late_packets.inc(7)
        metrics.unknown_addresses.inc(2)
        metrics.capture_restarts.inc()
        metrics.webhook_failures.inc(4)
        metrics.last_score.set(0.75)
        metrics.threshold.set(0.6)
        for lag in (0.2, 3.0, 45.0):
            metrics.lag.observe(lag)
        values = scrape(metrics.port)
    finally:
        metrics.close()
    assert values["mimir_live_packets_total[]"] == 1200
    assert values["mimir_live_bytes_total[]"] == 987654
    assert values["mimir_live_intervals_scored_total[]"] == 3
    assert values["mimir_live_alerts_total[]"] == 1
    assert values["mimir_live_late_packets_total[]"] == 7
    assert values["mimir_live_unknown_addresses_total[]"] == 2
    assert values["mimir_live_capture_restarts_total[]"] == 1
    assert values["mimir_live_webhook_failures_total[]"] == 4
    assert values["mimir_live_last_score[]"] == 0.75
    assert values["mimir_live_threshold[]"] == 0.6
    assert values["mimir_live_lag_seconds_count[]"] == 3
    assert values["mimir_live_lag_seconds_sum[]"] == pytest.approx(48.2)
    assert values["mimir_live_lag_seconds_bucket[('le', '5.0')]"] == 2
    assert not any(name.startswith(("python_", "process_")) for name in values)  # its own registry


@pytest.mark.usefixtures("no_thread_left")
def test_metrics_port_taken_and_freed() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port}.*in use"):
            LiveMetrics(port=port)
    metrics = LiveMetrics(port=0)
    port = metrics.port
    assert port
    scrape(port)
    metrics.close()
    with pytest.raises(urllib.error.URLError):
        scrape(port)
    again = LiveMetrics(port=port)  # a restarted `mimir live` binds the same port at once
    try:
        assert again.port == port
        assert scrape(port)["mimir_live_packets_total[]"] == 0
    finally:
        again.close()


def test_metrics_without_a_port_are_counted_only() -> None:
    metrics = LiveMetrics()
    metrics.alerts.inc(2)
    assert metrics.port is None
    assert metrics.registry.get_sample_value("mimir_live_alerts_total") == 2
    metrics.close()
    with pytest.raises(UsageError, match="70000"):
        LiveMetrics(port=70000)


def test_alert_log_lines_are_readable_while_open(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    records = [
        {"interval": 0, "start": "2024-05-01T10:00:00Z", "score": 0.12, "alert": False},
        {"interval": 1, "start": "2024-05-01T10:01:00Z", "score": np.float64(0.93), "alert": np.bool_(True),
         "packets": np.int64(4021)},
    ]  # fmt: skip
    log = AlertLog(path)
    try:
        log.write(records[0])
        assert [json.loads(line) for line in path.read_text().splitlines()] == records[:1]
        log.write(records[1])
        lines = path.read_text().splitlines()
        assert [json.loads(line) for line in lines] == [
            records[0],
            {"interval": 1, "start": "2024-05-01T10:01:00Z", "score": 0.93, "alert": True, "packets": 4021},
        ]
        assert " " not in lines[0].replace("2024-05-01T10:00:00Z", "")  # compact
        with pytest.raises(ValueError, match="score"):
            log.write({"interval": 2, "score": float("nan")})
        with pytest.raises(ValueError, match="score"):
            log.write({"interval": 2, "score": np.float32("inf")})
        assert len(path.read_text().splitlines()) == 2  # nothing half-written
    finally:
        log.close()
    again = AlertLog(path)  # appends
    again.write({"interval": 3})
    again.close()
    assert json.loads(path.read_text().splitlines()[-1]) == {"interval": 3}
    assert len(path.read_text().splitlines()) == 3


def test_alert_log_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    for path in (None, Path("-")):
        log = AlertLog(path)
        log.write({"interval": 5, "alert": True})
        log.close()
    assert capsys.readouterr().out == '{"interval":5,"alert":true}\n' * 2


def test_alert_log_that_cannot_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "alerts.jsonl"
    with pytest.raises(IOFailure, match=str(path)):
        AlertLog(path)
