"""Writing outputs so that nothing is lost and a reader never sees half of one.

Every command writes through a `Claim`: it writes where nothing is (or an empty folder), and with `--force` over
a previous output of its own, recognised by the marker it left (a parquet table's key-value metadata, a JSON
output's key, a run bundle's run.json "source", a folder marker beside files that cannot hold one); never over
anything else, never over one of the call's own inputs. Each file or folder is written under a temporary name
(`.NAME.tmp-PID`) and renamed into place when complete; temporaries that a killed process left behind are
removed by the next write to the same name, once that process is gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimir.errors import IOFailure, UsageError

if TYPE_CHECKING:
    import pyarrow as pa

MARK = "mimir.command"  # the command that wrote an output: a parquet table's metadata key, a JSON output's key
SUMMARY = "mimir.summary"  # a table's summary in its metadata: the authority, FILE.summary.json only a copy
FOLDER_MARK = ".mimir-command"  # names the command whose files in this folder cannot hold a marker (csv, md, png)
RUN_SOURCES = {"synthetic": "synth", "import": "import-legacy", "cluster": "collect", "testbed": "testbed run"}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _table_metadata(path: Path) -> dict[bytes, bytes] | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None


def written_by(path: Path) -> str | None:
    """The command whose marker a previous output carries, or None: anything unmarked is not mimir's to replace."""
    mark: Any = None
    if path.is_symlink():
        mark = None
    elif path.is_dir():
        run = _read_json(path / "run.json")
        mark = RUN_SOURCES.get(run.get("source")) if isinstance(run, dict) else None
    elif path.suffix == ".parquet":
        mark = (_table_metadata(path) or {}).get(MARK.encode(), b"").decode(errors="replace")
    elif path.suffix == ".json":
        data = _read_json(path)
        mark = data.get(MARK) if isinstance(data, dict) else None
    else:
        with suppress(OSError, UnicodeDecodeError):
            mark = (path.parent / FOLDER_MARK).read_text().strip()
    return mark if isinstance(mark, str) and mark else None


def _overlap(target: Path, source: Path) -> str | None:
    """How writing target would replace source: as the same file (also through links), or as a folder holding it."""
    with suppress(OSError):
        if target.exists() and source.exists() and target.samefile(source):
            return "is"
    t, s = target.resolve(), source.resolve()
    return "is" if t == s else "holds" if t in s.parents else None


@dataclass(frozen=True)
class Claim:
    """A command's right to write its outputs: where nothing is, or (force) over a previous output of its own."""

    command: str
    force: bool = False
    inputs: tuple[Path, ...] = ()

    def check(self, target: Path, *, folder: bool = False) -> None:
        """Refuse (UsageError naming the path) to write `target` over anything this command may not replace.

        A folder output may take the place of an empty folder; an input of this call is never replaced.
        """
        for source in self.inputs:
            if how := _overlap(target, source):
                raise UsageError(f"{target}: {how} {source}, an input of this command: choose another output")
        if not os.path.lexists(target):
            return
        if folder and target.is_dir() and not target.is_symlink():
            try:
                if not any(target.iterdir()):
                    return
            except OSError as e:
                raise IOFailure(f"{target}: cannot read the folder: {e.strerror}") from None
        kind = "folder" if target.is_dir() else "file"
        if not self.force:
            raise UsageError(
                f"{target}: the {kind} exists{' and is not empty' if kind == 'folder' else ''}; mimir does not "
                "write over it: choose another output, or give --force to replace a previous output of "
                f"`mimir {self.command}`"
            )
        if folder != (kind == "folder") or written_by(target) != self.command:
            raise UsageError(
                f"{target}: the {kind} exists and is not an output of `mimir {self.command}`; --force replaces only "
                "those: choose another output"
            )

    def check_table(self, out: Path) -> None:
        """Check a table's targets: the parquet file and the copy of its summary beside it."""
        self.check(out)
        self.check(summary_path(out))

    def clear(self, target: Path) -> None:
        """Check a folder a command fills in place (collect, testbed run); with force remove its previous output."""
        self.check(target, folder=True)
        if self.force and target.is_dir() and written_by(target) == self.command:
            try:
                shutil.rmtree(target)
            except OSError as e:
                raise IOFailure(f"{target}: cannot remove the previous output: {e.strerror}") from None


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>[0-9]+)")


def _alive(pid: int) -> bool:
    """Whether a process of this PID exists (anyone's): its temporaries may still be in use."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (a number too large names none)
        return False
    except PermissionError:  # another user's
        return True
    return True


def sweep(target: Path) -> None:
    """Remove the temporaries of target that a process now gone left behind (kill -9, power loss)."""
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return  # the write that follows reports the folder
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if not match or match["name"] != target.name or _alive(int(match["pid"])):
            continue
        with suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                Path(entry.path).unlink()


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise IOFailure(f"{target.parent}: cannot create the folder: {e.strerror}") from None


def _failure(target: Path, e: OSError) -> IOFailure:
    return IOFailure(f"{target}: cannot write: {e.strerror or e}")


@contextmanager
def atomic_path(target: Path, claim: Claim | None = None) -> Iterator[Path]:
    """Yield a temporary path beside target; rename it onto target only if the block completes.

    With a claim, target is first checked for that command (the command's outputs; without one, files a command
    keeps rewriting, such as run.json).
    """
    if claim is not None:
        claim.check(target)
    _make_parent(target)
    sweep(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        tmp.replace(target)
    except OSError as e:
        raise _failure(target, e) from None
    finally:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: Path, claim: Claim) -> Iterator[Path]:
    """Yield a temporary folder beside target; it takes target's place only on success (checked by the claim)."""
    claim.check(target, folder=True)
    _make_parent(target)
    sweep(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        yield tmp
        claim.check(target, folder=True)  # what may have appeared there meanwhile is not replaced either
        moved = target.is_dir()
        if moved:
            target.replace(old)
        try:
            tmp.replace(target)
        except OSError:
            if moved:
                old.replace(target)
            raise
    except OSError as e:
        raise _failure(target, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def mark_folder(folder: Path, claim: Claim) -> None:
    """Name the command in a folder whose outputs cannot carry a marker (csv, markdown, images)."""
    with atomic_path(folder / FOLDER_MARK) as tmp:
        tmp.write_text(claim.command + "\n")


def summary_path(table_path: Path) -> Path:
    """`flows.parquet` → `flows.summary.json`."""
    return table_path.with_name(table_path.stem + ".summary.json")


def recorded_summary(path: Path) -> dict[str, Any]:
    """The summary a table was written with, from its own metadata (the authority; the JSON beside it a copy)."""
    metadata = _table_metadata(path)
    if metadata is None:
        raise IOFailure(f"{path}: cannot read the table (missing, or not a parquet file)")
    try:
        return json.loads(metadata[SUMMARY.encode()])
    except (KeyError, ValueError):
        raise IOFailure(f"{path}: the table does not record its summary (written by an older mimir?)") from None


def write_table(table: pa.Table, out: Path, claim: Claim, summary: dict[str, Any] | None = None) -> None:
    """A parquet table marked with its command and, if given, its summary, which is also copied beside it.

    The pair is never mismatched: the summary travels inside the table, and the copy beside it is removed before the
    table's rename and written after it, so a crash in between leaves a missing copy, never a stale one.
    """
    import pyarrow.parquet as pq

    copy = summary_path(out) if summary is not None else None
    if copy is None:
        claim.check(out)
    else:
        claim.check_table(out)
    metadata = {**(table.schema.metadata or {}), MARK.encode(): claim.command.encode()}
    if summary is not None:
        metadata[SUMMARY.encode()] = json.dumps(summary).encode()
    with atomic_path(out) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp, compression="zstd")
        if copy is not None:
            copy.unlink(missing_ok=True)
    if copy is not None:
        with atomic_path(copy) as tmp:
            tmp.write_text(json.dumps({MARK: claim.command, **summary}, indent=2) + "\n")
