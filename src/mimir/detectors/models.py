"""The MIMIR detector, the prototype's Lasso variant, and the unsupervised isolation forest on the same features."""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LassoCV, LogisticRegression
from sklearn.preprocessing import RobustScaler

from mimir.detectors import Detector, Tables, coarse, feature_columns, finest_max, validation_threshold


def _rows(training: list[Tables], tg: int, split: str) -> pd.DataFrame:
    parts = [t[tg][t[tg]["split"] == split] for t in training]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


class _PerGranularity(Detector):
    """Robust scaling fitted on benign training intervals, then one model per granularity; the coarse interval's
    inputs are [the largest score of the finer intervals inside it, its own score]."""

    seed: int
    columns_: dict[int, list[str]]
    scalers_: dict[int, RobustScaler]
    models_: dict[int, object]

    def _x(self, table: pd.DataFrame, tg: int) -> np.ndarray:
        x = table.reindex(columns=self.columns_[tg], fill_value=0.0).to_numpy(dtype=float)
        return self.scalers_[tg].transform(x)

    def _fit_granularities(self, training: list[Tables]) -> None:
        self.columns_, self.scalers_, self.models_ = {}, {}, {}
        for tg in training[0]:
            rows = _rows(training, tg, "train")
            self.columns_[tg] = sorted({c for t in training for c in feature_columns(t[tg])})
            x = rows.reindex(columns=self.columns_[tg], fill_value=0.0).to_numpy(dtype=float)
            y = rows["label"].to_numpy()
            benign = x[y == 0] if (y == 0).any() else x
            self.scalers_[tg] = RobustScaler().fit(benign)
            self.models_[tg] = self._fit_one(self.scalers_[tg].transform(x), y)

    def _stack_inputs(self, tables: Tables) -> np.ndarray:
        scores = {tg: self._predict(self.models_[tg], self._x(t, tg)) for tg, t in tables.items()}
        tg, _ = coarse(tables)
        return np.column_stack([finest_max(tables, scores), scores[tg]])

    def _fit_one(self, x: np.ndarray, y: np.ndarray) -> object:
        raise NotImplementedError

    def _predict(self, model: object, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class MimirDetector(_PerGranularity):
    """L1 logistic regression per granularity; a stacker over [max of finer scores, coarse score]."""

    name = "mimir"
    stacker_: LogisticRegression | None

    def __init__(self, c: float = 1.0, seed: int = 0):
        self.c = c
        self.seed = seed

    def _fit_one(self, x: np.ndarray, y: np.ndarray) -> object:
        if len(set(y)) < 2:
            return float(y.mean()) if y.size else 0.0
        model = LogisticRegression(
            l1_ratio=1.0, solver="liblinear", C=self.c, class_weight="balanced", random_state=self.seed, max_iter=1000
        )
        return model.fit(x, y)

    def _predict(self, model: object, x: np.ndarray) -> np.ndarray:
        if isinstance(model, float):
            return np.full(x.shape[0], model)
        return model.predict_proba(x)[:, 1]

    def fit(self, training: list[Tables]) -> Self:
        self._fit_granularities(training)
        tg = max(training[0])
        x = np.vstack([self._stack_inputs(t)[t[tg]["split"].to_numpy() == "train"] for t in training])
        y = np.concatenate([t[tg].loc[t[tg]["split"] == "train", "label"].to_numpy() for t in training])
        self.stacker_ = LogisticRegression(random_state=self.seed).fit(x, y) if len(set(y)) == 2 else None
        self.threshold_ = validation_threshold(self._score, training)
        return self

    def _score(self, tables: Tables) -> pd.DataFrame:
        x = self._stack_inputs(tables)
        _, table = coarse(tables)
        score = self.stacker_.predict_proba(x)[:, 1] if self.stacker_ is not None else x.max(axis=1)
        return pd.DataFrame({"start": table["start"].to_numpy(), "score": score})


class LassoDetector(_PerGranularity):
    """The prototype's model: LassoCV regression on the 0/1 labels, clipped into [0, 1]; the larger of the
    finest and the coarse prediction (the prototype's ensemble), with the threshold on validation."""

    name = "lasso"
    _DROPPED_IN_OLD_MODELS = ("c", "stacker")  # it inherited the MIMIR detector's, and used neither

    def __init__(self, seed: int = 0):
        self.seed = seed

    def _fit_one(self, x: np.ndarray, y: np.ndarray) -> object:
        if len(set(y)) < 2:
            return float(y.mean()) if y.size else 0.0
        return LassoCV(cv=3, random_state=self.seed, max_iter=5000).fit(x, y)

    def _predict(self, model: object, x: np.ndarray) -> np.ndarray:
        if isinstance(model, float):
            return np.full(x.shape[0], model)
        return np.clip(model.predict(x), 0.0, 1.0)

    def fit(self, training: list[Tables]) -> Self:
        self._fit_granularities(training)
        self.threshold_ = validation_threshold(self._score, training)
        return self

    def _score(self, tables: Tables) -> pd.DataFrame:
        x = self._stack_inputs(tables)
        _, table = coarse(tables)
        return pd.DataFrame({"start": table["start"].to_numpy(), "score": x.max(axis=1)})


class IsolationForestDetector(Detector):
    """Unsupervised: an isolation forest on benign training intervals of the coarse granularity; the score is
    the share of benign training intervals that look less anomalous (an empirical CDF, in [0, 1])."""

    name = "iforest"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def _x(self, table: pd.DataFrame) -> np.ndarray:
        return self.scaler_.transform(table.reindex(columns=self.columns_, fill_value=0.0).to_numpy(dtype=float))

    def fit(self, training: list[Tables]) -> Self:
        tg = max(training[0])
        rows = _rows(training, tg, "train")
        rows = rows[rows["label"] == 0]
        self.columns_ = sorted({c for t in training for c in feature_columns(t[tg])})
        self.scaler_ = RobustScaler().fit(rows.reindex(columns=self.columns_, fill_value=0.0).to_numpy(dtype=float))
        x = self._x(rows)
        self.forest_ = IsolationForest(n_estimators=200, random_state=self.seed).fit(x)
        self.reference_ = np.sort(-self.forest_.score_samples(x))
        self.threshold_ = validation_threshold(self._score, training)
        return self

    def _score(self, tables: Tables) -> pd.DataFrame:
        _, table = coarse(tables)
        anomaly = -self.forest_.score_samples(self._x(table))
        share = np.searchsorted(self.reference_, anomaly, side="right") / max(len(self.reference_), 1)
        return pd.DataFrame({"start": table["start"].to_numpy(), "score": share})


DETECTORS = {d.name: d for d in (MimirDetector, LassoDetector, IsolationForestDetector)}
