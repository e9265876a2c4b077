"""Sock Shop shoppers for Locust: the behaviours of the prototype's background_traffic.py (fretbuzz/mimir_v2).

- browse: the home page and the catalogue, then category and detail pages in turn (8 of each, the `repeat` of
  config/apps/sockshop.yaml; the prototype alternated 20 times) with a think time between pages.
- buy: home page, basic-auth login as a customer of the population (populate.sockshop_customer of the plan's
  `customer_seed`, one of `customers`), catalogue, a category and a detail page, empty the cart, add one sock,
  the basket, and the order.
- register: a new customer (indices past the population, unique per user), its login, a card and an address.

Plan parameters: `customers` and `customer_seed`, as the collector populated them. Without a population a user
buys as the first customer it registered itself.
"""

from __future__ import annotations

from mimir.sources.cluster.locust_support import DailyCurveShape, MixUser
from mimir.sources.cluster.populate import Customer, sockshop_customer

__all__ = ["DailyCurveShape", "Shopper"]

BROWSE_PAGES = 8
REGISTERED_INDEX_BASE = 1_000_000_000  # registered customers' indices: far past any population
PER_USER = 1_000_000


class Shopper(MixUser):
    """One shopper; the mix picks browse, buy or register at every iteration."""

    def on_start(self) -> None:
        self.customers = int(self.plan.params.get("customers", "0"))
        self.customer_seed = int(self.plan.params.get("customer_seed", str(self.plan.seed)))
        self.registered: list[Customer] = []
        self.items: list[str] = []

    def _catalogue(self) -> list[str]:
        """The sock ids, read from GET /catalogue (which every browse and buy visits anyway)."""
        with self.client.get("/catalogue", catch_response=True) as answer:
            try:
                ids = [item["id"] for item in answer.json()]
            except (ValueError, KeyError, TypeError):
                answer.failure("the catalogue is not a JSON list of items with ids")
                return self.items
        self.items = ids or self.items
        return self.items

    def _detail(self, items: list[str]) -> str | None:
        if not items:
            return None
        item = self.rng.choice(items)
        self.client.get(f"/detail.html?id={item}", name="/detail.html?id=[id]")
        return item

    def browse(self) -> None:
        self.client.get("/")
        self.wait()
        items = self._catalogue()
        for _ in range(BROWSE_PAGES):
            self.wait()
            self.client.get("/category.html")
            self.wait()
            self._detail(items)

    def _login(self, customer: Customer) -> bool:
        with self.client.get("/login", auth=(customer.username, customer.password), catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"login of {customer.username} answered {answer.status_code}")
                return False
        return True

    def buy(self) -> None:
        self.client.get("/")
        if self.customers > 0:
            customer = sockshop_customer(self.rng.randrange(self.customers), self.customer_seed)
        elif self.registered:
            customer = self.registered[0]
        else:
            self.register()
            return
        self.wait()
        if not self._login(customer):
            return
        self.wait()
        items = self._catalogue()
        self.wait()
        self.client.get("/category.html")
        self.wait()
        item = self._detail(items)
        if item is None:
            return
        self.wait()
        self.client.delete("/cart")
        self.wait()
        self.client.post("/cart", json={"id": item, "quantity": 1})
        self.wait()
        self.client.get("/basket.html")
        self.wait()
        self.client.post("/orders")

    def register(self) -> None:
        index = REGISTERED_INDEX_BASE + self.number * PER_USER + len(self.registered)
        customer = sockshop_customer(index, self.customer_seed)
        with self.client.post("/register", json=customer.registration(), catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"registering {customer.username} answered {answer.status_code}")
                return
        self.registered.append(customer)
        self.wait()
        if not self._login(customer):
            return
        self.wait()
        self.client.post("/cards", json=customer.card())
        self.wait()
        self.client.post("/addresses", json=customer.address())
