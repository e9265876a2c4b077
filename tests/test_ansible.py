"""The Ansible tree: lint (production profile), syntax, pinned versions, roles that stand alone, a molecule converge."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ANSIBLE = REPO / "ansible"
BIN = Path(sys.executable).parent
ROLES = ("base", "docker", "minikube", "kubectl", "helm", "capture", "sbcl", "loadgen", "mimir")
# What Ansible itself defines for every task: facts, check mode, the loop item, the host's name, lookups.
ANSIBLE_NAMES = {
    "ansible_facts",
    "ansible_check_mode",
    "ansible_managed",
    "ansible_playbook_python",
    "inventory_hostname",
    "item",
    "omit",
    "lookup",
    "query",
}
# Task keywords whose strings are bare Jinja expressions, without {{ }}.
CONDITIONALS = {"when", "changed_when", "failed_when", "until", "that"}


def ansible_env(tmp_path: Path) -> dict[str, str]:
    """The venv's tools first on PATH; Ansible's and the linters' scratch files under tmp_path."""
    env = dict(os.environ)
    env.update(
        PATH=os.pathsep.join([str(BIN), env.get("PATH", os.defpath)]),
        ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        ANSIBLE_NOCOLOR="1",
        NO_COLOR="1",
    )
    return env


def defaults(role: str) -> dict:
    return yaml.safe_load((ANSIBLE / "roles" / role / "defaults" / "main.yml").read_text())


def test_lint_production_profile(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--offline"],
        cwd=ANSIBLE,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output


def test_playbook_syntax(tmp_path: Path) -> None:
    for playbook in (ANSIBLE / "site.yml", *sorted((ANSIBLE / "molecule" / "default").glob("*.yml"))):
        if playbook.name == "molecule.yml":
            continue
        done = subprocess.run(
            [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory.example.ini", str(playbook)],
            cwd=ANSIBLE,
            env=ansible_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{playbook}: {done.stdout}{done.stderr}"


def test_every_role_has_the_standard_layout_and_is_in_the_site() -> None:
    site = yaml.safe_load((ANSIBLE / "site.yml").read_text())
    in_site = [entry["role"] for entry in site[0]["roles"]]
    assert sorted(in_site) == sorted(ROLES)
    for entry in site[0]["roles"]:
        assert entry["tags"] == [entry["role"]]  # `mimir provision --tags ROLE` selects exactly one role
    for role in ROLES:
        for part in ("tasks", "defaults", "meta"):
            assert (ANSIBLE / "roles" / role / part / "main.yml").is_file(), f"{role}/{part}"
        meta = yaml.safe_load((ANSIBLE / "roles" / role / "meta" / "main.yml").read_text())
        platforms = {p["name"]: set(p["versions"]) for p in meta["galaxy_info"]["platforms"]}
        assert platforms == {"Ubuntu": {"jammy", "noble"}, "Debian": {"bookworm"}}
        # Every template a task renders is in the role (a syntax check does not look).
        tasks = yaml.safe_load((ANSIBLE / "roles" / role / "tasks" / "main.yml").read_text())
        for task in tasks:
            if "ansible.builtin.template" in task:
                source = task["ansible.builtin.template"]["src"]
                assert (ANSIBLE / "roles" / role / "templates" / source).is_file(), f"{role}: {source}"


def _templated(value: Any, key: str = "") -> Iterator[str]:
    """Every Jinja source in a YAML value: strings with {{ or {%, and conditionals (bare expressions) wrapped."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _templated(item, str(name))
    elif isinstance(value, list):
        for item in value:
            yield from _templated(item, key)
    elif isinstance(value, str) and key in CONDITIONALS:
        yield "{{ (" + value + ") }}"
    elif isinstance(value, str) and ("{{" in value or "{%" in value):
        yield value


def _variables_used(source: str) -> set[str]:
    """The names a template reads from outside itself (its own loop and set names are not counted)."""
    env = jinja2.Environment(autoescape=False)  # noqa: S701 (parsed, never rendered)
    tree = env.parse(source)
    for node in tree.find_all(jinja2.nodes.Filter):  # Ansible's filters and tests, unknown to plain Jinja
        env.filters.setdefault(node.name, lambda value, *_, **__: value)
    for node in tree.find_all(jinja2.nodes.Test):
        env.tests.setdefault(node.name, lambda *_, **__: True)
    return jinja2.meta.find_undeclared_variables(tree)


def _variables_defined(tasks: list[dict]) -> set[str]:
    """What the tasks themselves define: registered results, task vars, loop variables and set_fact names."""
    names: set[str] = set()
    for task in tasks:
        names.update(_variables_defined([*task.get("block", []), *task.get("rescue", []), *task.get("always", [])]))
        if "register" in task:
            names.add(task["register"])
        names.update(task.get("vars") or {})
        names.add((task.get("loop_control") or {}).get("loop_var", "item"))
        names.update(task.get("ansible.builtin.set_fact") or {})
    return names


@pytest.mark.parametrize("role", ROLES)
def test_each_role_uses_only_its_own_variables(role: str) -> None:
    """A role runs alone with its defaults: it reads no variable of group_vars, of another role or an inventory."""
    folder = ANSIBLE / "roles" / role
    own = defaults(role)
    assert all(name.startswith(f"{role}_") for name in own), sorted(own)
    tasks = [
        task
        for part in ("tasks", "handlers")
        if (folder / part / "main.yml").is_file()
        for task in yaml.safe_load((folder / part / "main.yml").read_text()) or []
    ]
    templates = [path.read_text() for path in sorted((folder / "templates").glob("*.j2"))]
    used = set().union(*map(_variables_used, [*_templated(own), *_templated(tasks), *templates]))
    foreign = used - set(own) - _variables_defined(tasks) - ANSIBLE_NAMES
    assert not foreign, f"{role} uses variables it does not define in defaults/main.yml: {sorted(foreign)}"


def test_the_variable_check_sees_a_foreign_variable() -> None:
    tasks = [{"name": "x", "ansible.builtin.user": {"name": "{{ mimir_user }}"}, "when": "other_flag | bool"}]
    templates = ["{% for m in base_kernel_modules %}{{ m }}{{ elsewhere }}{% endfor %}"]
    used = set().union(*map(_variables_used, [*_templated(tasks), *templates]))
    assert used == {"mimir_user", "other_flag", "base_kernel_modules", "elsewhere"}


def test_dependencies_are_declared_and_tagged_as_in_the_site() -> None:
    """minikube needs base and docker; a dependency tagged like its site entry runs once in a site run."""
    for role in ROLES:
        meta = yaml.safe_load((ANSIBLE / "roles" / role / "meta" / "main.yml").read_text())
        for dependency in meta["dependencies"]:
            assert dependency["role"] in ROLES, f"{role}: {dependency}"
            assert dependency.get("tags") == [dependency["role"]], f"{role}: {dependency}"
    minikube = yaml.safe_load((ANSIBLE / "roles" / "minikube" / "meta" / "main.yml").read_text())
    assert [dependency["role"] for dependency in minikube["dependencies"]] == ["base", "docker"]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_has_a_readme_with_its_variables_and_dependencies(role: str) -> None:
    text = (ANSIBLE / "roles" / role / "README.md").read_text()
    assert text.startswith(f"# Role `{role}`\n")
    undocumented = [name for name in defaults(role) if f"| `{name}` |" not in text]
    assert not undocumented, f"{role}/README.md does not list {undocumented}"
    section = text.split("## Dependencies\n", 1)[1].split("\n## ", 1)[0]
    meta = yaml.safe_load((ANSIBLE / "roles" / role / "meta" / "main.yml").read_text())
    needed = [dependency["role"] for dependency in meta["dependencies"]]
    assert all(f"`{name}`" in section for name in needed) and (needed or section.strip().startswith("None"))
    assert "## Example\n" in text and f"- role: {role}\n" in text


def test_versions_are_pinned_and_agree() -> None:
    lock = dict(line.split("==", 1) for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line)
    assert defaults("loadgen")["loadgen_locust_version"] == lock["locust"]
    minikube, kubectl, helm = defaults("minikube"), defaults("kubectl"), defaults("helm")
    for version in (minikube["minikube_version"], kubectl["kubectl_version"], helm["helm_version"]):
        assert re.fullmatch(r"v\d+\.\d+\.\d+", version)
    for checksum in (minikube["minikube_sha256"], kubectl["kubectl_sha256"], helm["helm_sha256"]):
        assert re.fullmatch(r"[0-9a-f]{64}", checksum)
    # kubectl must be within one minor version of the cluster; here it matches the cluster's minor exactly.
    cluster_minor = minikube["minikube_kubernetes_version"].rsplit(".", 1)[0]
    assert kubectl["kubectl_version"].rsplit(".", 1)[0] == cluster_minor
    docker = defaults("docker")
    assert re.fullmatch(r"\d+\.\d+\.\d+", docker["docker_version"])
    assert all("=" in package for package in docker["docker_packages"])
    # The capture semantics the analysis depends on (one bridge, iptables DNAT, one node).
    assert minikube["minikube_kube_proxy_mode"] == "iptables" and minikube["minikube_cni"] == "bridge"
    assert "metrics-server" in minikube["minikube_addons"]
    # The mimir role installs what the Makefile installs.
    make_packages = re.search(r"^DEB_PACKAGES := (.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert make_packages is not None
    assert set(defaults("mimir")["mimir_packages"]) == set(make_packages.group(1).split())


def supported_release() -> bool:
    pairs = (line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return dict(pairs).get("VERSION_CODENAME", "").strip('"') in ("bookworm", "jammy", "noble")


@pytest.mark.skipif(os.geteuid() != 0 or not supported_release(), reason="check mode needs root on a supported host")
def test_each_role_runs_alone_with_its_defaults_in_check_mode(tmp_path: Path) -> None:
    """One play per role from a folder without group_vars: each role (with its dependencies) has all it reads."""
    from mimir.provision import build_source_archive

    archive = build_source_archive(tmp_path / "mimir-src.tar.gz")  # the mimir role's one required input
    plays = [
        {"name": f"{role} alone", "hosts": "all", "roles": [{"role": role, "vars": inputs}]}
        for role in ROLES
        for inputs in [{"mimir_archive": str(archive)} if role == "mimir" else {}]
    ]
    (tmp_path / "alone.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    env = ansible_env(tmp_path)
    env["ANSIBLE_ROLES_PATH"] = str(ANSIBLE / "roles")
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "--check", "-i", "localhost,", "-c", "local", str(tmp_path / "alone.yml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert re.search(r"localhost\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", done.stdout), done.stdout[-3000:]
    started = set(re.findall(r"^TASK \[(\w+) : ", done.stdout, re.MULTILINE))
    assert started == set(ROLES)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("apt-get") is None, reason="converges as root with apt")
def test_molecule_converges_the_local_roles_idempotently(tmp_path: Path) -> None:
    """capture, sbcl, loadgen and mimir on this machine: converge, converge again with no change, verify."""
    env = ansible_env(tmp_path)
    env["MOLECULE_EPHEMERAL_DIRECTORY"] = str(tmp_path / "molecule")
    done = subprocess.run(
        [str(BIN / "molecule"), "test"],
        cwd=ANSIBLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    for stage in ("converge", "idempotence", "verify"):
        assert re.search(rf"{stage}\S*: \S*Executed: Successful", re.sub(r"\x1b\[[0-9;]*m", "", output)), stage
    # The cleanup removed the installs; only molecule's own state is left in its folder.
    assert not (tmp_path / "molecule" / "root").exists()
