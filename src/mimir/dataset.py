"""Labelled feature tables (docs/architecture.md#feature-tables): per run and rate, several injections (seeds)
into the same benign traffic, each aggregated to every granularity, the features of every interval, its label,
attack, path, policy class, shape and split, all injections stacked.

    OUT/attacks/{rate}.parquet            the injected traffic, per injection, attack, second and concrete edge
    OUT/features/{tg}s/{rate}.parquet     one row per (injection, interval): features, label, attack, path, split

Only intervals an injection touches differ from the benign run, so the benign graphs and features of every
granularity are computed once per build and only the attacked intervals are computed again.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mimir.attacks import (
    ABIDING,
    PHYSICAL,
    VIOLATING,
    InjectionConfig,
    PathSet,
    Policy,
    Targets,
    allowed_graph,
    classify,
    inject,
    no_abiding_reason,
    policy_graph,
    read_policy,
)
from mimir.capture.ingest import read_table, recorded_bin
from mimir.entities import read_run
from mimir.errors import UsageError
from mimir.features import compute_features
from mimir.graphs import CodedEdges, Graphs, build_graphs
from mimir.io import Claim, write_table
from mimir.spec import FeatureSpec, check_granularities, rate_name


def parse_split(text: str) -> dict[str, float]:
    """`train=0.5,validation=0.5` or `test=1` → shares in time order (they must add up to 1)."""
    split: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        try:
            split[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--split: {part!r} is not NAME=SHARE") from None
    if not split or abs(sum(split.values()) - 1) > 1e-9 or min(split.values()) < 0:
        raise UsageError(f"--split {text!r}: shares are not negative and add up to 1")
    return split


@dataclass(frozen=True)
class FeatureOutputs:
    """Where one build writes: `ROOT/attacks/{rate}.parquet` and `ROOT/features/{tg}s/{rate}.parquet`, where no
    file is (with `force` also over the tables of a previous build; never over anything else)."""

    root: Path
    force: bool = False

    def attacks(self, rate: float) -> Path:
        return self.root / "attacks" / f"{rate_name(rate)}.parquet"

    def table(self, tg: int, rate: float) -> Path:
        return self.root / "features" / f"{tg}s" / f"{rate_name(rate)}.parquet"


def labels(injected: pd.DataFrame, windows: list[dict], start: int, tg: int, count: int) -> pd.DataFrame:
    """Per interval of one injection: injected bytes, label (injected bytes or a physical window overlapping), and
    the attack, path, policy class and shape of the earliest policy-violating attack in it, else of the earliest
    attack, else of a physical window (class `physical`, judged apart: the run's own exfiltration, whatever its
    path): an interval is policy-abiding only when all its injected traffic is."""
    about = ["path", "policy", "shape"]
    out = pd.DataFrame({"injected_bytes": np.zeros(count), "attack": -1, **dict.fromkeys(about, "")})
    if not injected.empty:
        k = (injected["ts"].to_numpy() - start) // tg
        inside = (k >= 0) & (k < count)
        part = injected[inside].assign(interval=k[inside])
        # an interval that any policy-violating attack touches is policy-violating: it names that attack (the
        # earliest such), else the earliest attack in it
        span = int(part["attack"].max()) + 1 if len(part) else 1
        part = part.assign(order=part["attack"] + span * (part["policy"] != VIOLATING))
        grouped = part.groupby("interval").agg(injected_bytes=("bytes", "sum"), order=("order", "min"))
        out.loc[grouped.index, "injected_bytes"] = grouped["injected_bytes"].to_numpy()
        out.loc[grouped.index, "attack"] = grouped["order"].to_numpy() % span
        attacks = part.drop_duplicates("attack").set_index("attack")[about]
        chosen = out["attack"] >= 0
        out.loc[chosen, about] = attacks.reindex(out.loc[chosen, "attack"]).to_numpy()
    label = out["injected_bytes"].to_numpy() > 0
    begin = start + np.arange(count) * tg
    for w in windows:  # physical exfiltration recorded by the run
        overlap = (begin < w["end"]) & (begin + tg > w["start"])
        fresh = overlap & (out["attack"].to_numpy() < 0)
        path = tuple(w["path"])
        out.loc[fresh, about] = [">".join(path), PHYSICAL, w.get("shape", "constant")]
        label |= overlap
    out["label"] = label.astype(np.int8)
    return out


def service_weights(graphs: Graphs) -> pd.DataFrame:
    """Bytes per service pair and interval (`w:a>b` columns): the service graph itself, for the baselines."""
    s = graphs.service_edges()
    s = s[s["src"] != s["dst"]]
    wide = s.pivot_table(index="interval", columns=["src", "dst"], values="bytes", aggfunc="sum", fill_value=0.0)
    wide.columns = [f"w:{a}>{b}" for a, b in wide.columns]
    return wide.reindex(range(graphs.intervals), fill_value=0.0).reset_index(drop=True)


def split_column(count: int, split: dict[str, float]) -> np.ndarray:
    edges = np.rint(np.cumsum([0, *split.values()]) * count).astype(int)
    out = np.empty(count, dtype=object)
    for name, lo, hi in zip(split, edges[:-1], edges[1:], strict=True):
        out[lo:hi] = name
    return out


def benign_traffic(edges: pd.DataFrame, windows: list[dict], bin_seconds: int) -> pd.DataFrame:
    """A run's edges outside its physical exfiltration windows (run.json): the traffic a policy is learned from
    and attacks hide in."""
    ts = edges["ts"].to_numpy()
    during = np.zeros(ts.shape[0], bool)
    for w in windows:
        during |= (ts < w["end"]) & (ts + bin_seconds > w["start"])
    return edges[~during] if during.any() else edges


def _family_order(*columns: pd.Index) -> list[str]:
    """The columns of several tables once each, grouped by family (`reciprocity:`, ...) in the order they come."""
    names = list(dict.fromkeys(c for index in columns for c in index))
    families = list(dict.fromkeys(c.split(":")[0] for c in names))
    return sorted(names, key=lambda c: families.index(c.split(":")[0]))


def _stacked(benign: pd.DataFrame, changed: pd.DataFrame, attacked: np.ndarray, seeds: int) -> pd.DataFrame:
    """Every injection's values: the benign table repeated once per seed, with the rows of the attacked stacked
    intervals replaced; a column one side lacks is 0 there (no such traffic in those intervals)."""
    names = _family_order(benign.columns, changed.columns)
    stacked = np.tile(benign.reindex(columns=names, fill_value=0.0).to_numpy(float), (seeds, 1))
    stacked[attacked] = changed.reindex(columns=names, fill_value=0.0).to_numpy(float)
    return pd.DataFrame(stacked, columns=names)


@dataclass(frozen=True)
class FeatureInputs:
    """What one build reads: a run's edges (binned per `bin_seconds`), its bundle, and what defines attack paths.

    The policy comes from `policy` (a file of allowed calls), else from `benign_edges` (an evaluation run learns it
    from its training run), else from the run's own edges.
    """

    edges: Path
    run_dir: Path
    bin_seconds: int
    benign_edges: Path | None = None
    policy: Path | None = None


def build(inputs: FeatureInputs, out: FeatureOutputs, spec: FeatureSpec, *, seed: int, jobs: int = 1) -> dict:
    """Every rate of `spec` on one run: `spec.seeds` injections per rate, their tables at every granularity."""
    recorded = recorded_bin(inputs.edges, "edges")
    if inputs.bin_seconds != recorded:
        raise UsageError(f"{inputs.edges}: the edges were binned per {recorded} s, not per {inputs.bin_seconds} s")
    check_granularities(spec.granularities, recorded, "granularities")
    given = (inputs.edges, inputs.run_dir, inputs.benign_edges, inputs.policy)
    claim = Claim("features", out.force, inputs=tuple(p for p in given if p is not None))
    for rate in spec.rates:
        for target in (out.attacks(rate), *(out.table(tg, rate) for tg in spec.granularities)):
            claim.check(target)
    edges = read_table(inputs.edges, "edges").to_pandas()
    run = read_run(inputs.run_dir, required=("start", "end"))
    own = benign_traffic(edges, run.get("exfiltration", []), recorded)
    if inputs.policy:
        pairs = read_policy(inputs.policy)
        policy, allowed = Policy.from_pairs(pairs), policy_graph(pairs)
    else:
        benign = read_table(inputs.benign_edges, "edges").to_pandas() if inputs.benign_edges else own
        policy, allowed = Policy.from_edges(benign), allowed_graph(benign)
    sensitive = list(run.get("sensitive", []))
    paths = PathSet.find(policy, allowed, sensitive, spec.max_path_length)
    notes = []
    if not paths.abiding:
        reason = no_abiding_reason(policy, sensitive, spec.max_path_length)
        notes.append(f"{run.get('app') or inputs.run_dir.name}: no policy-abiding path: {reason}")
    start, end = int(np.floor(run["start"])), float(run["end"])
    coded = CodedEdges.from_edges(edges)
    benign_tables = {}
    for tg in spec.granularities:
        graphs = build_graphs(coded, start, end, tg)
        benign_tables[tg] = _Benign(graphs, compute_features(graphs, sensitive), service_weights(graphs))
    targets = Targets.of(own, paths, policy, start, int(end))
    cfg = InjectionConfig.from_spec(spec, seed)
    _SHARED["job"] = _RateJob(coded, benign_tables, targets, run, inputs.run_dir.name, out, spec, cfg, claim)
    try:
        if jobs > 1 and len(spec.rates) > 1:  # forked workers inherit the tables instead of receiving pickled copies
            with ProcessPoolExecutor(min(jobs, len(spec.rates)), mp_context=get_context("fork")) as pool:
                done = list(pool.map(_shared_job, spec.rates))
        else:
            done = [_shared_job(rate) for rate in spec.rates]
    finally:
        _SHARED.clear()
    return {
        "run": inputs.run_dir.name,
        "paths": {"abiding": [">".join(p) for p in paths.abiding], "violating": [">".join(p) for p in paths.violating]},
        # the run's own windows, labelled `physical`; the class their path would have as an injected attack
        "physical": [
            {"path": ">".join(w["path"]), "class": classify(tuple(w["path"]), policy)}
            for w in run.get("exfiltration", [])
        ],
        "notes": notes,
        "tables": [t for tables in done for t in tables],
    }


_SHARED: dict[str, Any] = {}


def _shared_job(rate: float) -> list[dict]:
    return _SHARED["job"](rate)


@dataclass(frozen=True)
class _Benign:
    """One granularity of the run without injection: its graphs, features and service weights per interval."""

    graphs: Graphs
    features: pd.DataFrame
    weights: pd.DataFrame


@dataclass(frozen=True)
class _RateJob:
    """Everything one rate of a build shares with the others, computed once before the rates fan out."""

    edges: CodedEdges
    benign: dict[int, _Benign]
    targets: Targets
    run: dict
    name: str
    out: FeatureOutputs
    spec: FeatureSpec
    cfg: InjectionConfig
    claim: Claim

    def __call__(self, rate: float) -> list[dict]:
        """Inject one rate `spec.seeds` times, then compute and write its stacked table for every granularity."""
        frames = [inject(self.targets, rate, self.cfg, self.name, k) for k in range(self.spec.seeds)]
        parts = [f.assign(seed=k) for k, f in enumerate(frames) if not f.empty]
        columns = ["seed", *frames[0].columns]
        injected = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
        write_table(pa.Table.from_pandas(injected, preserve_index=False), self.out.attacks(rate), self.claim)
        coded = CodedEdges(self.edges.nodes, self.edges.table.iloc[:0]).with_rows(injected)  # rows keep their order
        return [self._table(coded, injected, tg, rate) for tg in self.spec.granularities]

    def _attacked(self, coded: CodedEdges, seeds: np.ndarray, tg: int) -> tuple[np.ndarray, Graphs]:
        """The stacked intervals (seed · count + interval) the injections touch, and their graphs: the benign edges
        of those intervals plus the injected ones."""
        benign = self.benign[tg]
        count = benign.graphs.intervals
        added = coded.table
        k = (added["ts"].to_numpy() - self.targets.start) // tg
        inside = (k >= 0) & (k < count)
        slot = seeds[inside] * count + k[inside]
        attacked = np.unique(slot)
        b = benign.graphs.edges
        bounds = np.searchsorted(b["interval"].to_numpy(), np.arange(count + 1))
        lo, hi = bounds[attacked % count], bounds[attacked % count + 1]
        rows = np.repeat(lo - np.cumsum(hi - lo) + (hi - lo), hi - lo) + np.arange(int((hi - lo).sum()))
        edges = pd.concat(
            [
                b.iloc[rows].assign(interval=np.repeat(np.arange(attacked.size), hi - lo)),
                added.loc[inside, ["src", "dst", "bytes", "packets"]].assign(interval=np.searchsorted(attacked, slot)),
            ]
        )
        edges = edges.groupby(["interval", "src", "dst"], as_index=False, sort=True)[["bytes", "packets"]].sum()
        return attacked, Graphs(tg, self.targets.start, attacked.size, coded.nodes, edges)

    def _table(self, coded: CodedEdges, injected: pd.DataFrame, tg: int, rate: float) -> dict:
        benign, seeds, start = self.benign[tg], self.spec.seeds, self.targets.start
        count = benign.graphs.intervals
        sensitive = list(self.run.get("sensitive", []))
        row_seeds = injected["seed"].to_numpy(np.int64)
        attacked, graphs = self._attacked(coded, row_seeds, tg)
        if attacked.size:
            changed = [compute_features(graphs, sensitive), service_weights(graphs)]
        else:
            changed = [benign.features.iloc[:0], benign.weights.iloc[:0]]
        wide = [
            _stacked(values, fresh, attacked, seeds)
            for values, fresh in zip([benign.features, benign.weights], changed, strict=True)
        ]
        windows = self.run.get("exfiltration", [])
        slim = injected[["ts", "bytes", "attack", "path", "policy", "shape"]]
        meta = pd.concat(
            [labels(slim[row_seeds == s], windows, start, tg, count) for s in range(seeds)], ignore_index=True
        )
        meta.insert(0, "interval", np.tile(np.arange(count), seeds))
        meta.insert(1, "start", start + meta["interval"].to_numpy() * tg)
        meta.insert(meta.columns.get_loc("label"), "seed", np.repeat(np.arange(seeds), count))
        meta["split"] = np.tile(split_column(count, self.spec.split), seeds)
        frame = pd.concat([meta, *wide], axis=1)
        write_table(pa.Table.from_pandas(frame, preserve_index=False), self.out.table(tg, rate), self.claim)
        per_attack = injected.drop_duplicates(["seed", "attack"])["policy"].value_counts()
        return {
            "tg": tg,
            "rate": rate,
            "seeds": seeds,
            "intervals": count,
            "attacked": int(frame["label"].sum()),
            "attacks": {c: int(per_attack.get(c, 0)) for c in (ABIDING, VIOLATING)},
            "features": wide[0].shape[1],
        }
