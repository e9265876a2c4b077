"""Baselines (docs/architecture.md#baselines) on the coarse granularity's service graph (the tables' `w:a>b` columns).

Every baseline learns from the benign `train` intervals only. The volumes and commsvc are one number with a
threshold chosen on validation, like the MIMIR detector. Idé-Kashima and OddBall are unsupervised, as their papers
describe them: the score is the probability, on benign intervals, of a smaller statistic, and an interval alerts at
a significance level `alpha` (score >= 1 - alpha), which no label tunes.
"""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import gamma

from mimir.detectors import WEIGHT_PREFIX, Detector, Tables, coarse, validation_threshold, weight_columns
from mimir.network import INGRESS, OUTSIDE

_FLOOR = 1e-12  # smallest mean dissimilarity: a direction constant in training still gives a proper distribution


def _pairs(columns: list[str]) -> list[tuple[str, str]]:
    return [tuple(c[len(WEIGHT_PREFIX) :].split(">", 1)) for c in columns]  # type: ignore[misc]


def _nodes(table: pd.DataFrame) -> list[str]:
    return sorted({n for pair in _pairs(weight_columns(table)) for n in pair})


def _graph(table: pd.DataFrame, nodes: list[str]) -> np.ndarray:
    """[interval, node, node]: bytes between two nodes in either direction, the undirected weighted service graph
    both papers work on; pairs with a node outside `nodes` are left out."""
    index = {n: k for k, n in enumerate(nodes)}
    columns = weight_columns(table)
    kept = [
        (c, index[s], index[d]) for c, (s, d) in zip(columns, _pairs(columns), strict=True) if {s, d} <= index.keys()
    ]
    a = np.zeros((len(table), len(nodes), len(nodes)))
    if kept:
        kept_columns, sources, destinations = zip(*kept, strict=True)
        a[:, list(sources), list(destinations)] = table[list(kept_columns)].fillna(0.0).to_numpy(dtype=float)
    return a + a.transpose(0, 2, 1)


def _share_below(reference: np.ndarray, statistic: np.ndarray) -> np.ndarray:
    """The share of `reference` (sorted) strictly below each statistic: an empirical CDF where a value tied with the
    benign intervals does not rank above them (a statistic constant in training scores 0 there, not 1)."""
    return np.searchsorted(reference, statistic, side="left") / max(len(reference), 1)


class _Baseline(Detector):
    """A statistic of the coarse service graph, learnt from the benign training intervals and turned into [0, 1]."""

    learns_from: tuple[str, ...] = ("train",)  # the training run's splits whose benign intervals are learnt

    def __init__(self, seed: int = 0):
        self.seed = seed  # every method takes the experiment's seed; these statistics draw nothing at random

    def statistic(self, table: pd.DataFrame) -> np.ndarray:
        """One value per interval of the table (in time order, for the statistics with a memory)."""
        raise NotImplementedError

    def _learn(self, tables: list[pd.DataFrame], benign: list[np.ndarray]) -> None:
        """What the statistic needs from the benign training intervals (`benign`: a mask per table); default none."""

    def _calibrate(self, statistic: np.ndarray) -> None:
        """The statistic's distribution on the benign training intervals."""
        self.reference_ = np.sort(statistic)

    def to_unit(self, statistic: np.ndarray) -> np.ndarray:
        return _share_below(self.reference_, statistic)

    def _threshold(self, training: list[Tables]) -> float:
        return validation_threshold(self._score, training)

    def fit(self, training: list[Tables]) -> Self:
        tables = [coarse(t)[1] for t in training]
        benign = [np.isin(t["split"].to_numpy(), self.learns_from) & (t["label"].to_numpy() == 0) for t in tables]
        self._learn(tables, benign)
        self._calibrate(np.concatenate([self.statistic(t)[b] for t, b in zip(tables, benign, strict=True)]))
        self.threshold_ = self._threshold(training)
        return self

    def _score(self, tables: Tables) -> pd.DataFrame:
        _, table = coarse(tables)
        return pd.DataFrame({"start": table["start"].to_numpy(), "score": self.to_unit(self.statistic(table))})


class _Volume(_Baseline):
    """Bytes sent to some destinations in the interval."""

    destinations: ClassVar[tuple[str, ...]]

    def statistic(self, table: pd.DataFrame) -> np.ndarray:
        out = [c for c in weight_columns(table) if c.endswith(tuple(f">{d}" for d in self.destinations))]
        return table[out].fillna(0.0).sum(axis=1).to_numpy(dtype=float)


class VolumeEgress(_Volume):
    """Bytes sent to `outside`: exfiltration over egress, benign or not, adds to them."""

    name = "volume-egress"
    destinations = (OUTSIDE,)


class VolumeExits(_Volume):
    """Bytes leaving the application either way: to `outside` and in the responses to clients (`ingress`)."""

    name = "volume-exits"
    destinations = (OUTSIDE, INGRESS)


class CommunicatingServices(_Baseline):
    """Alert on any service pair that never talked in the training intervals: what a network policy derived from
    benign traffic enforces. The rule is the threshold (score 1 on a new pair), never tuned on validation, where a
    high share of attacked intervals would make alerting on everything look best."""

    name = "commsvc"
    # the policy is every pair of the training run's benign traffic, as the attacker's policy is: no validation
    # split is needed to choose a threshold, so the whole run is learnt
    learns_from = ("train", "validation")

    def _threshold(self, training: list[Tables]) -> float:
        return 1.0

    def _learn(self, tables: list[pd.DataFrame], benign: list[np.ndarray]) -> None:
        # sorted, not a set: a set is pickled in hash order, which differs between processes, and the model file
        # must be the same bytes on every run
        self.known_ = sorted(
            {c for t, b in zip(tables, benign, strict=True) for c in weight_columns(t) if (t[c][b] > 0).any()}
        )

    def statistic(self, table: pd.DataFrame) -> np.ndarray:
        known = set(self.known_)
        new = [c for c in weight_columns(table) if c not in known]
        return (table[new].fillna(0.0) > 0).sum(axis=1).to_numpy(dtype=float)

    def to_unit(self, statistic: np.ndarray) -> np.ndarray:
        return (statistic > 0).astype(float)


class _Significance(_Baseline):
    """An unsupervised method, as its paper describes it: the score is the probability of a smaller statistic on
    benign intervals and the threshold 1 - alpha, a test at significance level alpha, so that benign intervals
    alert at a rate of about alpha whatever the labels of a small validation split say."""

    alpha: float

    def _threshold(self, training: list[Tables]) -> float:
        return 1.0 - self.alpha


class IdeKashima(_Significance):
    """Idé and Kashima (KDD 2004): the activity vector u(t) is the principal eigenvector of the interval's symmetric
    dependency matrix (bytes) over the nodes seen in training; the typical pattern r(t) the principal left singular
    vector of the previous `window` activity vectors; the dissimilarity z(t) = 1 - r(t)ᵀu(t). z follows a gamma
    (scaled chi-squared) law fitted by moments on the benign training intervals; the score is its CDF."""

    name = "ide"

    def __init__(self, seed: int = 0, alpha: float = 0.01, window: int = 10):
        self.seed = seed
        self.alpha = alpha
        self.window = window

    def _learn(self, tables: list[pd.DataFrame], benign: list[np.ndarray]) -> None:
        active = {c for t, b in zip(tables, benign, strict=True) for c in weight_columns(t) if (t[c][b] > 0).any()}
        self.nodes_ = sorted({n for pair in _pairs(sorted(active)) for n in pair})

    def activity(self, table: pd.DataFrame) -> np.ndarray:
        """[interval, node]: u(t), non-negative (Perron-Frobenius) and of unit length; 0 for an interval without
        traffic."""
        a = _graph(table, self.nodes_)
        u = np.abs(np.linalg.eigh(a)[1][..., -1])
        u[~a.any(axis=(1, 2))] = 0.0
        return u

    def statistic(self, table: pd.DataFrame) -> np.ndarray:
        """z(t), NaN where it is undefined: no traffic in the interval or in the window before it."""
        u = self.activity(table)
        padded = np.concatenate([np.zeros((self.window, u.shape[1])), u])
        past = sliding_window_view(padded, self.window, axis=0)[: len(u)]  # [t, node, k]: u(t - window + k)
        r = np.abs(np.linalg.eigh(past @ past.transpose(0, 2, 1))[1][..., -1])  # the left singular vector of U(t-1)
        defined = u.any(axis=1) & past.any(axis=(1, 2))
        z = np.clip(1.0 - np.einsum("tn,tn->t", r, u), 0.0, 1.0)
        return np.where(defined, z, np.nan)

    def _calibrate(self, statistic: np.ndarray) -> None:
        """Moment matching of q(z) ∝ z^(n/2 - 1) exp(-z / 2Σ): n = 2<z>² / var z, Σ = var z / 2<z>."""
        z = statistic[~np.isnan(statistic)]
        z = z if z.size else np.zeros(1)
        mean = max(float(z.mean()), _FLOOR)
        variance = max(float(z.var()), _FLOOR * mean)
        self.dimension_ = 2 * mean**2 / variance
        self.sigma_ = variance / (2 * mean)

    def to_unit(self, statistic: np.ndarray) -> np.ndarray:
        score = gamma.cdf(np.nan_to_num(statistic), a=self.dimension_ / 2, scale=2 * self.sigma_)
        return np.where(np.isnan(statistic), 0.0, score)


LAWS = ("EDPL", "EWPL", "ELWPL")  # OddBall's egonet laws: E ∝ N^alpha, W ∝ E^beta, λ_w ∝ W^gamma


def egonets(a: np.ndarray) -> np.ndarray:
    """[interval, node, feature] of the weighted undirected graphs `a` [interval, node, node]: OddBall's N (neighbours),
    E (edges of the egonet: the node, its neighbours and every edge among them), W (their total weight) and λ_w (the
    principal eigenvalue of the egonet's weighted adjacency matrix)."""
    b = (a > 0).astype(float)
    neighbours = b.sum(axis=2)
    edges = neighbours + np.einsum("tij,tjk,tki->ti", b, b, b, optimize=True) / 2
    weight = a.sum(axis=2) + np.einsum("tij,tjk,tki->ti", b, a, b, optimize=True) / 2
    member = b + np.eye(a.shape[1])  # [t, ego, node]: 1 inside the ego's egonet
    chunk = max(1, 2**22 // max(a.shape[1], 1) ** 3)  # intervals per batch of [ego, node, node] matrices
    eigenvalue = [
        np.linalg.eigvalsh(a[s : s + chunk, None] * member[s : s + chunk, :, :, None] * member[s : s + chunk, :, None])
        for s in range(0, len(a), chunk)
    ]
    largest = np.concatenate([e[..., -1] for e in eigenvalue]) if eigenvalue else np.zeros_like(neighbours)
    return np.stack([neighbours, edges, weight, largest], axis=2)


class OddBall(_Significance):
    """Akoglu, McGlohon and Faloutsos (PAKDD 2010): each node's egonet against three power laws fitted (log-log least
    squares) on the benign training node-intervals; a node's out-line score per law is
    max(y, Cx^θ) / min(y, Cx^θ) · log(|y - Cx^θ| + 1), and an interval's statistic per law its worst node. The laws
    count edges and bytes, so each is ranked among the benign training intervals before the interval takes its most
    extreme law; the score is that maximum's empirical CDF over the benign training intervals."""

    name = "oddball"

    def __init__(self, seed: int = 0, alpha: float = 0.01):
        self.seed = seed
        self.alpha = alpha

    def _learn(self, tables: list[pd.DataFrame], benign: list[np.ndarray]) -> None:
        features = np.concatenate(
            [egonets(_graph(t[b], _nodes(t))).reshape(-1, 4) for t, b in zip(tables, benign, strict=True)]
        )
        features = features[features[:, 0] > 0]  # nodes without a neighbour have no egonet
        self.laws_ = np.zeros((len(LAWS), 2))  # per law: θ, log C
        for k in range(len(LAWS)):
            x, y = np.log(features[:, k]), np.log(features[:, k + 1])
            if x.size > 1 and np.ptp(x) > 0:
                self.laws_[k] = np.polyfit(x, y, 1)
            else:  # x never varies in training: no slope to fit, the law is y's typical value
                self.laws_[k] = 0.0, y.mean() if y.size else 0.0

    def statistic(self, table: pd.DataFrame) -> np.ndarray:
        """[interval, law]: the worst node's out-line score."""
        f = egonets(_graph(table, _nodes(table)))
        ego = f[..., :1] > 0  # nodes without a neighbour have no egonet (and x = y = 0)
        x, y = np.where(ego, f[..., :3], 1.0), np.where(ego, f[..., 1:], 1.0)
        log_expected = self.laws_[:, 1] + self.laws_[:, 0] * np.log(x)
        ratio = np.exp(np.abs(np.log(y) - log_expected))  # max(y, Cx^θ) / min(y, Cx^θ)
        outline = np.where(ego, ratio * np.log(np.abs(y - np.exp(log_expected)) + 1), 0.0)
        return outline.max(axis=1, initial=0.0)

    def _law_ranks(self, statistic: np.ndarray) -> np.ndarray:
        """Per interval, its most extreme law: the largest rank of a law's statistic among the benign intervals."""
        ranks = [_share_below(self.laws_reference_[:, k], statistic[:, k]) for k in range(len(LAWS))]
        return np.max(ranks, axis=0, initial=0.0)

    def _calibrate(self, statistic: np.ndarray) -> None:
        self.laws_reference_ = np.sort(statistic, axis=0)
        self.reference_ = np.sort(self._law_ranks(statistic))

    def to_unit(self, statistic: np.ndarray) -> np.ndarray:
        return _share_below(self.reference_, self._law_ranks(statistic))


BASELINES = {b.name: b for b in (VolumeEgress, VolumeExits, CommunicatingServices, IdeKashima, OddBall)}
