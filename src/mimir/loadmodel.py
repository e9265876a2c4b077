"""The load model of every run: users over a daily curve and the mix of their behaviours.

The synthetic source simulates this load and the cluster collector has Locust play it, so that a synthetic run
and a collected one with the same settings describe the same day: the prototype's "normal" curve of 24 phases,
and each user picking a behaviour (the paper's browse, buy and register) by the mix at every session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real

import numpy as np

from mimir.errors import UsageError

PHASES = 24  # the prototype's experiments split a run into 24 phases of a daily curve
BEHAVIOURS = ("browse", "buy", "register")  # the user behaviours of the paper's experiments
DEFAULT_MIX = {"browse": 0.5, "buy": 0.3, "register": 0.2}  # the paper's mix
MAX_WEIGHT = 1e6  # a weight's documented range is [0, 1e6]: their sum stays finite, their shares exact enough


def daily_curve(users: int) -> np.ndarray:
    """Active users in each of the 24 phases: the prototype's "normal" curve, peaking at `users` in phase 18."""
    h = np.arange(PHASES)
    r = -0.5 * np.sin(np.pi * h / 12) + 1.1
    return np.rint(users * r / r.max()).astype(np.int64)


def _key(where: str, name: object) -> str:
    """Where one weight was given: `runs.x.mix.buy` in a config file, `--mix buy` on the command line."""
    return f"{where} {name}" if where.startswith("-") else f"{where}.{name}"


def normalise_mix(weights: Mapping[str, float], kinds: Sequence[str], where: str) -> dict[str, float]:
    """Weights per behaviour → probabilities for every kind, in `kinds` order (0.0 for kinds not named).

    `where` names the setting in error messages: a config key (`runs.sockshop-train.mix`) or an option (`--mix`).
    """
    for name, weight in weights.items():
        if name not in kinds:
            raise UsageError(f"{_key(where, name)}: not a behaviour of the application (one of {', '.join(kinds)})")
        if isinstance(weight, bool) or not isinstance(weight, Real):
            raise UsageError(f"{_key(where, name)}: the weight {weight!r} is not a number")
        if not 0 <= weight <= MAX_WEIGHT:  # NaN too; exact for ints of any size
            raise UsageError(f"{_key(where, name)}: the weight {weight!r} is outside the documented range [0, 1e6]")
    total = sum(float(w) for w in weights.values())
    if total <= 0:
        raise UsageError(f"{where}: at least one weight must be positive")
    return {k: float(weights.get(k, 0.0)) / total for k in kinds}


def parse_mix(text: str, kinds: Sequence[str], where: str = "--mix") -> dict[str, float]:
    """`browse=0.5,buy=0.3,register=0.2` → probabilities (normalised), each kind named by the application."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not name:
            raise UsageError(f"{where}: {part!r}: use NAME=WEIGHT with NAME one of {', '.join(kinds)}")
        if name in weights:
            raise UsageError(f"{_key(where, name)}: given twice")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UsageError(f"{_key(where, name)}: {value!r} is not a number") from None
    return normalise_mix(weights, kinds, where)
