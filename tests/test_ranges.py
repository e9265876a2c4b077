"""Every numeric option and config value has a documented range, checked before any work and any output: a value
outside it (NaN, an infinity, negative, zero, huge, non-whole, too large for any type) is exit 2 naming the option
or the key, never an overflow, an allocation without bound, a run until killed or a silently wrong result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mimir.apps import load_app
from mimir.cli import build_parser, main
from mimir.errors import EXIT_USAGE, UsageError
from mimir.spec import (
    BIN,
    CLOCK,
    JOBS,
    RATE,
    SEED,
    WINDOW,
    ClusterSpec,
    ExfilWindow,
    Fault,
    FeatureSpec,
    Range,
    RunSpec,
    TestbedSpec,
)

REPO = Path(__file__).resolve().parents[1]
SYNTH = ["synth", "--app", "sockshop", "--users", "2", "--duration", "60", "-o", "OUT"]
FEATURES = ["features", "edges.parquet", "run", "-o", "OUT"]
TESTBED = ["testbed", "run", "--app", "wordpress", "--users", "2", "--duration", "60", "-o", "OUT"]
COLLECT = ["collect", "--app", "sockshop", "--users", "2", "--duration", "60", "-o", "OUT"]
PATH = "path=user-db,user,front-end,outside"
HUGE = "99999999999999999999"  # more than 64 bits


def exit_code(argv: list[str]) -> int:
    """mimir's exit code for `argv`: what main returns, or what argparse exits with."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


CASES = [
    # the findings
    (["--mix", "browse=1e308,buy=1e308"], SYNTH, "--mix browse"),  # the sum overflowed to inf, shares to NaN
    (["--exfil", f"{PATH};rate=1KB/min;start=-1"], SYNTH, "start"),
    (["--exfil", f"{PATH};rate=1KB/min;start=nan"], SYNTH, "start"),
    (["--exfil", f"{PATH};rate=1.2.3KB/min;start=1"], SYNTH, "rate"),
    (["--seed", "-5"], SYNTH, "--seed"),  # numpy takes non-negative seeds only
    (["--snaplen", "100000000"], SYNTH, "--snaplen"),  # a 300 GiB buffer
    (["--rotate", "0.5"], SYNTH, "--rotate"),  # whole seconds, as tcpdump -G
    (["--exfil", f"{PATH};rate={HUGE}GB/s;start=1;duration=5"], SYNTH, "rate"),  # recorded -2**63 bytes
    (["--exfil", f"{PATH};rate=1KB/min;start=100"], SYNTH, "--exfil"),  # ends after the 60 s run: nothing sent
    (["--duration", "1e12"], SYNTH, "--duration"),  # ran until killed
    (["--users", "1e9"], SYNTH, "--users"),
    (["--users", "100000", "--duration", "3600"], SYNTH, "--users 100000 times --duration"),  # the memory budget
    (["--exfil", f"{PATH};rate=1GB/s;start=0;duration=60"], SYNTH, "--exfil"),  # 60 GB of packets
    # the run's other values
    (["--duration", "nan"], SYNTH, "--duration"),
    (["--duration", "inf"], SYNTH, "--duration"),
    (["--duration", "0.5"], SYNTH, "--duration"),  # less than the platform's first timer: an internal error
    (["--users", "0"], SYNTH, "--users"),
    (["--users", "2.5"], SYNTH, "--users"),
    (["--seed", HUGE], SYNTH, "--seed"),
    (["--snaplen", "67"], SYNTH, "--snaplen"),
    (["--rotate", "0"], SYNTH, "--rotate"),
    (["--rotate", "1e308"], SYNTH, "--rotate"),
    (["--start", "-1"], SYNTH, "--start"),
    (["--start", HUGE], SYNTH, "--start"),  # past 2106: a classic pcap's seconds overflowed
    (["--mix", "browse=nan"], SYNTH, "--mix browse"),
    (["--mix", "browse=-1"], SYNTH, "--mix browse"),
    (["--exfil", f"{PATH};rate=1KB/min;start=0;duration=inf"], SYNTH, "duration"),
    (["--exfil", f"{PATH};rate=1KB/min;start=1e400"], SYNTH, "start"),
    (["--exfil", f"{PATH};rate=0KB/min;start=0"], SYNTH, "rate"),
    # ingest, features, realism
    (["ingest", "x.pcap", "-o", "OUT", "--bin", HUGE], None, "--bin"),
    (["ingest", "x.pcap", "-o", "OUT", "--bin", "0"], None, "--bin"),
    (["ingest", "x.pcap", "-o", "OUT", "--bin", "1.5"], None, "--bin"),
    (["--tg", "10,nan"], FEATURES, "--tg"),
    (["--tg", f"10,{HUGE}"], FEATURES, "--tg"),
    (["--tg", ","], FEATURES, "--tg"),
    (["--rates", "1e308"], FEATURES, "--rates"),
    (["--rates", "-1"], FEATURES, "--rates"),
    (["--rates", "0.1,0.1000001"], FEATURES, "--rates"),  # one file name: the second would overwrite the first
    (["--split", "train=nan,validation=1"], FEATURES, "--split train"),  # the NaN sum passed the sum check
    (["--attacked-share", "1"], FEATURES, "--attacked-share"),
    (["--attacked-share", "nan"], FEATURES, "--attacked-share"),
    (["--attack-seconds", "0"], FEATURES, "--attack-seconds"),
    (["--attack-seconds", "1e9"], FEATURES, "--attack-seconds"),
    (["--rate-sd", "-0.1"], FEATURES, "--rate-sd"),
    (["--rate-sd", "inf"], FEATURES, "--rate-sd"),
    (["--max-path-length", "1000"], FEATURES, "--max-path-length"),
    (["--seeds", "1000"], FEATURES, "--seeds"),
    (["--seed", "-1"], FEATURES, "--seed"),
    (["--jobs", "0"], FEATURES, "--jobs"),
    (["--jobs", HUGE], FEATURES, "--jobs"),
    (["realism", "a", "b", "-o", "OUT", "--window", "0"], None, "--window"),
    (["realism", "a", "b", "-o", "OUT", "--window", "1e9"], None, "--window"),
    (["realism", "a", "b", "-o", "OUT", "--reference-at", "nan"], None, "--reference-at"),
    (["realism", "a", "b", "-o", "OUT", "--candidate-at", "-inf"], None, "--candidate-at"),
    # collect and the testbed
    (["--spawn-rate", "1e-300"], COLLECT, "--spawn-rate"),
    (["--cpu-percent", "101"], COLLECT, "--cpu-percent"),
    (["--customers", "-1"], COLLECT, "--customers"),
    (["--ready-timeout", "1e12"], COLLECT, "--ready-timeout"),  # beyond what a thread may wait: OverflowError
    (["--buffer", HUGE], COLLECT, "--buffer"),
    (["--fault", "target=database;at=100"], TESTBED, "--fault"),  # after the load's end
    (["--fault", "target=database;at=nan"], TESTBED, "at"),
    (["--fault", "target=database;at=1;down=inf"], TESTBED, "down"),
    (["--wordpress-pods", "0"], TESTBED, "--wordpress-pods"),
    (["--max-wordpress-pods", "1000"], TESTBED, "--max-wordpress-pods"),
    (["--cpu-per-pod", "0"], TESTBED, "--cpu-per-pod"),
    (["--scale-period", "1e-300"], TESTBED, "--scale-period"),  # the autoscaler's window overflowed
    (["--posts", "-1"], TESTBED, "--posts"),
    (["--accounts", "1e9"], TESTBED, "--accounts"),
    (["testbed", "up", "--seed", "-1"], None, "--seed"),
    (["testbed", "up", "--pages", "nan"], None, "--pages"),
]


@pytest.mark.parametrize(("given", "base", "named"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_value_outside_its_range_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], given: list[str],
    base: list[str] | None, named: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = [str(out) if arg == "OUT" else arg for arg in (given if base is None else [*base, *given])]
    assert exit_code(argv) == EXIT_USAGE
    stderr = capsys.readouterr().err
    assert named in stderr and "Traceback" not in stderr and "internal error" not in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written, not even a temporary


def test_each_option_shows_its_range_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    shown = {
        ("synth",): [RunSpec.RANGES[k] for k in ("users", "duration", "seed", "snaplen", "rotate", "start")],
        ("ingest",): [BIN],
        ("features",): [*(FeatureSpec.RANGES[k] for k in FeatureSpec.RANGES if k != "split"), SEED, JOBS],
        ("collect",): list(ClusterSpec.RANGES.values()),
        ("testbed", "run"): list(TestbedSpec.RANGES.values()),
        ("realism",): [WINDOW, CLOCK],
    }
    for command, ranges in shown.items():
        assert exit_code([*command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        for documented in ranges:
            assert str(documented) in text, (command, str(documented))


def test_the_ranges_are_documented() -> None:
    table = (REPO / "docs" / "architecture.md").read_text()
    ranges: list[Range] = [SEED, BIN, RATE, JOBS, WINDOW, CLOCK]
    for spec in (RunSpec, ExfilWindow, Fault, ClusterSpec, TestbedSpec, FeatureSpec):
        ranges += spec.RANGES.values()
    for documented in ranges:
        assert str(documented) in table, str(documented)


@pytest.mark.parametrize(
    ("option", "text", "value"),
    [
        ("--users", "100000", 100_000),  # the bounds themselves are in
        ("--users", "1e3", 1000),  # a whole number written as a float
        ("--duration", "604800", 604_800.0),
        ("--snaplen", "262144", 262_144),
        ("--snaplen", "68", 68),
        ("--seed", "4294967295", 2**32 - 1),
        ("--rotate", " 60 ", 60),
    ],
)
def test_a_value_within_its_range_is_taken(tmp_path: Path, option: str, text: str, value: Any) -> None:
    args = build_parser().parse_args([*[a for a in SYNTH if a != "OUT"], str(tmp_path), option, text])
    assert getattr(args, option.strip("-")) == value


@pytest.mark.parametrize(
    ("entry", "defaults", "key"),
    [
        ({"users": 10**30}, {}, "runs.shop.users"),
        ({"users": 3, "duration": 10**400}, {}, "runs.shop.duration"),  # float() of it raised OverflowError
        ({"users": 3, "duration": float("nan")}, {}, "runs.shop.duration"),
        ({"users": 3}, {"duration": 1e12}, "defaults.duration"),
        ({"users": 3}, {"snaplen": 100_000_000}, "defaults.snaplen"),
        ({"users": 3}, {"rotate": 0.5}, "defaults.rotate"),
        ({"users": 3, "seed": -5}, {}, "runs.shop.seed"),
        ({"users": 3, "mix": {"browse": 1e308, "buy": 1e308}}, {}, "runs.shop.mix.browse"),
        ({"users": 3, "exfil": [{"path": PATH[5:].split(","), "rate": "1KB/min", "start": 1790}]}, {}, "exfil[0]"),
        ({"users": 3, "exfil": [{"path": PATH[5:].split(","), "rate": "1e30GB/s", "start": 0}]}, {}, "exfil[0]: rate"),
    ],
)
def test_a_run_of_the_config_names_the_key(entry: dict, defaults: dict, key: str) -> None:
    with pytest.raises(UsageError, match=key.replace("[", r"\[").replace("]", r"\]")) as error:
        RunSpec.from_config("shop", entry, defaults, 0, load_app("sockshop"))
    assert error.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    ("build", "section", "key"),
    [
        (ClusterSpec.from_config, {"buffer_kib": 2**40}, "cluster.buffer_kib"),
        (ClusterSpec.from_config, {"ready_timeout": float("inf")}, "cluster.ready_timeout"),
        (TestbedSpec.from_config, {"scale_period": 1e-300}, "testbed.scale_period"),
        (TestbedSpec.from_config, {"posts": -1}, "testbed.posts"),
        (TestbedSpec.from_config, {"faults": [{"target": "database", "at": -1}]}, "testbed.faults[0]: at"),
        (FeatureSpec.from_config, {"rates": [1, float("nan")]}, "features.rates[1]"),
        (FeatureSpec.from_config, {"granularities": [10**30]}, "features.granularities[0]"),
        (FeatureSpec.from_config, {"split": {"train": float("nan"), "validation": 1}}, "features.split.train"),
        (FeatureSpec.from_config, {"split": {"train": 0.9, "validation": 0.2}}, "features.split"),
        (FeatureSpec.from_config, {"seeds": 1000}, "features.seeds"),
    ],
)
def test_a_section_of_the_config_names_the_key(build: Any, section: dict, key: str) -> None:
    with pytest.raises(UsageError, match=key.replace("[", r"\[").replace("]", r"\]")):
        build(section)


def test_an_exfiltration_window_records_the_bytes_it_sends(tmp_path: Path) -> None:
    """The largest window a tiny run holds: its bytes are positive and what its rate and duration say (they
    overflowed to -2**63 and nothing was sent when the rate had no bound)."""
    out = tmp_path / "run"
    window = f"{PATH};rate=1MB/s;start=2;duration=5"
    argv = ["synth", "--app", "sockshop", "--users", "1", "--duration", "10", "-o", str(out), "--exfil", window]
    assert exit_code(argv) == 0
    (recorded,) = json.loads((out / "run.json").read_text())["exfiltration"]
    assert recorded["bytes"] == pytest.approx(5e6, rel=1e-3)
