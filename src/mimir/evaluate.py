"""Honest evaluation (docs/architecture.md#metrics): metrics at the frozen threshold, and the prototype's "oracle"
F1 (the best threshold on the evaluated labels), labelled as such, with ROC and PR AUC and recall per path."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from mimir.detectors import best_f1_threshold


def _prf(labels: np.ndarray, alerts: np.ndarray) -> tuple[float, float, float]:
    tp = int((alerts & (labels == 1)).sum())
    fp = int((alerts & (labels == 0)).sum())
    fn = int((~alerts & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, paths: np.ndarray | None = None) -> dict:
    """Everything one (model, run, rate) is judged by."""
    labels = np.asarray(labels, dtype=int)
    alerts = scores >= threshold
    precision, recall, f1 = _prf(labels, alerts)
    oracle = best_f1_threshold(labels, scores)
    both = 0 < labels.sum() < labels.size
    out = {
        "intervals": int(labels.size),
        "attacked": int(labels.sum()),
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "oracle_f1": _prf(labels, scores >= oracle)[2],
        "roc_auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "pr_auc": float(average_precision_score(labels, scores)) if both else float("nan"),
    }
    if paths is not None:
        frame = pd.DataFrame({"path": paths, "hit": alerts, "label": labels})
        attacked = frame[(frame["label"] == 1) & (frame["path"] != "")]
        out["recall_by_path"] = attacked.groupby("path")["hit"].mean().round(6).to_dict()
    return out
