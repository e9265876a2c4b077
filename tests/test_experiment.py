"""The evaluation protocol on hand-made scores where every count is known: one definition of the numbers for the
tables, the summary and the figures; refusal of splits too small to mean anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mimir.errors import UsageError
from mimir.evaluate import bootstrap
from mimir.experiment import ALL_RUNS, Evaluation, Protocol, check_splits, metrics_tables, summary


def scores(run: str, seeds: int, benign: int, abiding: int, violating: int, hits: int, false: int) -> pd.DataFrame:
    """Per injection: `benign` benign intervals of which `false` alert, `abiding` and `violating` attacked ones of
    which the first `hits` of each class alert."""
    frames = []
    for seed in range(seeds):
        n = benign + abiding + violating
        policy = np.array([""] * benign + ["abiding"] * abiding + ["violating"] * violating, dtype=object)
        alert = np.zeros(n, bool)
        alert[:false] = True
        alert[benign : benign + hits] = True
        alert[benign + abiding : benign + abiding + hits] = True
        frames.append(
            pd.DataFrame(
                {
                    "run": run,
                    "rate": 1.0,
                    "seed": seed,
                    "start": np.arange(n) * 60,
                    "score": alert.astype(float),
                    "alert": alert,
                    "label": (policy != "").astype(np.int8),
                    "path": np.where(policy == "abiding", "db>svc>front>ingress", np.where(policy == "", "", "db>x")),
                    "policy": policy,
                    "shape": np.where(policy == "", "", "constant"),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def judged(tmp_path: Path) -> tuple[Path, Path]:
    frame = pd.concat([scores("a", 3, 40, 10, 10, 6, 4), scores("b", 3, 20, 5, 5, 5, 0)], ignore_index=True)
    frame.to_parquet(tmp_path / "scores.parquet")
    (tmp_path / "model.json").write_text(json.dumps({"threshold": 0.5}))
    evaluation = Evaluation("volume-egress", "train", ("a", "b"), tmp_path / "scores.parquet", tmp_path / "model.json")
    metrics_tables(
        [evaluation], Protocol(min_attacked=20, min_benign=30, seed=1), tmp_path / "m.csv", tmp_path / "p.csv"
    )
    return tmp_path / "m.csv", tmp_path / "p.csv"


def test_every_number_is_counted_on_pooled_intervals_per_attack_class(judged: tuple[Path, Path]) -> None:
    m = pd.read_csv(judged[0], keep_default_na=False).set_index(["run", "policy"])
    pooled = m.loc[(ALL_RUNS, "abiding")]
    # run a: 3 x (40 benign, 4 alerting; 10 abiding, 6 detected); run b: 3 x (20 benign, 0; 5 abiding, 5)
    assert (pooled["attacked"], pooled["detected"], pooled["benign"], pooled["false_alerts"]) == (45, 33, 180, 12)
    assert pooled["recall"] == pytest.approx(33 / 45) and pooled["alert_rate"] == pytest.approx(12 / 180)
    assert pooled["f1"] == pytest.approx(2 * 33 / (2 * 33 + 12 + 12))  # not the mean of the runs' F1
    assert pooled["f1_low"] < pooled["f1"] < pooled["f1_high"] and pooled["runs"] == 2 and pooled["seeds"] == 3
    assert m.loc[("a", "violating"), "benign"] == 120  # the other class's attacked intervals are left out
    # 15 abiding intervals in run b: fewer than min_attacked, kept and marked
    assert not m.loc[("b", "abiding"), "enough"] and m.loc[("a", "abiding"), "enough"]


def test_the_summary_prints_the_rows_the_figures_draw(judged: tuple[Path, Path]) -> None:
    m = pd.read_csv(judged[0], keep_default_na=False)
    text = summary(judged[0])
    for _, row in m[m["run"] == ALL_RUNS].iterrows():
        assert f"{row['f1']:.2f} [{row['f1_low']:.2f}, {row['f1_high']:.2f}] · {row['alert_rate']:.0%}" in text
    assert "train, abiding attacks (2 runs, 3 injections each)" in text


def test_recall_by_path_carries_the_class_and_the_shape(judged: tuple[Path, Path]) -> None:
    paths = pd.read_csv(judged[1], keep_default_na=False)
    row = paths[paths["path"] == "db>svc>front>ingress"].iloc[0]
    assert (row["policy"], row["shape"], row["attacked"], row["detected"]) == ("abiding", "constant", 45, 33)


def test_too_few_intervals_are_warned_about_with_the_numbers(
    judged: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    frame = scores("a", 1, 10, 3, 3, 3, 0)
    frame.to_parquet(judged[0].parent / "few.parquet")
    evaluation = Evaluation(
        "commsvc", "train", ("a",), judged[0].parent / "few.parquet", judged[0].parent / "model.json"
    )
    metrics_tables([evaluation], Protocol(), judged[0].parent / "m2.csv", judged[0].parent / "p2.csv")
    said = capsys.readouterr().err
    assert "WARNING: too few intervals to trust: commsvc on a (train), 1 MB/min, abiding: only 3 abiding" in said
    assert "10 benign" in said and "evaluation.min_attacked: 10" in said


def test_bootstrap_intervals_are_stratified_and_reproducible() -> None:
    one = bootstrap(30, 40, 5, 100, np.random.default_rng(3), 2000)
    assert one == bootstrap(30, 40, 5, 100, np.random.default_rng(3), 2000)
    assert one["recall_low"] < 0.75 < one["recall_high"] and one["alert_rate_low"] < 0.05 < one["alert_rate_high"]
    assert bootstrap(40, 40, 0, 100, np.random.default_rng(3), 100)["f1_low"] == 1.0  # nothing to resample wrong


def test_a_validation_split_too_small_is_refused_with_the_numbers() -> None:
    table = pd.DataFrame(
        {
            "seed": 0,
            "start": np.arange(30) * 60,
            "label": ([0] * 5 + [1] * 5) * 3,
            "policy": ([""] * 5 + ["abiding"] * 5) * 3,
            "split": ["train"] * 20 + ["validation"] * 10,
        }
    )
    with pytest.raises(UsageError, match=r"training run t: its validation split holds only 5 abiding attacked int"):
        check_splits("t", {60: table}, Protocol(min_attacked=6, min_benign=5))
    check_splits("t", {60: table}, Protocol(min_attacked=5, min_benign=5))
