"""Packaging: what `pip install mimir` brings, its extras, the lock that holds them all, the rules' conda env."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mimir.errors import EXIT_USAGE
from mimir.extras import EXTRA_MODULES, MissingExtra, require_extra

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
# The stacks that ingest and features must not pull in.
HEAVY = {"ansible-core", "ansible-runner", "kubernetes", "locust", "snakemake"}
TOOLS = {"pytest", "ruff", "ansible-lint", "molecule", "snakefmt", "scapy", "dpkt", "pyshark", "kmock"}


def closure(specs: list[str]) -> set[str]:
    """Every distribution the requirements pull in, read from the installed packages' metadata (with extras)."""
    found: set[str] = set()
    seen: set[tuple[str, str]] = set()
    todo = [Requirement(spec) for spec in specs]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        found.add(name)
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for line in metadata.requires(name) or []:
                dependency = Requirement(line)
                if dependency.marker is None or dependency.marker.evaluate({"extra": extra}):
                    todo.append(dependency)
    return found


def lock_versions() -> dict[str, str]:
    pins = (line.strip().split("==", 1) for line in (REPO / "requirements.lock").read_text().splitlines())
    return {canonicalize_name(pin[0]): pin[1] for pin in pins if len(pin) == 2}


def run_without(modules: set[str], code: str) -> subprocess.CompletedProcess:
    """Python code in a fresh interpreter where the modules cannot be imported, as if their packages were absent."""
    block = f"import sys\nfor name in {sorted(modules)!r}:\n    sys.modules[name] = None\n"
    return subprocess.run(
        [sys.executable, "-c", block + code], capture_output=True, text=True, timeout=300, check=False
    )


def test_the_base_install_leaves_out_ansible_locust_kubernetes_and_snakemake() -> None:
    base = closure(PROJECT["dependencies"])
    assert not base & HEAVY, sorted(base & HEAVY)
    assert {"numpy", "pandas", "pyarrow", "numba", "scikit-learn", "networkx", "pyyaml", "jsonschema"} <= base
    assert set(EXTRAS) == {"workflow", "cluster", "scale", "live", "provision", "test"}
    assert {"snakemake"} <= closure(EXTRAS["workflow"])
    plugins = {"snakemake-executor-plugin-slurm", "snakemake-executor-plugin-kubernetes", "snakemake-storage-plugin-s3"}
    assert plugins <= closure(EXTRAS["scale"])
    assert {"kubernetes", "locust", "requests"} <= closure(EXTRAS["cluster"])
    assert {"prometheus-client"} <= closure(EXTRAS["live"])
    assert {"ansible-core", "ansible-runner"} <= closure(EXTRAS["provision"])


def test_the_lock_holds_every_extra_and_nothing_else() -> None:
    """`make lock` installs the project with every extra (and setuptools, to build it): the lock is that closure."""
    everything = closure([*PROJECT["dependencies"], *(spec for specs in EXTRAS.values() for spec in specs)])
    assert set(lock_versions()) == everything | {"setuptools"}
    makefile = (REPO / "Makefile").read_text()
    lock_target = re.search(r"^lock:\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert lock_target is not None and f"'.[{','.join(EXTRAS)}]'" in lock_target.group(1)


def test_each_checked_module_comes_from_its_extra() -> None:
    providers = metadata.packages_distributions()
    base = closure(PROJECT["dependencies"])
    for extra, modules in EXTRA_MODULES.items():
        stack = closure(EXTRAS[extra]) - base
        for module in modules:
            assert {canonicalize_name(d) for d in providers[module]} & stack, f"{extra}: {module}"


def test_a_missing_extra_is_named_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    require_extra("cluster", "mimir collect")  # installed here
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    monkeypatch.setitem(sys.modules, "locust", None)
    assert importlib.util.find_spec("kubernetes") is None
    with pytest.raises(MissingExtra) as caught:
        require_extra("cluster", "mimir collect")
    assert str(caught.value) == (
        "mimir collect needs the 'cluster' extra (kubernetes, locust not installed): pip install 'mimir[cluster]'"
    )
    assert caught.value.exit_code == EXIT_USAGE


def test_provision_without_its_extra_stops_before_anything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mimir.provision import provision

    monkeypatch.setitem(sys.modules, "ansible_runner", None)
    with pytest.raises(MissingExtra, match=re.escape("pip install 'mimir[provision]'")):
        provision(tmp_path / "hosts.ini")


def test_collect_without_the_cluster_extra_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["collect", "--app", "sockshop", "--users", "3", "--duration", "60", "-o", str(out)]
    done = run_without({"kubernetes"}, f"from mimir.cli import main\nsys.exit(main({argv!r}))")
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "needs the 'cluster' extra (kubernetes not installed): pip install 'mimir[cluster]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_the_base_stages_run_without_any_extra() -> None:
    """Ingest, runs, edges, features, models and figures import nothing of the extras."""
    blocked = {module for modules in EXTRA_MODULES.values() for module in modules} | {"snakemake"}
    stages = [
        "mimir.capture.ingest",
        "mimir.sources.synthetic",
        "mimir.sources.legacy",
        "mimir.edges",
        "mimir.features",
        "mimir.dataset",
        "mimir.experiment",
        "mimir.workflow",
    ]
    code = f"import importlib\nfor name in {stages!r}:\n    importlib.import_module(name)\nprint('imported')"
    done = run_without(blocked, code)
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr


def load_from_lock():  # envs/from_lock.py is a script, not a module of the package
    spec = importlib.util.spec_from_file_location("from_lock", REPO / "envs" / "from_lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rules_environment_follows_the_lock() -> None:
    """What the rules import, at the lock's versions, conda-forge names first; no test or lint tool, no Ansible."""
    from_lock = load_from_lock()
    text = (REPO / "envs" / "mimir.yaml").read_text()
    assert text == from_lock.render(), "envs/mimir.yaml is stale: run `make envs`"
    env = yaml.safe_load(text)
    assert env["channels"][0] == "conda-forge"
    assert f"python={sys.version_info.major}.{sys.version_info.minor}" in env["dependencies"]
    conda = [spec for spec in env["dependencies"] if isinstance(spec, str) and spec not in ("pip",)][1:]
    pip = next(spec["pip"] for spec in env["dependencies"] if isinstance(spec, dict))
    assert pip[-1] == "-e .."  # mimir itself, editable: the rules read config/ beside the sources
    conda_to_pypi = {conda_name: name for name, conda_name in from_lock.CONDA_FORGE_NAMES.items()}
    pinned = {conda_to_pypi.get(name, name): version for name, version in (spec.split("=") for spec in conda)}
    pinned |= dict(spec.split("==") for spec in pip[:-1])
    versions = lock_versions()
    assert pinned == {name: versions[name] for name in pinned}
    runtime = [*PROJECT["dependencies"], *EXTRAS["workflow"], *EXTRAS["cluster"]]
    assert set(pinned) == {canonicalize_name(Requirement(spec).name) for spec in runtime}
    assert not set(pinned) & (TOOLS | {"ansible-core", "ansible-runner"})


def test_the_workflow_catalog_file_says_what_the_workflow_supports() -> None:
    """conda: every rule that runs a job names the rules' environment; no container, so no apptainer."""
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage["mandatory-flags"]) == {"desc", "flags"}
    assert "config/README.md" in usage["mandatory-flags"]["desc"] and (REPO / "config" / "README.md").is_file()
    deployment = usage["software-stack-deployment"]
    assert deployment == {"conda": True, "apptainer": False, "apptainer+conda": False, "report": True}
    rules = "".join(path.read_text() for path in sorted((REPO / "rules").glob("*.smk")))
    environments = re.findall(r"^    conda:\n\s+\"([^\"]+)\"", rules, re.MULTILINE)
    assert len(environments) == len(re.findall(r"^rule \w+:", rules, re.MULTILINE))
    assert set(environments) == {"../envs/mimir.yaml"}
    assert "container:" not in rules + (REPO / "Snakefile").read_text()
