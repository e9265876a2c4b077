"""A trained model scored interval by interval as traffic arrives (docs/architecture.md#live).

Packets are counted into 1 s flow bins by the batch path's own kernel (`FlowTable`); when the capture clock has
passed an interval's end by the lateness allowance, its bins are resolved to entities (`edges.resolve_flows`),
aggregated to every granularity of the model (`graphs.build_graphs`), and their features computed
(`features.compute_features`) and scored (`Detector.score`) exactly as the batch path computes a whole run's: a
coarse interval's features depend only on its own edges, so live and batch rows are the same numbers.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa

from mimir.capture.flowtable import FlowTable
from mimir.capture.formats import RecordBlock
from mimir.dataset import service_weights
from mimir.detectors import Detector, Tables
from mimir.detectors.registry import METHODS
from mimir.edges import resolve_flows
from mimir.entities import Addressing
from mimir.errors import UsageError
from mimir.features import compute_features
from mimir.graphs import CodedEdges, build_graphs
from mimir.spec import split_method

BIN_SECONDS = 1  # the flows' bin of the batch path (config ingest.bin): every granularity is made of these
TOP_FEATURES = 3  # contributing features reported per scored interval
TOP_PAIRS = 3  # service pairs reported per contributing feature
FLOW_KEYS = ["ts", "src", "dst"]


@dataclass(frozen=True)
class LiveModel:
    """A model the workflow trained (results/models/METHOD/TRAINING/): the detector, its card, and what live
    scoring needs from the card: granularities, threshold, the training run's sensitive services."""

    detector: Detector
    card: dict[str, Any]
    granularities: tuple[int, ...]
    sensitive: tuple[str, ...]

    @property
    def coarse(self) -> int:
        return self.granularities[-1]

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold)

    @classmethod
    def load(cls, folder: Path, sensitive: list[str] | None = None) -> LiveModel:
        """The model in `folder` (model.joblib and model.json, written by the workflow's rule model, never from
        outside: joblib unpickles); errors name the file. `sensitive` overrides the card's (older cards have none)."""
        card_path, model_path = folder / "model.json", folder / "model.joblib"
        for path in (card_path, model_path):
            if not path.is_file():
                raise UsageError(
                    f"--model {folder}: no {path.name}: not a model folder (results/models/METHOD/TRAINING/ of the "
                    "workflow)"
                )
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"{card_path}: not a model card: {e}") from None
        if not isinstance(card, dict) or split_method(str(card.get("method")))[0] not in METHODS:
            raise UsageError(f"{card_path}: key 'method': not one of {', '.join(METHODS)} (or METHOD@SECONDS)")
        tgs = card.get("granularities")
        if not isinstance(tgs, list) or not tgs or not all(isinstance(g, int) and g >= 1 for g in tgs):
            raise UsageError(f"{card_path}: key 'granularities': not a list of whole seconds")
        tgs = sorted(tgs)
        if any(tgs[-1] % g for g in tgs):
            raise UsageError(
                f"{card_path}: granularities {tgs}: live scoring needs each to divide the coarsest, {tgs[-1]} s, so "
                "that a coarse interval closes with every finer interval inside it"
            )
        if sensitive is None:
            if "sensitive" not in card:
                raise UsageError(
                    f"{card_path}: the card does not name the training run's sensitive services (a model from an "
                    "older mimir): give them with --sensitive, or train the model again"
                )
            sensitive = list(card["sensitive"])
        detector = joblib.load(model_path)  # a file of the workflow's, as experiment.score_runs loads it
        if not isinstance(detector, Detector):
            raise UsageError(f"{model_path}: holds a {type(detector).__name__}, not a mimir detector")
        return cls(detector, card, tuple(tgs), tuple(sorted(sensitive)))


@dataclass
class Scored:
    """One scored coarse interval: what `mimir live` writes as a JSON line."""

    start: int
    end: int
    score: float
    threshold: float
    alert: bool
    packets: int
    bytes: int
    partial: bool
    top_features: list[dict[str, Any]]
    unknown: list[str]  # in-cluster addresses no entity held in the interval
    features: dict[int, pd.DataFrame] = field(repr=False)  # per granularity: the feature rows (tests, dry runs)

    def record(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "score": self.score,
            "threshold": self.threshold,
            "alert": self.alert,
            "packets": self.packets,
            "bytes": self.bytes,
            "partial": self.partial,
            "top_features": self.top_features,
            "unknown_addresses": self.unknown,
        }


def interval_tables(
    flows: pa.Table,
    spans: pd.DataFrame,
    addressing: Addressing,
    start: int,
    model: LiveModel,
    *,
    keep_infra: bool = False,
) -> tuple[Tables, pd.DataFrame, dict]:
    """The feature table set of the coarse interval [start, start + coarse) from its 1 s flow bins: per
    granularity, one row per interval with `start`, the features and the service weights; and the interval's
    service graph (for the pairs behind a feature) and the edge summary (unknown addresses)."""
    edges, summary = resolve_flows(flows, spans, addressing, bin_seconds=BIN_SECONDS, keep_infra=keep_infra)
    coded = CodedEdges.from_edges(edges)
    tables: Tables = {}
    service_graph = pd.DataFrame(columns=["src", "dst", "bytes"])
    for tg in model.granularities:
        graphs = build_graphs(coded, start, start + model.coarse, tg, BIN_SECONDS)
        values = compute_features(graphs, list(model.sensitive))
        weights = service_weights(graphs)
        meta = pd.DataFrame(
            {"interval": np.arange(graphs.intervals), "start": start + np.arange(graphs.intervals) * tg}
        )
        tables[tg] = pd.concat([meta, values.reset_index(drop=True), weights], axis=1)
        if tg == model.coarse:
            service_graph = graphs.service_edges()
    return tables, service_graph, summary


def _services_of(feature: str) -> tuple[str, ...]:
    """The services a feature is about: `reciprocity:a|b`, `edge_cv:a>b`, `harmonic:s`, ..."""
    _, _, about = feature.partition(":")
    for sep in ("|", ">"):
        if sep in about:
            return tuple(about.split(sep, 1))
    return (about,)


def _pairs_behind(feature: str, service_graph: pd.DataFrame) -> list[dict[str, Any]]:
    """The service pairs of the interval that a feature is computed from, the heaviest first."""
    services = _services_of(feature)
    s = service_graph[service_graph["src"] != service_graph["dst"]]
    if len(services) == 2:
        a, b = services
        ordered = feature.startswith("edge_cv:")
        chosen = ((s["src"] == a) & (s["dst"] == b)) | (~ordered & (s["src"] == b) & (s["dst"] == a))
    else:
        chosen = (s["src"] == services[0]) | (s["dst"] == services[0])
    top = s[chosen].sort_values(["bytes", "src", "dst"], ascending=[False, True, True]).head(TOP_PAIRS)
    return [{"src": a, "dst": b, "bytes": int(w)} for a, b, w in zip(top["src"], top["dst"], top["bytes"], strict=True)]


def contributions(detector: Detector, tables: Tables) -> list[tuple[str, int, float, float]]:
    """(feature, granularity, value, contribution) of every feature the model weighs: coefficient times scaled value
    for the linear models (at each granularity, in its highest-scoring interval), the scaled value's size for the
    isolation forest; none for the baselines, whose score is one statistic."""
    out = []
    models = getattr(detector, "models_", None)
    if models is not None:
        for tg, table in tables.items():
            model = models[tg]
            coef = getattr(model, "coef_", None)
            if coef is None:
                continue
            x = detector._x(table, tg)  # the model's own scaled inputs
            weights = np.ravel(coef)
            row = int(np.argmax(x @ weights))
            raw = table.reindex(columns=detector.columns_[tg], fill_value=0.0).to_numpy(float)[row]
            out += [
                (c, tg, float(v), float(w * z))
                for c, v, w, z in zip(detector.columns_[tg], raw, weights, x[row], strict=True)
            ]
    elif hasattr(detector, "forest_"):
        tg = max(tables)
        x = detector._x(tables[tg])[0]
        raw = tables[tg].reindex(columns=detector.columns_, fill_value=0.0).to_numpy(float)[0]
        out = [(c, tg, float(v), float(abs(z))) for c, v, z in zip(detector.columns_, raw, x, strict=True)]
    return out


def top_features(detector: Detector, tables: Tables, service_graph: pd.DataFrame) -> list[dict[str, Any]]:
    """The features that pushed the score up most, each with the service pairs behind it."""
    ranked = sorted((c for c in contributions(detector, tables) if c[3] > 0), key=lambda c: (-c[3], c[0], c[1]))
    return [
        {"feature": name, "granularity": tg, "value": value, "contribution": weight,
         "pairs": _pairs_behind(name, service_graph)}
        for name, tg, value, weight in ranked[:TOP_FEATURES]
    ]  # fmt: skip


class IntervalScorer:
    """1 s flow bins in, scored coarse intervals out.

    `add` (the capture thread) counts records into the current flow table; `close_until` (the scoring thread)
    takes the table, keeps the bins of intervals still open, and scores every interval that has closed. Bins of an
    interval already scored are late: dropped and counted. Memory holds the open intervals' bins only.
    """

    def __init__(self, model: LiveModel, *, origin: int | None = None, keep_infra: bool = False):
        self.model = model
        self.origin = origin  # intervals start at origin + k·coarse; by default the first packet's, aligned
        self.keep_infra = keep_infra
        self.next_start: int | None = None  # the earliest interval not yet scored
        self.first_ts: float | None = None
        self.last_ts = -math.inf  # the capture clock: the latest packet time seen
        self.packets = 0
        self.bytes = 0
        self.late_packets = 0
        self._table = FlowTable(BIN_SECONDS)
        self._pending: pa.Table | None = None  # open intervals' bins, kept from the last close
        self._lock = threading.Lock()

    def add(self, buf: np.ndarray, records: RecordBlock, n: int) -> None:
        """Count n records (their bytes in buf) into the current flow table."""
        if not n:
            return
        stamps = records.sec[:n] + records.nsec[:n] * 1e-9
        with self._lock:
            self._table.add(buf, records, n)
            first, last = float(stamps.min()), float(stamps.max())
            if self.first_ts is None:
                self.first_ts = first
                if self.origin is None:
                    self.origin = math.floor(first / self.model.coarse) * self.model.coarse
                self.next_start = self.origin
            self.first_ts = min(self.first_ts, first)
            self.last_ts = max(self.last_ts, last)
            self.packets += n
            self.bytes += int(records.origlen[:n].sum())

    def _take(self) -> pa.Table:
        """The bins counted since the last call, with the open intervals' bins kept from before."""
        with self._lock:
            table, self._table = self._table, FlowTable(BIN_SECONDS)
        fresh = table.to_arrow()
        return fresh if self._pending is None else pa.concat_tables([self._pending, fresh])

    def close_until(
        self, clock: float, spans: pd.DataFrame, addressing: Addressing, *, final: bool = False
    ) -> list[Scored]:
        """Score every interval that ends at or before `clock` (capture time, lateness already subtracted); with
        `final`, also the last one the capture reached (partial)."""
        coarse = self.model.coarse
        if self.next_start is None or (not final and self.next_start + coarse > clock):
            return []  # nothing closes: the bins stay in the flow table, counted in place
        flows = self._take()
        ts = flows.column("ts").to_numpy() if flows.num_rows else np.zeros(0, np.int64)
        late = ts < self.next_start
        if late.any():
            self.late_packets += int(pa.compute.sum(flows.filter(pa.array(late)).column("packets")).as_py())
            flows = flows.filter(pa.array(~late))
            ts = ts[~late]
        last = self.last_ts if final else clock
        ends = []
        while self.next_start + coarse <= clock or (final and self.next_start <= last):
            ends.append(self.next_start)
            self.next_start += coarse
        scored = []
        for start in ends:
            inside = (ts >= start) & (ts < start + coarse)
            scored.append(self._score(flows.filter(pa.array(inside)), start, spans, addressing, start + coarse > last))
        keep = ts >= self.next_start
        self._pending = flows.filter(pa.array(keep))
        return scored

    def _score(self, flows: pa.Table, start: int, spans: pd.DataFrame, addressing: Addressing, partial: bool) -> Scored:
        model = self.model
        tables, service_graph, summary = interval_tables(
            flows, spans, addressing, start, model, keep_infra=self.keep_infra
        )
        score = float(model.detector.score(tables)["score"].to_numpy()[0])
        packets = int(pa.compute.sum(flows.column("packets")).as_py() or 0) if flows.num_rows else 0
        size = int(pa.compute.sum(flows.column("bytes")).as_py() or 0) if flows.num_rows else 0
        return Scored(
            start=start,
            end=start + model.coarse,
            score=score,
            threshold=model.threshold,
            alert=score >= model.threshold,
            packets=packets,
            bytes=size,
            partial=partial,
            top_features=top_features(model.detector, tables, service_graph),
            unknown=summary["unknown_in_cluster_addresses"],
            features=tables,
        )
