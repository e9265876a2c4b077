"""`mimir provision`: check mode over the whole site on this machine, tags, failures that name host and task."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mimir.errors import EXIT_IO, EXIT_PROVISION, EXIT_USAGE, IOFailure, UsageError
from mimir.provision import _module_message, _Progress, build_source_archive, parse_extra_vars

REPO = Path(__file__).resolve().parents[1]
MIMIR = Path(sys.executable).with_name("mimir")


def local_inventory(tmp_path: Path) -> Path:
    """This machine, reached without SSH, with the interpreter that has python3-apt."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")
    return inventory


def run_provision(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess:
    """The command as a user runs it; Ansible's and Python's scratch files go under tmp_path."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        TMPDIR=str(scratch),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
    )
    done = subprocess.run(
        [str(MIMIR), "provision", *map(str, args)], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    # The runner's private folder (with the source archive) is gone, whatever happened.
    assert list(scratch.iterdir()) == []
    return done


def task_lines(stderr: str) -> list[str]:
    return [line[len("TASK [") : -1] for line in stderr.splitlines() if line.startswith("TASK [")]


def os_release() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return {key: value.strip('"') for key, value in pairs}


needs_supported_host = pytest.mark.skipif(
    os.geteuid() != 0 or os_release().get("VERSION_CODENAME") not in ("bookworm", "jammy", "noble"),
    reason="check mode of the whole site needs root on Debian 12 or Ubuntu 22.04/24.04",
)


@needs_supported_host
def test_check_mode_over_the_whole_site_passes_and_changes_nothing(tmp_path: Path) -> None:
    watched = [
        Path("/etc/sysctl.d/90-mimir.conf"),
        Path("/etc/modules-load.d/mimir.conf"),
        Path("/etc/apt/sources.list.d/docker.list"),
        Path("/etc/docker/daemon.json"),
        Path("/usr/local/bin/minikube"),
        Path("/opt/mimir"),
        Path("/opt/loadgen"),
        Path("/srv/mimir"),
    ]
    before = {path: path.exists() for path in watched}
    done = run_provision(tmp_path, "--inventory", local_inventory(tmp_path), "--check")
    assert done.returncode == 0, done.stderr
    tasks = task_lines(done.stderr)
    roles = {task.split(" : ")[0] for task in tasks if " : " in task}
    assert roles == {"base", "docker", "minikube", "kubectl", "helm", "capture", "sbcl", "loadgen", "mimir"}
    assert len(tasks) == len(set(tasks))  # minikube's dependencies (base, docker) do not run a second time
    assert "  failed" not in done.stderr
    recap = done.stderr.split("RECAP\n", 1)[1]
    assert recap.startswith("  localhost: ok=") and " failed=0 " in recap
    assert "1 host(s) checked" in done.stdout and "would change" in done.stdout
    assert {path: path.exists() for path in watched} == before


@needs_supported_host
def test_tags_run_only_that_role(tmp_path: Path) -> None:
    done = run_provision(tmp_path, "-i", local_inventory(tmp_path), "--tags", "capture", "--check")
    assert done.returncode == 0, done.stderr
    tasks = [task for task in task_lines(done.stderr) if task != "Gathering Facts"]
    assert tasks and all(task.startswith("capture : ") for task in tasks), tasks


@needs_supported_host
def test_a_failing_task_names_host_task_and_message(tmp_path: Path) -> None:
    """The base role refuses a system outside its list: with an empty list, every host is refused."""
    release = os_release()["VERSION_CODENAME"]
    done = run_provision(
        tmp_path, "-i", local_inventory(tmp_path), "--tags", "base", "--check", "-e", "base_supported_releases=[]"
    )
    assert done.returncode == EXIT_PROVISION
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("mimir: error: host localhost: task 'base : Check that the host is a supported system'")
    assert f"({release})" in error
    # Progress stopped at the failure: no task after it ran.
    assert task_lines(done.stderr)[-1] == "base : Check that the host is a supported system"


def test_a_missing_inventory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ini"
    done = run_provision(tmp_path, "--inventory", missing, "--check")
    assert done.returncode == EXIT_IO
    assert done.stderr.strip() == f"mimir: error: inventory {missing}: no such file"


def test_an_unparsable_inventory_stops_the_run(tmp_path: Path) -> None:
    inventory = tmp_path / "broken.ini"
    inventory.write_text("[collectors\nhost-a ansible_host=\n")
    done = run_provision(tmp_path, "--inventory", inventory, "--check")
    assert done.returncode == EXIT_PROVISION
    assert str(inventory) in done.stderr and "TASK [" not in done.stderr


def test_a_bad_extra_var_is_a_usage_error(tmp_path: Path) -> None:
    done = run_provision(tmp_path, "--inventory", local_inventory(tmp_path), "-e", "minikube_cpus")
    assert done.returncode == EXIT_USAGE
    assert "--extra-var 'minikube_cpus': expected KEY=VALUE" in done.stderr


def test_help_lists_options_examples_and_exit_codes() -> None:
    text = subprocess.run([str(MIMIR), "provision", "--help"], capture_output=True, text=True, check=True).stdout
    for needle in ("--inventory FILE", "--tags", "--check", "--limit", "KEY=VALUE", "examples:", "exit codes:"):
        assert needle in text
    assert f"  {EXIT_PROVISION}  provisioning failed" in text


def test_extra_vars_keep_their_yaml_types() -> None:
    parsed = parse_extra_vars(["minikube_cpus=8", "flag=true", "hosts=[a, b]", "name=text", "empty="])
    assert parsed == {"minikube_cpus": 8, "flag": True, "hosts": ["a", "b"], "name": "text", "empty": ""}
    with pytest.raises(UsageError, match="not valid YAML"):
        parse_extra_vars(["bad=[unclosed"])


def test_source_archive_is_the_checkout_and_reproducible(tmp_path: Path) -> None:
    first = build_source_archive(tmp_path / "a.tar.gz")
    second = build_source_archive(tmp_path / "b.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as archive:
        names = set(archive.getnames())
        owners = {(member.uid, member.gid) for member in archive.getmembers()}
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {name for name in tracked if (REPO / name).is_file()} <= names
    assert {"requirements.lock", "pyproject.toml", "src/mimir/provision.py"} <= names
    assert not any(name.startswith((".venv/", ".git/")) or "__pycache__" in name for name in names)
    assert owners == {(0, 0)}


def test_source_archive_without_git_takes_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "project"
    (root / "src" / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "src" / "pkg" / "__init__.py").write_text("")
    (root / "src" / "pkg" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "pyproject.toml").write_text("[project]\nname = 'pkg'\n")
    (root / "notes.txt").write_text("not part of the package")
    (root / "config" / "apps").mkdir(parents=True)
    (root / "config" / "apps" / "shop.yaml").write_text("name: shop\n")  # the command needs its config/
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git must find no enclosing repository
    with pytest.raises(IOFailure, match=r"requirements\.lock"):
        build_source_archive(tmp_path / "src.tar.gz", root)
    (root / "requirements.lock").write_text("pyyaml==6.0.4\n")
    archive = build_source_archive(tmp_path / "src.tar.gz", root)
    with tarfile.open(archive) as opened:
        assert sorted(opened.getnames()) == [
            "config/apps/shop.yaml",
            "pyproject.toml",
            "requirements.lock",
            "src/pkg/__init__.py",
        ]


def test_progress_lines_and_failures_from_runner_events() -> None:
    """Events shaped as ansible-runner delivers them: one line per task and per host result."""
    out = io.StringIO()
    progress = _Progress(out)
    task = {"task": "Install SBCL", "role": "sbcl"}
    events = [
        {"event": "playbook_on_task_start", "event_data": task},
        {"event": "runner_on_ok", "event_data": {**task, "host": "a", "res": {"changed": True}}},
        {"event": "runner_on_ok", "event_data": {**task, "host": "b", "res": {"changed": False}}},
        {"event": "runner_on_failed", "event_data": {**task, "host": "c", "ignore_errors": True, "res": {}}},
        {
            "event": "runner_on_failed",
            "event_data": {
                **task,
                "host": "d",
                "res": {
                    "msg": "One or more items failed",
                    "results": [
                        {"item": "x", "failed": False},
                        {"item": "sbcl", "failed": True, "msg": "No package matching 'sbcl' is available"},
                    ],
                },
            },
        },
        {"event": "runner_on_unreachable", "event_data": {**task, "host": "e", "res": {"msg": "ssh: timed out"}}},
        {
            "event": "playbook_on_stats",
            "event_data": {"ok": {"a": 3, "b": 2}, "changed": {"a": 1}, "failures": {"d": 1}, "dark": {"e": 1}},
        },
    ]
    for event in events:
        assert progress(event) is True
    assert out.getvalue().splitlines()[:6] == [
        "TASK [sbcl : Install SBCL]",
        "  changed: a",
        "  ok: b",
        "  failed (ignored): c",
        "  failed: d: item sbcl: No package matching 'sbcl' is available",
        "  unreachable: e: ssh: timed out",
    ]
    assert [str(failure) for failure in progress.failures] == [
        "host d: task 'sbcl : Install SBCL' failed: item sbcl: No package matching 'sbcl' is available",
        "host e: task 'sbcl : Install SBCL' unreachable during: ssh: timed out",
    ]
    assert progress.recap["a"] == {"ok": 3, "changed": 1, "failed": 0, "skipped": 0, "unreachable": 0}
    assert progress.recap["e"]["unreachable"] == 1


def test_module_message_falls_back_to_stderr_and_exit_code() -> None:
    assert _module_message({"stderr": "  modprobe: FATAL: Module br_netfilter not found\n"}) == (
        "modprobe: FATAL: Module br_netfilter not found"
    )
    assert _module_message({"rc": 3}) == "exit code 3"
    assert _module_message({"msg": "x" * 5000}).endswith(" [...]")
