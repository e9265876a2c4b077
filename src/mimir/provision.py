"""`mimir provision`: run the project's Ansible playbook (ansible/site.yml) on an inventory of hosts.

The playbook runs through ansible-runner in a private temporary folder, so nothing is left behind but what the
hosts got. The project itself travels as a source archive of this checkout, built here and handed to the `mimir`
role as the extra variable `mimir_archive`. Progress is one line per task and per host result on stderr; a failed
task stops the command with a ProvisionError naming the host, the task and what the module said.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mimir.errors import Interrupted, IOFailure, ProvisionError, UsageError
from mimir.extras import require_extra
from mimir.io import atomic_path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = PROJECT_ROOT / "ansible"
# What a source archive needs when the project is not a git checkout: enough to install it from its lock file.
FALLBACK_SOURCES = ("pyproject.toml", "requirements.lock", "README.md", "Makefile", "src", "config", "ansible")
RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_skipped": "skipped",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_async_failed": "failed",
}
MESSAGE_LIMIT = 2000  # characters of a module's message kept in an error


@dataclass
class TaskFailure:
    """One host on which one task failed (or which could not be reached)."""

    host: str
    task: str
    message: str
    unreachable: bool = False

    def __str__(self) -> str:
        what = "unreachable during" if self.unreachable else "failed"
        return f"host {self.host}: task '{self.task}' {what}: {self.message}"


@dataclass
class ProvisionResult:
    """The play's recap: per host, how many tasks were ok, changed, failed, skipped, or the host unreachable."""

    status: str
    rc: int
    check: bool
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(counts["changed"] for counts in self.recap.values())


def ansible_dir() -> Path:
    """The Ansible tree beside the package; `mimir provision` runs from a checkout of the project."""
    if not (ANSIBLE_DIR / "site.yml").is_file():
        raise IOFailure(
            f"{ANSIBLE_DIR / 'site.yml'}: not found: `mimir provision` needs the project's ansible/ folder, "
            "which comes with a checkout of the project (not with an installed package)"
        )
    return ANSIBLE_DIR


def source_files(root: Path = PROJECT_ROOT) -> list[Path]:
    """The files of the checkout, relative to root: tracked or new but not ignored (git), else the package."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout
        names = {Path(name) for name in listed.decode().split("\0") if name}
    except (OSError, subprocess.CalledProcessError):
        names = set()
        for entry in FALLBACK_SOURCES:
            path = root / entry
            if path.is_file():
                names.add(Path(entry))
            elif path.is_dir():
                names.update(
                    p.relative_to(root)
                    for p in path.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and "egg-info" not in str(p)
                )
    # A file deleted but not yet committed is still listed by git: only what exists goes in.
    return sorted(name for name in names if (root / name).is_file() and not (root / name).is_symlink())


def build_source_archive(target: Path, root: Path = PROJECT_ROOT) -> Path:
    """Write a .tar.gz of the checkout; the same files give the same bytes, so hosts see no change."""
    files = source_files(root)
    if not (root / "requirements.lock").is_file() or Path("requirements.lock") not in files:
        raise IOFailure(f"{root / 'requirements.lock'}: not found: the source archive must carry the lock file")
    with (
        atomic_path(target) as tmp,
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as compressed,  # no name, no time: same bytes
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name in files:
            info = archive.gettarinfo(str(root / name), arcname=name.as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with (root / name).open("rb") as handle:
                archive.addfile(info, handle)
    return target


def parse_extra_vars(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs, each value read as YAML (so 8, true and [a, b] keep their types)."""
    import yaml

    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--extra-var {pair!r}: expected KEY=VALUE")
        try:
            result[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as e:
            raise UsageError(f"--extra-var {key.strip()}: the value is not valid YAML: {e}") from None
    return result


class _Progress:
    """Turns ansible-runner events into progress lines and remembers the failures."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.failures: list[TaskFailure] = []
        self.recap: dict[str, dict[str, int]] = {}

    def _say(self, line: str) -> None:
        if self.stream is not None:
            print(line, file=self.stream, flush=True)

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self._say(f"TASK [{_task_name(data)}]")
        elif kind in RESULT_EVENTS:
            self._on_result(RESULT_EVENTS[kind], data)
        elif kind == "playbook_on_stats":
            self._on_stats(data)
        return True

    def _on_result(self, outcome: str, data: dict[str, Any]) -> None:
        host = data.get("host", "?")
        res = data.get("res") or {}
        if outcome == "ok" and res.get("changed"):
            outcome = "changed"
        if outcome in ("failed", "unreachable") and data.get("ignore_errors"):
            self._say(f"  {outcome} (ignored): {host}")
            return
        if outcome in ("failed", "unreachable"):
            failure = TaskFailure(host, _task_name(data), _module_message(res), unreachable=outcome == "unreachable")
            self.failures.append(failure)
            self._say(f"  {outcome}: {host}: {failure.message}")
        else:
            self._say(f"  {outcome}: {host}")

    def _on_stats(self, data: dict[str, Any]) -> None:
        keys = {"ok": "ok", "changed": "changed", "failures": "failed", "skipped": "skipped", "dark": "unreachable"}
        hosts = set().union(*(data.get(key) or {} for key in keys))
        for host in sorted(hosts):
            self.recap[host] = {name: int((data.get(key) or {}).get(host, 0)) for key, name in keys.items()}
        self._say("RECAP")
        for host, counts in self.recap.items():
            self._say(f"  {host}: " + " ".join(f"{name}={count}" for name, count in counts.items()))


def _task_name(data: dict[str, Any]) -> str:
    task = str(data.get("task") or data.get("task_action") or "?")
    role = data.get("role")
    return f"{role} : {task}" if role else task


def _module_message(res: dict[str, Any]) -> str:
    """What the module said: its msg, else its stderr; for a loop, the first failed item's."""
    message = str(res.get("msg") or "").strip()
    items = [item for item in res.get("results") or [] if isinstance(item, dict) and item.get("failed")]
    if items and (not message or message.startswith("One or more items failed")):
        item = items[0]
        label = item.get("_ansible_item_label", item.get("item"))
        message = f"item {label}: {_module_message(item)}"
    if not message:
        message = str(res.get("stderr") or res.get("module_stderr") or res.get("stdout") or "").strip()
    if not message and res.get("rc") is not None:
        message = f"exit code {res['rc']}"
    message = message or "no message"
    return message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT] + " [...]"


@contextmanager
def _cancel_on_signals() -> Iterator[Callable[[], bool]]:
    """Ctrl-C or SIGTERM asks ansible-runner to stop the play; the previous handlers come back afterwards."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop.is_set
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in previous:
        signal.signal(number, lambda *_: stop.set())
    try:
        yield stop.is_set
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _check_inventory(inventory: Path) -> Path:
    if not inventory.exists():
        raise IOFailure(f"inventory {inventory}: no such file")
    if not os.access(inventory, os.R_OK) or (inventory.is_dir() and not os.access(inventory, os.X_OK)):
        raise IOFailure(f"inventory {inventory}: cannot read it (permissions)")
    return inventory.resolve()


def _last_lines(text: str, count: int = 8) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def provision(
    inventory: Path,
    *,
    tags: list[str] | None = None,
    check: bool = False,
    extra_vars: dict[str, Any] | None = None,
    limit: str | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
) -> ProvisionResult:
    """Run ansible/site.yml on the inventory's hosts; raise ProvisionError naming host and task on a failure."""
    require_extra("provision", "mimir provision")
    import ansible_runner

    inventory = _check_inventory(inventory)
    tree = ansible_dir()
    out = (stream or sys.stderr) if progress else None
    with tempfile.TemporaryDirectory(prefix="mimir-provision-") as private:
        archive = build_source_archive(Path(private) / "mimir-src.tar.gz")
        variables = {"mimir_archive": str(archive), **(extra_vars or {})}
        handler = _Progress(out)
        env = {
            # ansible-runner starts the ansible-playbook that sits beside this interpreter.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
            "ANSIBLE_CONFIG": str(tree / "ansible.cfg"),
            # A typo in an inventory must stop the run, not provision zero hosts.
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
            "ANSIBLE_NOCOLOR": "True",
        }
        with _cancel_on_signals() as cancelled:
            runner = ansible_runner.run(
                private_data_dir=private,
                project_dir=str(tree),
                playbook=str(tree / "site.yml"),
                inventory=str(inventory),
                tags=",".join(tags) if tags else None,
                limit=limit,
                cmdline="--check" if check else None,
                extravars=variables,
                envvars=env,
                event_handler=handler,
                cancel_callback=cancelled,
                quiet=True,
            )
        if runner.status == "canceled":
            raise Interrupted("provisioning stopped by a signal; hosts may be half-provisioned, run it again")
        if handler.failures:
            raise ProvisionError("\n".join(str(failure) for failure in handler.failures))
        if runner.status != "successful" or runner.rc != 0:
            output = runner.stdout.read() if runner.stdout else ""
            raise ProvisionError(
                f"ansible-playbook failed (status {runner.status}, exit code {runner.rc}) on inventory "
                f"{inventory}:\n{_last_lines(output)}"
            )
        if not handler.recap:
            raise ProvisionError(f"inventory {inventory}: no host matched{f' --limit {limit}' if limit else ''}")
    return ProvisionResult(status=runner.status, rc=runner.rc, check=check, recap=handler.recap)
