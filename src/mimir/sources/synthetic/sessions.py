"""The users' side of the simulation: sessions of pages over the daily curve, and the calls serving each page.

A session is one behaviour of the application (its request type: browse, buy, register): a sequence of steps
(pages), with think times between them. Each step is served by a tree of service calls; the tree is laid out once
per step as a template, so that every page a user requests only picks its template and a time.
"""

from __future__ import annotations

import numpy as np

from mimir.apps import App, Call, Step
from mimir.loadmodel import PHASES, daily_curve
from mimir.sources.synthetic.connections import RTT
from mimir.spec import RunSpec


def step_templates(app: App) -> tuple[list[list[int]], list[Step]]:
    """Per request type, the sequence of step templates a session visits (repeats expanded), and the steps."""
    steps: list[Step] = []
    sessions: list[list[int]] = []
    for kind in app.requests:
        seq = []
        for step in app.requests[kind]:
            steps.append(step)
            seq += [len(steps) - 1] * step.repeat
        sessions.append(seq)
    return sessions, steps


def step_instances(cfg: RunSpec, sessions: list[list[int]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Start times (s since start) and step template of every page a user requests."""
    kinds = list(cfg.app.requests)
    p = np.array([cfg.mix.get(k, 0.0) for k in kinds])
    lo, hi = cfg.app.think_time
    phase = cfg.duration / PHASES
    active = daily_curve(cfg.users)
    times, steps = [], []
    for user in range(int(active.max())):
        # a user is active in the phases whose count exceeds its number, and keeps its sessions going
        # across consecutive active phases (one long-running load generator, unlike the prototype's restarts)
        on = np.flatnonzero(np.diff(np.r_[0, (active > user).astype(np.int64), 0]))
        for first, last in zip(on[::2], on[1::2], strict=True):
            t, end = first * phase + rng.uniform(0, min(phase, 10.0)), last * phase
            while t < end:
                seq = sessions[rng.choice(len(kinds), p=p)]
                gaps = rng.uniform(lo, hi, len(seq))
                at = t + np.concatenate(([0.0], np.cumsum(gaps[:-1])))
                keep = at < end
                times.append(at[keep])
                steps.append(np.asarray(seq)[keep])
                t = at[-1] + gaps[-1]
    if not times:
        return np.zeros(0), np.zeros(0, np.int64)
    t = np.concatenate(times)
    s = np.concatenate(steps).astype(np.int64)
    order = np.argsort(t, kind="stable")
    return t[order], s[order]


def call_templates(app: App, steps: list[Step], index: dict[str, int]) -> dict[str, np.ndarray]:
    """Flatten every step into its calls (pre-order), with offsets and durations relative to the step.

    Columns: the step template, the parent call (its position within the template, -1 for the entry call), the
    callee (service index), request and response bytes, offset and duration; `start` and `count` per template.
    """
    rows: list[tuple[int, int, int, int, int, float, float]] = []  # template, parent, callee, req, resp, t, d
    starts = []

    def layout(
        template: int, parent: int, callee: int, req: int, resp: int, calls: tuple[Call, ...], t0: float
    ) -> float:
        me = len(rows)
        rows.append((template, parent, callee, req, resp, t0, 0.0))
        t = t0 + 1.5 * RTT + req / 1e9
        for call in calls:
            t = layout(template, me, index[call.to], call.request, call.response, call.calls, t + 0.0003)
        end = t + 0.0005 + resp / 1e9 + 2 * RTT
        rows[me] = (*rows[me][:6], end - t0)
        return end

    for k, step in enumerate(steps):
        starts.append(len(rows))
        layout(k, -1, index[app.entry], step.request, step.response, step.calls, 0.0)
    cols = list(zip(*rows, strict=True))
    out = {
        name: np.array(col, dtype=np.float64 if name in ("offset", "duration") else np.int64)
        for name, col in zip(("template", "parent", "callee", "req", "resp", "offset", "duration"), cols, strict=True)
    }
    out["start"] = np.array(starts, np.int64)
    has_parent = out["parent"] >= 0  # parents as positions within their own template
    out["parent"][has_parent] -= out["start"][out["template"][has_parent]]
    out["count"] = np.bincount(out["template"], minlength=len(steps))
    return out
