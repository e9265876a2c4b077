"""Running one reader on one input as a user meets it, in a forked child of a warm parent, with the limits the
issue sets: an exit code of 0, 2, 3, 4 or 5; no signal; done within 20 s; a peak resident set under 1 GB.

The parent imports mimir and runs every reader once on a valid input (compiling the numba walkers) before it
forks, so a child starts in milliseconds. A child runs in its own process group, in its own temporary folder,
under an address-space limit (a net against a runaway allocation taking the machine down), with its stderr kept
for the report; the parent kills the group when the time is up and reads the child's peak from `wait4`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import os
import re
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .inputs import CORPUS, FuzzInput

REPO = Path(__file__).resolve().parents[2]
CONFIG_SCHEMA = REPO / "config" / "schemas" / "config.schema.yaml"
FAILURES = Path(__file__).resolve().parent / "failures"

ACCEPTED_CODES = frozenset({0, 2, 3, 4, 5})  # success, usage/config, bad input, unsupported, I/O
TIMEOUT_SECONDS = 20.0
PEAK_LIMIT_BYTES = 1_000_000_000
ADDRESS_SPACE_BYTES = 3 << 30  # the safety net: pyarrow and numba reserve address space they never touch
STDERR_KEPT = 8000
MIMIR_FRAME = re.compile(r'File "[^"]*/(src/mimir/[^"]+)", line (\d+)')

# the valid inputs every reader's runs are built around (the entity reader's flows table is made from the capture)
VALID_CAPTURE = CORPUS / "capture" / "valid-sockshop-sample.pcap"
VALID_ENTITIES = CORPUS / "entities" / "valid-sockshop.jsonl"
VALID_RUN = CORPUS / "entities" / "valid-sockshop.run.json"
VALID_CLUSTER_LOG = CORPUS / "pickle" / "valid-wordpress-protocol-0.pickle"
VALID_CONFIG = CORPUS / "config" / "valid-default.yaml"


@dataclass
class Outcome:
    """What became of one input: exit code or signal, whether it hung, its peak memory and time, its stderr."""

    code: int | None
    signal: int | None
    hung: bool
    peak_bytes: int
    seconds: float
    stderr: str = ""

    @property
    def failure(self) -> str | None:
        """Why the input failed the acceptance, or None."""
        if self.hung:
            return "hang"
        if self.signal is not None:
            return f"signal-{signal.Signals(self.signal).name}"
        if self.peak_bytes > PEAK_LIMIT_BYTES:
            return "peak"
        if self.code not in ACCEPTED_CODES:
            return f"exit-{self.code}"
        return None

    @property
    def cause(self) -> str:
        """mimir's last message, and for an internal error the innermost line of mimir's code in the traceback."""
        lines = self.stderr.strip().splitlines()
        said = [line for line in lines if line.startswith("mimir:")]
        message = (said or lines or [""])[-1][:300]
        frames = MIMIR_FRAME.findall(self.stderr)
        return f"{message} [at {frames[-1][0]}:{frames[-1][1]}]" if frames and self.code == 1 else message

    def describe(self) -> str:
        state = "hung" if self.hung else f"signal {self.signal}" if self.signal is not None else f"exit {self.code}"
        return f"{state}, {self.peak_bytes / 1e6:.0f} MB peak, {self.seconds:.2f} s: {self.cause}"


def config_exit_code(path: Path) -> int:
    """The workflow's config loading (`mimir.workflow.load_config`: what rules/common.smk runs) as an exit code."""
    from mimir import workflow
    from mimir.errors import MimirError

    try:
        workflow.load_config([path], CONFIG_SCHEMA)
    except MimirError as e:
        print(f"mimir: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


class Workspace:
    """The valid files each reader's command needs besides the input under test, made once in a temporary folder."""

    def __init__(self, root: Path):
        self.root = root
        self.flows = root / "flows.parquet"

    def command(self, item: FuzzInput, folder: Path) -> Callable[[], int]:
        """The reader's entry point on `item`, writing only inside `folder`; returns its exit code."""
        from mimir.cli import main

        if item.reader == "capture":
            capture = folder / f"input{item.suffix}"
            capture.write_bytes(item.data)
            return lambda: main(["ingest", str(capture), "-o", str(folder / "flows.parquet"), "--no-progress"])
        if item.reader == "entities":
            run = folder / "run"
            run.mkdir()
            mutated_run_json = item.suffix == ".run.json"
            (run / "run.json").write_bytes(item.data if mutated_run_json else VALID_RUN.read_bytes())
            (run / "entities.jsonl").write_bytes(VALID_ENTITIES.read_bytes() if mutated_run_json else item.data)
            return lambda: main(["edges", str(self.flows), str(run), "-o", str(folder / "edges.parquet")])
        if item.reader == "pickle":
            log = folder / "cluster-log.pickle"
            log.write_bytes(item.data)
            argv = ["import-legacy", "--pcap", str(VALID_CAPTURE), "--cluster-log", str(log), "-o", str(folder / "run")]
            return lambda: main(argv)
        config = folder / "config.yaml"
        config.write_bytes(item.data)
        return lambda: config_exit_code(config)


def _child(action: Callable[[], int], folder: Path) -> None:
    """In the forked child: limits, output to files in the folder, the action, and an exit that runs no cleanup."""
    code = 1
    try:
        os.setpgid(0, 0)
        os.chdir(folder)
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        err = os.open(folder / "stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        out = os.open(os.devnull, os.O_WRONLY)
        os.dup2(err, 2)
        os.dup2(out, 1)
        # the files, not whatever the parent had bound (pytest binds sys.stderr to its capture)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process ends with os._exit
        sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")  # noqa: SIM115
        os.environ["MIMIR_DEBUG"] = "1"  # an internal error's traceback goes to stderr.txt, for the report
        code = action()
    except SystemExit as e:  # argparse's usage errors
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    except BaseException as e:  # whatever escapes the entry point is an internal error, reported as one
        traceback.print_exc()
        print(f"mimir: internal error: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}", file=sys.stderr)
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


@dataclass
class _Running:
    key: object
    pid: int
    pidfd: int
    folder: Path
    started: float
    deadline: float
    hung: bool = False


@dataclass
class Pool:
    """Up to `jobs` children at a time, each given `timeout` seconds; the parent must be warm (see `warm`)."""

    workspace: Workspace
    jobs: int = 1
    timeout: float = TIMEOUT_SECONDS
    running: dict[int, _Running] = field(default_factory=dict)

    def run(self, items: Iterable[tuple[object, FuzzInput]]) -> Iterator[tuple[object, Outcome]]:
        """Outcomes in the order the children end, each with the key it was given."""
        pending = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted and len(self.running) < self.jobs:
                    try:
                        key, item = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    self._start(key, item)
                if not self.running:
                    return
                yield from self._reap()
        finally:  # stopped early (Ctrl-C, an error): no child outlives the parent
            for child in list(self.running.values()):
                os.kill(child.pid, signal.SIGKILL)
                self._collect(child)

    def run_one(self, item: FuzzInput) -> Outcome:
        return next(outcome for _, outcome in self.run([(None, item)]))

    def _start(self, key: object, item: FuzzInput) -> None:
        folder = Path(tempfile.mkdtemp(prefix=f"{item.reader}-", dir=self.workspace.root))
        action = self.workspace.command(item, folder)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(action, folder)
        now = time.monotonic()
        self.running[pid] = _Running(key, pid, os.pidfd_open(pid), folder, now, now + self.timeout)

    def _reap(self) -> Iterator[tuple[object, Outcome]]:
        poller = select.poll()
        for child in self.running.values():
            poller.register(child.pidfd, select.POLLIN)
        wait = max(0.0, min(child.deadline for child in self.running.values()) - time.monotonic())
        ready = {fd for fd, _ in poller.poll(wait * 1000 + 1)}
        now = time.monotonic()
        for child in list(self.running.values()):
            if child.pidfd not in ready and now < child.deadline:
                continue
            if child.pidfd not in ready:  # over its time
                child.hung = True
                os.kill(child.pid, signal.SIGKILL)
            yield child.key, self._collect(child)

    def _collect(self, child: _Running) -> Outcome:
        # anything the child started goes with it; until it is reaped, its pid names no other process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.monotonic() - child.started
        os.close(child.pidfd)
        del self.running[child.pid]
        try:
            stderr = (child.folder / "stderr.txt").read_text(errors="replace")
        except OSError:
            stderr = ""
        shutil.rmtree(child.folder, ignore_errors=True)
        return Outcome(
            code=os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
            signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            hung=child.hung,
            peak_bytes=usage.ru_maxrss * 1024,
            seconds=seconds,
            stderr=stderr[-STDERR_KEPT:],
        )


def warm(workspace: Workspace) -> None:
    """Import every reader and run each once on its valid input in this process, so that children start warm; the
    capture run makes the flows table the entity reader's runs use (without it the harness cannot run). Another
    reader's failure on its valid input is not stopped on here: the fuzzing reports it."""
    runs = [("capture", VALID_CAPTURE), ("pickle", VALID_CLUSTER_LOG), ("config", VALID_CONFIG)]
    for reader, path in runs:
        folder = Path(tempfile.mkdtemp(prefix="warm-", dir=workspace.root))
        with contextlib.suppress(Exception):
            workspace.command(FuzzInput(reader, path.name, "as-is", path.read_bytes()), folder)()
        if reader == "capture":
            if not (folder / "flows.parquet").exists():
                raise RuntimeError(f"mimir ingest fails on the valid {path}: the harness cannot run")
            (folder / "flows.parquet").rename(workspace.flows)
        shutil.rmtree(folder)
    folder = Path(tempfile.mkdtemp(prefix="warm-", dir=workspace.root))
    workspace.command(FuzzInput("entities", VALID_ENTITIES.name, "as-is", VALID_ENTITIES.read_bytes()), folder)()
    shutil.rmtree(folder)


@contextlib.contextmanager
def warm_workspace() -> Iterator[Workspace]:
    """A warm parent's workspace in a temporary folder, removed afterwards with whatever the children left."""
    root = Path(tempfile.mkdtemp(prefix="mimir-fuzz-"))
    try:
        workspace = Workspace(root)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            try:
                warm(workspace)
            except RuntimeError as e:
                raise RuntimeError(f"{e}:\n{printed.getvalue()}") from None
        gc.freeze()  # what the warm parent holds is never collected in a child, so never copied page by page there
        yield workspace
    finally:
        shutil.rmtree(root, ignore_errors=True)


def keep_failure(item: FuzzInput, outcome: Outcome, folder: Path = FAILURES) -> Path:
    """Save a failing input under failures/<reader>/, named by why it failed, its seed and its digest, with a .txt
    beside it saying how it was made and what the reader printed."""
    why = outcome.failure or "ok"
    digest = hashlib.sha256(item.data).hexdigest()[:10]
    stem = f"{why}-{Path(item.seed).name.split('.')[0]}-{digest}"
    target = folder / item.reader / f"{stem}{item.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(item.data)
    target.with_name(f"{stem}.txt").write_text(
        f"reader: {item.reader}\nseed: {item.seed}\nmade by: {item.how}\noutcome: {outcome.describe()}\n\n"
        f"{outcome.stderr}"
    )
    return target
