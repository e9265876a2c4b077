"""Baselines (docs/architecture.md#baselines) on the coarse granularity's service graph (the tables' `w:a>b` columns).

Each turns its raw statistic into [0, 1] the same way where it has no natural scale: the share of benign
training intervals with a smaller statistic (an empirical CDF). Thresholds are chosen on validation, as for
the MIMIR detector; all of them learn from the training split only (the prototype's svcpair baseline also
learned from the test half).
"""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd

from mimir.detectors import Detector, Tables, coarse, validation_threshold, weight_columns
from mimir.entities import INGRESS, OUTSIDE


def _pairs(columns: list[str]) -> list[tuple[str, str]]:
    return [tuple(c[2:].split(">", 1)) for c in columns]  # type: ignore[misc]


class _Baseline(Detector):
    """A statistic of the coarse service graph, learnt from benign training intervals and turned into [0, 1]."""

    def __init__(self, seed: int = 0):
        self.seed = seed  # every method takes the experiment's seed; these statistics draw nothing at random

    def statistic(self, table: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def _learn(self, benign: pd.DataFrame) -> None:
        """Fit on benign training intervals (default: nothing beyond the reference distribution); called by fit."""

    def fit(self, training: list[Tables]) -> Self:
        tg = max(training[0])
        rows = pd.concat([t[tg][(t[tg]["split"] == "train")] for t in training], ignore_index=True)
        benign = rows[rows["label"] == 0].fillna(0.0)
        self._learn(benign)
        self.reference_ = np.sort(self.statistic(benign))
        self.threshold_ = validation_threshold(self._score, training)
        return self

    def to_unit(self, statistic: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.reference_, statistic, side="right") / max(len(self.reference_), 1)

    def _score(self, tables: Tables) -> pd.DataFrame:
        _, table = coarse(tables)
        return pd.DataFrame({"start": table["start"].to_numpy(), "score": self.to_unit(self.statistic(table))})


class VolumeBaseline(_Baseline):
    """Bytes sent to `outside` (and to the load generator) in the interval."""

    name = "volume"

    def statistic(self, table: pd.DataFrame) -> np.ndarray:
        out = [c for c in weight_columns(table) if c.endswith((f">{OUTSIDE}", f">{INGRESS}"))]
        return table[out].fillna(0.0).sum(axis=1).to_numpy() if out else np.zeros(len(table))


class CommunicatingServices(_Baseline):
    """Alert on any service pair that never talked in the training intervals."""

    name = "commsvc"

    def _learn(self, benign: pd.DataFrame) -> None:
        w = weight_columns(benign)
        self.known_ = {c for c in w if (benign[c] > 0).any()}

    def statistic(self, table: pd.DataFrame) -> np.ndarray:
        new = [c for c in weight_columns(table) if c not in self.known_]
        return (table[new].fillna(0.0) > 0).sum(axis=1).to_numpy(dtype=float) if new else np.zeros(len(table))

    def to_unit(self, statistic: np.ndarray) -> np.ndarray:
        return (statistic > 0).astype(float)


class IdeKashima(_Baseline):
    """Idé and Kashima: the principal eigenvector of each interval's (symmetrised) service adjacency over a
    node set fixed in training; score = 1 - |u·r| against the typical pattern r of the last `window` intervals
    (the principal left singular vector of their eigenvectors)."""

    name = "ide"

    def __init__(self, seed: int = 0, window: int = 10):
        self.seed = seed
        self.window = window

    def _learn(self, benign: pd.DataFrame) -> None:
        self.nodes_ = sorted({n for pair in _pairs(weight_columns(benign)) for n in pair})

    def _vectors(self, table: pd.DataFrame) -> np.ndarray:
        index = {n: k for k, n in enumerate(self.nodes_)}
        n = len(self.nodes_)
        a = np.zeros((len(table), n, n))
        for column, (s, d) in zip(weight_columns(table), _pairs(weight_columns(table)), strict=True):
            if s in index and d in index:
                a[:, index[s], index[d]] += table[column].fillna(0.0).to_numpy()
        a = a + a.transpose(0, 2, 1)
        _, vectors = np.linalg.eigh(a)
        u = np.abs(vectors[:, :, -1])  # the principal eigenvector, sign fixed
        empty = a.sum(axis=(1, 2)) == 0
        u[empty] = 0.0
        return u

    def statistic(self, table: pd.DataFrame) -> np.ndarray:
        u = self._vectors(table)
        out = np.zeros(len(table))
        for k in range(len(table)):
            past = u[max(0, k - self.window) : k]
            past = past[np.linalg.norm(past, axis=1) > 0]
            if len(past) == 0 or not u[k].any():
                continue
            r = np.abs(np.linalg.svd(past.T, full_matrices=False)[0][:, 0])
            out[k] = 1.0 - abs(float(u[k] @ r))
        return out

    def to_unit(self, statistic: np.ndarray) -> np.ndarray:
        return np.clip(statistic, 0.0, 1.0)


class OddBall(_Baseline):
    """OddBall's egonet power law E ~ C·N^a (edges against neighbours), fitted on benign training intervals;
    an interval scores its worst node: max(E, CN^a) / min(E, CN^a) · log(|E - CN^a| + 1)."""

    name = "oddball"

    def _egonets(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        pairs = _pairs(weight_columns(table))
        nodes = sorted({n for p in pairs for n in p})
        index = {n: k for k, n in enumerate(nodes)}
        a = np.zeros((len(table), len(nodes), len(nodes)), bool)
        for column, (s, d) in zip(weight_columns(table), pairs, strict=True):
            a[:, index[s], index[d]] |= table[column].fillna(0.0).to_numpy() > 0
        a = a | a.transpose(0, 2, 1)
        neighbours = a.sum(axis=2).astype(float)  # N_i
        inside = np.einsum("kij,kjl,kli->ki", a.astype(float), a.astype(float), a.astype(float)) / 2
        edges = neighbours + inside  # E_i: the spokes plus the edges among the neighbours
        return neighbours, edges

    def _learn(self, benign: pd.DataFrame) -> None:
        n, e = self._egonets(benign)
        keep = (n > 0) & (e > 0)
        if keep.sum() >= 2:
            self.alpha_, log_c = np.polyfit(np.log(n[keep]), np.log(e[keep]), 1)
            self.c_ = float(np.exp(log_c))
        else:
            self.alpha_, self.c_ = 1.0, 1.0

    def statistic(self, table: pd.DataFrame) -> np.ndarray:
        n, e = self._egonets(table)
        expected = self.c_ * np.power(n, self.alpha_, where=n > 0, out=np.zeros_like(n))
        ratio = np.maximum(e, expected) / np.maximum(np.minimum(e, expected), 1e-12)
        out = np.where(n > 0, ratio * np.log(np.abs(e - expected) + 1), 0.0)
        return out.max(axis=1) if out.shape[1] else np.zeros(len(table))


BASELINES = {b.name: b for b in (VolumeBaseline, CommunicatingServices, IdeKashima, OddBall)}
