"""Import of the prototype's data: the real cluster-creation log and conversation table of ../shared/corpus/mimir."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, run_mimir
from craft import ETH_IPV4, Record, ether, ipv4, pcap, tcp

from mimir.entities import read_events, resolve, timeline
from mimir.errors import LegacyError
from mimir.sources.legacy import parse_conversations, read_cluster_log

LOG = "wordpress_example_final_cluster_creation_log.txt"
ANALYSIS = "example_wordpress_final_analysis.json"
CONVERSATIONS = "wordpress_auto_v3_mk5_bridge_any_split_00883_20190411020629"
T0 = 1_554_948_000  # 2019-04-11, the prototype's capture day


class RunsCode:
    """Unpickled naively, this would create a file: the import must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "log.txt"
    evil.write_bytes(pickle.dumps({0: {"x": RunsCode(marker)}}, protocol=0))
    with pytest.raises(LegacyError, match="refusing to load the global"):
        read_cluster_log(evil)
    assert not marker.exists()
    done = run_mimir("import-legacy", "--pcap", tmp_path / "x.pcap", "--cluster-log", evil, "-o", tmp_path / "run")
    assert (
        done.returncode == 3 and "refusing" in done.stderr and not marker.exists() and not (tmp_path / "run").exists()
    )


def capture(tmp_path: Path) -> Path:
    frames = [ether(ipv4("172.17.0.18", "10.97.162.214", 6, tcp(40000, 3306, b"q" * 50)), ETH_IPV4)]
    path = tmp_path / "legacy.pcap"
    path.write_bytes(pcap([Record(T0 * 10**6, f) for f in frames], 1))
    return path


def test_the_real_log_becomes_entities(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = run_mimir(
        "import-legacy",
        "--pcap",
        capture(tmp_path),
        "--cluster-log",
        corpus / "mimir" / LOG,
        "--analysis-json",
        corpus / "mimir" / ANALYSIS,
        "-o",
        run,
        check=True,
    )
    assert "wordpress" in done.stdout
    events = read_events(run / "entities.jsonl")
    pods = [e for e in events if e["kind"] == "pod"]
    services = {e["name"]: e for e in events if e["kind"] == "service"}
    assert len(pods) == 30 and len(services) == 11  # the log's 41 entities
    assert services["my-release-pxc"]["ips"] == ["10.97.162.214"]
    assert services["my-release-pxc"]["selector"] == {"app": "my-release-pxc", "release": "my-release"}
    assert all(e["ts"] == T0 for e in events)  # every entity is listed at second 0
    assert (run / "capture" / "legacy.pcap").is_file()


def test_conversation_table_parses_and_resolves(corpus: Path, tmp_path: Path) -> None:
    table = parse_conversations((corpus / "mimir" / CONVERSATIONS).read_text())
    assert 140 <= len(table) <= 149
    first = table.iloc[0]
    assert (first["a"], first["b"], first["bytes_b_to_a"], first["bytes_a_to_b"]) == (
        "10.105.16.206",
        "172.17.0.18",
        263327,
        3393122,
    )
    log = read_cluster_log(corpus / "mimir" / LOG)
    from mimir.sources.legacy import log_events

    spans = timeline(log_events(log, T0, corpus / "mimir" / LOG))
    ips = pd.Series(sorted(set(table["a"]) | set(table["b"])))
    got = resolve(ips, pd.Series([T0 + 8800.0] * len(ips)), spans).fillna("")
    held = dict(zip(ips, got["service"], strict=True))
    # The example log and the table come from two different runs of the prototype (the analysis JSON names
    # another log): addresses resolve to whatever the example log says. In both, the Percona members and the
    # WordPress pods sit on 172.17.0.0/16 and the database VIP on the service range.
    assert held["172.17.0.18"] == "wwwppp-wordpress" and held["172.17.0.10"] == "my-release-pxc"
    assert held["10.96.0.1"] == "kubernetes"
    assert held["192.168.99.1"] == ""  # the load generator is no entity: `ingress` in the edges
    assert held["10.105.16.206"] == ""  # that run's database VIP is not in this log: `unknown`, not merged


def test_unit_suffixed_byte_counts() -> None:
    text = "10.0.0.1 <-> 10.0.0.2    12 63 kB     3 1 MB    15 1.063 MB     0.000000000   9.9\n"
    row = parse_conversations(text).iloc[0]
    assert (row["frames_b_to_a"], row["bytes_b_to_a"], row["frames_a_to_b"], row["bytes_a_to_b"]) == (
        12,
        63000,
        3,
        1000000,
    )


def test_the_workflow_imports_a_prototype_run_from_its_declared_files(corpus: Path, tmp_path: Path) -> None:
    """Rule import_legacy reads exactly the files the config names, declared as its inputs."""
    config = {
        "runs": {
            "legacy": {
                "source": "import",
                "pcap": str(capture(tmp_path)),
                "cluster_log": str(corpus / "mimir" / LOG),
                "analysis_json": str(corpus / "mimir" / ANALYSIS),
                "role": "train",
            }
        },
        "features": {"rates": [1]},
        "figures": {"rate": 1},
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(REPO / "Snakefile")]
    done = subprocess.run(
        [*snakemake, "--directory", str(tmp_path), "--cores", "1", "data/runs/legacy"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_events(tmp_path / "data" / "runs" / "legacy" / "entities.jsonl")
    assert (tmp_path / "data" / "runs" / "legacy" / "capture" / "legacy.pcap").is_file()
