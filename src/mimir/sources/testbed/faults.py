"""Faults on a schedule: a Galera member or a WordPress pod killed, then back `down` seconds later.

A killed member is a StatefulSet pod that crashed: its process is killed (SIGKILL, no clean shutdown), the pod
deleted; it comes back with the same name and its data folder (the persistent volume), takes the lowest free
address, and rejoins by incremental or full state transfer, which then shows in the capture. A killed WordPress
pod is replaced by a new pod of the Deployment. Each fault's times and pods go to run.json.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from mimir.errors import MimirError
from mimir.sources.testbed import services
from mimir.sources.testbed.testbed import APP_NAMESPACE, DATABASE, WORDPRESS, Testbed
from mimir.spec import Fault


class FaultSchedule:
    """One thread per fault, from start(t0) to stop(); `record` holds what happened."""

    def __init__(self, testbed: Testbed, faults: tuple[Fault, ...], stop: threading.Event) -> None:
        self.testbed, self.faults, self._stop = testbed, faults, stop
        self.record: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []

    def start(self, t0: float) -> None:
        for k, fault in enumerate(self.faults):
            entry: dict[str, Any] = {"target": fault.target, "at": fault.at, "down": fault.down}
            self.record.append(entry)
            thread = threading.Thread(target=self._run, args=(fault, t0, k, entry), name=f"fault-{k}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> list[dict[str, Any]]:
        for thread in self._threads:
            thread.join(self.testbed.spec.ready_timeout + 30)
        return self.record

    def _run(self, fault: Fault, t0: float, k: int, entry: dict[str, Any]) -> None:
        if self._stop.wait(max(t0 + fault.at - time.time(), 0)):
            entry["skipped"] = "the run stopped first"
            return
        try:
            if fault.target == "database":
                self._member(fault, k, entry)
            else:
                self._wordpress(fault, k, entry)
        except MimirError as e:
            entry["problem"] = str(e)

    def _member(self, fault: Fault, k: int, entry: dict[str, Any]) -> None:
        tb = self.testbed
        members = tb.pods_of(DATABASE)
        pod = members[(tb.seed + k) % len(members)]
        entry |= {"pod": pod.name, "address": pod.ip, "killed": time.time()}
        for daemon in tb.daemons.pop(pod.name, []):
            daemon.kill()
        tb.remove_pod(pod, DATABASE)
        if self._stop.wait(fault.down):
            return
        back = tb.new_pod(pod.name, APP_NAMESPACE, dict(pod.labels), pod.owner)
        peers = [p.ip for p in tb.pods_of(DATABASE)]
        conf = services.galera_conf(back, int(pod.name.rsplit("-", 1)[1]), peers, tb.work)
        entry |= {"restarted": time.time(), "new_address": back.ip}
        tb.daemons[back.name] = [
            services.start_member(back, conf, tb.work, bootstrap=False, timeout=tb.spec.ready_timeout)
        ]
        tb.mark_ready(DATABASE, back)
        entry["synced"] = time.time()

    def _wordpress(self, fault: Fault, k: int, entry: dict[str, Any]) -> None:
        tb = self.testbed
        pods = tb.wordpress_pods()
        pod = pods[(tb.seed + k) % len(pods)]
        entry |= {"pod": pod.name, "address": pod.ip, "killed": time.time()}
        with tb.lock:
            tb.replacing += 1  # the Deployment's: the autoscaler must not replace it too
        try:
            for daemon in tb.daemons.pop(pod.name, []):
                daemon.kill()
            tb.remove_pod(pod, WORDPRESS)
            if self._stop.wait(fault.down):
                return
            entry["restarted"] = time.time()
            back = tb.add_wordpress_pod()
        finally:
            with tb.lock:
                tb.replacing -= 1
        entry |= {"replacement": back.name, "new_address": back.ip, "ready": time.time()}
