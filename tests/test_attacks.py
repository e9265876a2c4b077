"""The attacker stays inside the network policy (policy-abiding) or breaks it (policy-violating): real synthetic runs
of the three applications, a hand-made cluster with egress and upstream DNS, shapes and common random numbers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_mimir

from mimir.attacks import (
    ABIDING,
    SHAPES,
    VIOLATING,
    InjectionConfig,
    Loads,
    PathSet,
    Policy,
    Targets,
    abiding_paths,
    attack_bytes,
    classify,
    inject,
    injection_seed,
    plan,
)
from mimir.network import INGRESS, OUTSIDE, POD, VIP

APPS = ["sockshop", "wordpress", "online-boutique"]
RATES = ["1", "0.1"]
SEEDS = 2


@pytest.fixture(scope="module", params=APPS)
def app_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-minute run of one application with six 30 s attacks per injection, two injections per rate."""
    base = tmp_path_factory.mktemp(request.param)
    run_mimir("synth", "--app", request.param, "--duration", "600", "--users", "10", "-o", base / "run", check=True)
    run_mimir("ingest", *sorted((base / "run" / "capture").glob("*.pcap")), "-o", base / "flows.parquet", check=True)
    run_mimir("edges", base / "flows.parquet", base / "run", "-o", base / "edges.parquet", check=True)
    run_mimir(
        "features",
        base / "edges.parquet",
        base / "run",
        "-o",
        base / "out",
        "--rates",
        ",".join(RATES),
        "--tg",
        "60",
        "--attack-seconds",
        "30",
        "--attacked-share",
        "0.3",
        "--seeds",
        str(SEEDS),
        check=True,
    )
    return base


def forms(table: pd.DataFrame) -> set[tuple[str, str, str, str]]:
    return set(table[["src_kind", "src_service", "dst_kind", "dst_service"]].itertuples(index=False, name=None))


def test_abiding_attacks_ride_benign_calls_and_leave_by_an_exit(app_run: Path) -> None:
    edges = pd.read_parquet(app_run / "edges.parquet")
    policy = Policy.from_edges(edges)
    benign_pairs = set(edges[["src_service", "dst_service"]].itertuples(index=False, name=None))
    benign_forms = forms(edges)
    attacks = pd.read_parquet(app_run / "out" / "attacks" / "1.parquet")
    abiding = attacks[attacks["policy"] == ABIDING]
    assert abiding["attack"].nunique() >= 2  # every default application has a client-pull exit
    assert set(abiding[["src_service", "dst_service"]].itertuples(index=False, name=None)) <= benign_pairs
    assert forms(abiding) <= benign_forms  # even the kinds of both ends (pod, VIP, ingress) are benign ones
    for (_, _, hop), rows in abiding.groupby(["seed", "attack", "hop"]):
        path = rows["path"].iloc[0].split(">")
        a, b = path[hop], path[hop + 1]
        data = rows[(rows["src_service"] == a) & (rows["dst_service"] == b)]
        assert len(data) and set(rows["src_service"]) | set(rows["dst_service"]) == {a, b}
        if b == INGRESS:  # a client pulls the data from the entry service, as benign clients' responses show
            assert hop == len(path) - 2 and a in policy.entries
            assert forms(data) == {(POD, a, INGRESS, INGRESS)}
        elif (b, a) in policy.calls:  # b pulls it in the responses of its calls to a, through a's VIP
            assert (VIP, a, POD, b) in forms(data)
        else:  # a pushes it in the requests of its calls to b, through b's VIP
            assert (a, b) in policy.calls and (POD, a, VIP, b) in forms(data)


def test_violating_attacks_use_a_pair_benign_traffic_lacks(app_run: Path) -> None:
    edges = pd.read_parquet(app_run / "edges.parquet")
    benign_pairs = set(edges[["src_service", "dst_service"]].itertuples(index=False, name=None))
    attacks = pd.read_parquet(app_run / "out" / "attacks" / "1.parquet")
    violating = attacks[attacks["policy"] == VIOLATING]
    assert violating["attack"].nunique() >= 2
    for _, rows in violating.groupby(["seed", "attack"]):
        assert set(rows[["src_service", "dst_service"]].itertuples(index=False, name=None)) - benign_pairs
        assert classify(tuple(rows["path"].iloc[0].split(">")), Policy.from_edges(edges)) == VIOLATING


def test_classes_alternate_and_shapes_cycle(app_run: Path) -> None:
    attacks = pd.read_parquet(app_run / "out" / "attacks" / "1.parquet")
    for _, rows in attacks.groupby("seed"):
        first = rows.drop_duplicates("attack").sort_values("attack")
        assert list(first["policy"]) == [ABIDING, VIOLATING] * 3
        assert list(first["shape"]) == [s for s in SHAPES for _ in range(2)]


def test_every_rate_injects_the_same_attacks_scaled(app_run: Path) -> None:
    """Common random numbers: when, which class, shape, path and pods, and the attack's rate factor, do not depend
    on the rate; only the bytes scale (up to each second's Poisson noise)."""
    keys = ["seed", "attack", "hop", "src", "dst"]
    per = {}
    for rate in RATES:
        attacks = pd.read_parquet(app_run / "out" / "attacks" / f"{rate}.parquet")
        hops = [path.split(">")[hop] for path, hop in zip(attacks["path"], attacks["hop"], strict=True)]
        data = attacks[attacks["src_service"] == hops]  # the data's way of each hop (ACKs, whole packets, do not scale)
        per[rate] = data.groupby(keys).agg(
            start=("ts", "min"), path=("path", "first"), policy=("policy", "first"), shape=("shape", "first"),
            rate=("rate", "first"), bytes=("bytes", "sum"),
        )  # fmt: skip
    high, low = per["1"], per["0.1"]
    assert high.index.equals(low.index)
    assert high[["start", "path", "policy", "shape"]].equals(low[["start", "path", "policy", "shape"]])
    assert np.allclose(high["rate"], 10 * low["rate"])
    assert np.allclose(high["bytes"], 10 * low["bytes"], rtol=0.05)


def test_mimicry_follows_the_carriers_load(app_run: Path) -> None:
    edges = pd.read_parquet(app_run / "edges.parquet")
    run = json.loads((app_run / "run" / "run.json").read_text())
    start, end = int(np.floor(run["start"])), int(run["end"])
    loads = Loads.from_edges(edges, start, end)
    attacks = pd.read_parquet(app_run / "out" / "attacks" / "1.parquet")
    mimicry = attacks[(attacks["shape"] == "mimicry") & (attacks["hop"] == 0)]
    checked = 0
    for _, rows in mimicry.groupby(["seed", "attack"]):
        path = tuple(rows["path"].iloc[0].split(">"))
        carrier = loads.carrier(path)
        if carrier is None:  # no hop carries benign bytes its way (a DNS tunnel without upstream): sent constant
            continue
        sent = rows[rows["src_service"] == path[0]].groupby("ts")["bytes"].max()  # the seconds with data
        load = loads.bytes[carrier, sent.index.to_numpy() - start]
        if load.std() > 0:
            assert np.corrcoef(sent.to_numpy(), load)[0, 1] > 0.99
            checked += 1
    assert checked


def test_stacked_seeds_differ_and_share_the_benign_intervals(app_run: Path) -> None:
    table = pd.read_parquet(app_run / "out" / "features" / "60s" / "1.parquet")
    count = len(table) // SEEDS
    assert list(table["seed"]) == [s for s in range(SEEDS) for _ in range(count)]
    assert list(table["interval"]) == list(range(count)) * SEEDS
    one, two = (table[table["seed"] == s].reset_index(drop=True) for s in range(SEEDS))
    assert not one["label"].equals(two["label"]) or not one["path"].equals(two["path"])
    quiet = (one["label"] == 0) & (two["label"] == 0)
    features = [c for c in table.columns if ":" in c]
    assert quiet.any() and one.loc[quiet, features].equals(two.loc[quiet, features])
    attacked = table[table["attack"] >= 0]
    assert set(attacked["policy"]) == {ABIDING, VIOLATING} and set(attacked["shape"]) <= set(SHAPES)
    assert (table.loc[table["label"] == 0, ["path", "policy", "shape"]] == "").all().all()


# A cluster by hand: `api` answers clients and calls `db` and kube-dns; `worker` calls `db` and the outside;
# kube-dns forwards lookups upstream. Loads vary per second so that mimicry has something to follow.
START, SECONDS = 1000, 120


def tiny_edges(*, egress: bool = True, upstream: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    ends = {
        "api": ("ns/api-1", POD, "api"),
        "api-vip": ("ns/api", VIP, "api"),
        "db": ("ns/db-1", POD, "db"),
        "db-vip": ("ns/db", VIP, "db"),
        "worker": ("ns/worker-1", POD, "worker"),
        "dns": ("kube-system/coredns-1", POD, "kube-dns"),
        "dns-vip": ("kube-system/kube-dns", VIP, "kube-dns"),
        INGRESS: (INGRESS, INGRESS, INGRESS),
        OUTSIDE: (OUTSIDE, OUTSIDE, OUTSIDE),
    }
    links = [("api", "db-vip"), ("api", "db"), ("db", "api"), ("db-vip", "api"), ("api", INGRESS)]
    links += [("worker", "db-vip"), ("worker", "db"), ("db", "worker"), ("db-vip", "worker")]
    links += [("api", "dns-vip"), ("api", "dns"), ("dns", "api"), ("dns-vip", "api")]
    links += [("worker", OUTSIDE), (OUTSIDE, "worker")] if egress else []
    links += [("dns", OUTSIDE), (OUTSIDE, "dns")] if upstream else []
    rows = [
        (START + t, *ends[a][:1], *ends[b][:1], 1, int(rng.integers(100, 10_000)), *ends[a][1:], *ends[b][1:])
        for t in range(SECONDS)
        for a, b in links
    ]
    columns = ["ts", "src", "dst", "packets", "bytes", "src_kind", "src_service", "dst_kind", "dst_service"]
    return pd.DataFrame(rows, columns=columns)


def test_egress_and_upstream_dns_open_their_exits() -> None:
    policy = Policy.from_edges(tiny_edges())
    assert policy == Policy(
        frozenset({("api", "db"), ("worker", "db"), ("api", "kube-dns")}),
        frozenset({"api"}),
        frozenset({"worker"}),
        dns_upstream=True,
    )
    pairs = [("ingress", "api"), ("api", "db"), ("worker", "db"), ("api", "kube-dns"), ("worker", "outside")]
    assert Policy.from_pairs([*pairs, ("kube-dns", "outside")]) == policy  # a policy file says the same
    paths = abiding_paths(policy, ["db"], 5)
    assert ("db", "api", INGRESS) in paths  # (a) a client pulls it from the entry service
    assert ("db", "worker", OUTSIDE) in paths  # (b) an egress service sends it out
    assert ("db", "api", "kube-dns", OUTSIDE) in paths  # (c) api's lookups, forwarded upstream
    assert classify(("db", "kube-dns", OUTSIDE), policy) == VIOLATING  # db makes no lookups
    assert classify(("db", "api", OUTSIDE), policy) == VIOLATING  # api only answers clients
    assert abiding_paths(Policy.from_edges(tiny_edges(egress=False, upstream=False)), ["db"], 5) == [
        ("db", "api", INGRESS)
    ]


def tiny_targets() -> Targets:
    edges = tiny_edges()
    policy = Policy.from_edges(edges)
    return Targets.of(edges, PathSet(tuple(abiding_paths(policy, ["db"], 5)), ()), policy, START, START + SECONDS)


def test_tiny_injection_leaves_by_every_exit_in_benign_forms() -> None:
    targets = tiny_targets()
    cfg = InjectionConfig(attack_seconds=20, attacked_share=0.5, rate_sd=0.1, max_path_length=5, seed=0)
    benign = forms(tiny_edges())
    seen = set()
    for injection in range(4):
        injected = inject(targets, 1.0, cfg, "tiny", injection)
        assert forms(injected) <= benign and set(injected["policy"]) == {ABIDING}
        seen |= set(injected["path"])
    assert seen == {"db>api>ingress", "db>worker>outside", "db>api>kube-dns>outside"}


def test_shapes_carry_the_same_total() -> None:
    targets = tiny_targets()
    cfg = InjectionConfig(attack_seconds=20, attacked_share=0.5, rate_sd=0.1, max_path_length=5, seed=0)
    attacks = plan(targets, cfg, injection_seed("tiny", 0, 0))
    assert [a.shape for a in attacks] == list(SHAPES)
    for attack in attacks:
        shaped = attack_bytes(attack, 1.0, targets, 20, np.random.default_rng(3))
        constant = attack_bytes(replace(attack, shape="constant"), 1.0, targets, 20, np.random.default_rng(3))
        assert shaped.sum() == constant.sum() > 0
        if attack.shape == "bursts":  # 4 bursts of 3 s, apart from each other
            on = np.flatnonzero(shaped)
            assert on.size == 12 and (np.diff(on.reshape(4, 3), axis=1) == 1).all()
        if attack.shape == "mimicry":
            row = targets.loads.carrier(attack.path)
            load = targets.loads.bytes[row, attack.start - START : attack.start - START + 20]
            assert np.corrcoef(shaped, load)[0, 1] > 0.99


def test_injections_are_reproducible_and_differ() -> None:
    targets = tiny_targets()
    cfg = InjectionConfig(attack_seconds=20, attacked_share=0.5, rate_sd=0.1, max_path_length=5, seed=0)
    first = inject(targets, 0.5, cfg, "tiny", 0)
    pd.testing.assert_frame_equal(first, inject(targets, 0.5, cfg, "tiny", 0))
    assert not first.equals(inject(targets, 0.5, cfg, "tiny", 1))
    assert not first.equals(inject(targets, 0.5, replace(cfg, seed=1), "tiny", 0))
