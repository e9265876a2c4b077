"""Models, scores, tables and figures of an experiment.

The workflow writes, and hands these functions, exactly these files:

    results/models/{method}/{training}/model.joblib + model.json
    results/eval/{method}/{training}/{run}.parquet    per interval and rate: score, alert, label, path, split
    results/tables/metrics.csv, results/tables/recall_by_path.csv
    results/figures/*.png and *.svg

Which method, training run and run a file belongs to, and the granularity and rate of a feature table, arrive as
values beside the paths (an `Evaluation`, a layout), never parsed back out of the paths.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from mimir import __version__
from mimir.detectors import Tables, coarse, feature_columns
from mimir.detectors.registry import METHODS
from mimir.evaluate import metrics
from mimir.io import atomic_path
from mimir.loadmodel import BEHAVIOURS, DEFAULT_MIX
from mimir.spec import split_method


@dataclass(frozen=True)
class Evaluation:
    """One score file: `method` fitted on `training`, scored on `run`, and that model's card."""

    method: str
    training: str
    run: str
    scores: Path
    card: Path | None = None

    @classmethod
    def zip(
        cls, keys: Sequence[Mapping[str, str]], scores: Sequence[str], cards: Sequence[str] | None = None
    ) -> list[Evaluation]:
        """Pair the workflow's declared (method, training, run) entries with its score (and card) inputs."""
        cards = list(cards) if cards is not None else [None] * len(keys)
        if not len(keys) == len(scores) == len(cards):
            raise ValueError(f"{len(keys)} evaluations for {len(scores)} score files and {len(cards)} cards")
        return [
            cls(k["method"], k["training"], k["run"], Path(s), Path(c) if c else None)
            for k, s, c in zip(keys, scores, cards, strict=True)
        ]


def make_detector(method: str, params: dict[str, Any], seed: int) -> Any:
    return METHODS[split_method(method)[0]](**params, seed=seed)


def _only(tables: Tables, method: str) -> Tables:
    _, tg = split_method(method)
    return {tg: tables[tg]} if tg is not None else tables


def by_rate(layout: Sequence[Sequence[float]], paths: Sequence[str | Path]) -> dict[float, Tables]:
    """Feature tables of one run keyed by rate, then granularity; `layout` gives the (granularity, rate) of each."""
    if len(layout) != len(paths):
        raise ValueError(f"{len(layout)} (granularity, rate) pairs for {len(paths)} feature tables")
    tables: dict[float, Tables] = {}
    for (tg, rate), path in zip(layout, paths, strict=True):
        tables.setdefault(float(rate), {})[int(tg)] = pd.read_parquet(path)
    return tables


def fit_model(method: str, params: dict, seed: int, training: Mapping[str, Sequence[Tables]], out: Path) -> None:
    """Fit `method` on the training runs' tables (per run, one table set per rate); write the model and its card."""
    tables = [t for per_rate in training.values() for t in per_rate]
    detector = make_detector(method, params, seed)
    detector.fit([_only(t, method) for t in tables])
    with atomic_path(out / "model.joblib") as tmp:
        joblib.dump(detector, tmp)
    card = {
        "method": method,
        "params": params,
        "seed": seed,
        "granularities": sorted(_only(tables[0], method)),
        "training_runs": list(training),
        "threshold": float(detector.threshold),
        "features": sorted({c for t in tables for tg in t for c in feature_columns(t[tg])}),
        "versions": {"mimir": __version__},
    }
    with atomic_path(out / "model.json") as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")


def score_run(model_dir: Path, by_rate: dict[float, Tables], training_run: bool, out: Path) -> None:
    """Scores of one run at every rate (a `rate` column); a training run is scored on its test split only."""
    card = json.loads((model_dir / "model.json").read_text())
    detector = joblib.load(model_dir / "model.joblib")  # written by fit_model in this workflow, never from outside
    frames = []
    for rate, tables in sorted(by_rate.items()):
        chosen = _only(tables, card["method"])
        _, table = coarse(chosen)
        scores = detector.score(chosen)["score"].to_numpy()
        frames.append(
            pd.DataFrame(
                {
                    "rate": rate,
                    "start": table["start"].to_numpy(),
                    "score": scores,
                    "alert": scores >= detector.threshold,
                    "label": table["label"].to_numpy(),
                    "path": table["path"].to_numpy(),
                    "split": table["split"].to_numpy(),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    if training_run:
        frame = frame[frame["split"] == "test"]
    with atomic_path(out) as tmp:
        frame.reset_index(drop=True).to_parquet(tmp)


def metrics_tables(evaluations: Sequence[Evaluation], out_metrics: Path, out_paths: Path) -> None:
    """Per (method, run, rate): the metrics at the model's frozen threshold, and recall per attack path."""
    rows, path_rows = [], []
    for e in evaluations:
        if e.card is None:
            raise ValueError(f"{e.scores}: no model card given")
        method, training, run = e.method, e.training, e.run
        threshold = json.loads(e.card.read_text())["threshold"]
        for rate, frame in pd.read_parquet(e.scores).groupby("rate"):
            m = metrics(frame["label"].to_numpy(), frame["score"].to_numpy(), threshold, frame["path"].to_numpy())
            by_path = m.pop("recall_by_path")
            rows.append({"method": method, "training": training, "run": run, "rate": float(rate), **m})
            path_rows += [
                {"method": method, "run": run, "rate": float(rate), "path": k, "recall": v} for k, v in by_path.items()
            ]
    table = pd.DataFrame(rows).sort_values(["method", "run", "rate"], ignore_index=True)
    with atomic_path(out_metrics) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    paths = pd.DataFrame(path_rows, columns=["method", "run", "rate", "path", "recall"])
    with atomic_path(out_paths) as tmp:
        paths.sort_values(["method", "run", "rate", "path"]).to_csv(tmp, index=False, float_format="%.6g")


def _save(fig: Any, stem: Path) -> None:
    """PNG and SVG, the same bytes from the same numbers: no date, and SVG ids hashed with a fixed salt (matplotlib
    salts them with a random one unless told)."""
    import matplotlib

    for suffix in (".png", ".svg"):
        with atomic_path(stem.with_suffix(suffix)) as tmp, matplotlib.rc_context({"svg.hashsalt": "mimir"}):
            fig.savefig(
                tmp,
                format=suffix[1:],
                dpi=120,
                bbox_inches="tight",
                metadata={"Date": None} if suffix == ".svg" else {},
            )


def figures(metrics_csv: Path, runs: dict[str, dict], out: Path, rate: float) -> None:
    """The paper's four figures (honest F1 solid, oracle F1 dashed) and the training runs' ROC curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = pd.read_csv(metrics_csv)
    main = m[m["method"].map(lambda name: split_method(name)[1] is None)]
    trained = {r["training"] for r in runs.values() if r.get("training")}
    # 1. F1 vs exfiltration rate, per application (mean over its evaluation runs), a line per method
    apps = sorted({runs[t]["app"] for t in trained if "app" in runs[t]})
    fig, axes = plt.subplots(1, max(len(apps), 1), figsize=(6 * max(len(apps), 1), 4), squeeze=False)
    for ax, app in zip(axes[0], apps, strict=False):
        evaluated = [n for n, r in runs.items() if r.get("training") and runs[r["training"]].get("app") == app]
        rows = main[main["run"].isin(evaluated)]
        for method, group in rows.groupby("method"):
            part = group.groupby("rate", as_index=False)[["f1", "oracle_f1"]].mean()
            line = ax.plot(part["rate"], part["f1"], marker="o", label=f"{method}")[0]
            ax.plot(part["rate"], part["oracle_f1"], linestyle="--", color=line.get_color(), alpha=0.5)
        ax.set(
            xscale="log",
            xlabel="exfiltration rate (MB/min)",
            ylabel="F1",
            ylim=(0, 1.05),
            title=f"{app}: F1 vs rate, {len(evaluated)} runs (dashed: oracle F1)",
        )
        ax.legend(fontsize=8)
    _save(fig, out / "f1_vs_rate")
    plt.close(fig)

    # 2. F1 vs load ratio at one rate; 3. F1 vs Euclidean distance of the request mixes
    def ratio_and_distance(run: str) -> tuple[float, float]:
        r, t = runs[run], runs[runs[run]["training"]]
        a = np.array([(r.get("mix") or DEFAULT_MIX).get(k, 0) for k in BEHAVIOURS], float)
        b = np.array([(t.get("mix") or DEFAULT_MIX).get(k, 0) for k in BEHAVIOURS], float)
        return r["users"] / t["users"], float(np.linalg.norm(a / a.sum() - b / b.sum()))

    evals = main[main["run"].map(lambda n: bool(runs.get(n, {}).get("training"))) & np.isclose(main["rate"], rate)]
    evals = evals.assign(
        **dict(zip(("ratio", "distance"), zip(*evals["run"].map(ratio_and_distance), strict=True), strict=True))
    )
    for column, stem, label in (
        ("ratio", "f1_vs_load", "load ratio (evaluation users / training users)"),
        ("distance", "f1_vs_mix", "Euclidean distance between request mixes"),
    ):
        same_mix = evals["distance"] < 1e-9 if column == "ratio" else np.isclose(evals["ratio"], 1.0)
        chosen = evals[same_mix].assign(app=lambda f: f["run"].map(lambda n: runs[n].get("app", "")))
        panels = sorted(chosen["app"].unique()) or [""]
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        for ax, app in zip(axes[0], panels, strict=True):
            for method, group in chosen[chosen["app"] == app].groupby("method"):
                part = group.sort_values(column)
                ax.plot(part[column], part["f1"], marker="o", label=method)
            ax.set(xlabel=label, ylabel="F1", ylim=(0, 1.05), title=f"{app}: F1 at {rate:g} MB/min")
            ax.legend(fontsize=8)
        _save(fig, out / stem)
        plt.close(fig)

    # 4. F1 vs rate of the MIMIR detector on every granularity and on each alone, over the evaluation runs
    fig, ax = plt.subplots(figsize=(6, 4))
    variants = m[m["method"].str.startswith("mimir") & m["run"].map(lambda n: bool(runs.get(n, {}).get("training")))]
    for method, group in variants.groupby("method"):
        part = group.groupby("rate", as_index=False)["f1"].mean()
        tg = split_method(method)[1]
        name = "every granularity" if tg is None else f"{tg} s only"
        ax.plot(part["rate"], part["f1"], marker="o", label=name)
    ax.set(
        xscale="log",
        xlabel="exfiltration rate (MB/min)",
        ylabel="F1",
        ylim=(0, 1.05),
        title="MIMIR detector: F1 vs rate by time granularity (evaluation runs)",
    )
    ax.legend(fontsize=8)
    _save(fig, out / "f1_vs_granularity")
    plt.close(fig)


def roc_figure(evaluations: Sequence[Evaluation], runs: dict[str, dict], rate: float, out: Path) -> None:
    """ROC curves per application at one rate, pooled over its evaluation runs, a curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    pooled: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for e in evaluations:
        run, method = e.run, e.method
        if not runs.get(run, {}).get("training") or split_method(method)[1] is not None:
            continue
        frame = pd.read_parquet(e.scores)
        app = runs[runs[run]["training"]].get("app", "")
        pooled.setdefault((app, method), []).append(frame[np.isclose(frame["rate"], rate)])
    apps = sorted({app for app, _ in pooled}) or [""]
    fig, axes = plt.subplots(1, len(apps), figsize=(6 * len(apps), 5), squeeze=False)
    for ax, app in zip(axes[0], apps, strict=True):
        for (a, method), parts in sorted(pooled.items()):
            frame = pd.concat(parts, ignore_index=True)
            if a != app or frame["label"].nunique() < 2:
                continue
            fpr, tpr, _ = roc_curve(frame["label"], frame["score"])
            ax.plot(fpr, tpr, label=f"{method} (AUC {roc_auc_score(frame['label'], frame['score']):.2f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            xlim=(0, 1),
            ylim=(0, 1.02),
            title=f"{app}: ROC at {rate:g} MB/min, evaluation runs pooled",
        )
        ax.legend(fontsize=8, loc="lower right")
    _save(fig, out / "roc")
    plt.close(fig)


def summary(metrics_csv: Path) -> str:
    """Honest and oracle F1 per method and rate, averaged over the evaluated runs (printed by `make run`)."""
    m = pd.read_csv(metrics_csv)
    table = m.groupby(["method", "rate"])[["f1", "oracle_f1", "roc_auc"]].mean().unstack("rate")
    return (
        f"{metrics_csv}: mean over evaluated runs (F1 at the frozen threshold; oracle F1; ROC AUC)\n"
        + table.round(2).to_string()
    )


if __name__ == "__main__":
    import sys

    print(summary(Path(sys.argv[1])))
