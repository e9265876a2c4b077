"""Commands and daemons inside the testbed's network namespaces, and the record that lets anything be cleaned up.

Every namespace, process and folder a testbed makes is written to its state file under STATE_ROOT before it is
made, so `mimir testbed down` (or the next run's sweep) removes what a killed run left behind. Commands take an
argument list, never a shell string: names and paths from a config never reach a shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from mimir.errors import TestbedError, UsageError
from mimir.io import atomic_path

STATE_ROOT = Path("/run/mimir-testbed")  # one JSON file per testbed that is up
NETNS_ROOT = Path("/run/netns")  # where `ip netns add` mounts the namespaces
NETNS_ETC = Path("/etc/netns")  # per-namespace files that `ip netns exec` mounts over /etc
WORK_ROOT = Path("/var/lib/mimir-testbed")  # data folders of the daemons (databases, logs, sockets)


def run(command: Sequence[str], *, input: str | None = None, timeout: float = 60, what: str = "") -> str:
    """Run a command to completion; a TestbedError with its own words if it fails."""
    try:
        done = subprocess.run(list(command), input=input, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise TestbedError(f"{command[0]}: not installed (run `make setup`)") from None
    except subprocess.TimeoutExpired:
        raise TestbedError(f"{what or ' '.join(command[:4])}: no answer within {timeout:g} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise TestbedError(f"{what or ' '.join(command[:4])}: exit {done.returncode}: {' | '.join(detail)}")
    return done.stdout


def in_netns(namespace: str, command: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command]


@dataclass
class State:
    """What one testbed made, as its state file records it."""

    name: str
    namespaces: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    pid: int = field(default_factory=os.getpid)
    info: dict[str, Any] = field(default_factory=dict)  # what `mimir testbed up` tells its user

    @property
    def path(self) -> Path:
        return STATE_ROOT / f"{self.name}.json"

    def save(self) -> None:
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, name: str) -> State:
        path = STATE_ROOT / f"{name}.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise UsageError(
                f"{path}: no testbed named {name!r} is up: the state files there name the testbeds that are"
            ) from None
        except (json.JSONDecodeError, TypeError) as e:
            raise TestbedError(f"{path}: not a testbed state file ({e})") from None


def states() -> list[str]:
    """The names of the testbeds this machine has up (or left behind)."""
    return sorted(p.stem for p in STATE_ROOT.glob("*.json")) if STATE_ROOT.is_dir() else []


@dataclass
class Daemon:
    """A long-running process in a namespace, its output in a log file (an open pipe would hang the caller)."""

    name: str
    namespace: str
    command: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = None

    def start(self) -> Daemon:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._out = self.log.open("ab")
        try:
            self.proc = subprocess.Popen(
                in_netns(self.namespace, self.command),
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C at the terminal reaches mimir, which stops the daemons in order
            )
        except FileNotFoundError:
            raise TestbedError(f"{self.command[0]}: not installed (run `make setup`)") from None
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM to the daemon's process group, then SIGKILL after `timeout`."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._out is not None:
            self._out.close()
            self._out = None

    def kill(self) -> None:
        """A crash: SIGKILL to the process group, no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.stop()

    def tail(self, lines: int = 3) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        return ""


def namespace_pids(namespace: str) -> list[int]:
    """Every process in a namespace (ip netns pids), empty when the namespace is gone."""
    try:
        done = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def kill_namespace(namespace: str, grace: float = 5) -> None:
    """Stop every process left in a namespace (SIGTERM, then SIGKILL), delete it and its /etc/netns folder."""
    pids = namespace_pids(namespace)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.05)
    if (NETNS_ROOT / namespace).exists():
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30, check=False)
    shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return ") Z " in Path(f"/proc/{pid}/stat").read_text()
    return True


def sweep(state: State) -> None:
    """Remove everything a testbed's state file names, then the file: safe to call twice."""
    for namespace in reversed(state.namespaces):
        kill_namespace(namespace)
    for folder in state.folders:
        shutil.rmtree(folder, ignore_errors=True)
    state.path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        NETNS_ETC.rmdir()  # only when no other testbed left files there
    if NETNS_ROOT.is_dir() and not any(NETNS_ROOT.iterdir()):
        subprocess.run(["umount", str(NETNS_ROOT)], capture_output=True, timeout=10, check=False)
        with contextlib.suppress(OSError):
            NETNS_ROOT.rmdir()
