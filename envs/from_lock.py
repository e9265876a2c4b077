"""Write envs/mimir.yaml from requirements.lock, so users with conda get the same versions as the venv."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
pins = [line.strip() for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line]
lines = [
    "# Generated from requirements.lock by `make envs`; a test keeps the two in step.",
    "name: mimir",
    "channels:",
    "  - conda-forge",
    "dependencies:",
    f"  - python={sys.version_info.major}.{sys.version_info.minor}",
    "  - pip",
    "  - pip:",
    *(f"      - {pin}" for pin in pins),
    "      - -e ..",
    "",
]
(ROOT / "envs" / "mimir.yaml").write_text("\n".join(lines))
