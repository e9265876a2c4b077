"""The readers of untrusted files under hostile input, briefly (`make fuzz` runs the same inputs at length).

Every seed of the corpus, then a few dozen inputs per reader that hypothesis makes from the seeds (the same
mutations and generated structures as `make fuzz`, its choices fixed so `make test` is reproducible). Each input
runs in a forked child through the reader's real entry point: it must end with exit code 0, 2, 3, 4 or 5, within
20 s and under 1 GB. A failing input is kept under tests/fuzz/failures/<reader>/ with what the reader printed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .harness import Pool, keep_failure, warm_workspace
from .inputs import READERS, FuzzInput, Seed, draw, load_seeds

EXAMPLES = 50  # per reader: a few seconds each on a warm parent

brief = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: the failing input is kept as it is
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    with warm_workspace() as workspace:
        yield Pool(workspace)


def check(pool: Pool, item: FuzzInput) -> None:
    outcome = pool.run_one(item)
    if outcome.failure:
        kept = keep_failure(item, outcome)
        pytest.fail(f"{item.reader} input from {item.seed} ({item.how[:120]}): {outcome.describe()}; kept as {kept}")


SEEDS = [pytest.param(reader, seed, id=f"{reader}/{seed.name}") for reader in READERS for seed in load_seeds(reader)]


@pytest.mark.parametrize(("reader", "seed"), SEEDS)
def test_every_seed_is_handled(pool: Pool, reader: str, seed: Seed) -> None:
    check(pool, FuzzInput(reader, seed.name, "as-is", seed.data))


@pytest.mark.parametrize("reader", READERS)
@brief
@given(rng=st.randoms(use_true_random=False))
def test_hostile_inputs_are_handled(pool: Pool, reader: str, rng: random.Random) -> None:
    check(pool, draw(reader, rng, load_seeds(reader)))
