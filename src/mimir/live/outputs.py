"""What `mimir live` emits: a JSON line per scored interval, Prometheus metrics, alerts POSTed to a webhook.

Every output keeps up with the capture or gets out of its way: the log flushes each line so a reader sees an
interval as soon as it is scored; the metrics are only counted here and read when Prometheus scrapes; the webhook
posts from its own thread through a bounded queue, so a slow or dead receiver never holds back the reading, and
what it cannot deliver is counted and reported instead of piling up in memory.
"""

from __future__ import annotations

import errno
import http.client
import json
import math
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from mimir import __version__
from mimir.errors import IOFailure, UsageError

# Seconds from an interval's end in the capture to its score: from a pipe's buffering up to a folder of rotated
# files read minutes late.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _plain(value: Any) -> Any:
    """numpy scalars (a score, a count read from an array) as the Python numbers json writes."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


def to_json(record: dict[str, Any]) -> str:
    """A record as one compact line of strict JSON: NaN and infinity are refused, since JSON readers reject them."""
    try:
        return json.dumps(record, allow_nan=False, separators=(",", ":"), default=_plain)
    except ValueError:
        bad = [str(k) for k, v in record.items() if isinstance(v, float | np.floating) and not math.isfinite(v)]
        if not bad:
            raise
        raise ValueError(f"{', '.join(bad)}: not a finite number (NaN or infinity), which JSON cannot hold") from None


class AlertLog:
    """One JSON line per scored interval, to stdout (path None or "-") or appended to a file, flushed per line."""

    def __init__(self, path: Path | None) -> None:
        self._file: TextIO | None = None
        self.name = "stdout"
        if path is None or str(path) == "-":
            return
        self.name = str(path)
        try:
            self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        except OSError as e:
            raise IOFailure(f"{path}: cannot open the alert log: {e.strerror or e}") from None

    def write(self, record: dict[str, Any]) -> None:
        """Append the record as a line, whole or not at all: it is encoded before anything is written."""
        line = to_json(record) + "\n"
        stream = self._file or sys.stdout
        try:
            stream.write(line)
            stream.flush()
        except OSError as e:
            raise IOFailure(f"{self.name}: cannot write the alert log: {e.strerror or e}") from None

    def close(self) -> None:
        try:
            if self._file is None:
                sys.stdout.flush()
            else:
                self._file.close()
        except OSError as e:
            raise IOFailure(f"{self.name}: cannot write the alert log: {e.strerror or e}") from None


class LiveMetrics:
    """Prometheus metrics of one `mimir live`, in their own CollectorRegistry; served when a port is given."""

    def __init__(self, port: int | None = None, address: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.packets = Counter("mimir_live_packets", "Packets read from the capture", registry=r)
        self.bytes = Counter("mimir_live_bytes", "Bytes of the frames read from the capture", registry=r)
        self.intervals = Counter("mimir_live_intervals_scored", "Intervals scored", registry=r)
        self.alerts = Counter("mimir_live_alerts", "Intervals whose score reached the threshold", registry=r)
        self.late_packets = Counter(
            "mimir_live_late_packets", "Packets that arrived after their interval was scored (not counted)", registry=r
        )
        self.unknown_addresses = Counter(
            "mimir_live_unknown_addresses", "In-cluster addresses that no entity held at the time", registry=r
        )
        self.capture_restarts = Counter(
            "mimir_live_capture_restarts", "Times the capture stopped and restarted", registry=r
        )
        self.webhook_failures = Counter(
            "mimir_live_webhook_failures", "Alerts the webhook gave up after its retries, or dropped", registry=r
        )
        self.last_score = Gauge("mimir_live_last_score", "Score of the last interval scored", registry=r)
        self.threshold = Gauge("mimir_live_threshold", "The model's frozen alert threshold", registry=r)
        self.lag = Histogram(
            "mimir_live_lag_seconds",
            "Wall time of scoring minus the interval's end in capture time",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.port: int | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        if port is None:
            return
        if not 0 <= port <= 65535:
            raise UsageError(f"metrics port {port}: not a port number (0-65535, 0 for any free one)")
        try:
            self._server, self._thread = start_http_server(port, addr=address, registry=r)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"metrics port {port} on {address}: already in use; choose another, or 0 for any free one"
                ) from None
            raise UsageError(f"metrics port {port} on {address}: cannot listen: {e.strerror or e}") from None
        self.port = self._server.server_port

    def close(self) -> None:
        """Stop serving and free the port (a restarted `mimir live` can bind it again at once)."""
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Fail on a redirect: urllib would turn a redirected POST into a GET without the alert and call it delivered."""

    def redirect_request(self, *args: Any) -> None:
        return None


class Webhook:
    """POSTs each alert (JSON body) to a URL from a background thread: retry with exponential back-off on connection
    errors, timeouts, 429 and 5xx; no retry on other 4xx; never blocks the caller: a bounded queue, the oldest
    alert dropped (and counted) when full."""

    def __init__(
        self,
        url: str,
        *,
        attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 5.0,
        queue_size: int = 1000,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise UsageError(f"webhook URL {url!r}: the port is not a number from 0 to 65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"webhook URL {url!r}: not an http:// or https:// URL with a host")
        if attempts < 1 or queue_size < 1:
            raise UsageError(f"webhook: attempts ({attempts}) and queue size ({queue_size}) must be at least 1")
        if timeout <= 0 or backoff < 0 or max_backoff < 0:
            raise UsageError(
                f"webhook: timeout ({timeout}) must be positive, back-offs ({backoff}, {max_backoff}) not negative"
            )
        self.url = url
        # Messages name the receiver by scheme and host only: a webhook's path or user part often holds its token.
        self.where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self._attempts, self._backoff, self._max_backoff, self._timeout = attempts, backoff, max_backoff, timeout
        self._queue_size = queue_size
        self._on_failure = on_failure
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._unreported = 0  # alerts dropped from a full queue that on_failure has not heard of yet
        self._deadline: float | None = None  # set by close(): the monotonic time the thread stops trying
        self.delivered = self.failed = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="mimir-webhook", daemon=True)
        self._thread.start()

    def post(self, alert: dict[str, Any]) -> None:
        """Queue an alert and return at once; ValueError for a value JSON cannot hold (NaN), raised here."""
        body = to_json(alert).encode()
        with self._cond:
            if self._deadline is not None:
                raise RuntimeError("webhook: post() after close()")
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.dropped += 1
                self._unreported += 1
            self._queue.append(body)
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued until the timeout, drop (and report) the rest, and stop the thread."""
        with self._cond:
            if self._deadline is None:
                self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        # An attempt begun before close() may wait out its own timeout once more.
        self._thread.join(timeout + self._timeout + 1)

    def _run(self) -> None:
        while (body := self._next()) is not None:
            self._deliver(body)

    def _next(self) -> bytes | None:
        """The oldest queued alert, waiting for one; None once closing with nothing left to send or no time to."""
        while True:
            with self._cond:
                while not self._queue and not self._unreported and self._deadline is None:
                    self._cond.wait()
                full, self._unreported = self._unreported, 0
                closing = self._deadline is not None
                body, left = None, 0
                if self._queue and not self._out_of_time():
                    body = self._queue.popleft()
                elif self._queue:
                    left = len(self._queue)
                    self._queue.clear()
                    self.dropped += left
            for _ in range(full):
                self._report(f"webhook {self.where}: queue full ({self._queue_size} alerts), the oldest alert dropped")
            for _ in range(left):
                self._report(f"webhook {self.where}: an alert not delivered before closing, dropped")
            if body is not None or closing:
                return body

    def _out_of_time(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _deliver(self, body: bytes) -> None:
        """Send one alert, retrying transient failures with exponential back-off up to `attempts` tries."""
        reason = "not tried: no time left before closing"
        for attempt in range(1, self._attempts + 1):
            timeout = self._timeout
            if self._deadline is not None:
                timeout = min(timeout, self._deadline - time.monotonic())
                if timeout <= 0:
                    self.failed += 1
                    self._report(
                        f"webhook {self.where}: alert given up at closing after {attempt - 1} attempts: {reason}"
                    )
                    return
            reason, transient = self._send(body, timeout)
            if not reason:
                self.delivered += 1
                return
            if not transient:
                self.failed += 1
                self._report(f"webhook {self.where}: alert refused, not retried: {reason}")
                return
            if attempt < self._attempts:
                self._pause(min(self._backoff * 2 ** (attempt - 1), self._max_backoff))
        self.failed += 1
        self._report(f"webhook {self.where}: alert given up after {self._attempts} attempts: {reason}")

    def _send(self, body: bytes, timeout: float) -> tuple[str, bool]:
        """One POST: ("", _) when delivered, else why it failed and whether trying again may help."""
        request = urllib.request.Request(  # noqa: S310 (__init__ let only http and https through)
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"mimir/{__version__}"},
        )
        try:
            with self._opener.open(request, timeout=timeout):
                return "", False
        except urllib.error.HTTPError as e:
            e.close()
            return f"HTTP {e.code} {e.reason}", e.code == 429 or e.code >= 500
        except urllib.error.URLError as e:
            return str(e.reason), not isinstance(e.reason, ssl.SSLCertVerificationError)
        except (OSError, http.client.HTTPException) as e:  # a timeout or a connection reset mid-response
            return str(e) or type(e).__name__, True
        except ValueError as e:  # a host name urllib cannot encode
            return str(e), False

    def _pause(self, delay: float) -> None:
        """Wait out a back-off, cut short when close()'s deadline comes first."""
        end = time.monotonic() + delay
        with self._cond:
            while True:
                stop = end if self._deadline is None else min(end, self._deadline)
                if (now := time.monotonic()) >= stop:
                    return
                self._cond.wait(stop - now)

    def _report(self, message: str) -> None:
        if self._on_failure is not None:
            self._on_failure(message)
