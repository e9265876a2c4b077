"""`mimir live` against the batch path on the same capture: the same feature rows and scores, interval by interval,
however the packets arrive (in blocks, out of order within the lateness allowance), and the CLI's dry run on a
capture file: alerts in the exfiltration window, JSON lines, errors with exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import livesetup
import numpy as np
import pandas as pd
import pytest
from conftest import run_mimir

from mimir.capture.formats import ByteStream, FileReport, RecordBlock, read_records
from mimir.capture.ingest import ingest
from mimir.dataset import service_weights
from mimir.edges import build_edges
from mimir.entities import load_run
from mimir.features import compute_features
from mimir.graphs import CodedEdges, build_graphs
from mimir.live.detect import IntervalScorer, LiveModel, Scored


@pytest.fixture(scope="session")
def setup(tmp_path_factory: pytest.TempPathFactory) -> livesetup.LiveSetup:
    return livesetup.make(tmp_path_factory.mktemp("live"))


def blocks(capture: Path, capacity: int = 1 << 14) -> list[tuple[np.ndarray, RecordBlock, int]]:
    """Every block of records of a capture, each with its own copy of the buffer (small blocks: many closes)."""
    out = []
    records = RecordBlock(capacity)
    with ByteStream(capture) as stream:
        for n in read_records(stream, records, FileReport(path=str(capture))):
            block = RecordBlock(n)
            for name in ("off", "caplen", "origlen", "link", "sec", "nsec"):
                getattr(block, name)[:n] = getattr(records, name)[:n]
            out.append((stream.buf.copy(), block, n))
    return out


def score_live(model: LiveModel, run: Path, fed: list, lateness: float = 2.0) -> tuple[list[Scored], IntervalScorer]:
    spans, addressing, _ = load_run(run)
    scorer = IntervalScorer(model)
    scored = []
    for buf, records, n in fed:
        scorer.add(buf, records, n)
        scored += scorer.close_until(scorer.last_ts - lateness, spans, addressing)
    return scored + scorer.close_until(scorer.last_ts, spans, addressing, final=True), scorer


def batch_tables(model: LiveModel, run: Path, capture: Path, start: int, end: int) -> dict[int, pd.DataFrame]:
    """The batch path: the whole run ingested, resolved, aggregated and featured at once (as the workflow does)."""
    flows, _ = ingest([capture])
    edges, _ = build_edges(flows, run, bin_seconds=1)
    coded = CodedEdges.from_edges(edges)
    tables = {}
    for tg in model.granularities:
        graphs = build_graphs(coded, start, end, tg)
        meta = pd.DataFrame(
            {"interval": np.arange(graphs.intervals), "start": start + np.arange(graphs.intervals) * tg}
        )
        tables[tg] = pd.concat(
            [meta, compute_features(graphs, list(model.sensitive)).reset_index(drop=True), service_weights(graphs)],
            axis=1,
        )
    return tables


def assert_same_as_batch(model: LiveModel, setup: livesetup.LiveSetup, scored: list[Scored]) -> None:
    start, end = scored[0].start, scored[-1].end
    assert [s.start for s in scored] == list(range(start, end, model.coarse))  # every interval once, in order
    batch = batch_tables(model, setup.evaluation, setup.capture, start, end)
    for tg, table in batch.items():
        live = pd.concat([s.features[tg] for s in scored], ignore_index=True)
        live["interval"] = np.arange(len(live))
        columns = sorted(set(table.columns) | set(live.columns))
        assert len(live) == len(table)
        # a column one side lacks is 0 on the other: a pair no interval of the other side saw
        left = live.reindex(columns=columns).fillna(0.0)
        right = table.reindex(columns=columns).fillna(0.0)
        pd.testing.assert_frame_equal(left, right, check_exact=True, check_dtype=False)
    scores = model.detector.score(batch)["score"].to_numpy()
    live_scores = np.array([s.score for s in scored])
    # the same rows scored one at a time or all at once differ by BLAS's summation order, nothing else
    np.testing.assert_allclose(live_scores, scores, rtol=0, atol=1e-12)
    assert [s.alert for s in scored] == list(scores >= model.threshold)


@pytest.mark.parametrize("method", ["mimir", "mimir@10"])
def test_live_gives_the_batch_features_and_scores(setup: livesetup.LiveSetup, method: str) -> None:
    model = LiveModel.load(setup.models / method)
    assert model.sensitive == tuple(livesetup.SENSITIVE)
    scored, scorer = score_live(model, setup.evaluation, blocks(setup.capture))
    assert scorer.late_packets == 0
    assert sum(s.packets for s in scored) == scorer.packets
    assert_same_as_batch(model, setup, scored)


def test_packets_out_of_order_within_the_allowance_count_and_later_ones_are_late(setup: livesetup.LiveSetup) -> None:
    model = LiveModel.load(setup.models / "mimir@10")
    fed = blocks(setup.capture)
    swapped = [fed[k ^ 1] for k in range(len(fed) - len(fed) % 2)] + fed[len(fed) - len(fed) % 2 :]
    span = max(float(r.sec[:n].max() - r.sec[:n].min()) for _, r, n in fed)
    scored, scorer = score_live(model, setup.evaluation, swapped, lateness=2 * span + 2)
    assert scorer.late_packets == 0
    assert_same_as_batch(model, setup, scored)
    # no allowance: a block that comes after a later one closed its interval is late, dropped and counted
    scored, scorer = score_live(model, setup.evaluation, swapped, lateness=0)
    late = sum(s.packets for s in scored)
    assert scorer.late_packets > 0
    assert late + scorer.late_packets == scorer.packets


def test_an_address_no_entity_holds_is_unknown_and_reported(setup: livesetup.LiveSetup, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(setup.evaluation, run, ignore=shutil.ignore_patterns("capture"))
    events = [json.loads(line) for line in (run / "entities.jsonl").read_text().splitlines()]
    pod = next(e for e in events if e["kind"] == "pod" and e["name"].startswith("wordpress-") and e.get("ips"))
    kept = [e for e in events if (e["kind"], e["name"]) != ("pod", pod["name"])]
    (run / "entities.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))
    model = LiveModel.load(setup.models / "mimir@10")
    spans, addressing, _ = load_run(run)
    scorer = IntervalScorer(model)
    for buf, records, n in blocks(setup.capture):
        scorer.add(buf, records, n)
    scored = scorer.close_until(scorer.last_ts, spans, addressing, final=True)
    assert sorted({a for s in scored for a in s.unknown}) == sorted(pod["ips"])
    # its traffic is kept, in a group of its own, not merged into a service or dropped
    assert any(c.startswith("reciprocity:") and c.endswith("|unknown") for s in scored for c in s.features[10])


def test_the_dry_run_on_a_capture_file_alerts_in_the_window(setup: livesetup.LiveSetup, tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.jsonl"
    done = run_mimir("live", "--model", setup.models / "mimir@10", "--capture", setup.capture, "--entities",
                     setup.evaluation, "--alerts", alerts, check=True)  # fmt: skip
    lines = [json.loads(line) for line in alerts.read_text().splitlines()]
    run = json.loads((setup.evaluation / "run.json").read_text())
    window = run["exfiltration"][0]
    assert lines[0]["start"] <= run["start"] and lines[-1]["end"] >= run["end"]
    assert {"start", "end", "score", "threshold", "alert", "top_features", "lag", "packets"} <= lines[0].keys()
    assert all(x["lag"] is None for x in lines)  # a file is scored long after it was made: no lag to tell
    first = next(x for x in lines if x["alert"] and x["end"] > window["start"])
    assert first["start"] < window["start"] + 2 * 10
    top = first["top_features"][0]
    assert top["contribution"] > 0 and top["pairs"]
    assert "intervals scored" in done.stderr


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (("--model", "nowhere"), 2, "no model.json"),
        (("--capture", "missing.pcap"), 2, "no such file or folder"),
        (("--lateness", "-1"), 2, "--lateness"),
        (("--metrics-port", "70000"), 2, "--metrics-port"),
        (("--webhook", "ftp://example"), 2, "ftp://example"),
    ],
)
def test_bad_values_are_refused_with_the_option_named(
    setup: livesetup.LiveSetup, tmp_path: Path, change: tuple[str, str], code: int, message: str
) -> None:
    args = {"--model": setup.models / "mimir@10", "--capture": setup.capture, "--entities": setup.evaluation}
    args[change[0]] = change[1]
    done = run_mimir("live", *[x for kv in args.items() for x in kv], "--alerts", tmp_path / "a.jsonl")
    assert done.returncode == code, done.stderr
    assert message in done.stderr


def test_a_damaged_capture_is_a_bad_input(setup: livesetup.LiveSetup, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all, not even close")
    done = run_mimir("live", "--model", setup.models / "mimir@10", "--capture", bad, "--entities", setup.evaluation)
    assert done.returncode == 3, done.stderr
    assert str(bad) in done.stderr


def _churn(start: float) -> list[dict]:
    """Pods of one service coming and going every second for 300 s, 20 addresses reused all the time."""
    events = [{"ts": start, "event": "added", "kind": "service", "namespace": "shop", "name": "cart",
               "ips": ["10.96.0.50"], "selector": {"app": "cart"}}]  # fmt: skip
    for k in range(300):
        pod = {"kind": "pod", "namespace": "shop", "name": f"cart-{k}", "labels": {"app": "cart"}}
        events.append({"ts": start + k, "event": "added", **pod, "ips": [f"10.244.9.{k % 20}"]})
        events.append({"ts": start + k + 0.5, "event": "modified", **pod, "ips": [f"10.244.9.{k % 20}"]})
        events.append({"ts": start + k + 19.5, "event": "deleted", **pod, "ips": [f"10.244.9.{k % 20}"]})
    return sorted(events, key=lambda e: e["ts"])


def test_the_entity_log_follows_a_growing_file_and_forgets_only_what_no_interval_needs(tmp_path: Path) -> None:
    from mimir.entities import resolve
    from mimir.live.entities import EntityLog

    events = _churn(1000.0)
    log_path = tmp_path / "entities.jsonl"
    log = EntityLog(log_path)
    assert not log.poll()  # not written yet: nothing known, no error
    text = "".join(json.dumps(e) + "\n" for e in events)
    cut = len(text) // 2 + 7  # in the middle of a line: that line waits for its newline
    log_path.write_text(text[:cut])
    assert log.poll()
    partly = len(log.events)
    assert 0 < partly < len(events)
    with log_path.open("a") as more:
        more.write(text[cut:])
    assert log.poll() and len(log.events) == len(events)
    ips = pd.Series([f"10.244.9.{k % 20}" for k in range(400)] + ["10.96.0.50"] * 10)
    cutoff = 1150.0
    at = pd.Series(np.r_[np.linspace(cutoff, 1330, 400), np.linspace(cutoff, 1330, 10)])
    before = resolve(ips, at, log.spans)
    log.forget_before(cutoff)
    # what comes after the cutoff, and before it one event per living entity: the service, 20 pods at most
    assert len(log.events) <= sum(e["ts"] >= cutoff for e in events) + 21
    pd.testing.assert_frame_equal(resolve(ips, at, log.spans), before)
    assert before["entity"].notna().mean() > 0.8  # held but between two pods and after the last one
