"""Detectors behind one interface (docs/architecture.md#detectors): fit on labelled training tables, then a score
in [0, 1] per interval of the coarsest granularity.

A table set maps a granularity (seconds) to its feature table (docs/architecture.md#feature-tables): rows are intervals
with `start`, `label`, `split` and feature columns. Scores are reported per coarse interval, so every method is
judged on the same intervals.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Self

import numpy as np
import pandas as pd

from mimir.errors import NotFittedError

META = ("interval", "start", "injected_bytes", "attack", "path", "policy", "shape", "seed", "label", "split")

Tables = dict[int, pd.DataFrame]


class Detector:
    """scikit-learn's conventions: parameters are `__init__`'s arguments, stored as given; what is learnt is set by
    `fit` alone, in attributes ending in `_`. Scoring before `fit` raises NotFittedError, naming the detector.

    Subclasses implement `fit` (ending with `threshold_ = validation_threshold(self._score, training)`) and
    `_score`, the scores of a fitted model.
    """

    name = ""
    threshold_: float
    _DROPPED_IN_OLD_MODELS: tuple[str, ...] = ()  # attributes of models pickled before these conventions, now gone

    def fit(self, training: list[Tables]) -> Self:
        """Learn from training runs' table sets (one per rate); choose the threshold on their validation part."""
        raise NotImplementedError

    def _score(self, tables: Tables) -> pd.DataFrame:
        raise NotImplementedError

    def score(self, tables: Tables) -> pd.DataFrame:
        """One row per coarse interval: start, score in [0, 1]."""
        self._check_fitted()
        return self._score(tables)

    @property
    def threshold(self) -> float:
        """Alert where score >= threshold, frozen by fit: the best F1 on the training runs' validation split, or the
        method's own rule (a significance level for `ide` and `oddball`, any new pair for `commsvc`)."""
        self._check_fitted()
        return self.threshold_

    def _check_fitted(self) -> None:
        if "threshold_" not in vars(self):
            raise NotFittedError(f"the {self.name} detector is not fitted: fit it on training tables before scoring")

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Models pickled before fitted attributes took their trailing `_` (results/models/*/model.joblib) load as
        they were: every attribute that is not a parameter was fitted state."""
        parameters = set(inspect.signature(type(self).__init__).parameters) - {"self"}
        for key, value in state.items():
            if key in self._DROPPED_IN_OLD_MODELS:
                continue
            setattr(self, key if key in parameters or key.endswith("_") else f"{key}_", value)


WEIGHT_PREFIX = "w:"  # the service graph's bytes per pair (`w:a>b`): context for the baselines, not features


def feature_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in META and not c.startswith(WEIGHT_PREFIX)]


def weight_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(WEIGHT_PREFIX)]


def by_seed(tables: Tables) -> list[Tables]:
    """A feature table holds every injection of one run and rate (a `seed` column): one table set per injection,
    in seed order, each a run's intervals in time order as the detectors expect."""
    tg = max(tables)
    if "seed" not in tables[tg]:
        return [tables]
    seeds = sorted(tables[tg]["seed"].unique())
    return [{g: t[t["seed"].to_numpy() == s].reset_index(drop=True) for g, t in tables.items()} for s in seeds]


def coarse(tables: Tables) -> tuple[int, pd.DataFrame]:
    tg = max(tables)
    return tg, tables[tg]


def finest_max(tables: Tables, scores: dict[int, np.ndarray]) -> np.ndarray:
    """For each coarse interval, the largest score of the finer intervals inside it (0 where there is none)."""
    tg, table = coarse(tables)
    out = np.zeros(len(table))
    starts = table["start"].to_numpy()
    for fine, fine_table in tables.items():
        if fine == tg:
            continue
        index = np.searchsorted(starts, fine_table["start"].to_numpy(), side="right") - 1
        inside = index >= 0
        np.maximum.at(out, index[inside], scores[fine][inside])
    return out


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (alert where score >= threshold) with the best F1 on these labels; never the one that
    alerts on every row while another threshold detects something (with many attacked rows, alerting on everything
    has an F1 of 2p/(1+p) and would win for a score with no signal)."""
    if labels.sum() == 0:
        return float(scores.max()) + 1e-12 if scores.size else 0.5
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    f1 = 2 * tp / (tp + fp + y.sum())
    last_of_value = np.r_[s[1:] != s[:-1], True]  # a threshold admits every row with the same score
    f1 = np.where(last_of_value, f1, -1)
    if (f1[:-1] > 0).any():  # alerting on every interval detects nothing: never chosen while another one does
        f1[-1] = -1
    return float(s[int(np.argmax(f1))])


def validation_threshold(score: Callable[[Tables], pd.DataFrame], training: list[Tables]) -> float:
    """The threshold with the best F1 on the training runs' validation split, frozen into the model."""
    tg = max(training[0])
    scores, labels = [], []
    for tables in training:
        chosen = tables[tg]["split"].to_numpy() == "validation"
        scores.append(score(tables)["score"].to_numpy()[chosen])
        labels.append(tables[tg]["label"].to_numpy()[chosen])
    return best_f1_threshold(np.concatenate(labels), np.concatenate(scores))
