"""Models, scores, tables and figures of an experiment.

The workflow writes, and hands these functions, exactly these files:

    results/models/{method}/{training}/model.joblib + model.json
    results/eval/{method}/{training}.parquet     per run, rate, injection and interval: score, alert, label, class
    results/tables/metrics.csv, results/tables/recall_by_path.csv
    results/figures/*.png and *.svg

Which method, training run and runs a file belongs to, and the granularity and rate of a feature table, arrive as
values beside the paths (an `Evaluation`, a layout), never parsed back out of the paths.

One definition of every number (README, "How the numbers are computed"): a model is judged per attack class on
the benign intervals and the intervals that class attacked, pooled over every injection (seed) of an evaluation
run (`run` = its name) or of all the runs that name the training run (`run` = `*`); F1, recall and the benign alert
rate are counted on those pooled intervals at the frozen threshold, never averaged over runs, with 95 % stratified
bootstrap intervals. The summary, the README's tables and every figure read these rows.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import joblib
import numpy as np
import pandas as pd

from mimir import __version__
from mimir.detectors import Tables, by_seed, coarse, feature_columns
from mimir.detectors.registry import METHODS
from mimir.errors import UsageError
from mimir.evaluate import bootstrap, metrics
from mimir.io import atomic_path
from mimir.loadmodel import BEHAVIOURS, DEFAULT_MIX
from mimir.spec import split_method

POLICIES = ("abiding", "violating", "physical")  # attack classes (docs/architecture.md#attack-paths), headline first
INJECTED = POLICIES[:2]  # the classes every figure shows; `physical` (a run's own windows) only where runs have them
ALL_RUNS = "*"  # the `run` of a row pooled over every evaluation run of a training run


@dataclass(frozen=True)
class Protocol:
    """How much data a number needs and how its interval is drawn (the config's `evaluation` section)."""

    min_attacked: int = 10  # attacked intervals per attack class
    min_benign: int = 30
    bootstrap: int = 1000
    seed: int = 0

    @classmethod
    def from_config(cls, section: Mapping[str, Any], seed: int = 0) -> Protocol:
        return cls(int(section["min_attacked"]), int(section["min_benign"]), int(section["bootstrap"]), seed)

    def shortfall(self, benign: int, attacked: Mapping[str, int]) -> str:
        """What a set of intervals lacks for its numbers to mean something ('' when nothing)."""
        lacking = [f"{n} {policy} attacked" for policy, n in attacked.items() if n < self.min_attacked]
        if benign < self.min_benign:
            lacking.append(f"{benign} benign")
        if not lacking:
            return ""
        return (
            f"only {', '.join(lacking)} intervals (evaluation.min_attacked: {self.min_attacked} per attack class, "
            f"evaluation.min_benign: {self.min_benign})"
        )


@dataclass(frozen=True)
class Evaluation:
    """One score file: `method` fitted on `training`, scored on `runs` (the runs that name it), and its card."""

    method: str
    training: str
    runs: tuple[str, ...]
    scores: Path
    card: Path | None = None

    @classmethod
    def zip(
        cls, keys: Sequence[Mapping[str, Any]], scores: Sequence[str], cards: Sequence[str] | None = None
    ) -> list[Evaluation]:
        """Pair the workflow's declared (method, training, runs) entries with its score (and card) inputs."""
        cards = list(cards) if cards is not None else [None] * len(keys)
        if not len(keys) == len(scores) == len(cards):
            raise ValueError(f"{len(keys)} evaluations for {len(scores)} score files and {len(cards)} cards")
        return [
            cls(k["method"], k["training"], tuple(k["runs"]), Path(s), Path(c) if c else None)
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


def _attacked_by_class(table: pd.DataFrame) -> dict[str, int]:
    attacked = table[table["label"] == 1]
    return {
        policy: int((attacked["policy"] == policy).sum()) for policy in POLICIES if (attacked["policy"] == policy).any()
    }


def check_splits(run: str, tables: Tables, protocol: Protocol) -> None:
    """Refuse to fit or freeze a threshold on a split too small to mean anything, with the numbers: the first
    rate's coarse table over every injection (every rate injects the same attacks, only scaled)."""
    _, table = coarse(tables)
    classes = _attacked_by_class(table)
    for split in ("train", "validation"):
        part = table[table["split"] == split]
        attacked = {policy: int(((part["label"] == 1) & (part["policy"] == policy)).sum()) for policy in classes}
        lacking = protocol.shortfall(int((part["label"] == 0).sum()), attacked)
        if lacking:
            raise UsageError(
                f"training run {run}: its {split} split holds {lacking}, over {table['seed'].nunique()} injections: "
                "make the run longer (runs.NAME.duration), add injections (features.seeds) or attacks "
                "(features.attacked_share), or lower the minimums"
            )


def fit_model(
    method: str,
    params: dict,
    seed: int,
    training: Mapping[str, Sequence[Tables]],
    out: Path,
    protocol: Protocol | None = None,
    sensitive: Sequence[str] = (),
) -> None:
    """Fit `method` on the training runs' tables (per run, one table set per rate, every injection stacked);
    write the model and its card. The splits are checked against `protocol` first. The card records the training
    run's sensitive services, from which the flow features were computed: `mimir live` computes them alike."""
    for run, per_rate in training.items():
        if protocol is not None:
            check_splits(run, per_rate[0], protocol)
    tables = [one for per_rate in training.values() for stacked in per_rate for one in by_seed(stacked)]
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
        "sensitive": sorted(sensitive),
        "threshold": float(detector.threshold),
        "features": sorted({c for t in tables for tg in t for c in feature_columns(t[tg])}),
        "versions": {"mimir": __version__},
    }
    with atomic_path(out / "model.json") as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")


def score_runs(model_dir: Path, runs: Mapping[str, dict[float, Tables]], out: Path) -> None:
    """Scores of every run, rate and injection (columns `run`, `rate`, `seed`) with the labels and attack class."""
    card = json.loads((model_dir / "model.json").read_text())
    detector = joblib.load(model_dir / "model.joblib")  # written by fit_model in this workflow, never from outside
    frames = []
    for run, per_rate in runs.items():
        for rate, stacked in sorted(per_rate.items()):
            for tables in by_seed(_only(stacked, card["method"])):
                _, table = coarse(tables)
                scores = detector.score(tables)["score"].to_numpy()
                frame = table[["seed", "start", "label", "path", "policy", "shape"]].copy()
                frame.insert(0, "run", run)
                frame.insert(1, "rate", rate)
                frame.insert(4, "score", scores)
                frame.insert(5, "alert", scores >= detector.threshold)
                frames.append(frame)
    with atomic_path(out) as tmp:
        pd.concat(frames, ignore_index=True).to_parquet(tmp)


def _rng(protocol: Protocol, *key: object) -> np.random.Generator:
    """A generator per table row, from the config's seed and the row's identity: the same bytes on every rerun."""
    return np.random.default_rng([protocol.seed, zlib.crc32("|".join(map(str, key)).encode())])


def _judge(frame: pd.DataFrame, threshold: float, protocol: Protocol, key: tuple) -> dict:
    """The metrics of one set of pooled intervals (benign plus one class's attacked) and their intervals."""
    m = metrics(frame["label"].to_numpy(), frame["score"].to_numpy(), threshold)
    m.update(
        bootstrap(
            m["detected"], m["attacked"], m["false_alerts"], m["benign"], _rng(protocol, *key), protocol.bootstrap
        )
    )
    return m


METRIC_COLUMNS = [
    "method", "training", "run", "rate", "policy", "runs", "seeds", "intervals", "attacked", "benign", "detected",
    "false_alerts", "threshold", "precision", "recall", "recall_low", "recall_high", "f1", "f1_low", "f1_high",
    "alert_rate", "alert_rate_low", "alert_rate_high", "oracle_f1", "roc_auc", "pr_auc", "enough",
]  # fmt: skip
PATH_COLUMNS = ["method", "training", "rate", "policy", "path", "shape", "attacked", "detected", "recall"]


def metrics_tables(evaluations: Sequence[Evaluation], protocol: Protocol, out_metrics: Path, out_paths: Path) -> None:
    """Per (method, training, run or `*`, rate, attack class): the metrics at the model's frozen threshold on the
    benign and that class's attacked intervals over every injection; and recall per attack path and shape.

    A row with fewer intervals than `protocol` asks for is kept, marked `enough = False`, and warned about."""
    rows, path_rows, lacking = [], [], []
    for e in evaluations:
        if e.card is None:
            raise ValueError(f"{e.scores}: no model card given")
        threshold = json.loads(e.card.read_text())["threshold"]
        scores = pd.read_parquet(e.scores)
        for rate, at_rate in scores.groupby("rate", sort=True):
            for policy in POLICIES:
                chosen = at_rate[(at_rate["label"] == 0) | (at_rate["policy"] == policy)]
                if not (chosen["label"] == 1).any():
                    continue
                scopes = [(run, chosen[chosen["run"] == run]) for run in e.runs] + [(ALL_RUNS, chosen)]
                for run, part in scopes:
                    key = (e.method, e.training, run, float(rate), policy)
                    m = _judge(part, threshold, protocol, key)
                    short = protocol.shortfall(m["benign"], {policy: m["attacked"]})
                    if short:
                        lacking.append(f"{e.method} on {run} ({e.training}), {rate:g} MB/min, {policy}: {short}")
                    runs = part["run"].nunique()
                    rows.append(dict(zip(METRIC_COLUMNS[:7], (*key, runs, part["seed"].nunique()), strict=True))
                                | {k: m[k] for k in METRIC_COLUMNS[7:-1]} | {"enough": not short})  # fmt: skip
            attacked = at_rate[at_rate["label"] == 1]
            grouped = attacked.groupby(["policy", "path", "shape"], sort=True)["alert"].agg(["size", "sum"])
            for (policy, path, shape), (n, hits) in grouped.iterrows():
                path_rows.append((e.method, e.training, float(rate), policy, path, shape, int(n), int(hits), hits / n))
    for line in lacking:
        print(f"WARNING: too few intervals to trust: {line}", file=sys.stderr)
    table = pd.DataFrame(rows, columns=METRIC_COLUMNS).sort_values(["method", "training", "run", "rate", "policy"])
    with atomic_path(out_metrics) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    paths = pd.DataFrame(path_rows, columns=PATH_COLUMNS).sort_values(PATH_COLUMNS[:6])
    with atomic_path(out_paths) as tmp:
        paths.to_csv(tmp, index=False, float_format="%.6g")


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


MARKERS = "osD^vPX*h<>p"


def _styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A colour and a marker per method, the same in every figure, so that no line hides another."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    return {m: {"color": colours[k % 10], "marker": MARKERS[k % len(MARKERS)]} for k, m in enumerate(methods)}


def _grid(plt: Any, rows: int, columns: int, height: float = 3.6) -> tuple[Any, np.ndarray]:
    return plt.subplots(rows, columns, figsize=(5.6 * columns, height * rows), squeeze=False)


def _panel_note(ax: Any, text: str) -> None:
    """A panel that has nothing to show says why instead of staying empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=9)
    ax.set(xticks=[], yticks=[])


def _legend(fig: Any, axes: np.ndarray) -> None:
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def _classes(present: pd.Series) -> list[str]:
    """The rows of a figure: the injected classes always, the physical windows' class where a run has them."""
    return [*INJECTED, *(c for c in POLICIES[2:] if (present == c).any())]


class _Panels(NamedTuple):
    """What every F1 figure shares: its rows, the training runs, their applications and the methods' styles."""

    frame: pd.DataFrame
    trainings: list[str]
    app: dict[str, str]
    styles: dict[str, dict[str, Any]]


def _f1_figure(plt: Any, panels: _Panels, x: str, xlabel: str, title: str, log: bool, label: Any, stem: Path) -> None:
    """A panel per (class, training run that has rows); lines and bands against the rate, points with error
    bars for per-run settings (several runs may share a load ratio or a mix distance)."""
    frame, trainings, app, styles = panels
    shown = [t for t in trainings if (frame["training"] == t).any()] or trainings
    classes = _classes(frame["policy"])
    fig, axes = _grid(plt, len(classes), len(shown))
    for (row, policy), (column, training) in ((rp, tc) for rp in enumerate(classes) for tc in enumerate(shown)):
        ax = axes[row, column]
        part = frame[(frame["training"] == training) & (frame["policy"] == policy)]
        if part.empty:
            _panel_note(ax, f"{app[training]}: no {policy} attack was judged (see the paths in logs/features/)")
            continue
        methods = list(dict.fromkeys(part["method"]))
        span = float(np.ptp(part[x])) or 1.0
        for method, unsorted in part.groupby("method", sort=False):
            line, style = unsorted.sort_values(x), styles[method]
            dodge = (methods.index(method) - (len(methods) - 1) / 2) * 0.012 * span  # side by side, not stacked
            if x == "rate":
                ax.plot(line[x], line["f1"], label=label(method), linewidth=1.4, markersize=5, **style)
                ax.fill_between(line[x], line["f1_low"], line["f1_high"], color=style["color"], alpha=0.12)
            else:
                spread = np.vstack([line["f1"] - line["f1_low"], line["f1_high"] - line["f1"]]).clip(0)
                ax.errorbar(line[x] + dodge, line["f1"], yerr=spread, label=label(method), linestyle="none",
                            markersize=5, capsize=2, elinewidth=0.8, alpha=0.85, **style)  # fmt: skip
        ax.set(xlabel=xlabel, ylabel="F1", ylim=(-0.02, 1.05), title=f"{app[training]}: {policy} attacks")
        if log:
            ax.set_xscale("log")
    fig.suptitle(title, y=1.01)
    fig.tight_layout()
    _legend(fig, axes)
    _save(fig, stem)
    plt.close(fig)


def figures(
    metrics_csv: Path,
    paths_csv: Path,
    evaluations: Sequence[Evaluation],
    runs: dict[str, dict],
    names: Sequence[str],
    out: Path,
    rate: float,
) -> None:
    """The figures `names` (the workflow plans only those the config can fill), every one per attack class:
    abiding attacks in the top row, violating below, an application per column, 95 % intervals as bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = pd.read_csv(metrics_csv, keep_default_na=False, na_values=[""])
    styles = _styles(sorted(m["method"].unique(), key=lambda n: (split_method(n)[0] != "mimir", n)))
    trainings = sorted(m["training"].unique())
    main = m[m["method"].map(lambda name: split_method(name)[1] is None)]
    pooled = main[main["run"] == ALL_RUNS]
    app = {t: runs.get(t, {}).get("app", t) for t in trainings}

    def draw(name: str, frame: pd.DataFrame, x: str, xlabel: str, title: str, log: bool, label: Any = str) -> None:
        _f1_figure(plt, _Panels(frame, trainings, app, styles), x, xlabel, title, log, label, out / name)

    for name in names:
        if name == "f1_vs_rate":
            draw(name, pooled, "rate", "exfiltration rate (MB/min)",
                 "F1 at the frozen threshold vs exfiltration rate, every evaluation run and injection pooled "
                 "(bands: 95 % bootstrap)", log=True)  # fmt: skip
        elif name in ("f1_vs_load", "f1_vs_mix"):
            per_run = _by_setting(main[(main["run"] != ALL_RUNS) & np.isclose(main["rate"], rate)], runs, name)
            what, axis = (("load ratio", " (evaluation users / training users)") if name == "f1_vs_load"
                          else ("distance between request mixes", " (Euclidean)"))  # fmt: skip
            draw(name, per_run, "x", what + axis, f"F1 at {rate:g} MB/min vs {what}, per evaluation run "
                 "(bars: 95 % bootstrap)", log=False)  # fmt: skip
        elif name == "f1_vs_granularity":
            variants = m[(m["run"] == ALL_RUNS) & m["method"].map(lambda n: split_method(n)[0] == "mimir")]
            draw(name, variants, "rate", "exfiltration rate (MB/min)",
                 "MIMIR detector: F1 vs rate on every granularity and on each alone (bands: 95 % bootstrap)",
                 log=True, label=lambda n: "every granularity" if split_method(n)[1] is None else
                 f"{split_method(n)[1]} s only")  # fmt: skip
        elif name == "recall_by_path":
            _recall_figure(plt, pd.read_csv(paths_csv, keep_default_na=False), rate, app, out / name)
        elif name == "roc":
            _roc_figure(plt, evaluations, trainings, app, styles, rate, out / name)
        else:
            raise ValueError(f"no figure named {name!r}")


def _by_setting(rows: pd.DataFrame, runs: dict[str, dict], name: str) -> pd.DataFrame:
    """Per-run rows of the runs that vary one thing against their training run (load, else request mix), with
    that thing as `x`: the load ratio, or the Euclidean distance between the normalised request mixes."""

    def mix(run: dict) -> np.ndarray:
        values = np.array([(run.get("mix") or DEFAULT_MIX).get(k, 0) for k in BEHAVIOURS], float)
        return values / values.sum()

    def setting(run: str) -> tuple[float, float]:
        r, t = runs[run], runs[runs[run]["training"]]
        return r["users"] / t["users"], float(np.linalg.norm(mix(r) - mix(t)))

    ratio, distance = (np.array(v) for v in zip(*rows["run"].map(setting), strict=True)) if len(rows) else ([], [])
    if name == "f1_vs_load":
        return rows[np.asarray(distance) < 1e-9].assign(x=np.asarray(ratio)[np.asarray(distance) < 1e-9])
    same = np.isclose(ratio, 1.0)
    return rows[same].assign(x=np.asarray(distance)[same])


def _recall_figure(plt: Any, paths: pd.DataFrame, rate: float, app: dict[str, str], stem: Path) -> None:
    """Recall per attack path (rows, abiding first) and method (columns) at one rate, every shape, run and
    injection pooled: which way out each method sees."""
    at_rate = paths[np.isclose(paths["rate"], rate) & paths["method"].map(lambda n: split_method(n)[1] is None)]
    grouped = at_rate.groupby(["training", "policy", "path", "method"], sort=True)[["attacked", "detected"]].sum()
    trainings = sorted(at_rate["training"].unique())
    sizes = [max(len(grouped.loc[t].index.droplevel("method").unique()), 1) for t in trainings] or [1]
    fig, axes = plt.subplots(
        len(sizes), 1, figsize=(11, 1.2 + 0.42 * sum(sizes) + 0.9 * len(sizes)), squeeze=False,
        gridspec_kw={"height_ratios": sizes},
    )  # fmt: skip
    image = None
    for ax, training in zip(axes[:, 0], trainings, strict=False):
        recall = (grouped.loc[training, "detected"] / grouped.loc[training, "attacked"]).unstack("method")
        recall = recall.reindex(sorted(recall.index, key=lambda k: (POLICIES.index(k[0]), k[1])))
        image = ax.imshow(recall.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(recall.shape[1]), recall.columns, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(recall.shape[0]), [f"{p}: {path}" for p, path in recall.index], fontsize=8)
        for (i, j), value in np.ndenumerate(recall.to_numpy(float)):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w" if value < 0.6 else "k")
        ax.set_title(f"{app[training]}: recall per attack path at {rate:g} MB/min", fontsize=10)
    if image is None:
        _panel_note(axes[0, 0], "no attacked interval at this rate")
    else:
        fig.colorbar(image, ax=axes[:, 0].tolist(), label="recall (share of attacked intervals alerted)")
    _save(fig, stem)
    plt.close(fig)


def _roc_figure(
    plt: Any,
    evaluations: Sequence[Evaluation],
    trainings: Sequence[str],
    app: dict[str, str],
    styles: dict[str, dict[str, Any]],
    rate: float,
    stem: Path,
) -> None:
    """ROC curves per attack class and application at one rate, every evaluation run and injection pooled."""
    from sklearn.metrics import roc_auc_score, roc_curve

    chosen = [e for e in evaluations if split_method(e.method)[1] is None]
    present = [pd.read_parquet(e.scores, columns=["policy"])["policy"] for e in chosen]
    classes = _classes(pd.concat(present) if present else pd.Series(dtype=str))
    fig, axes = _grid(plt, len(classes), max(len(trainings), 1), height=4.4)
    for e in chosen:
        frame = pd.read_parquet(e.scores)
        frame = frame[np.isclose(frame["rate"], rate)]
        for row, policy in enumerate(classes):
            part = frame[(frame["label"] == 0) | (frame["policy"] == policy)]
            if part["label"].nunique() < 2:
                continue
            fpr, tpr, _ = roc_curve(part["label"], part["score"])
            auc = roc_auc_score(part["label"], part["score"])
            style = styles.get(e.method, {})
            ax = axes[row, trainings.index(e.training)]
            ax.plot(fpr, tpr, label=f"{e.method} (AUC {auc:.2f})", markevery=0.1, markersize=4, linewidth=1.2, **style)
    for (row, policy), (column, training) in ((rp, tc) for rp in enumerate(classes) for tc in enumerate(trainings)):
        ax = axes[row, column]
        if not ax.lines:
            _panel_note(ax, f"{training}: no {policy} attack was evaluated here")
            continue
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02),
               title=f"{app[training]}: {policy} attacks at {rate:g} MB/min")  # fmt: skip
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, stem)
    plt.close(fig)


def _cell(row: pd.Series) -> str:
    """F1 [interval] · the alert rate on benign intervals."""
    return f"{row['f1']:.2f} [{row['f1_low']:.2f}, {row['f1_high']:.2f}] · {row['alert_rate']:.0%}"


def summary(metrics_csv: Path, markdown: bool = False) -> str:
    """Per training run and attack class: F1 [95 % interval] · alert rate on benign intervals, per method and rate,
    every evaluation run and injection pooled: the rows the figures draw (`run` = `*`)."""
    m = pd.read_csv(metrics_csv, keep_default_na=False, na_values=[""])
    pooled = m[m["run"] == ALL_RUNS]
    parts = [
        f"{metrics_csv}: F1 at the frozen threshold [95 % bootstrap interval] · alert rate on benign intervals,"
        " every evaluation run and injection of a training run pooled (README: How the numbers are computed)"
    ]
    for (training, policy), rows in pooled.groupby(["training", pooled["policy"].map(POLICIES.index)], sort=True):
        table = rows.assign(cell=rows.apply(_cell, axis=1)).pivot(index="method", columns="rate", values="cell")
        table = table.sort_index(axis=1, ascending=False)
        table.columns = [f"{rate:g} MB/min" for rate in table.columns]
        lacking = rows.loc[~rows["enough"].astype(bool), "rate"]  # read back as booleans
        runs, seeds = int(rows["runs"].max()), int(rows["seeds"].max())
        size = f"{runs} run{'s' * (runs != 1)}, {seeds} injection{'s' * (seeds != 1)} each"
        title = f"{training}, {POLICIES[policy]} attacks ({size})"
        if len(lacking):
            title += f"; too few intervals at {', '.join(f'{r:g}' for r in sorted(lacking.unique()))} MB/min"
        parts.append(f"\n#### {title}\n\n{table.to_markdown()}" if markdown else f"\n{title}\n{table.to_string()}")
    return "\n".join(parts)


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--markdown"]
    print(summary(Path(arguments[0]), markdown="--markdown" in sys.argv[1:]))
