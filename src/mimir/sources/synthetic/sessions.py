"""The users' side of the simulation: sessions of pages over the daily curve, and the calls serving each page.

A session is one behaviour of the application (its request type: browse, buy, register): a sequence of steps
(pages), with think times between them. A step is one page, or a choice among pages by weight (a page mix inside
the behaviour). Each page is served by a tree of service calls, laid out once as a template, so that every page a
user requests only picks its template and a time; then the per-visit randomness is drawn for all pages at once:
which alternative, whether a probabilistic call happens (a cache miss), whether the page fails, and the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mimir.apps import App, Call, Step, ThinkTime
from mimir.loadmodel import PHASES, daily_curve
from mimir.sources.synthetic.connections import RTT
from mimir.spec import RunSpec

ASSET_REQUEST = 420  # bytes of a browser's GET for a static file (path, cookies, Accept headers)


@dataclass(frozen=True)
class Slots:
    """Per request type, its sequence of slots (repeats expanded); per slot, its page templates and weights."""

    sessions: list[list[int]]
    choices: list[list[tuple[int, float]]]
    pages: list[Step]


def step_templates(app: App) -> Slots:
    """Every page as a template, and the slots that sessions visit (a plain step is a slot with one page)."""
    pages: list[Step] = []
    choices: list[list[tuple[int, float]]] = []
    sessions: list[list[int]] = []
    for kind in app.requests:
        seq = []
        for step in app.requests[kind]:
            options = step.alternatives or ((1.0, step),)
            slot = []
            for weight, page in options:
                pages.append(page)
                slot.append((len(pages) - 1, weight))
            choices.append(slot)
            seq += [len(choices) - 1] * step.repeat
        sessions.append(seq)
    return Slots(sessions, choices, pages)


def think_times(think: ThinkTime, n: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds between a user's pages, from the application's distribution, clipped to its bounds."""
    if think.distribution == "exponential":
        gaps = rng.exponential(think.mean, n)
    elif think.distribution == "lognormal":
        gaps = think.median * np.exp(think.sigma * rng.standard_normal(n))
    else:
        return rng.uniform(think.min, think.max, n)
    return np.clip(gaps, think.min, think.max)


@dataclass(frozen=True)
class Visits:
    """Every page a user requests: start time (s since start), page template and the user who asked."""

    t: np.ndarray
    page: np.ndarray
    user: np.ndarray


def step_instances(cfg: RunSpec, slots: Slots, rng: np.random.Generator) -> Visits:
    """The pages every user requests over the run, sorted by time."""
    kinds = list(cfg.app.requests)
    p = np.array([cfg.mix.get(k, 0.0) for k in kinds])
    phase = cfg.duration / PHASES
    active = daily_curve(cfg.users)
    times, steps, users = [], [], []
    for user in range(int(active.max())):
        # a user is active in the phases whose count exceeds its number, and keeps its sessions going
        # across consecutive active phases (one long-running load generator, unlike the prototype's restarts)
        on = np.flatnonzero(np.diff(np.r_[0, (active > user).astype(np.int64), 0]))
        for first, last in zip(on[::2], on[1::2], strict=True):
            t, end = first * phase + rng.uniform(0, min(phase, 10.0)), last * phase
            while t < end:
                seq = slots.sessions[rng.choice(len(kinds), p=p)]
                gaps = think_times(cfg.app.think_time, len(seq), rng)
                at = t + np.concatenate(([0.0], np.cumsum(gaps[:-1])))
                keep = at < end
                times.append(at[keep])
                steps.append(np.asarray(seq)[keep])
                users.append(np.full(int(keep.sum()), user))
                t = at[-1] + gaps[-1]
    if not times:
        return Visits(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
    t = np.concatenate(times)
    slot = np.concatenate(steps).astype(np.int64)
    user = np.concatenate(users).astype(np.int64)
    order = np.argsort(t, kind="stable")
    return Visits(t[order], _pick_pages(slots, slot[order], rng), user[order])


def _pick_pages(slots: Slots, slot: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The page of each visit: a slot's only page, or one of its alternatives drawn by weight."""
    width = max(len(c) for c in slots.choices)
    cumulative = np.ones((len(slots.choices), width))
    template = np.zeros((len(slots.choices), width), np.int64)
    for k, options in enumerate(slots.choices):
        w = np.array([weight for _, weight in options])
        cumulative[k, : len(options)] = np.cumsum(w) / w.sum()
        template[k, : len(options)] = [page for page, _ in options]
        template[k, len(options) :] = options[-1][0]
    pick = (rng.random(slot.shape[0])[:, None] > cumulative[slot]).sum(axis=1)
    return template[slot, np.minimum(pick, width - 1)]


def call_templates(app: App, pages: list[Step], index: dict[str, int]) -> dict[str, np.ndarray]:
    """Flatten every page into its calls (pre-order), with offsets and durations relative to the page.

    Columns: the template, the parent call (its position within the template, -1 for a call from the user), the
    callee (service index), request and response bytes, offset, duration, probability and queries; `start` and
    `count` per template. A page's static assets follow it as calls from the user to the entry service.
    """
    rows: list[tuple[int, int, int, int, int, float, float, float, int]] = []
    starts = []

    def layout(template: int, parent: int, call: Call, callee: int, t0: float) -> float:
        me = len(rows)
        rows.append((template, parent, callee, call.request, call.response, t0, 0.0, call.probability, call.queries))
        t = t0 + 1.5 * RTT + call.request / 1e9
        for child in call.calls:
            t = layout(template, me, child, index[child.to], t + 0.0003 * child.queries)
        end = t + 0.0005 + call.response / 1e9 + 2 * RTT
        rows[me] = (*rows[me][:6], end - t0, *rows[me][7:])
        return end

    for k, page in enumerate(pages):
        starts.append(len(rows))
        entry = Call(app.entry, page.request, page.response, page.calls, 1.0, 1)
        end = layout(k, -1, entry, index[app.entry], 0.0)
        for a in range(page.assets_count):  # the browser fetches the page's assets as soon as the HTML arrives
            asset = Call(app.entry, ASSET_REQUEST, page.assets_response, (), 1.0, 1)
            layout(k, -1, asset, index[app.entry], end + 0.002 * (a + 1))
    cols = list(zip(*rows, strict=True))
    names = ("template", "parent", "callee", "req", "resp", "offset", "duration", "probability", "queries")
    floats = ("offset", "duration", "probability")
    out = {
        name: np.array(col, dtype=np.float64 if name in floats else np.int64)
        for name, col in zip(names, cols, strict=True)
    }
    out["start"] = np.array(starts, np.int64)
    has_parent = out["parent"] >= 0  # parents as positions within their own template
    out["parent"][has_parent] -= out["start"][out["template"][has_parent]]
    out["count"] = np.bincount(out["template"], minlength=len(pages))
    return out
