"""A real single-node SLURM (Debian's slurm-wlm and munge) for the time of a test or a benchmark.

Everything lives in one state folder: its own munge key and munged, a slurm.conf on free TCP ports, the controller's
state, the node's spool, pid and log files. Nothing in /etc, /run or /var is read or written, so two clusters (a test
and a benchmark) can run side by side on one machine, and nothing is left behind: every daemon is stopped by PID,
jobs still running are cancelled and their step daemons killed, and the folder is removed.

    with SlurmCluster(Path("/tmp/x")) as cluster:
        subprocess.run(["sbatch", "--wrap", "true"], env=cluster.env)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

# The daemons and clients the cluster needs; `make setup` installs them (packages slurm-wlm, slurm-client, munge).
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "sinfo", "scontrol", "sacct")
COMMANDS = ("munged", "mungekey", "slurmctld", "slurmd", *CLIENTS)
MUNGE_USER = "munge"
START_TIMEOUT = 60.0
# slurmctld's line for every batch job it accepts (22.05: "_slurm_rpc_submit_batch_job: JobId=12 InitPrio=...").
SUBMITTED = re.compile(r"_slurm_rpc_submit_batch_job: JobId=(\d+)")


class SlurmUnavailable(RuntimeError):
    """The cluster cannot start here (not root, a package missing, a daemon refusing): a failure, never a skip."""


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's pick); a race with another process is possible but rare."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) as slurmd measures this machine."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True, timeout=30).stdout
    cpus = re.search(r"\bCPUs=(\d+)", out)
    memory = re.search(r"\bRealMemory=(\d+)", out)
    if not cpus or not memory:
        raise SlurmUnavailable(f"cannot read CPUs and RealMemory from `slurmd -C`: {out!r}")
    return int(cpus.group(1)), int(memory.group(1))


def children() -> dict[int, list[int]]:
    """Parent PID -> child PIDs of every process now."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the command name in field 2 may hold spaces and parentheses: the parent PID follows the last ')'
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pids: list[int]) -> list[int]:
    """The given processes and all of their descendants, parents first."""
    tree, found, todo = children(), [], list(pids)
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


def kill_all(pids: list[int], grace: float = 5.0) -> None:
    """TERM, then KILL whatever still lives after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            time.sleep(0.1)


def alive(pid: int) -> bool:
    """Whether `pid` is a process that has not yet been reaped or become a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class SlurmCluster:
    """One controller and one node on this host, all state in `state` (created, and removed on exit).

    `cpus` lowers the node's CPU count below what `slurmd -C` measures (a benchmark compares 1 and 2 worker slots).
    Jobs share the node CPU by CPU (select/cons_tres with CR_CPU); memory is checked against the node's size on
    submission but not reserved. Subprocesses that call sbatch, squeue or srun need `env`: it points SLURM_CONF at
    this cluster's slurm.conf (whose AuthInfo names this cluster's munge socket) and puts first on PATH client
    commands that set it themselves, for callers that drop SLURM_* variables. `submitted()` gives job ids.
    """

    def __init__(self, state: Path, cpus: int | None = None) -> None:
        self.state = Path(state).resolve()
        self.cpus = cpus
        self.conf = self.state / "slurm.conf"
        self.munge = self.state / "munge"
        self.socket = self.munge / "munge.socket"
        self.ctld_log = self.state / "slurmctld.log"
        self.slurmd_log = self.state / "slurmd.log"
        self.spool = self.state / "spool"
        self.node = socket.gethostname().split(".")[0]
        self.bin = self.state / "bin"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_"))}
        path = os.pathsep.join([str(self.bin), env.get("PATH", os.defpath)])
        self.env: dict[str, str] = {**env, "SLURM_CONF": str(self.conf), "PATH": path}
        self._daemons: list[tuple[str, subprocess.Popen]] = []

    # -- life cycle ---------------------------------------------------------------------------------------------

    def __enter__(self) -> SlurmCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _start(self) -> None:
        self._check_host()
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o755)  # munged, running as munge, must reach its own folder inside
        self._check_reachable()
        self._start_munge()
        self._write_conf()
        self._write_clients()
        for name in ("slurmctld", "slurmd"):
            self._spawn(name, [name, "-D", "-f", str(self.conf)], self.state / f"{name}.out")
        self._wait_ready()

    def stop(self) -> None:
        """Cancel every job, kill leftover step daemons and job processes, stop the daemons by PID, remove the state."""
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self._daemons):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                if jobs := self._queue():
                    subprocess.run(
                        ["scancel", "--full", *jobs], env=self.env, capture_output=True, timeout=15, check=False
                    )
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and self._queue():
                    time.sleep(0.3)
        steps = self.step_daemons()
        if steps:
            kill_all(descendants(steps))
        for _name, proc in reversed(self._daemons):
            if proc.poll() is None:
                kill_all([proc.pid], grace=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._daemons.clear()
        shutil.rmtree(self.state, ignore_errors=True)

    # -- what tests ask ------------------------------------------------------------------------------------------

    def submitted(self) -> list[str]:
        """The SLURM job ids slurmctld accepted through sbatch, in order, read from its log."""
        if not self.ctld_log.exists():
            return []
        return SUBMITTED.findall(self.ctld_log.read_text(errors="replace"))

    def step_daemons(self) -> list[int]:
        """PIDs of this cluster's slurmstepd processes: those holding a socket in this node's spool folder."""
        if not self.spool.is_dir():
            return []
        paths = {str(p) for p in self.spool.iterdir() if p.is_socket()}
        inodes = set()
        with contextlib.suppress(OSError):
            for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 8 and fields[7] in paths:
                    inodes.add(f"socket:[{fields[6]}]")
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in {p.pid for _, p in self._daemons}:
                continue
            with contextlib.suppress(OSError):
                if any(str(fd.readlink()) in inodes for fd in (entry / "fd").iterdir()):
                    pids.append(int(entry.name))
        return pids

    def log_tail(self, lines: int = 30) -> str:
        """The end of every daemon log, for failure messages."""
        parts = []
        for log in (self.munge / "munged.log", self.ctld_log, self.slurmd_log, *self.state.glob("*.out")):
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- start-up ------------------------------------------------------------------------------------------------

    def _check_host(self) -> None:
        missing = [c for c in COMMANDS if shutil.which(c) is None]
        if missing:
            raise SlurmUnavailable(f"SLURM cannot start: {', '.join(missing)} not found (run `make setup` as root)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("SLURM cannot start: slurmd and munged need root (the tests run as root in CI)")
        try:
            pwd.getpwnam(MUNGE_USER)
        except KeyError:
            raise SlurmUnavailable(f"SLURM cannot start: no user {MUNGE_USER} (install munge: `make setup`)") from None

    def _check_reachable(self) -> None:
        """munged runs as munge: every folder above the state folder must let others through."""
        for folder in [self.state, *self.state.parents]:
            if not folder.stat().st_mode & stat.S_IXOTH:
                raise SlurmUnavailable(
                    f"SLURM cannot start: {folder} is closed to others, so munged (user {MUNGE_USER}) cannot reach "
                    f"{self.state}; put the state folder elsewhere (e.g. tempfile.mkdtemp())"
                )

    def _start_munge(self) -> None:
        user = pwd.getpwnam(MUNGE_USER)
        self.munge.mkdir()
        self.munge.chmod(0o711)  # munged wants its socket folder passable by all (clients connect) but not writable
        os.chown(self.munge, user.pw_uid, user.pw_gid)
        key = self.munge / "munge.key"
        subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True, timeout=30)
        os.chown(key, user.pw_uid, user.pw_gid)
        key.chmod(0o600)
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                f"--socket={self.socket}",
                f"--pid-file={self.munge / 'munged.pid'}",
                f"--log-file={self.munge / 'munged.log'}",
                f"--seed-file={self.munge / 'munged.seed'}",
                f"--key-file={key}",
            ],
            self.state / "munged.out",
            user=MUNGE_USER,
        )
        self._wait(self.socket.is_socket, "munged to open its socket")

    def _write_conf(self) -> None:
        cpus, memory = node_hardware()
        if self.cpus is not None:
            if not 1 <= self.cpus <= cpus:
                raise ValueError(f"cpus={self.cpus}: this machine has {cpus}")
            cpus = self.cpus
        for folder in ("ctld", "spool"):
            (self.state / folder).mkdir(exist_ok=True)
        host = self.node
        self.conf.write_text(
            f"""# A single-node cluster of the mimir tests: every path in {self.state}.
ClusterName=mimir
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={self.state / "ctld"}
SlurmdSpoolDir={self.spool}
SlurmctldPidFile={self.state / "slurmctld.pid"}
SlurmdPidFile={self.state / "slurmd.pid"}
SlurmctldLogFile={self.ctld_log}
SlurmdLogFile={self.slurmd_log}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
# finished jobs stay visible to squeue this long: the executor plugin's squeue status checks rely on it
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName={host} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _write_clients(self) -> None:
        """Client commands that always reach this cluster, first on `env`'s PATH.

        SLURM_CONF alone does not reach every client: the job step of snakemake-executor-plugin-slurm deletes all
        SLURM_* variables but a few job ids before it calls `srun`, so srun would look for /etc/slurm/slurm.conf
        (absent: this cluster lives in its folder) and fail. Each shim sets SLURM_CONF and runs the real command.
        """
        self.bin.mkdir(exist_ok=True)
        for name in CLIENTS:
            real = shutil.which(name)  # on the PATH of this process, which does not hold the shims
            shim = self.bin / name
            shim.write_text(f'#!/bin/sh\nSLURM_CONF={shlex.quote(str(self.conf))} exec {shlex.quote(str(real))} "$@"\n')
            shim.chmod(0o755)

    def _spawn(self, name: str, cmd: list[str], out: Path, user: str | None = None) -> None:
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=self.env,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                start_new_session=True,  # a Ctrl-C in the test's terminal reaches the test, which stops the cluster
            )
        self._daemons.append((name, proc))

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._daemons:
                if proc.poll() is not None:
                    raise SlurmUnavailable(
                        f"{name} exited with {proc.returncode} while waiting for {what}\n{self.log_tail()}"
                    )
            if ready():
                return
            time.sleep(0.2)
        raise SlurmUnavailable(f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tail()}")

    def _ask(self, *command: str) -> subprocess.CompletedProcess:
        """One SLURM client command against this cluster (its SLURM_CONF), its answer as text."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=15, check=False)

    def _node_idle(self) -> bool:
        done = self._ask("sinfo", "--noheader", "--format=%T")
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def _queue(self) -> list[str]:
        done = self._ask("squeue", "--noheader", "--format=%i")
        return done.stdout.split() if done.returncode == 0 else []

    def _wait_ready(self) -> None:
        self._wait(self._node_idle, "the node to be idle in sinfo")
        done = subprocess.run(
            ["srun", "--nodes=1", "--ntasks=1", "hostname"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise SlurmUnavailable(f"`srun hostname` failed: {done.stderr}\n{self.log_tail()}")
