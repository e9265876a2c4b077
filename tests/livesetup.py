"""A trained model and a run to score live, made once per test session the way a user makes them: `mimir synth`,
`ingest`, `edges` and `features` on the command line, then the workflow's own `fit_model`.

WordPress at 20 users: a 20-minute training run (injections at 10 MB/min, granularities 10 s and 30 s) and a
2-minute evaluation run whose own capture holds one physical exfiltration window from the database through
WordPress to outside at 20 MB/min, 40 s to 70 s from its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from conftest import run_mimir

from mimir.detectors import by_seed
from mimir.experiment import Protocol, fit_model

SENSITIVE = ["my-release-pxc"]
WINDOW = (40, 70)  # seconds from the evaluation run's start
EXFIL = f"path=my-release-pxc,wordpress,outside;rate=20MB/min;start={WINDOW[0]};duration={WINDOW[1] - WINDOW[0]}"


@dataclass(frozen=True)
class LiveSetup:
    models: Path  # models/mimir (10 s and 30 s) and models/mimir@10
    evaluation: Path  # the run bundle to score
    validation_alert_rate: float  # mimir@10's share of benign validation intervals it alerts on

    @property
    def capture(self) -> Path:
        return next((self.evaluation / "capture").glob("*.pcap"))


def make(root: Path) -> LiveSetup:
    train, evaluation = root / "train", root / "evaluation"
    run_mimir("synth", "--app", "wordpress", "--duration", 1200, "--users", 20, "--seed", 1, "-o", train, check=True)
    run_mimir("ingest", *sorted((train / "capture").glob("*.pcap")), "-o", root / "flows.parquet", check=True)
    run_mimir("edges", root / "flows.parquet", train, "-o", root / "edges.parquet", check=True)
    run_mimir("features", root / "edges.parquet", train, "-o", root / "features", "--tg", "10,30", "--rates", "10",
              "--seeds", 3, check=True)  # fmt: skip
    tables = {tg: pd.read_parquet(root / "features" / "features" / f"{tg}s" / "10.parquet") for tg in (10, 30)}
    for method in ("mimir", "mimir@10"):
        fit_model(method, {}, 1, {"train": [tables]}, root / "models" / method, Protocol(1, 1, 10, 0), SENSITIVE)
    run_mimir("synth", "--app", "wordpress", "--duration", 120, "--users", 20, "--seed", 2, "--exfil", EXFIL,
              "-o", evaluation, check=True)  # fmt: skip
    return LiveSetup(root / "models", evaluation, _validation_alert_rate(root / "models" / "mimir@10", tables[10]))


def _validation_alert_rate(model: Path, table: pd.DataFrame) -> float:
    import joblib

    detector = joblib.load(model / "model.joblib")
    alerts, benign = 0, 0
    for one in by_seed({10: table}):
        rows = one[10]
        chosen = (rows["split"] == "validation").to_numpy() & (rows["label"] == 0).to_numpy()
        scores = detector.score(one)["score"].to_numpy()
        alerts += int((scores[chosen] >= detector.threshold).sum())
        benign += int(chosen.sum())
    return alerts / max(benign, 1)
