"""Labelled feature tables (docs/architecture.md#feature-tables): per run, one injection per rate, the same
injected seconds aggregated to every granularity, the features of every interval, its label, attack and split.

    OUT/attacks/{rate}.parquet            the injected traffic, per attack, second and concrete edge
    OUT/features/{tg}s/{rate}.parquet     one row per interval: features, label, attack, path, split
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mimir.attacks import (
    InjectionConfig,
    Targets,
    active_pods,
    allowed_graph,
    attack_paths,
    inject,
    policy_graph,
    run_seed,
)
from mimir.capture.ingest import recorded_bin
from mimir.entities import POD, VIP
from mimir.errors import IOFailure, UsageError
from mimir.features import compute_features
from mimir.graphs import CodedEdges, Graphs, build_graphs
from mimir.io import atomic_path
from mimir.spec import FeatureSpec, check_granularities, rate_name


def parse_split(text: str) -> dict[str, float]:
    """`train=0.6,validation=0.2,test=0.2` → shares in time order (they must add up to 1)."""
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
    """Where one build writes: `ROOT/attacks/{rate}.parquet` and `ROOT/features/{tg}s/{rate}.parquet`."""

    root: Path

    def attacks(self, rate: float) -> Path:
        return self.root / "attacks" / f"{rate_name(rate)}.parquet"

    def table(self, tg: int, rate: float) -> Path:
        return self.root / "features" / f"{tg}s" / f"{rate_name(rate)}.parquet"


def _read(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowInvalid) as e:
        raise IOFailure(f"{path}: cannot read the table: {e}") from None


def labels(injected: pd.DataFrame, windows: list[dict], start: int, tg: int, count: int) -> pd.DataFrame:
    """Per interval: injected bytes, label (injected bytes or a physical window overlapping), attack and path."""
    out = pd.DataFrame({"injected_bytes": np.zeros(count), "attack": -1, "path": ""})
    if not injected.empty:
        k = (injected["ts"].to_numpy() - start) // tg
        inside = (k >= 0) & (k < count)
        part = injected[inside].assign(interval=k[inside])
        grouped = part.groupby("interval").agg(injected_bytes=("bytes", "sum"), attack=("attack", "min"))
        out.loc[grouped.index, "injected_bytes"] = grouped["injected_bytes"].to_numpy()
        out.loc[grouped.index, "attack"] = grouped["attack"].to_numpy()
        path = part.drop_duplicates("attack").set_index("attack")["path"]
        chosen = out["attack"] >= 0
        out.loc[chosen, "path"] = path.reindex(out.loc[chosen, "attack"]).to_numpy()
    label = out["injected_bytes"].to_numpy() > 0
    begin = start + np.arange(count) * tg
    for w in windows:  # physical exfiltration recorded by the run
        overlap = (begin < w["end"]) & (begin + tg > w["start"])
        fresh = overlap & (out["attack"].to_numpy() < 0)
        out.loc[fresh, "path"] = ">".join(w["path"])
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


@dataclass(frozen=True)
class FeatureInputs:
    """What one build reads: a run's edges (binned per `bin_seconds`), its bundle, and what defines attack paths.

    The paths come from `benign_edges` (an evaluation run learns them from its training run), else from `policy`
    (allowed service pairs), else from the run's own edges.
    """

    edges: Path
    run_dir: Path
    bin_seconds: int
    benign_edges: Path | None = None
    policy: Path | None = None


def build(inputs: FeatureInputs, out: FeatureOutputs, spec: FeatureSpec, *, seed: int, jobs: int = 1) -> dict:
    """Every rate of `spec` on one run: one injection per rate, its table at every granularity."""
    recorded = recorded_bin(inputs.edges)
    if inputs.bin_seconds != recorded:
        raise UsageError(f"{inputs.edges}: the edges were binned per {recorded} s, not per {inputs.bin_seconds} s")
    check_granularities(spec.granularities, recorded, "granularities")
    edges = _read(inputs.edges)
    try:
        run = json.loads((inputs.run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise IOFailure(f"{inputs.run_dir / 'run.json'}: cannot read: {e}") from None
    benign = _read(inputs.benign_edges) if inputs.benign_edges else edges
    calls = set(benign.loc[(benign["src_kind"] == POD) & (benign["dst_kind"] == VIP), ["src_service", "dst_service"]]
                .drop_duplicates().itertuples(index=False, name=None))  # fmt: skip
    allowed = policy_graph(inputs.policy) if inputs.policy else allowed_graph(benign)
    paths = attack_paths(allowed, list(run.get("sensitive", [])), spec.max_path_length)
    cfg = InjectionConfig.from_spec(spec, seed)
    start, end = int(np.floor(run["start"])), float(run["end"])
    targets = Targets(paths, *active_pods(edges), calls, start, int(end))
    _SHARED["job"] = _RateJob(CodedEdges.from_edges(edges), targets, end, run, inputs.run_dir.name, out, spec, cfg)
    try:
        if jobs > 1 and len(spec.rates) > 1:  # forked workers inherit the tables instead of receiving pickled copies
            with ProcessPoolExecutor(min(jobs, len(spec.rates)), mp_context=get_context("fork")) as pool:
                done = list(pool.map(_shared_job, spec.rates))
        else:
            done = [_shared_job(rate) for rate in spec.rates]
    finally:
        _SHARED.clear()
    paths_text = [">".join(p) for p in paths]
    return {"run": inputs.run_dir.name, "paths": paths_text, "tables": [t for tables in done for t in tables]}


_SHARED: dict[str, Any] = {}


def _shared_job(rate: float) -> list[dict]:
    return _SHARED["job"](rate)


@dataclass(frozen=True)
class _RateJob:
    """Everything one rate of a build shares with the others, computed once before the rates fan out."""

    edges: CodedEdges
    targets: Targets  # the run's span from targets.start; the last second may be partial, so:
    end: float
    run: dict
    name: str
    out: FeatureOutputs
    spec: FeatureSpec
    cfg: InjectionConfig

    def __call__(self, rate: float) -> list[dict]:
        """Inject one rate, then compute and write its table for every granularity."""
        injected = inject(self.targets, rate, run_seed(self.name, rate, self.cfg.seed), self.cfg)
        with atomic_path(self.out.attacks(rate)) as tmp:
            pq.write_table(pa.Table.from_pandas(injected, preserve_index=False), tmp, compression="zstd")
        combined = self.edges.with_rows(injected)
        return [self._table(combined, injected, tg, rate) for tg in self.spec.granularities]

    def _table(self, combined: CodedEdges, injected: pd.DataFrame, tg: int, rate: float) -> dict:
        start = self.targets.start
        graphs = build_graphs(combined, start, self.end, tg)
        table = compute_features(graphs, list(self.run.get("sensitive", [])))
        meta = labels(injected, self.run.get("exfiltration", []), start, tg, graphs.intervals)
        meta.insert(0, "start", start + np.arange(graphs.intervals) * tg)
        meta["split"] = split_column(graphs.intervals, self.spec.split)
        frame = pd.concat([meta, table.reset_index(drop=True), service_weights(graphs)], axis=1)
        frame.insert(0, "interval", np.arange(graphs.intervals))
        with atomic_path(self.out.table(tg, rate)) as tmp:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, compression="zstd")
        return {
            "tg": tg,
            "rate": rate,
            "intervals": graphs.intervals,
            "attacked": int(frame["label"].sum()),
            "features": table.shape[1],
        }
