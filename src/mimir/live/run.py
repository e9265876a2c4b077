"""The loop of `mimir live`: a capture thread counts packets, the main thread closes and scores intervals.

Intervals close on capture time: interval [s, s + T) is scored once a packet at s + T + lateness or later has been
read, so packets a little out of order still land in their interval. A capture that goes quiet would hold the last
interval back for ever, so while nothing arrives the capture clock runs on with the wall clock (not for a capture
file, read as fast as it goes: its end closes everything).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mimir.live.capture import Feed
from mimir.live.detect import IntervalScorer, Scored
from mimir.live.entities import EntityLog
from mimir.live.outputs import AlertLog, LiveMetrics, Webhook

TICK = 0.1  # seconds between two looks at the capture clock
COMPACT_EVENTS = 10_000  # entity events read before the first compaction (then: twice those kept)


@dataclass
class LiveSummary:
    """What one `mimir live` did, printed at its end."""

    packets: int = 0
    bytes: int = 0
    intervals: int = 0
    alerts: int = 0
    late_packets: int = 0
    unknown_addresses: list[str] = field(default_factory=list)
    capture_restarts: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class LiveLoop:
    """One scoring of a capture feed until it ends or `stop` is set."""

    scorer: IntervalScorer
    feed: Feed
    entities: EntityLog
    addressing: Any
    alerts: AlertLog
    metrics: LiveMetrics
    webhook: Webhook | None = None
    lateness: float = 2.0
    follow_wall_clock: bool = True  # advance the capture clock while nothing arrives (not for a file)
    on_scored: Callable[[Scored], None] | None = None  # a terminal's status line
    stop: threading.Event = field(default_factory=threading.Event)
    summary: LiveSummary = field(default_factory=LiveSummary)
    _arrived: float = 0.0  # wall time the capture clock last moved
    _seen_ts: float = float("-inf")
    _error: BaseException | None = None
    _unknown: set[str] = field(default_factory=set)
    _compact_at: int = COMPACT_EVENTS

    def _read(self) -> None:
        """The capture thread: every block into the scorer, as soon as it is read."""
        metrics = self.metrics
        try:
            for buf, records, n in self.feed.blocks():
                before = self.scorer.bytes
                self.scorer.add(buf, records, n)
                metrics.packets.inc(n)
                metrics.bytes.inc(self.scorer.bytes - before)
                if self.stop.is_set():
                    break
        except BaseException as e:  # handed to the main thread, which raises it after cleaning up
            self._error = e
        finally:
            self.stop.set()

    def _clock(self, now: float) -> float:
        """The capture time up to which intervals may close."""
        last = self.scorer.last_ts
        if last > self._seen_ts:
            self._seen_ts, self._arrived = last, now
        if self.follow_wall_clock and self._arrived:
            last += max(0.0, now - self._arrived - self.lateness)  # quiet: time goes on all the same
        return last - self.lateness

    def _emit(self, scored: Scored) -> None:
        record = scored.record()
        # a capture read from a file is scored long after it was made: its lag would be the file's age
        record["lag"] = round(time.time() - scored.end, 3) if self.follow_wall_clock else None
        self.alerts.write(record)
        m = self.metrics
        m.intervals.inc()
        m.last_score.set(scored.score)
        if record["lag"] is not None:
            m.lag.observe(max(record["lag"], 0.0))
        self.summary.intervals += 1
        if scored.alert:
            m.alerts.inc()
            self.summary.alerts += 1
            if self.webhook is not None:
                self.webhook.post(record)
        fresh = sorted(set(scored.unknown) - self._unknown)
        if fresh:
            self._unknown.update(fresh)
            m.unknown_addresses.inc(len(fresh))
            shown = ", ".join(fresh[:5]) + (f" and {len(fresh) - 5} more" if len(fresh) > 5 else "")
            print(
                f"mimir live: warning: in-cluster addresses no entity holds (kept as unknown): {shown}", file=sys.stderr
            )
        if self.on_scored is not None:
            self.on_scored(scored)

    def _score(self, clock: float, *, final: bool = False) -> None:
        if self.entities.poll() and len(self.entities.events) > self._compact_at:
            if self.scorer.next_start is not None:  # what no interval still to score can need
                self.entities.forget_before(self.scorer.next_start - self.scorer.model.coarse)
            self._compact_at = 2 * len(self.entities.events) + COMPACT_EVENTS
        for scored in self.scorer.close_until(clock, self.entities.spans, self.addressing, final=final):
            self._emit(scored)
        late = self.scorer.late_packets - self.summary.late_packets
        if late > 0:
            self.metrics.late_packets.inc(late)
            self.summary.late_packets = self.scorer.late_packets

    def run(self) -> LiveSummary:
        """Score until the feed ends or `stop` is set; the last interval reached is scored (marked partial)."""
        self.metrics.threshold.set(self.scorer.model.threshold)
        reader = threading.Thread(target=self._read, name="live-capture", daemon=True)
        reader.start()
        restarts = 0
        try:
            while not self.stop.wait(TICK):
                self._score(self._clock(time.monotonic()))
                if self.feed.stats.restarts > restarts:
                    self.metrics.capture_restarts.inc(self.feed.stats.restarts - restarts)
                    restarts = self.feed.stats.restarts
        finally:
            self.feed.stop()
            reader.join()
        if self._error is not None:
            raise self._error
        self._score(self.scorer.last_ts, final=True)
        s = self.summary
        s.packets, s.bytes = self.scorer.packets, self.scorer.bytes
        s.unknown_addresses = sorted(self._unknown)
        s.capture_restarts = self.feed.stats.restarts
        s.warnings = list(self.feed.stats.warnings)
        return s
