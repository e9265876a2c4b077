"""Filling an application with data before a run's load starts (the prototype ignored its own customer count).

Sock Shop is populated from the collector through the front-end's own HTTP API, as a customer would register.
The customers are derived from (seed, index) alone, so the locustfile logs in as them without any shared file
(the prototype passed a pickle around). This module imports only the standard library, `requests` and
mimir.errors, so the locustfile may import it inside the Locust process. WordPress is populated by its Job
(config/k8s/wordpress/90-populate-job.yaml), which `seeded_jobs` gives the run's seed.
"""

from __future__ import annotations

import copy
import random
import string
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from mimir.errors import ClusterError

_FIRST = ("Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger", "Frances", "Grace", "John", "Margaret", "Niklaus")
_LAST = ("Lovelace", "Turing", "Liskov", "Shannon", "Knuth", "Dijkstra", "Allen", "Hopper", "Backus", "Wirth")
_STREETS = ("Main Street", "High Street", "Station Road", "Church Lane", "Mill Road", "Park Avenue")
_CITIES = ("Leeds", "Bristol", "Glasgow", "Cardiff", "York", "Norwich")
_TRANSIENT = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Customer:
    """A Sock Shop customer with the card and address population gives them."""

    username: str
    password: str
    email: str
    first_name: str
    last_name: str
    card_number: str
    card_expires: str
    card_ccv: str
    street: str
    number: str
    city: str
    postcode: str
    country: str = "United Kingdom"

    def registration(self) -> dict[str, str]:
        return {
            "username": self.username,
            "password": self.password,
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
        }

    def card(self) -> dict[str, str]:
        return {"longNum": self.card_number, "expires": self.card_expires, "ccv": self.card_ccv}

    def address(self) -> dict[str, str]:
        return {
            "street": self.street,
            "number": self.number,
            "city": self.city,
            "postcode": self.postcode,
            "country": self.country,
        }


def sockshop_customer(index: int, seed: int) -> Customer:
    """Customer `index` of the population drawn with `seed`: the same on every call and in every process."""
    rng = random.Random(f"mimir-sockshop-customer:{seed}:{index}")  # noqa: S311 - reproducible test data, not secrets
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    tag = "".join(rng.choices(string.ascii_lowercase + string.digits, k=6))
    username = f"{first.lower()}.{last.lower()}.{tag}.{index}"
    return Customer(
        username=username,
        password="".join(rng.choices(string.ascii_letters + string.digits, k=16)),
        email=f"{username}@example.org",
        first_name=first,
        last_name=last,
        card_number="".join(rng.choices(string.digits, k=16)),
        card_expires=f"{rng.randint(1, 12):02d}/{rng.randint(30, 39)}",
        card_ccv=f"{rng.randint(0, 999):03d}",
        street=rng.choice(_STREETS),
        number=str(rng.randint(1, 250)),
        city=rng.choice(_CITIES),
        postcode=f"{rng.choice(string.ascii_uppercase)}{rng.randint(1, 99)} {rng.randint(1, 9)}"
        f"{rng.choice(string.ascii_uppercase)}{rng.choice(string.ascii_uppercase)}",
    )


def sockshop_customers(count: int, seed: int) -> list[Customer]:
    """The first `count` customers of the population drawn with `seed`."""
    return [sockshop_customer(i, seed) for i in range(count)]


@dataclass(frozen=True)
class Pacing:
    """How population treats the shop: customers created in parallel, and how a refused request is retried
    (`attempts` in all, waits doubling from `backoff` seconds, each request given `timeout` seconds)."""

    workers: int = 8
    attempts: int = 5
    backoff: float = 1.0
    timeout: float = 30.0


class _Shop:
    """One customer's browser session against the front-end, retrying what a busy or starting shop refuses."""

    def __init__(self, base_url: str, pacing: Pacing):
        self.base = base_url.rstrip("/")
        self.attempts = pacing.attempts
        self.backoff = pacing.backoff
        self.timeout = pacing.timeout
        self.session = requests.Session()

    def call(self, method: str, path: str, *, accept: frozenset[int] = frozenset({200}), **kwargs: Any) -> int:
        """Send until the status is in `accept` or not transient; return the last status (after the retries)."""
        url = self.base + path
        last = "no answer"
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                answer = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.RequestException as e:
                last = type(e).__name__
                continue
            if answer.status_code in accept or answer.status_code not in _TRANSIENT:
                return answer.status_code
            last = f"HTTP {answer.status_code}"
        raise ClusterError(f"{method} {url} kept failing after {self.attempts} attempts (last: {last})")


def _populate_one(base_url: str, customer: Customer, pacing: Pacing) -> str:
    """Register, log in, add a card and an address; 'registered' or 'existed' (a rerun, or a lost reply)."""
    shop = _Shop(base_url, pacing)
    try:
        registered = shop.call("POST", "/register", json=customer.registration())
        reason = f"HTTP {registered}"
    except ClusterError as e:
        registered, reason = 0, str(e)
    # The front-end answers 500 for a taken username: if the login works, the customer is already there.
    try:
        login = shop.call("GET", "/login", accept=frozenset({200, 401}), auth=(customer.username, customer.password))
    except ClusterError as e:
        login, reason = 0, f"{reason}; then {e}"
    if login != 200:
        if registered == 200:
            reason = f"registered, but GET {shop.base}/login answered {login}"
        raise ClusterError(f"POST {shop.base}/register: customer {customer.username!r} not created ({reason})")
    for path, body in (("/cards", customer.card()), ("/addresses", customer.address())):
        answer = shop.call("POST", path, json=body)
        if answer != 200:
            raise ClusterError(f"POST {shop.base}{path} answered HTTP {answer} for customer {customer.username!r}")
    return "registered" if registered == 200 else "existed"


def populate_sockshop(
    base_url: str,
    count: int,
    seed: int,
    progress: Callable[[str], None] | None = None,
    pacing: Pacing = Pacing(),
) -> dict[str, int]:
    """Create the `count` customers of `seed` through the front-end at base_url, each with a card and an address.

    Returns {"customers", "registered", "existed", "cards", "addresses"}. Raises ClusterError naming the URL when
    the shop keeps refusing (transient answers are retried `pacing.attempts` times with doubling waits).
    """
    customers = sockshop_customers(count, seed)
    counts = {"customers": count, "registered": 0, "existed": 0, "cards": 0, "addresses": 0}
    step = max(1, count // 10)
    with ThreadPoolExecutor(max_workers=max(1, pacing.workers)) as pool:
        futures = [pool.submit(_populate_one, base_url, c, pacing) for c in customers]
        try:
            for done, future in enumerate(futures, start=1):
                counts[future.result()] += 1
                counts["cards"] += 1
                counts["addresses"] += 1
                if progress and (done % step == 0 or done == count):
                    progress(f"sockshop customers: {done}/{count}")
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return counts


POPULATE_SEED = "WORDPRESS_POPULATE_SEED"  # the population Job's variable for its random draws


def seeded_jobs(objects: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Copies of the population objects whose Jobs draw from the run's seed, where a container declares the seed
    variable: the same config populates the same data."""
    seeded = []
    for doc in objects:
        containers = doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        declares = any(e.get("name") == POPULATE_SEED for c in containers for e in c.get("env", []))
        seeded.append(with_job_env(doc, {POPULATE_SEED: str(seed)}) if doc.get("kind") == "Job" and declares else doc)
    return seeded


def with_job_env(job: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """A copy of a Job manifest whose containers get `env` (replacing variables of the same name)."""
    patched = copy.deepcopy(job)
    for container in patched["spec"]["template"]["spec"]["containers"]:
        kept = [e for e in container.get("env", []) if e["name"] not in env]
        container["env"] = kept + [{"name": k, "value": v} for k, v in env.items()]
    return patched
