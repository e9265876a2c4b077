"""No command writes over anything it did not make: existing outputs are refused, --force replaces only a previous
output of the same command (never an input, never a foreign file or folder), temporaries of killed processes are
cleaned by the next write there, and a table and its summary never disagree."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MIMIR, run_mimir
from test_legacy import ANALYSIS, LOG
from test_legacy import capture as legacy_capture

from mimir.capture.ingest import ingest, write_flows
from mimir.errors import IOFailure
from mimir.io import Claim, recorded_summary, summary_path, written_by

SMALL_RUN = ("--app", "sockshop", "--duration", "60", "--users", "2")


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under folder (hidden ones too) with its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def refused(done: subprocess.CompletedProcess, path: Path) -> bool:
    return done.returncode == 2 and str(path) in done.stderr and "internal error" not in done.stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("bundle") / "run"
    run_mimir("synth", *SMALL_RUN, "-o", run, check=True)
    return run


@pytest.fixture(scope="module")
def flows(run_dir: Path) -> Path:
    out = run_dir.parent / "flows.parquet"
    run_mimir("ingest", *sorted((run_dir / "capture").iterdir()), "-o", out, check=True)
    return out


@pytest.fixture(scope="module")
def edges(run_dir: Path, flows: Path) -> Path:
    out = run_dir.parent / "edges.parquet"
    run_mimir("edges", flows, run_dir, "-o", out, check=True)
    return out


def test_synth_keeps_a_users_folder_and_file_even_with_force(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    (mine / "sub" / "data.csv").write_text("1,2\n")
    (tmp_path / "afile").write_text("precious")
    before = tree(tmp_path)
    for target in (mine, tmp_path / "afile"):
        plain = run_mimir("synth", *SMALL_RUN, "-o", target)
        assert refused(plain, target) and "--force" in plain.stderr
        forced = run_mimir("synth", *SMALL_RUN, "-o", target, "--force")
        assert refused(forced, target) and "not an output of `mimir synth`" in forced.stderr
    assert tree(tmp_path) == before  # no content gone, no hidden .afile.old-PID


def test_force_replaces_a_previous_bundle_of_the_same_command(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_mimir("synth", *SMALL_RUN, "-o", run, check=True)
    first = json.loads((run / "run.json").read_text())
    assert refused(run_mimir("synth", *SMALL_RUN, "--seed", "9", "-o", run), run)
    run_mimir("synth", *SMALL_RUN, "--seed", "9", "-o", run, "--force", check=True)
    second = json.loads((run / "run.json").read_text())
    assert (first["generator"]["seed"], second["generator"]["seed"]) == (0, 9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary or old folder left
    (tmp_path / "empty").mkdir()  # a folder with nothing to lose (one a workflow made) is used as it is
    run_mimir("synth", *SMALL_RUN, "-o", tmp_path / "empty", check=True)


def test_a_bundle_of_another_source_is_not_replaced_by_force(tmp_path: Path, run_dir: Path) -> None:
    target = tmp_path / "bundle"
    shutil.copytree(run_dir, target)
    info = json.loads((target / "run.json").read_text())
    (target / "run.json").write_text(json.dumps({**info, "source": "import"}))
    before = tree(target)
    assert written_by(target) == "import-legacy"
    assert refused(run_mimir("synth", *SMALL_RUN, "-o", target, "--force"), target)
    assert tree(target) == before


def test_ingest_never_replaces_its_own_capture(tmp_path: Path, run_dir: Path) -> None:
    pcap = tmp_path / "a.pcap"
    shutil.copyfile(next((run_dir / "capture").iterdir()), pcap)
    (tmp_path / "link.pcap").symlink_to(pcap)
    os.link(pcap, tmp_path / "hard.pcap")
    before = pcap.read_bytes()
    for target in (pcap, tmp_path / "link.pcap", tmp_path / "hard.pcap"):
        for force in ((), ("--force",)):
            done = run_mimir("ingest", pcap, "-o", target, *force)
            assert refused(done, target) and "an input of this command" in done.stderr
    assert pcap.read_bytes() == before
    assert not (tmp_path / "a.summary.json").exists()


def test_ingest_force_replaces_only_a_flows_table(tmp_path: Path, run_dir: Path, edges: Path) -> None:
    captures = sorted((run_dir / "capture").iterdir())
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    other = tmp_path / "edges.parquet"
    shutil.copyfile(edges, other)  # a mimir table, but an edges one: not ingest's to replace
    for target in (foreign, other):
        before = target.read_bytes()
        assert refused(run_mimir("ingest", *captures, "-o", target, "--force"), target)
        assert target.read_bytes() == before
    out = tmp_path / "flows.parquet"
    run_mimir("ingest", *captures, "-o", out, check=True)
    assert refused(run_mimir("ingest", *captures, "-o", out), out)
    run_mimir("ingest", *captures, "-o", out, "--bin", "2", "--force", check=True)
    assert recorded_summary(out)["bin_seconds"] == 2
    # a user's file where the summary goes is no summary of ingest's
    (tmp_path / "new.summary.json").write_text('{"mine": true}')
    done = run_mimir("ingest", *captures, "-o", tmp_path / "new.parquet", "--force")
    assert refused(done, tmp_path / "new.summary.json") and not (tmp_path / "new.parquet").exists()


def test_edges_and_features_refuse_existing_outputs_and_inputs(tmp_path: Path, run_dir: Path, flows: Path) -> None:
    before = flows.read_bytes()
    assert refused(run_mimir("edges", flows, run_dir, "-o", flows, "--force"), flows)
    assert flows.read_bytes() == before
    out = tmp_path / "edges.parquet"
    run_mimir("edges", flows, run_dir, "-o", out, check=True)
    assert refused(run_mimir("edges", flows, run_dir, "-o", out), out)
    run_mimir("edges", flows, run_dir, "-o", out, "--keep-infra", "--force", check=True)
    assert json.loads(summary_path(out).read_text())["infra_kept"] is True
    features = ("features", out, run_dir, "--rates", "1", "--tg", "10", "--seeds", "1", "-o", tmp_path / "res")
    run_mimir(*features, check=True)
    table = tmp_path / "res" / "attacks" / "1.parquet"
    assert refused(run_mimir(*features), table)
    run_mimir(*features, "--force", check=True)
    pd.DataFrame({"mine": [1]}).to_parquet(table)  # a user's table in its place
    assert refused(run_mimir(*features, "--force"), table)
    assert list(pd.read_parquet(table).columns) == ["mine"]


def test_import_legacy_keeps_an_existing_folder_and_its_inputs(tmp_path: Path, corpus: Path) -> None:
    pcap = legacy_capture(tmp_path)
    args = ("import-legacy", "--pcap", pcap, "--cluster-log", corpus / "mimir" / LOG)
    args += ("--analysis-json", corpus / "mimir" / ANALYSIS)
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "notes.txt").write_text("mine")
    before = tree(mine)
    assert refused(run_mimir(*args, "-o", mine), mine)
    assert refused(run_mimir(*args, "-o", mine, "--force"), mine)
    assert tree(mine) == before
    run = tmp_path / "run"
    run_mimir(*args, "-o", run, check=True)
    run_mimir(*args, "-o", run, "--force", check=True)
    # the capture inside the bundle as the input: replacing the bundle would delete it
    inside = ("import-legacy", "--pcap", run / "capture" / pcap.name, "--cluster-log", corpus / "mimir" / LOG)
    done = run_mimir(*inside, "-o", run, "--force")
    assert refused(done, run) and "an input of this command" in done.stderr
    assert (run / "capture" / pcap.name).read_bytes() == pcap.read_bytes()


def test_realism_refuses_existing_files_and_force_replaces_its_own(tmp_path: Path, run_dir: Path) -> None:
    out = tmp_path / "realism"
    run_mimir("realism", run_dir, run_dir, "-o", out, check=True)
    assert refused(run_mimir("realism", run_dir, run_dir, "-o", out), out / "realism.csv")
    run_mimir("realism", run_dir, run_dir, "-o", out, "--force", check=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "realism.md").write_text("my notes")
    assert refused(run_mimir("realism", run_dir, run_dir, "-o", mine, "--force"), mine / "realism.md")
    assert (mine / "realism.md").read_text() == "my notes"


@pytest.mark.parametrize("command", [("collect",), ("testbed", "run")])
def test_collect_and_testbed_run_share_the_same_refusal(tmp_path: Path, command: tuple[str, ...]) -> None:
    """Both fill their folder as they go: an existing one is refused before anything starts, --force included."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    app = "wordpress" if command == ("testbed", "run") else "sockshop"
    for force in ((), ("--force",)):
        done = run_mimir(*command, "--app", app, "--duration", "60", "--users", "1", "-o", mine, *force)
        assert refused(done, mine)
    assert (mine / "notes.txt").read_text() == "mine"


def test_every_writing_command_documents_force() -> None:
    for command in (("ingest",), ("edges",), ("features",), ("synth",), ("import-legacy",), ("collect",),
                    ("realism",), ("testbed", "run")):  # fmt: skip
        text = run_mimir(*command, "--help", check=True).stdout
        assert "--force" in text and "same command" in " ".join(text.split()), command


@pytest.fixture
def unprivileged_dir() -> Iterator[tuple[Path, list[str], dict[str, str]]]:
    """A folder an unprivileged user can reach, and how to run mimir as that user (root ignores permissions)."""
    with tempfile.TemporaryDirectory() as name:
        base = Path(name)
        base.chmod(0o755)
        prefix: list[str] = []
        env = dict(os.environ)
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv to drop privileges")
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            (base / "cache").mkdir(mode=0o777)
            (base / "cache").chmod(0o777)
            env.update(NUMBA_CACHE_DIR=str(base / "cache"), HOME=str(base / "cache"))
        yield base, prefix, env


@pytest.mark.parametrize("mode", [0o555, 0o444])
def test_a_read_only_output_folder_is_an_io_error(
    unprivileged_dir: tuple[Path, list[str], dict[str, str]], run_dir: Path, flows: Path, mode: int
) -> None:
    base, prefix, env = unprivileged_dir
    bundle = base / "run"
    shutil.copytree(run_dir, bundle)
    shutil.copyfile(flows, base / "flows.parquet")
    locked = base / "locked"
    locked.mkdir()
    locked.chmod(mode)
    capture = next((bundle / "capture").iterdir())
    for args in (("ingest", capture), ("edges", base / "flows.parquet", bundle)):
        target = locked / "out.parquet"
        done = subprocess.run(
            [*prefix, str(MIMIR), *map(str, args), "-o", str(target)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 5, done.stderr
        assert str(target) in done.stderr and "Traceback" not in done.stderr
    locked.chmod(0o755)
    assert list(locked.iterdir()) == []


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_killed_synth_leaves_a_temporary_the_next_run_removes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [str(MIMIR), "synth", "--app", "sockshop", "--duration", "600", "--users", "20", "-o", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    temporary = tmp_path / f".run.tmp-{proc.pid}"
    deadline = time.monotonic() + 300
    while not (temporary / "capture").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-write: the capture is being written into the temporary folder
    assert proc.wait() == -signal.SIGKILL and temporary.is_dir() and not run.exists()
    alive = tmp_path / f".run.tmp-{os.getpid()}"  # a temporary whose process still runs is never touched
    alive.mkdir()
    run_mimir("synth", *SMALL_RUN, "-o", run, check=True)
    assert not temporary.exists() and alive.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "run"]


def test_stale_temporaries_of_a_table_are_removed_by_the_next_write(tmp_path: Path, run_dir: Path) -> None:
    out = tmp_path / "flows.parquet"
    gone = dead_pid()
    stale = [tmp_path / f".flows.parquet.tmp-{gone}", tmp_path / f".flows.summary.json.tmp-{gone}"]
    for path in stale:
        path.write_bytes(b"half a table")
    other = tmp_path / f".notes.txt.tmp-{gone}"  # not a temporary of what this command writes: left alone
    other.write_text("x")
    run_mimir("ingest", *sorted((run_dir / "capture").iterdir()), "-o", out, check=True)
    assert not any(p.exists() for p in stale) and other.exists()


def test_the_summary_is_never_stale_when_the_pair_is_cut_in_between(tmp_path: Path, run_dir: Path) -> None:
    """The summary's copy cannot be written (its temporary name is taken): the new table is in place, its summary
    inside it, and the copy beside it is missing, not the previous run's."""
    captures = sorted((run_dir / "capture").iterdir())
    out = tmp_path / "flows.parquet"
    claim = Claim("ingest", force=True)
    first, summary = ingest(captures, 1, progress=False)
    write_flows(first, summary, out, claim)
    assert {k: v for k, v in json.loads(summary_path(out).read_text()).items() if k != "mimir.command"} == (
        recorded_summary(out)
    )
    second, summary = ingest(captures, 5, progress=False)
    (tmp_path / f".flows.summary.json.tmp-{os.getpid()}").mkdir()  # this process is alive: its name stays taken
    with pytest.raises(IOFailure, match=r"flows\.summary\.json"):
        write_flows(second, summary, out, claim)
    assert recorded_summary(out)["bin_seconds"] == 5 and not summary_path(out).exists()
