"""The MIMIR detector, the prototype's Lasso variant, and the unsupervised isolation forest on the same features."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LassoCV, LogisticRegression
from sklearn.preprocessing import RobustScaler

from mimir.detectors import Tables, coarse, feature_columns, finest_max, validation_threshold


def _rows(training: list[Tables], tg: int, split: str) -> pd.DataFrame:
    parts = [t[tg][t[tg]["split"] == split] for t in training]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


class _PerGranularity:
    """Robust scaling fitted on benign training intervals, then one model per granularity."""

    def __init__(self, seed: int):
        self.seed = seed
        self.columns: dict[int, list[str]] = {}
        self.scalers: dict[int, RobustScaler] = {}
        self.models: dict[int, object] = {}

    def _x(self, table: pd.DataFrame, tg: int) -> np.ndarray:
        x = table.reindex(columns=self.columns[tg], fill_value=0.0).to_numpy(dtype=float)
        return self.scalers[tg].transform(x)

    def fit_granularities(self, training: list[Tables]) -> None:
        for tg in training[0]:
            rows = _rows(training, tg, "train")
            self.columns[tg] = sorted({c for t in training for c in feature_columns(t[tg])})
            x = rows.reindex(columns=self.columns[tg], fill_value=0.0).to_numpy(dtype=float)
            y = rows["label"].to_numpy()
            benign = x[y == 0] if (y == 0).any() else x
            self.scalers[tg] = RobustScaler().fit(benign)
            self.models[tg] = self._fit_one(self.scalers[tg].transform(x), y)

    def fine_scores(self, tables: Tables) -> dict[int, np.ndarray]:
        return {tg: self._predict(self.models[tg], self._x(t, tg)) for tg, t in tables.items()}

    def _fit_one(self, x: np.ndarray, y: np.ndarray) -> object:
        raise NotImplementedError

    def _predict(self, model: object, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class MimirDetector(_PerGranularity):
    """L1 logistic regression per granularity; a stacker over [max of finer scores, coarse score]."""

    name = "mimir"

    def __init__(self, c: float = 1.0, seed: int = 0):
        super().__init__(seed)
        self.c = c
        self.stacker: LogisticRegression | None = None
        self.threshold = 0.5

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

    def _stack_inputs(self, tables: Tables) -> np.ndarray:
        scores = self.fine_scores(tables)
        tg, _ = coarse(tables)
        return np.column_stack([finest_max(tables, scores), scores[tg]])

    def fit(self, training: list[Tables]) -> None:
        self.fit_granularities(training)
        tg = max(training[0])
        x = np.vstack([self._stack_inputs(t)[t[tg]["split"].to_numpy() == "train"] for t in training])
        y = np.concatenate([t[tg].loc[t[tg]["split"] == "train", "label"].to_numpy() for t in training])
        if len(set(y)) == 2:
            self.stacker = LogisticRegression(random_state=self.seed).fit(x, y)
        self.threshold = validation_threshold(self, training)

    def score(self, tables: Tables) -> pd.DataFrame:
        x = self._stack_inputs(tables)
        _, table = coarse(tables)
        score = self.stacker.predict_proba(x)[:, 1] if self.stacker is not None else x.max(axis=1)
        return pd.DataFrame({"start": table["start"].to_numpy(), "score": score})


class LassoDetector(MimirDetector):
    """The prototype's model: LassoCV regression on the 0/1 labels, clipped into [0, 1]; the larger of the
    finest and the coarse prediction (the prototype's ensemble), with the threshold on validation."""

    name = "lasso"

    def _fit_one(self, x: np.ndarray, y: np.ndarray) -> object:
        if len(set(y)) < 2:
            return float(y.mean()) if y.size else 0.0
        return LassoCV(cv=3, random_state=self.seed, max_iter=5000).fit(x, y)

    def _predict(self, model: object, x: np.ndarray) -> np.ndarray:
        if isinstance(model, float):
            return np.full(x.shape[0], model)
        return np.clip(model.predict(x), 0.0, 1.0)

    def fit(self, training: list[Tables]) -> None:
        self.fit_granularities(training)
        self.threshold = validation_threshold(self, training)

    def score(self, tables: Tables) -> pd.DataFrame:
        x = self._stack_inputs(tables)
        _, table = coarse(tables)
        return pd.DataFrame({"start": table["start"].to_numpy(), "score": x.max(axis=1)})


class IsolationForestDetector:
    """Unsupervised: an isolation forest on benign training intervals of the coarse granularity; the score is
    the share of benign training intervals that look less anomalous (an empirical CDF, in [0, 1])."""

    name = "iforest"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.threshold = 0.5

    def _x(self, table: pd.DataFrame) -> np.ndarray:
        return self.scaler.transform(table.reindex(columns=self.columns, fill_value=0.0).to_numpy(dtype=float))

    def fit(self, training: list[Tables]) -> None:
        tg = max(training[0])
        rows = _rows(training, tg, "train")
        rows = rows[rows["label"] == 0]
        self.columns = sorted({c for t in training for c in feature_columns(t[tg])})
        self.scaler = RobustScaler().fit(rows.reindex(columns=self.columns, fill_value=0.0).to_numpy(dtype=float))
        x = self._x(rows)
        self.forest = IsolationForest(n_estimators=200, random_state=self.seed).fit(x)
        self.reference = np.sort(-self.forest.score_samples(x))
        self.threshold = validation_threshold(self, training)

    def score(self, tables: Tables) -> pd.DataFrame:
        _, table = coarse(tables)
        anomaly = -self.forest.score_samples(self._x(table))
        share = np.searchsorted(self.reference, anomaly, side="right") / max(len(self.reference), 1)
        return pd.DataFrame({"start": table["start"].to_numpy(), "score": share})


DETECTORS = {d.name: d for d in (MimirDetector, LassoDetector, IsolationForestDetector)}
