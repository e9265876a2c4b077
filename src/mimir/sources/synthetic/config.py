"""What a synthetic run is asked for: the application, the load, the seed, the capture, and any exfiltration."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mimir.apps import App
from mimir.errors import UsageError

if TYPE_CHECKING:
    from mimir.spec import RunSpec


@dataclass(frozen=True)
class Exfiltration:
    """A physical exfiltration: `bytes_per_minute` along `path` (services, then `outside`) for a window."""

    path: tuple[str, ...]
    bytes_per_minute: float
    start: float
    duration: float

    @classmethod
    def parse(cls, text: str, app: App) -> Exfiltration:
        fields = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
        unknown = set(fields) - {"path", "rate", "start", "duration"}
        if unknown or not {"path", "rate", "start"} <= set(fields):
            raise UsageError(f"--exfil {text!r}: use path=SVC,...,outside;rate=100KB/min;start=S[;duration=S]")
        path = tuple(p.strip() for p in fields["path"].split(","))
        if len(path) < 2 or path[-1] != "outside" or any(p not in app.services for p in path[:-1]):
            raise UsageError(f"--exfil {text!r}: the path lists services of {app.name} and ends with 'outside'")
        match = re.fullmatch(r"\s*([0-9.]+)\s*([KMG]?B)/(s|min)\s*", fields["rate"])
        if not match:
            raise UsageError(f"--exfil {text!r}: rate looks like 100KB/min or 1MB/s")
        unit = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[match.group(2)]
        per_minute = float(match.group(1)) * unit * (60 if match.group(3) == "s" else 1)
        try:
            start, duration = float(fields["start"]), float(fields.get("duration", 60))
        except ValueError:
            raise UsageError(f"--exfil {text!r}: start and duration are seconds") from None
        return cls(path, per_minute, start, duration)


@dataclass
class SynthConfig:
    """One synthetic run: `users` at the daily curve's peak for `duration` seconds, picking behaviours by `mix`."""

    app: App
    duration: float
    users: int
    mix: dict[str, float]
    seed: int
    start: int = 1_767_225_600  # 2026-01-01T00:00:00Z
    snaplen: int = 128
    rotate: float = 600.0
    exfiltration: list[Exfiltration] = field(default_factory=list)

    @classmethod
    def from_spec(cls, spec: RunSpec) -> SynthConfig:
        """The synthetic run of a run specification (the command line's and the workflow's form)."""
        return cls(
            app=spec.app,
            duration=float(spec.duration),
            users=spec.users,
            mix=dict(spec.mix),
            seed=spec.seed,
            start=spec.start,
            snaplen=spec.snaplen,
            rotate=float(spec.rotate),  # run.json says 600.0, as it always did
            exfiltration=[Exfiltration(w.path, w.bytes_per_minute, w.start, w.duration) for w in spec.exfil],
        )
