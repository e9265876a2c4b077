"""The baselines on hand-made service graphs where the answer is known: what must alert, and how often benign
intervals alert."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mimir.detectors import Tables
from mimir.detectors.baselines import LAWS, IdeKashima, OddBall, VolumeEgress, VolumeExits

# bytes per 60 s interval of a small shop: clients, the entry service, two services with their databases, the
# cluster DNS and a little benign egress
TYPICAL = {
    "ingress>front-end": 2e5,
    "front-end>ingress": 1e7,
    "front-end>catalogue": 1.5e5,
    "catalogue>front-end": 7e5,
    "catalogue>catalogue-db": 2e5,
    "catalogue-db>catalogue": 7e5,
    "front-end>carts": 1.8e5,
    "carts>front-end": 1.5e5,
    "carts>carts-db": 1.8e5,
    "carts-db>carts": 1.9e5,
    "front-end>orders": 6e4,
    "orders>front-end": 1.1e5,
    "orders>carts": 4e4,
    "carts>orders": 6.6e4,
    "orders>payment": 5.5e4,
    "payment>orders": 2.3e4,
    "front-end>kube-dns": 2.3e5,
    "kube-dns>front-end": 3.2e5,
    "orders>kube-dns": 6.6e4,
    "kube-dns>orders": 9.2e4,
    "carts>kube-dns": 3e4,
    "kube-dns>carts": 4e4,
    "kube-dns>outside": 1e4,
    "outside>kube-dns": 1.2e4,
    "front-end>outside": 1e4,
    "outside>front-end": 5e2,
}
ALPHA = 0.01


def benign(seed: int, intervals: int) -> pd.DataFrame:
    """Bytes per pair and interval: the typical volumes under a load that varies (one factor per interval) and
    noise per pair."""
    rng = np.random.default_rng(seed)
    load = rng.lognormal(0.0, 0.2, size=(intervals, 1))
    noise = rng.lognormal(0.0, 0.1, size=(intervals, len(TYPICAL)))
    return pd.DataFrame(np.array(list(TYPICAL.values())) * load * noise, columns=list(TYPICAL))


def tables(weights: pd.DataFrame, split: str | list[str] = "train", label: int | np.ndarray = 0) -> Tables:
    frame = weights.fillna(0.0).add_prefix("w:")
    frame.insert(0, "start", 60 * np.arange(len(frame)))
    frame["label"] = label
    frame["split"] = split
    frame["seed"] = 0
    return {60: frame}


def alerts(detector: IdeKashima | OddBall | VolumeEgress | VolumeExits, weights: pd.DataFrame) -> np.ndarray:
    return detector.score(tables(weights))["score"].to_numpy() >= detector.threshold


@pytest.fixture(scope="module")
def training() -> list[Tables]:
    return [tables(benign(1, 2000))]


@pytest.mark.parametrize("method", [IdeKashima, OddBall])
def test_benign_intervals_alert_at_the_significance_level(training: list[Tables], method: type) -> None:
    detector = method(alpha=ALPHA).fit(training)
    assert detector.threshold == 1 - ALPHA
    rate = alerts(detector, benign(2, 4000)).mean()
    assert ALPHA / 2 <= rate <= 2 * ALPHA


def test_ide_fires_when_a_silent_pair_carries_most_of_the_bytes(training: list[Tables]) -> None:
    detector = IdeKashima(alpha=ALPHA).fit(training)
    weights = benign(3, 40)
    weights.loc[30, "carts-db>outside"] = 3e7  # carts-db and outside are known nodes that never talk
    assert alerts(detector, weights)[30]


def test_ide_ignores_the_load_and_scores_its_first_interval_0(training: list[Tables]) -> None:
    """The activity vector is a direction: the same graph under ten times the load is the same pattern."""
    detector = IdeKashima(alpha=ALPHA).fit(training)
    weights = pd.DataFrame([TYPICAL] * 12)
    weights.iloc[6:] *= 10
    scores = detector.score(tables(weights))["score"].to_numpy()
    assert scores[0] == 0.0 and (scores < detector.threshold).all()


def test_oddball_fires_on_an_egonet_weight_jump_through_ewpl(training: list[Tables]) -> None:
    detector = OddBall(alpha=ALPHA).fit(training)
    weights = benign(4, 40)
    catalogue = [c for c in weights if "catalogue" in c.split(">")]  # its neighbours do not talk to each other
    weights.loc[30, catalogue] *= 100  # so its egonet's weight is a hundred times its usual
    ewpl = LAWS.index("EWPL")
    assert detector.statistic(tables(weights)[60])[30, ewpl] > detector.laws_reference_[:, ewpl].max()
    assert alerts(detector, weights)[30]


def test_oddball_fires_on_a_star_through_edpl(training: list[Tables]) -> None:
    detector = OddBall(alpha=ALPHA).fit(training)
    weights = benign(5, 40)
    for k in range(20):  # payment talks to twenty hosts that talk to nobody else
        weights.loc[30, f"payment>host-{k}"] = 1e3
    edpl = LAWS.index("EDPL")
    assert detector.statistic(tables(weights)[60])[30, edpl] > detector.laws_reference_[:, edpl].max()
    assert alerts(detector, weights)[30]


def test_oddball_scores_a_topology_constant_in_training_below_the_threshold(training: list[Tables]) -> None:
    """The old oddball's failure: a statistic constant over the benign intervals ranked every interval at 1."""
    detector = OddBall(alpha=ALPHA).fit(training)
    edpl = LAWS.index("EDPL")
    assert np.ptp(detector.laws_reference_[:, edpl]) == 0  # the same topology in every training interval
    scores = detector.score(tables(benign(6, 200)))["score"]
    assert scores.nunique() > 100 and scores.median() < 0.9


def test_volume_exits_alone_sees_responses_to_clients_and_both_see_egress() -> None:
    """Validation holds both kinds of exfiltration; the test intervals carry 100 MB to clients, then to outside."""
    weights = benign(7, 300)
    positive = np.zeros(300, dtype=int)
    positive[[210, 230, 250, 270]] = 1
    weights.loc[[210, 250], "front-end>ingress"] += 1e8
    weights.loc[[230, 270], "front-end>outside"] += 1e8
    training = [tables(weights, ["train"] * 200 + ["validation"] * 100, positive)]
    test = benign(8, 3)
    test.loc[1, "front-end>ingress"] += 1e8
    test.loc[2, "front-end>outside"] += 1e8
    egress, exits = VolumeEgress().fit(training), VolumeExits().fit(training)
    assert alerts(egress, test).tolist() == [False, False, True]
    assert alerts(exits, test).tolist() == [False, True, True]
