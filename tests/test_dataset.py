"""Attack paths, injection once at the 1 s bin, labels and splits, on a synthetic Sock Shop run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_mimir

from mimir.attacks import InjectionConfig, allowed_graph, attack_paths
from mimir.spec import FeatureSpec

RATES = ["1", "0.05"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dataset")
    spec = "path=user-db,user,front-end,outside;rate=300KB/min;start=900;duration=60"
    run_mimir(
        "synth",
        "--app",
        "sockshop",
        "--duration",
        "1200",
        "--users",
        "10",
        "--exfil",
        spec,
        "-o",
        base / "run",
        check=True,
    )
    run_mimir("ingest", *sorted((base / "run" / "capture").glob("*.pcap")), "-o", base / "flows.parquet", check=True)
    run_mimir("edges", base / "flows.parquet", base / "run", "-o", base / "edges.parquet", check=True)
    run_mimir(
        "features", base / "edges.parquet", base / "run", "-o", base / "out", "--rates", ",".join(RATES), check=True
    )
    return base


def test_paths_start_at_sensitive_services_and_end_outside(results: Path) -> None:
    edges = pd.read_parquet(results / "edges.parquet")
    paths = attack_paths(allowed_graph(edges), ["user-db", "orders-db"], 5)
    assert paths and all(p[0] in ("user-db", "orders-db") and p[-1] == "outside" for p in paths)
    assert [len(p) for p in paths] == sorted(len(p) for p in paths)  # shortest first
    assert ("user-db", "kube-dns", "outside") in paths
    assert ("user-db", "user", "front-end", "outside") in paths  # out through the front end's answers
    assert not any(p[:2] == ("user-db", "payment") for p in paths)  # user-db never talks to payment


def test_one_injection_seen_by_every_granularity(results: Path) -> None:
    for rate in RATES:
        attacks = pd.read_parquet(results / "out" / "attacks" / f"{rate}.parquet")
        fine = pd.read_parquet(results / "out" / "features" / "10s" / f"{rate}.parquet")
        coarse = pd.read_parquet(results / "out" / "features" / "60s" / f"{rate}.parquet")
        assert fine["injected_bytes"].sum() == coarse["injected_bytes"].sum() == attacks["bytes"].sum() > 0
        from_fine = fine.groupby(fine["interval"] // 6)["injected_bytes"].sum()
        assert np.allclose(from_fine.to_numpy(), coarse["injected_bytes"].to_numpy())
        assert set(coarse.loc[coarse["injected_bytes"] > 0, "attack"]) <= set(attacks["attack"])


def test_attacks_start_anywhere_and_draw_their_rate(results: Path) -> None:
    attacks = pd.read_parquet(results / "out" / "attacks" / "1.parquet")
    starts = attacks.groupby("attack")["ts"].min()
    assert len(starts) == 4  # 20 % of 1200 s in 60 s attacks
    assert (starts % 60 != 0).any()  # not aligned to minutes
    per_attack = attacks[attacks["dst_kind"] == "outside"].groupby("attack")["bytes"].sum()
    rates = attacks.groupby("attack")["rate"].first()
    assert np.allclose(per_attack / 1e6, rates, rtol=0.05)  # one minute at the drawn rate leaves the cluster
    assert rates.nunique() == len(rates) and np.allclose(rates.mean(), 1.0, rtol=0.3)


def test_labels_paths_and_splits(results: Path) -> None:
    table = pd.read_parquet(results / "out" / "features" / "10s" / "0.05.parquet")
    attacked = table[table["injected_bytes"] > 0]
    assert (attacked["label"] == 1).all() and (attacked["path"] != "").all()
    physical = table[(table["start"] >= table["start"].iloc[0] + 900) & (table["start"] < table["start"].iloc[0] + 960)]
    assert (physical["label"] == 1).all()  # the run's own exfiltration window
    assert table["split"].value_counts(normalize=True).round(2).to_dict() == {
        "train": 0.6,
        "validation": 0.2,
        "test": 0.2,
    }
    assert len(table) == 120 and table.filter(like="harmonic:").shape[1] > 5


def test_same_inputs_same_bytes(results: Path, tmp_path: Path) -> None:
    run_mimir(
        "features", results / "edges.parquet", results / "run", "-o", tmp_path, "--rates", "1", "--tg", "10", check=True
    )
    for part in ("attacks/1.parquet", "features/10s/1.parquet"):
        assert (tmp_path / part).read_bytes() == (results / "out" / part).read_bytes()


def test_injection_config_is_seeded() -> None:
    from mimir.attacks import run_seed

    assert run_seed("a", 1.0, 0) == run_seed("a", 1.0, 0) != run_seed("a", 0.1, 0) != run_seed("b", 1.0, 0)
    assert InjectionConfig.from_spec(FeatureSpec(), 0).attack_seconds == FeatureSpec.attack_seconds == 60


def test_a_policy_file_replaces_the_learned_graph(results: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("allow:\n  - [user-db, user]\n  - [user, front-end]\n  - [front-end, outside]\n")
    run_mimir(
        "features",
        results / "edges.parquet",
        results / "run",
        "-o",
        tmp_path / "out",
        "--rates",
        "1",
        "--tg",
        "60",
        "--policy",
        policy,
        check=True,
    )
    attacks = pd.read_parquet(tmp_path / "out" / "attacks" / "1.parquet")
    assert set(attacks["path"]) <= {"user-db>user>front-end>outside", "user-db>kube-dns>outside"}
    bad = run_mimir("features", results / "edges.parquet", results / "run", "-o", tmp_path / "x", "--tg", "15")
    assert bad.returncode == 0  # 15 s is a multiple of the 1 s bin
    policy.write_text("allow: nothing\n")
    done = run_mimir("features", results / "edges.parquet", results / "run", "-o", tmp_path / "y", "--policy", policy)
    assert done.returncode == 2 and "allow" in done.stderr
