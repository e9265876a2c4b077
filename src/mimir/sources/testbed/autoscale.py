"""A CPU autoscaler for the WordPress pods, as Kubernetes' HorizontalPodAutoscaler decides.

Every `scale_period` seconds it reads the CPU time the processes of each WordPress pod used (/proc, per network
namespace), and asks for ceil(pods * used / target) pods within the bounds, ignoring changes within 10 % of the
target and scaling down only to the highest recommendation of the last five minutes (the HPA's default
stabilisation window). New pods get new namespaces and addresses (a released address is reused first);
removed pods leave the Service before they stop. Every decision is kept for run.json.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from mimir.errors import MimirError
from mimir.sources.testbed.processes import namespace_pids
from mimir.sources.testbed.testbed import WORDPRESS, Testbed

TOLERANCE = 0.1
STABILISATION = 300.0  # seconds whose highest recommendation a scale-down may not go below (the HPA's default)
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(netns: str) -> float:
    """User and system CPU seconds of the processes in a namespace (what the kubelet's cAdvisor reports)."""
    total = 0
    for pid in namespace_pids(netns):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


class Autoscaler:
    """Runs in a thread from start() to stop(); `decisions` lists (time, pods, cpu per pod, desired)."""

    def __init__(self, testbed: Testbed) -> None:
        self.testbed = testbed
        self.spec = testbed.spec
        self.decisions: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="autoscaler", daemon=True)
        self._recent: deque[int] = deque(maxlen=max(round(STABILISATION / self.spec.scale_period), 1))
        self._last: dict[str, float] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(120)
        return {"decisions": self.decisions, "problems": self.problems}

    def _usage(self, period: float) -> float:
        """Mean CPU (cores) per WordPress pod over the last period; pods new in it count from their first reading."""
        pods = self.testbed.wordpress_pods()
        used = []
        for pod in pods:
            now = cpu_seconds(pod.netns)
            if pod.name in self._last:
                used.append((now - self._last[pod.name]) / period)
            self._last[pod.name] = now
        return sum(used) / len(used) if used else 0.0

    def desired(self, pods: int, usage: float) -> int:
        ratio = usage / self.spec.cpu_per_pod
        want = pods if abs(ratio - 1) <= TOLERANCE else math.ceil(pods * ratio)
        want = min(max(want, self.spec.wordpress_pods), self.spec.max_wordpress_pods)
        self._recent.append(want)
        return want if want >= pods else max(self._recent)

    def _loop(self) -> None:
        period = self.spec.scale_period
        self._usage(period)
        while not self._stop.wait(period):
            pods = self.testbed.wordpress_pods()
            usage = self._usage(period)
            if self.testbed.replacing:  # a killed pod's replacement is on its way: no decision meanwhile
                continue
            want = self.desired(len(pods), usage)
            self.decisions.append(
                {"ts": time.time(), "pods": len(pods), "cpu_per_pod": round(usage, 4), "desired": want}
            )
            try:
                for _ in range(want - len(pods)):
                    self.testbed.add_wordpress_pod()
                if want < len(pods):
                    newest = pods[-1]
                    self._last.pop(newest.name, None)
                    self.testbed.remove_pod(newest, WORDPRESS)
            except MimirError as e:
                self.problems.append(f"autoscaler: {e}")
