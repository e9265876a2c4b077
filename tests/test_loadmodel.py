"""The load model: the daily curve, and request mixes checked and normalised the same way from a config or the
command line, with errors that name the offending key."""

from __future__ import annotations

import math
import re

import pytest

from mimir import apps
from mimir.errors import EXIT_USAGE, UsageError
from mimir.loadmodel import BEHAVIOURS, DEFAULT_MIX, PHASES, daily_curve, normalise_mix, parse_mix

KINDS = list(BEHAVIOURS)


def test_the_papers_mix_and_behaviours() -> None:
    assert tuple(DEFAULT_MIX) == BEHAVIOURS == apps.BEHAVIOURS
    assert parse_mix("browse=0.5,buy=0.3,register=0.2", KINDS) == DEFAULT_MIX
    assert normalise_mix(DEFAULT_MIX, KINDS, "runs.r.mix") == DEFAULT_MIX


def test_daily_curve_peaks_in_phase_18() -> None:
    curve = daily_curve(100)
    assert curve.shape == (PHASES,) and curve.max() == 100 and curve.argmax() == 18 and curve.min() > 0


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"register": 3, "browse": 0.1}, {"browse": 0.1 / 3.1, "buy": 0.0, "register": 3 / 3.1}),
        ({"buy": 1}, {"browse": 0.0, "buy": 1.0, "register": 0.0}),
        ({"browse": 2, "buy": 6, "register": 0}, {"browse": 0.25, "buy": 0.75, "register": 0.0}),
    ],
)
def test_weights_become_probabilities_in_the_applications_order(
    weights: dict[str, float], expected: dict[str, float]
) -> None:
    mix = normalise_mix(weights, KINDS, "runs.r.mix")
    assert list(mix) == KINDS and mix == pytest.approx(expected) and math.isclose(sum(mix.values()), 1.0)
    text = ",".join(f"{k}={v}" for k, v in weights.items())
    assert parse_mix(text, KINDS) == mix  # the same floats whichever way the mix was given


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"browse": 1, "fly": 2}, "runs.shop.mix.fly: not a behaviour"),
        ({"buy": -1}, "runs.shop.mix.buy: the weight -1 is outside the documented range [0, 1e6]"),
        ({"buy": math.nan}, "runs.shop.mix.buy: the weight nan"),
        ({"register": math.inf}, "runs.shop.mix.register: the weight inf"),
        ({"buy": "lots"}, "runs.shop.mix.buy: the weight 'lots' is not a number"),
        ({"buy": True}, "runs.shop.mix.buy: the weight True is not a number"),
        ({"browse": 0, "buy": 0.0}, "runs.shop.mix: at least one weight must be positive"),
        ({}, "runs.shop.mix: at least one weight must be positive"),
    ],
)
def test_a_bad_mapping_names_the_key(weights: dict, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        normalise_mix(weights, KINDS, "runs.shop.mix")
    assert str(caught.value).startswith(message) and caught.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("browse=1,fly=2", "--mix fly: not a behaviour of the application (one of browse, buy, register)"),
        ("browse=1,buy=much", "--mix buy: 'much' is not a number"),
        ("browse=1,buy=-0.5", "--mix buy: the weight -0.5 is outside the documented range [0, 1e6]"),
        ("buy=1,buy=2", "--mix buy: given twice"),
        ("browse", "--mix: 'browse': use NAME=WEIGHT"),
        ("=1", "--mix: '=1': use NAME=WEIGHT"),
        ("browse=0", "--mix: at least one weight must be positive"),
    ],
)
def test_a_bad_option_names_the_key(text: str, message: str) -> None:
    with pytest.raises(UsageError, match="^" + re.escape(message)):
        parse_mix(text, KINDS)
