"""Population of the applications: Sock Shop customers through a stand-in front-end on loopback, and the
WordPress Job's counts.

The stand-in answers as weaveworks' front-end (api/user/index.js) does: POST /register 200 {"id"} with the
session's `logged_in` cookie, 500 for a taken username; GET /login 200 with basic auth of a known customer, else
401; POST /cards and /addresses 200 {"id"} for a logged-in session, 500 otherwise. Sessions are the `md.sid`
cookie, as express-session names it there.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path

import pytest
import yaml

from mimir.errors import ClusterError
from mimir.sources.cluster import populate

JOB = Path(__file__).resolve().parents[1] / "config" / "k8s" / "wordpress" / "90-populate-job.yaml"


Answer = tuple[int, object, dict[str, str]]  # status, JSON body, cookies to set


class FrontEnd:
    """The shop's state and the counts the tests check; answers each request as the front-end would."""

    def __init__(self, fail_first: int = 0, always: int | None = None):
        self.lock = threading.Lock()
        self.customers: dict[str, tuple[str, str]] = {}  # username -> (password, id)
        self.sessions: dict[str, str] = {}  # md.sid -> customer id
        self.registered: Counter[str] = Counter()
        self.logins: Counter[str] = Counter()
        self.cards: Counter[str] = Counter()
        self.addresses: Counter[str] = Counter()
        self.fail_first = fail_first  # answer 503 to this many first requests
        self.always = always  # answer this status to everything
        self.ids = count(1)

    def refusal(self) -> int | None:
        """The status every request gets (`always`), or the next of the first failures; None to serve it."""
        with self.lock:
            if self.always is not None:
                return self.always
            if self.fail_first > 0:
                self.fail_first -= 1
                return 503
        return None

    def post(self, path: str, sid: str, body: dict[str, str]) -> Answer:
        with self.lock:
            if path == "/register":
                return self._register(sid, body)
            if path in ("/cards", "/addresses"):
                return self._add(path, sid)
        return 404, None, {}

    def _register(self, sid: str, body: dict[str, str]) -> Answer:
        if body["username"] in self.customers:
            return 500, None, {}
        customer_id = f"c{next(self.ids)}"
        self.customers[body["username"]] = (body["password"], customer_id)
        self.registered[body["username"]] += 1
        self.sessions[sid] = customer_id
        return 200, {"id": customer_id}, {"logged_in": sid}

    def _add(self, path: str, sid: str) -> Answer:
        customer_id = self.sessions.get(sid)
        if customer_id is None:
            return 500, None, {}
        username = next(u for u, (_, i) in self.customers.items() if i == customer_id)
        (self.cards if path == "/cards" else self.addresses)[username] += 1
        return 200, {"id": f"x{next(self.ids)}"}, {}

    def get(self, path: str, sid: str, authorization: str) -> Answer:
        if path != "/login":
            return 404, None, {}
        username, _, password = base64.b64decode(authorization.removeprefix("Basic ")).decode().partition(":")
        with self.lock:
            known = self.customers.get(username)
            if known is None or known[0] != password:
                return 401, None, {}
            self.sessions[sid] = known[1]
            self.logins[username] += 1
        return 200, "Cookie is set", {"logged_in": sid}


def make_handler(shop: FrontEnd) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            return

        def _session(self) -> tuple[str, bool]:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
            if "md.sid" in jar:
                return jar["md.sid"].value, False
            return f"s{next(shop.ids)}", True

        def _answer(self, status: int, body: object = None, cookies: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in (cookies or {}).items():
                self.send_header("Set-Cookie", f"{name}={value}; Path=/")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, respond: Callable[[str], Answer]) -> None:
            """Refuse as the shop says, else answer in the session (a new one gets its md.sid cookie)."""
            refused = shop.refusal()
            if refused is not None:
                self._answer(refused)
                return
            sid, new = self._session()
            status, body, cookies = respond(sid)
            self._answer(status, body, ({"md.sid": sid} if new else {}) | cookies)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            self._serve(lambda sid: shop.post(self.path, sid, body))

        def do_GET(self) -> None:
            self._serve(lambda sid: shop.get(self.path, sid, self.headers.get("Authorization", "")))

    return Handler


@pytest.fixture
def serve() -> Iterator:
    servers: list[ThreadingHTTPServer] = []

    def start(shop: FrontEnd) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(shop))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_every_customer_is_registered_once_logged_in_with_card_and_address(serve) -> None:
    shop = FrontEnd()
    url = serve(shop)
    seen: list[str] = []
    counts = populate.populate_sockshop(
        url, 25, seed=3, progress=seen.append, pacing=populate.Pacing(workers=4, backoff=0.0)
    )
    names = {c.username for c in populate.sockshop_customers(25, 3)}
    assert counts == {"customers": 25, "registered": 25, "existed": 0, "cards": 25, "addresses": 25}
    assert set(shop.registered) == names and set(shop.registered.values()) == {1}
    assert set(shop.logins) == names
    assert shop.cards == Counter(dict.fromkeys(names, 1))
    assert shop.addresses == Counter(dict.fromkeys(names, 1))
    assert seen[-1] == "sockshop customers: 25/25"


def test_a_second_run_finds_the_customers_already_there(serve) -> None:
    shop = FrontEnd()
    url = serve(shop)
    populate.populate_sockshop(url, 6, seed=1, pacing=populate.Pacing(workers=2, backoff=0.0))
    again = populate.populate_sockshop(url, 6, seed=1, pacing=populate.Pacing(workers=2, backoff=0.0))
    assert again["registered"] == 0 and again["existed"] == 6
    assert set(shop.registered.values()) == {1}


def test_transient_refusals_are_retried(serve) -> None:
    shop = FrontEnd(fail_first=3)
    url = serve(shop)
    counts = populate.populate_sockshop(url, 2, seed=0, pacing=populate.Pacing(workers=1, attempts=5, backoff=0.0))
    assert counts["registered"] == 2 and shop.fail_first == 0


def test_a_shop_that_keeps_failing_is_a_cluster_error_naming_the_url(serve) -> None:
    url = serve(FrontEnd(always=500))
    with pytest.raises(ClusterError) as failure:
        populate.populate_sockshop(url, 3, seed=0, pacing=populate.Pacing(workers=2, attempts=2, backoff=0.0))
    assert f"{url}/register" in str(failure.value)
    assert "500" in str(failure.value)


def test_a_card_refused_names_its_url(serve) -> None:
    shop = FrontEnd()
    url = serve(shop)

    # A shop that forgets every session: registration works, the card is refused (not logged in).
    shop.sessions = _Forgetful()
    with pytest.raises(ClusterError) as failure:
        populate.populate_sockshop(url, 1, seed=0, pacing=populate.Pacing(workers=1, attempts=1, backoff=0.0))
    assert f"POST {url}/cards" in str(failure.value) and "HTTP 500" in str(failure.value)


class _Forgetful(dict):
    def __setitem__(self, key: str, value: str) -> None:
        return


def test_customer_derivation_is_deterministic_and_seeded() -> None:
    first = populate.sockshop_customers(50, seed=7)
    assert first == populate.sockshop_customers(50, seed=7)
    assert populate.sockshop_customer(12, 7) == first[12]
    other = populate.sockshop_customers(50, seed=8)
    assert {c.username for c in first}.isdisjoint({c.username for c in other})
    assert len({c.username for c in first}) == 50
    assert all(len(c.card_number) == 16 and c.card_number.isdigit() for c in first)


def test_the_wordpress_population_job_draws_from_the_runs_seed() -> None:
    job = yaml.safe_load(JOB.read_text())
    service = {"kind": "Service", "metadata": {"name": "x"}, "spec": {}}
    seeded, untouched = populate.seeded_jobs([job, service], seed=5)
    (container,) = seeded["spec"]["template"]["spec"]["containers"]
    values = {e["name"]: e.get("value") for e in container["env"]}
    assert values[populate.POPULATE_SEED] == "5"
    assert sum(e["name"] == populate.POPULATE_SEED for e in container["env"]) == 1
    assert values["WORDPRESS_POSTS"] == "800" and "WORDPRESS_DB_PASSWORD" in values  # the rest is kept
    original = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert original[populate.POPULATE_SEED] == "0" and untouched is service  # the manifest itself is not changed
