"""Attack paths, injections at the 1 s bin stacked per seed, labels and splits, on a synthetic Sock Shop run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_mimir

from mimir.attacks import (
    ABIDING,
    PHYSICAL,
    SHAPES,
    VIOLATING,
    InjectionConfig,
    PathSet,
    Policy,
    allowed_graph,
    attack_paths,
    classify,
    injection_seed,
)
from mimir.dataset import benign_traffic, service_weights
from mimir.features import compute_features
from mimir.graphs import CodedEdges, build_graphs
from mimir.spec import FeatureSpec

RATES = ["1", "0.05"]
SEEDS = FeatureSpec.seeds


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


def test_paths_start_at_sensitive_services_and_leave_by_an_exit(results: Path) -> None:
    edges = pd.read_parquet(results / "edges.parquet")
    paths = attack_paths(allowed_graph(edges), ["user-db", "orders-db"], 5)
    assert paths and all(p[0] in ("user-db", "orders-db") and p[-1] == "outside" for p in paths)
    assert [len(p) for p in paths] == sorted(len(p) for p in paths)  # shortest first
    assert ("user-db", "kube-dns", "outside") in paths
    assert ("user-db", "user", "front-end", "outside") in paths  # out through the front end's answers
    assert not any(p[:2] == ("user-db", "payment") for p in paths)  # user-db never talks to payment
    run = json.loads((results / "run" / "run.json").read_text())
    benign = benign_traffic(edges, run["exfiltration"], 1)  # the window sends from the front end to outside
    assert not benign_traffic(edges, [], 1).equals(benign)
    found = PathSet.find(Policy.from_edges(benign), allowed_graph(benign), ["user-db", "orders-db"], 5)
    assert ("user-db", "user", "front-end", "ingress") in found.abiding  # a client pulls it from the front end
    assert ("user-db", "user", "front-end", "outside") in found.violating  # the front end never opens connections out
    assert all(p[-1] == "ingress" for p in found.abiding)  # Sock Shop has no egress and no upstream DNS


def test_one_injection_seen_by_every_granularity(results: Path) -> None:
    for rate in RATES:
        attacks = pd.read_parquet(results / "out" / "attacks" / f"{rate}.parquet")
        fine = pd.read_parquet(results / "out" / "features" / "10s" / f"{rate}.parquet")
        coarse = pd.read_parquet(results / "out" / "features" / "60s" / f"{rate}.parquet")
        assert fine["injected_bytes"].sum() == coarse["injected_bytes"].sum() == attacks["bytes"].sum() > 0
        from_fine = fine.groupby([fine["seed"], fine["interval"] // 6])["injected_bytes"].sum()
        assert np.allclose(from_fine.to_numpy(), coarse["injected_bytes"].to_numpy())
        hit = coarse[coarse["injected_bytes"] > 0]
        assert set(zip(hit["seed"], hit["attack"], strict=True)) <= set(
            zip(attacks["seed"], attacks["attack"], strict=True)
        )


def test_attacks_start_anywhere_and_draw_their_rate(results: Path) -> None:
    attacks = pd.read_parquet(results / "out" / "attacks" / "1.parquet")
    starts = attacks.groupby(["seed", "attack"])["ts"].min()
    assert len(starts) == 4 * SEEDS  # 20 % of 1200 s in 60 s attacks, per injection
    assert (starts % 60 != 0).any()  # not aligned to minutes
    assert starts.groupby("seed").apply(tuple).nunique() == SEEDS  # each injection its own schedule
    leaving = attacks[(attacks["src_kind"] == "pod") & attacks["dst_kind"].isin(["outside", "ingress"])]
    per_attack = leaving.groupby(["seed", "attack"])["bytes"].sum()
    rates = attacks.groupby(["seed", "attack"])["rate"].first()
    assert np.allclose(per_attack / 1e6, rates, rtol=0.05)  # one minute at the drawn rate leaves the cluster
    assert rates.nunique() == len(rates) and np.allclose(rates.mean(), 1.0, rtol=0.3)
    classes = attacks.drop_duplicates(["seed", "attack"])
    assert list(classes["policy"]) == [ABIDING, VIOLATING] * 2 * SEEDS  # alternating, shapes cycling per class
    assert list(classes["shape"]) == ["constant", "constant", "bursts", "bursts"] * SEEDS


def test_labels_paths_and_splits(results: Path) -> None:
    table = pd.read_parquet(results / "out" / "features" / "10s" / "0.05.parquet")
    assert list(table.columns[:10]) == [
        "interval", "start", "injected_bytes", "attack", "path", "policy", "shape", "seed", "label", "split",
    ]  # fmt: skip
    attacked = table[table["injected_bytes"] > 0]
    assert (attacked["label"] == 1).all() and (attacked["path"] != "").all()
    assert set(attacked["policy"]) == {ABIDING, VIOLATING} and set(attacked["shape"]) <= set(SHAPES)
    physical = table[(table["start"] >= table["start"].iloc[0] + 900) & (table["start"] < table["start"].iloc[0] + 960)]
    assert (physical["label"] == 1).all() and len(physical) == 6 * SEEDS  # the run's own window, in every injection
    window = physical[physical["attack"] < 0]
    assert (window["path"] == "user-db>user>front-end>outside").all() and len(window)
    assert (window["policy"] == PHYSICAL).all() and (window["shape"] == "constant").all()  # judged apart
    quiet = table[table["label"] == 0]
    assert (quiet[["path", "policy", "shape"]] == "").all().all() and (quiet["attack"] == -1).all()
    assert table["split"].value_counts(normalize=True).round(2).to_dict() == {"train": 0.5, "validation": 0.5}
    assert (table.groupby("seed")["split"].apply(tuple).nunique()) == 1  # the same split in every injection
    assert len(table) == 120 * SEEDS and table.filter(like="harmonic:").shape[1] > 5
    assert list(table["interval"]) == list(range(120)) * SEEDS


def test_stacked_tables_equal_each_injection_computed_whole(results: Path) -> None:
    """Only attacked intervals are computed again per injection; the result is what computing every interval of
    every injection's graphs would give."""
    edges = pd.read_parquet(results / "edges.parquet")
    run = json.loads((results / "run" / "run.json").read_text())
    attacks = pd.read_parquet(results / "out" / "attacks" / "1.parquet")
    table = pd.read_parquet(results / "out" / "features" / "60s" / "1.parquet")
    coded = CodedEdges.from_edges(edges)
    for seed in range(SEEDS):
        graphs = build_graphs(coded.with_rows(attacks[attacks["seed"] == seed]), int(run["start"]), run["end"], 60)
        whole = pd.concat([compute_features(graphs, run["sensitive"]).reset_index(drop=True), service_weights(graphs)],
                          axis=1)  # fmt: skip
        mine = table[table["seed"] == seed].reset_index(drop=True)
        rest = [c for c in mine.columns if ":" in c and c not in whole]
        assert (mine[rest] == 0).all().all()  # a column only other injections have
        assert np.array_equal(mine[whole.columns].to_numpy(), whole.to_numpy())


def test_same_inputs_same_bytes(results: Path, tmp_path: Path) -> None:
    run_mimir(
        "features", results / "edges.parquet", results / "run", "-o", tmp_path, "--rates", "1", "--tg", "10", check=True
    )
    for part in ("attacks/1.parquet", "features/10s/1.parquet"):
        assert (tmp_path / part).read_bytes() == (results / "out" / part).read_bytes()


def test_injection_config_is_seeded() -> None:
    structure = injection_seed("a", 0, 0)
    assert structure == injection_seed("a", 0, 0) != injection_seed("a", 0, 1) != injection_seed("b", 0, 0)
    assert structure != injection_seed("a", 1, 0) and injection_seed("a", 0, 0, 1.0) != injection_seed("a", 0, 0, 0.1)
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
    assert set(attacks["path"]) == {"user-db>user>front-end>outside"}  # the front end may send out: abiding
    assert set(attacks["policy"]) == {ABIDING}
    assert (
        classify(("user-db", "user", "front-end", "ingress"), Policy.from_pairs([("user", "front-end")])) == VIOLATING
    )
    policy.write_text("allow:\n  - [user, user-db]\n")  # no way out: a note, no invented path
    done = run_mimir("features", results / "edges.parquet", results / "run", "-o", tmp_path / "z", "--rates", "1",
                     "--tg", "60", "--policy", policy, check=True)  # fmt: skip
    assert "no policy-abiding path" in done.stdout and "no way out" in done.stdout
    for seeds in ("0", "two"):  # at least one injection, a whole number: a usage error
        done = run_mimir("features", results / "edges.parquet", results / "run", "-o", tmp_path / "s", "--seeds", seeds)
        assert done.returncode == 2 and "--seeds" in done.stderr and not (tmp_path / "s").exists()
    assert "--seeds" in run_mimir("features", "--help", check=True).stdout
    bad = run_mimir("features", results / "edges.parquet", results / "run", "-o", tmp_path / "x", "--tg", "15")
    assert bad.returncode == 0  # 15 s is a multiple of the 1 s bin
    policy.write_text("allow: nothing\n")
    done = run_mimir("features", results / "edges.parquet", results / "run", "-o", tmp_path / "y", "--policy", policy)
    assert done.returncode == 2 and "allow" in done.stderr
