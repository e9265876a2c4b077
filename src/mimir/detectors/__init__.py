"""Detectors behind one interface (design §4): fit on labelled training tables, then a score in [0, 1] per
interval of the coarsest granularity.

A table set maps each granularity (seconds) to one feature table (design §3, "Features"): rows are intervals
with `start`, `label`, `split` and feature columns. Scores are reported per coarse interval, so every method is
judged on the same intervals.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

META = ("interval", "start", "injected_bytes", "attack", "path", "label", "split")

Tables = dict[int, pd.DataFrame]


class Detector(Protocol):
    name: str
    threshold: float

    def fit(self, training: list[Tables]) -> None:
        """Learn from training runs' table sets (one per rate); choose the threshold on their validation part."""
        ...

    def score(self, tables: Tables) -> pd.DataFrame:
        """One row per coarse interval: start, score in [0, 1]."""
        ...


WEIGHT_PREFIX = "w:"  # the service graph's bytes per pair (`w:a>b`): context for the baselines, not features


def feature_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in META and not c.startswith(WEIGHT_PREFIX)]


def weight_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(WEIGHT_PREFIX)]


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
    """The score threshold (alert where score >= threshold) with the best F1 on these labels."""
    if labels.sum() == 0:
        return float(scores.max()) + 1e-12 if scores.size else 0.5
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    f1 = 2 * tp / (tp + fp + y.sum())
    last_of_value = np.r_[s[1:] != s[:-1], True]  # a threshold admits every row with the same score
    f1 = np.where(last_of_value, f1, -1)
    return float(s[int(np.argmax(f1))])


def validation_threshold(detector: Detector, training: list[Tables]) -> float:
    """The threshold with the best F1 on the training runs' validation split, frozen into the model."""
    tg = max(training[0])
    scores, labels = [], []
    for tables in training:
        chosen = tables[tg]["split"].to_numpy() == "validation"
        scores.append(detector.score(tables)["score"].to_numpy()[chosen])
        labels.append(tables[tg]["label"].to_numpy()[chosen])
    return best_f1_threshold(np.concatenate(labels), np.concatenate(scores))
