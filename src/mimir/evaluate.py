"""Honest evaluation (docs/architecture.md#metrics): metrics at the frozen threshold, the alert rate on benign
intervals, 95 % bootstrap intervals, and the prototype's "oracle" F1 (the best threshold on the evaluated labels),
labelled as such, with ROC and PR AUC."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from mimir.detectors import best_f1_threshold


def _f1(tp: np.ndarray | int, fp: np.ndarray | int, fn: np.ndarray | int) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN), 0 where nothing was attacked or alerted."""
    tp, fp, fn = (np.asarray(x, float) for x in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def _prf(labels: np.ndarray, alerts: np.ndarray) -> tuple[float, float, float]:
    tp = int((alerts & (labels == 1)).sum())
    fp = int((alerts & (labels == 0)).sum())
    fn = int((~alerts & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, float(_f1(tp, fp, fn))


def bootstrap(
    tp: int, attacked: int, fp: int, benign: int, rng: np.random.Generator, resamples: int
) -> dict[str, float]:
    """95 % percentile intervals of F1, recall and the benign alert rate, resampling the attacked and the benign
    intervals with replacement, each group on its own (stratified): the hits among `attacked` resampled intervals
    are Binomial(attacked, recall), the alerts among `benign` ones Binomial(benign, alert rate), exactly."""
    hits = rng.binomial(attacked, tp / attacked, resamples) if attacked else np.zeros(resamples, int)
    false = rng.binomial(benign, fp / benign, resamples) if benign else np.zeros(resamples, int)
    f1 = _f1(hits, false, attacked - hits)
    out = {}
    for name, values in (
        ("f1", f1),
        ("recall", hits / max(attacked, 1)),
        ("alert_rate", false / max(benign, 1)),
    ):
        low, high = np.percentile(values, [2.5, 97.5])
        out[f"{name}_low"], out[f"{name}_high"] = float(low), float(high)
    return out


def metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Everything one (model, evaluated intervals) is judged by: counts, precision, recall, F1 and the share of
    benign intervals that alert at the frozen threshold; the oracle F1 and the AUCs beside them."""
    labels = np.asarray(labels, dtype=int)
    alerts = scores >= threshold
    precision, recall, f1 = _prf(labels, alerts)
    oracle = best_f1_threshold(labels, scores)
    both = 0 < labels.sum() < labels.size
    benign = int((labels == 0).sum())
    out = {
        "intervals": int(labels.size),
        "attacked": int(labels.sum()),
        "benign": benign,
        "detected": int((alerts & (labels == 1)).sum()),
        "false_alerts": int((alerts & (labels == 0)).sum()),
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "alert_rate": int((alerts & (labels == 0)).sum()) / benign if benign else float("nan"),
        "oracle_f1": _prf(labels, scores >= oracle)[2],
        "roc_auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "pr_auc": float(average_precision_score(labels, scores)) if both else float("nan"),
    }
    return out
