"""Detectors and the evaluation metrics: on hand-made tables where the answer is known, and on a synthetic run."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_mimir

from mimir.detectors import best_f1_threshold, by_seed, finest_max
from mimir.detectors.registry import METHODS as DETECTORS
from mimir.errors import NotFittedError
from mimir.evaluate import metrics


def test_best_f1_threshold_and_metrics() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    assert best_f1_threshold(labels, scores) == 0.35  # alerts on 0.35, 0.4, 0.8, 0.9: 3 TP, 1 FP
    m = metrics(labels, scores, 0.5)
    assert (m["precision"], m["recall"], m["alert_rate"]) == (1.0, 2 / 3, 0.0)
    assert m["f1"] == pytest.approx(0.8) and m["oracle_f1"] == pytest.approx(6 / 7)
    assert m["roc_auc"] == pytest.approx(8 / 9)


def test_the_best_f1_threshold_never_alerts_on_everything_while_another_detects_something() -> None:
    labels = np.array([1, 1, 1, 0, 1, 0, 1, 1])  # many attacked rows: alerting on all has F1 0.857
    scores = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # a score that sees one attack
    assert best_f1_threshold(labels, scores) == 1.0
    assert best_f1_threshold(labels, np.zeros(8)) == 0.0  # nothing else to choose


def test_finest_max_takes_the_fine_intervals_inside_each_coarse_one() -> None:
    tables = {10: pd.DataFrame({"start": np.arange(0, 120, 10)}), 60: pd.DataFrame({"start": [0, 60]})}
    fine = np.array([0.1, 0.9, 0.2, 0.0, 0.3, 0.1, 0.5, 0.4, 0.4, 0.6, 0.1, 0.2])
    assert finest_max(tables, {10: fine, 60: np.zeros(2)}).tolist() == [0.9, 0.6]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, pd.DataFrame]]:
    base = tmp_path_factory.mktemp("detectors")
    out = {}
    for name, users, extra in (("train", 10, []), ("eval", 6, ["--split", "test=1"])):
        run = base / name
        run_mimir(
            "synth",
            "--app",
            "sockshop",
            "--duration",
            "1800",
            "--users",
            str(users),
            "--seed",
            "5",
            "-o",
            run,
            check=True,
        )
        run_mimir("ingest", *sorted((run / "capture").glob("*.pcap")), "-o", base / f"{name}.parquet", check=True)
        run_mimir("edges", base / f"{name}.parquet", run, "-o", base / f"{name}-edges.parquet", check=True)
        run_mimir(
            "features",
            base / f"{name}-edges.parquet",
            run,
            "-o",
            base / f"{name}-out",
            "--rates",
            "1",
            "--attacked-share",
            "0.3",
            *extra,
            check=True,
        )
        stacked = {tg: pd.read_parquet(base / f"{name}-out" / "features" / f"{tg}s" / "1.parquet") for tg in (10, 60)}
        out[name] = by_seed(stacked)[0]  # the detectors take one injection's tables, intervals in time order
    return out


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detectors_score_every_coarse_interval_in_0_1(tables: dict, name: str) -> None:
    detector = DETECTORS[name]()
    detector.fit([tables["train"]])
    assert 0.0 <= detector.threshold <= 1.0 + 1e-9
    scores = detector.score(tables["eval"])
    assert len(scores) == len(tables["eval"][60]) and scores["start"].equals(tables["eval"][60]["start"])
    assert scores["score"].between(0, 1).all()
    again = DETECTORS[name]()
    again.fit([tables["train"]])
    assert again.score(tables["eval"]).equals(scores)  # seeded: the same model twice
    m = metrics(tables["eval"][60]["label"].to_numpy(), scores["score"].to_numpy(), detector.threshold)
    assert 0 < m["attacked"] < m["intervals"] and not np.isnan(m["roc_auc"])


def test_commsvc_learns_from_the_benign_intervals_only(tables: dict) -> None:
    from mimir.detectors.baselines import CommunicatingServices

    train = {tg: t.copy() for tg, t in tables["train"].items()}
    coarse_table = train[60]
    attacked = coarse_table["label"] == 1
    coarse_table.loc[attacked, "w:catalogue>payment"] = 1.0  # a pair that appears in attacked intervals only
    coarse_table.loc[~attacked & (coarse_table["split"] == "validation"), "w:payment>catalogue"] = 1.0
    detector = CommunicatingServices()
    detector.fit([train])
    assert "w:catalogue>payment" not in detector.known_ and "w:payment>catalogue" in detector.known_
    assert detector.threshold == 1.0  # its rule, not a cut tuned on validation
    assert detector.score(train)["score"].to_numpy()[attacked.to_numpy()].min() == 1.0


def test_the_volume_baseline_is_two_methods() -> None:
    """Exfiltration may leave over egress or in the responses to clients: one volume per threat model."""
    assert {"volume-egress", "volume-exits"} <= set(DETECTORS) and "volume" not in DETECTORS


@pytest.mark.parametrize("name", ["ide", "oddball"])
def test_unsupervised_baselines_alert_at_their_significance_level_not_everywhere(tables: dict, name: str) -> None:
    """The old ide (a threshold of 1.7e-6 chosen on a tiny validation split) and the old oddball (a statistic
    constant in training, ranked 1 everywhere) alerted on nearly every interval."""
    detector = DETECTORS[name]().fit([tables["train"]])
    assert detector.threshold == 1 - detector.alpha
    train = tables["train"][60]
    learnt = ((train["split"] == "train") & (train["label"] == 0)).to_numpy()
    scores = detector.score(tables["train"])["score"].to_numpy()
    assert (scores[learnt] >= detector.threshold).mean() <= 0.1
    evaluated = detector.score(tables["eval"])["score"]
    benign = tables["eval"][60]["label"].to_numpy() == 0
    assert evaluated.nunique() > 2 and (evaluated[benign] >= detector.threshold).mean() < 0.5


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_parameters_are_init_arguments_and_fit_alone_sets_the_learnt_state(tables: dict, name: str) -> None:
    """scikit-learn's conventions: __init__ stores its arguments as given; fit adds only `_`-suffixed attributes."""
    parameters = inspect.signature(DETECTORS[name].__init__).parameters
    detector = DETECTORS[name]()
    assert vars(detector) == {p: parameters[p].default for p in parameters if p != "self"}
    before = dict(vars(detector))
    assert detector.fit([tables["train"]]) is detector
    learnt = set(vars(detector)) - set(before)
    assert learnt and all(a.endswith("_") for a in learnt) and "threshold_" in learnt
    assert {p: vars(detector)[p] for p in before} == before


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_an_unfitted_detector_refuses_to_score_with_a_clear_error(name: str) -> None:
    detector = DETECTORS[name]()
    with pytest.raises(NotFittedError, match=f"the {name} detector is not fitted"):
        detector.score({60: pd.DataFrame({"start": [0]})})
    with pytest.raises(NotFittedError):
        _ = detector.threshold


@pytest.mark.parametrize("name", ["mimir", "lasso", "oddball"])
def test_models_saved_before_the_trailing_underscores_still_load_and_score_the_same(tables: dict, name: str) -> None:
    """A model.joblib written before fitted attributes ended in `_` (the Lasso kept the MIMIR detector's unused
    `c` and `stacker`): unpickling renames what was fitted, and the scores are the same."""
    fitted = DETECTORS[name]().fit([tables["train"]])
    parameters = set(inspect.signature(DETECTORS[name].__init__).parameters)
    old = {k.removesuffix("_") if k not in parameters else k: v for k, v in vars(fitted).items()}
    if name == "lasso":
        old |= {"c": 1.0, "stacker": None}
    loaded = DETECTORS[name].__new__(DETECTORS[name])
    loaded.__setstate__(old)
    assert set(vars(loaded)) == set(vars(fitted))
    assert loaded.threshold == fitted.threshold
    assert loaded.score(tables["eval"]).equals(fitted.score(tables["eval"]))


FIT_AND_SAVE = """
import sys, joblib, pandas as pd
from mimir.detectors.registry import METHODS
folder = sys.argv[1]
train = {tg: pd.read_parquet(f"{folder}/train-{tg}.parquet") for tg in (10, 60)}
for name, kind in sorted(METHODS.items()):
    joblib.dump(kind().fit([train]), f"{folder}/{name}-{sys.argv[2]}.joblib")
"""


def test_every_saved_model_is_the_same_bytes_in_every_process(tables: dict, tmp_path: Path) -> None:
    """Two processes with different string hashing save byte-identical models (a set would be pickled in hash
    order)."""
    for tg, table in tables["train"].items():
        table.to_parquet(tmp_path / f"train-{tg}.parquet")
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", FIT_AND_SAVE, str(tmp_path), hash_seed], env=env, check=True)
    for name in DETECTORS:
        assert (tmp_path / f"{name}-1.joblib").read_bytes() == (tmp_path / f"{name}-2.joblib").read_bytes(), name
