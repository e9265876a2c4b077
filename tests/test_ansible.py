"""The Ansible tree: lint (production profile), syntax, pinned versions, and a real converge with molecule."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ANSIBLE = REPO / "ansible"
BIN = Path(sys.executable).parent
ROLES = ("base", "docker", "minikube", "kubectl", "helm", "capture", "sbcl", "loadgen", "mimir")


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
