"""What an application's locustfile builds on; imported only inside the Locust process that load.run_locust starts.

A locustfile needs only

    from mimir.sources.cluster.locust_support import DailyCurveShape, MixUser

    class Shopper(MixUser):
        def browse(self): ...
        def buy(self): ...

Locust takes every non-abstract LoadTestShape in the locustfile's namespace, imported names included, so the
import alone makes DailyCurveShape drive the run; MixUser is abstract, and each subclass is a user class.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from collections import Counter
from functools import cache
from itertools import count
from pathlib import Path
from typing import Any, ClassVar

from locust import HttpUser, LoadTestShape, events, task
from locust.env import Environment

from mimir.errors import UsageError
from mimir.io import atomic_path
from mimir.sources.cluster.load import BEHAVIOURS_SUFFIX, LoadPlan

# load.run_locust stops Locust with SIGINT. A process that inherits SIGINT ignored (a parent that ignores it, as
# some supervisors and test runners do) keeps it ignored across exec, and Python then installs no KeyboardInterrupt
# handler: Locust could not be stopped and would be killed without its statistics. The locustfile imports this
# module in Locust's main thread, before the run starts.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_behaviours: Counter[str] = Counter()  # iterations per behaviour, written when Locust quits
_environment: list[Environment] = []  # the one Locust environment, kept for the quit hook


@cache
def current_plan() -> LoadPlan:
    """The plan run_locust put in the environment (parsed once per process)."""
    return LoadPlan.from_env(os.environ)


class DailyCurveShape(LoadTestShape):
    """The plan's daily curve, phase by phase, then the end of the test; each phase change goes to plan.events."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = current_plan()
        self.phase: int | None = -1  # none recorded yet (None is the end of the load)

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        phase = self.plan.phase_at(elapsed)
        if phase != self.phase:
            self.phase = phase
            self._record(self.plan.phases if phase is None else phase, self.plan.users_at(elapsed))
        if phase is None:
            return None
        return self.plan.users_at(elapsed), self.plan.spawn_rate

    def _record(self, phase: int, users: int) -> None:
        """Append {"ts", "phase", "users"}; phase == plan.phases with 0 users marks the end of the load."""
        if not self.plan.events:
            return
        line = json.dumps({"ts": time.time(), "phase": phase, "users": users})
        with Path(self.plan.events).open("a") as f:
            f.write(line + "\n")


class MixUser(HttpUser):
    """A user who, at every iteration, picks one behaviour by the plan's mix and calls the method of that name.

    Each user draws from its own random.Random seeded by (plan seed, user number), so a user's sequence of
    behaviours and think times is the same in every run with the same seed.
    """

    abstract = True
    _numbers: ClassVar[count[int]] = count()

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.plan = current_plan()
        self.number = next(MixUser._numbers)
        self.rng = random.Random(f"{self.plan.seed}/{self.number}")  # noqa: S311 (reproducible load, not secrets)
        self.behaviour_names = list(self.plan.mix)
        self.behaviour_weights = list(self.plan.mix.values())

    def wait_time(self) -> float:
        """A think time from the application's distribution, clipped to its bounds, as the synthetic users wait."""
        plan = self.plan
        if plan.think_distribution == "exponential":
            wait = self.rng.expovariate(1.0 / plan.think_mean)
        elif plan.think_distribution == "lognormal":
            wait = plan.think_median * math.exp(plan.think_sigma * self.rng.gauss(0.0, 1.0))
        else:
            return self.rng.uniform(plan.think_min, plan.think_max)
        return min(max(wait, plan.think_min), plan.think_max)

    @task
    def behave(self) -> None:
        name = self.rng.choices(self.behaviour_names, self.behaviour_weights)[0]
        _behaviours[name] += 1
        getattr(self, name)()


def missing_behaviours(user_class: type[MixUser], plan: LoadPlan) -> list[str]:
    """Behaviours the mix can pick that the user class does not define as methods."""
    return [name for name, p in plan.mix.items() if p > 0 and not callable(getattr(user_class, name, None))]


@events.init.add_listener
def _check_users(environment: Environment, **_: Any) -> None:
    """Refuse to start when a mix behaviour has no method (Locust exits 1 on an exception here)."""
    _environment.append(environment)
    plan = current_plan()
    for user_class in environment.user_classes:
        if issubclass(user_class, MixUser) and (missing := missing_behaviours(user_class, plan)):
            raise UsageError(
                f"user class {user_class.__name__} has no method for behaviour(s) {', '.join(missing)} of the mix"
            )


@events.quit.add_listener
def _write_behaviours(**_: Any) -> None:
    """After every user stopped: how often each behaviour ran, beside Locust's CSV files."""
    options = _environment[0].parsed_options if _environment else None
    prefix = getattr(options, "csv_prefix", None)
    if not prefix:
        return
    with atomic_path(Path(prefix + BEHAVIOURS_SUFFIX)) as tmp:
        tmp.write_text(json.dumps(dict(sorted(_behaviours.items()))) + "\n")
