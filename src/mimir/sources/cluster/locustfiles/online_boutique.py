"""Online Boutique shoppers for Locust, from the upstream loadgenerator's locustfile (v0.10.2).

Upstream's six tasks map onto the paper's three behaviours as config/apps/online-boutique.yaml models them:
- browse = index, setCurrency, browseProduct: the home page, a currency change, then six product pages;
- buy = addToCart, viewCart, checkout: a product page, add it to the cart, the cart, and the order;
- register = setCurrency and viewCart without buying: the shop has no accounts, so the third behaviour is the
  short session of a returning shopper setting preferences (per-user state: the currency cookie, the cart).
Products, currencies and the checkout form are upstream's.
"""

from __future__ import annotations

from mimir.sources.cluster.locust_support import DailyCurveShape, MixUser

__all__ = ["DailyCurveShape", "Shopper"]

PRODUCTS = (
    "0PUK6V6EV0",
    "1YMWWN1N4O",
    "2ZYFJ3GM2N",
    "66VCHSJNUP",
    "6E92ZMYYFZ",
    "9SIQT8TOJO",
    "L9ECAV7KIM",
    "LS4PSXUNUM",
    "OLJCESPC7Z",
)
CURRENCIES = ("EUR", "USD", "JPY", "CAD", "GBP", "TRY")
QUANTITIES = (1, 2, 3, 4, 5, 10)
PRODUCT_PAGES = 6
CHECKOUT_FORM = {
    "email": "someone@example.com",
    "street_address": "1600 Amphitheatre Parkway",
    "zip_code": "94043",
    "city": "Mountain View",
    "state": "CA",
    "country": "United States",
    "credit_card_number": "4432-8015-6152-0454",
    "credit_card_expiration_month": "1",
    "credit_card_expiration_year": "2039",
    "credit_card_cvv": "672",
}


class Shopper(MixUser):
    """One shopper; the mix picks browse, buy or register at every iteration."""

    def _product(self) -> str:
        product = self.rng.choice(PRODUCTS)
        self.client.get(f"/product/{product}", name="/product/[id]")
        return product

    def _set_currency(self) -> None:
        self.client.post("/setCurrency", data={"currency_code": self.rng.choice(CURRENCIES)})

    def browse(self) -> None:
        self.client.get("/")
        self.wait()
        self._set_currency()
        for _ in range(PRODUCT_PAGES):
            self.wait()
            self._product()

    def buy(self) -> None:
        product = self._product()
        self.wait()
        self.client.post("/cart", data={"product_id": product, "quantity": self.rng.choice(QUANTITIES)})
        self.wait()
        self.client.get("/cart")
        self.wait()
        self.client.post("/cart/checkout", data=CHECKOUT_FORM)

    def register(self) -> None:
        self._set_currency()
        self.wait()
        self.client.get("/cart")
