"""WordPress readers and authors for Locust: the prototype's wordpress_background.py, mapped as
config/apps/wordpress.yaml models it.

- browse (the prototype's visitor): the home page, then 8 posts (the model's `repeat`; the prototype read 1-20
  URLs from an exported list). The post list is read once per Locust process from the REST API
  (/wp-json/wp/v2/posts, 100 per page), in place of the prototype's CSV export.
- buy (the prototype's user_post and user_update): as the administrator, create a post through the REST API,
  read it, update an existing post, then read 4 posts.
- register (the paper's third behaviour, absent from the prototype): the registration form and its submission
  (the populate Job lets anyone register), then a log-in and a profile view and update. WordPress mails a new
  account's password, which no one receives here, so the log-in and the profile are the administrator's.

REST writes authenticate with the log-in cookie and the nonce WordPress gives a logged-in user at
/wp-admin/admin-ajax.php?action=rest-nonce (no application password: WordPress offers those only over HTTPS).
Plan parameters: `admin_user` and `admin_password` (the collector generates the password into the Secret the
populate Job reads).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import urlsplit

from mimir.sources.cluster.locust_support import DailyCurveShape, MixUser

__all__ = ["Author", "DailyCurveShape"]

READ_POSTS = 8
READ_AFTER_WRITE = 4
_FIELD = re.compile(r'<input[^>]*\bname="(?P<name>[^"]+)"[^>]*\bvalue="(?P<value>[^"]*)"')


def form_fields(html: str) -> dict[str, str]:
    """The named input fields of a page and their values (enough for WordPress's own forms)."""
    return {m["name"]: m["value"] for m in _FIELD.finditer(html)}


class Author(MixUser):
    """One visitor or author; the mix picks browse, buy or register at every iteration."""

    posts: ClassVar[list[tuple[int, str]]] = []  # (id, path) of every published post, shared in the process

    def on_start(self) -> None:
        self.admin = (self.plan.params.get("admin_user", "mimir"), self.plan.params.get("admin_password", ""))
        self.nonce = ""
        self.registered = 0

    def _post_list(self) -> list[tuple[int, str]]:
        """Every post's id and path, read once per process (the first user to need it reads it)."""
        if Author.posts:
            return Author.posts
        found: list[tuple[int, str]] = []
        page, pages = 1, 1
        while page <= pages:
            answer = self.client.get(
                f"/wp-json/wp/v2/posts?per_page=100&page={page}&_fields=id,link", name="/wp-json/wp/v2/posts?page=[n]"
            )
            if answer.status_code != 200:
                break
            pages = int(answer.headers.get("X-WP-TotalPages", "1"))
            found += [(post["id"], urlsplit(post["link"]).path or "/") for post in answer.json()]
            page += 1
        if found and not Author.posts:
            Author.posts = found
        return Author.posts or found

    def _read(self, count: int) -> None:
        posts = self._post_list()
        for _ in range(count if posts else 0):
            self.wait()
            self.client.get(self.rng.choice(posts)[1], name="/[post]/")

    def _log_in(self) -> bool:
        """Log in as the administrator (a cookie) and fetch a fresh REST nonce."""
        user, password = self.admin
        with self.client.post(
            "/wp-login.php",
            data={"log": user, "pwd": password, "wp-submit": "Log In", "redirect_to": "/wp-admin/"},
            allow_redirects=False,
            catch_response=True,
        ) as answer:
            if answer.status_code != 302 or not any(
                n.startswith("wordpress_logged_in") for n in self.client.cookies.get_dict()
            ):
                answer.failure(f"log-in of {user!r} refused (HTTP {answer.status_code})")
                return False
        nonce = self.client.get("/wp-admin/admin-ajax.php?action=rest-nonce", name="/wp-admin/admin-ajax.php")
        self.nonce = nonce.text.strip() if nonce.status_code == 200 else ""
        return bool(self.nonce)

    def _rest(self, path: str, body: dict[str, str], name: str) -> dict[str, Any] | None:
        with self.client.post(path, json=body, headers={"X-WP-Nonce": self.nonce}, name=name, catch_response=True) as a:
            if a.status_code in (401, 403):
                self.nonce = ""  # the session or nonce expired: log in again at the next buy
                a.failure(f"REST write refused (HTTP {a.status_code})")
                return None
            if a.status_code >= 400:
                a.failure(f"REST write failed (HTTP {a.status_code})")
                return None
            return a.json()

    def _text(self, words: int) -> str:
        vocabulary = ("data", "graph", "service", "packet", "cluster", "pod", "flow", "edge", "load", "user")
        return " ".join(self.rng.choice(vocabulary) for _ in range(words))

    def browse(self) -> None:
        self.client.get("/")
        self._read(READ_POSTS)

    def buy(self) -> None:
        if not self.nonce and not self._log_in():
            return
        self.wait()
        created = self._rest(
            "/wp-json/wp/v2/posts",
            {"title": self._text(6).capitalize(), "content": self._text(400), "status": "publish"},
            name="/wp-json/wp/v2/posts",
        )
        if created is None:
            return
        self.wait()
        self.client.get(urlsplit(created.get("link", "/")).path or "/", name="/[new post]/")
        posts = self._post_list()
        if posts:
            self.wait()
            post_id = self.rng.choice(posts)[0]
            self._rest(
                f"/wp-json/wp/v2/posts/{post_id}",
                {"content": self._text(350)},
                name="/wp-json/wp/v2/posts/[id]",
            )
        self._read(READ_AFTER_WRITE)

    def register(self) -> None:
        self.client.get("/wp-login.php?action=register")
        self.wait()
        login = f"reader-{self.number}-{self.registered}-{self.rng.getrandbits(32):08x}"
        self.registered += 1
        with self.client.post(
            "/wp-login.php?action=register",
            data={
                "user_login": login,
                "user_email": f"{login}@example.org",
                "redirect_to": "",
                "wp-submit": "Register",
            },
            allow_redirects=False,
            catch_response=True,
        ) as answer:
            if answer.status_code != 302:
                answer.failure(f"registration of {login} not accepted (HTTP {answer.status_code})")
                return
        self.wait()
        if not self._log_in():
            return
        self.wait()
        profile = self.client.get("/wp-admin/profile.php")
        fields = form_fields(profile.text)
        if "_wpnonce" not in fields or "user_id" not in fields:
            return
        self.wait()
        update = {
            name: fields.get(name, "")
            for name in ("_wpnonce", "_wp_http_referer", "user_id", "checkuser_id", "email", "nickname")
        }
        update |= {"from": "profile", "action": "update", "description": self._text(30)}
        self.client.post("/wp-admin/profile.php", data=update)
