"""`mimir edges` and `mimir features` on hostile run bundles and tables: exit code 3 naming the file, the line and
the key (5 for a file that is not there), never an internal error; odd but well-formed input succeeds."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_mimir
from craft import Record, ether, ipv4, pcap, udp

from mimir.cli import main
from mimir.edges import EDGE_COLUMNS
from mimir.entities import read_events, timeline

SEEDS = Path(__file__).parent / "fuzz" / "corpus" / "entities"
VALID_ENTITIES = SEEDS / "valid-sockshop.jsonl"
VALID_RUN = SEEDS / "valid-sockshop.run.json"
CAPTURE = Path(__file__).parent / "fuzz" / "corpus" / "capture" / "valid-sockshop-sample.pcap"

# seed -> what the message must say besides the file (the line and the key, or the key of run.json)
HOSTILE = {
    "event-ts-nan.jsonl": ["line 6", "NaN"],
    "event-ts-infinity.jsonl": ["line 6", "key 'ts'", "Infinity is not a number"],
    "event-ts-huge-integer.jsonl": ["line 6", "key 'ts'", "1000000000", "is not a number"],
    "event-ts-boolean.jsonl": ["line 6", "key 'ts'", "true"],
    "event-ts-string.jsonl": ["line 6", "key 'ts'", "not a number"],
    "event-ips-integer.jsonl": ["line 6", "key 'ips'", "167772165", "not an IP address"],
    "event-ips-nested-list.jsonl": ["line 6", "key 'ips'", "not an IP address"],
    "event-ips-not-an-address.jsonl": ["line 6", "key 'ips'", "10.244.0.300"],
    "event-labels-string.jsonl": ["line 6", "key 'labels'", "a string, not an object"],
    "event-selector-list.jsonl": ["line 6", "key 'selector'", "an array, not an object"],
    "event-name-object.jsonl": ["line 6", "key 'name'", "an object, not a string"],
    "event-owner-integer.jsonl": ["line 6", "key 'owner'", "a number, not a string"],
    "event-namespace-null.jsonl": ["line 6", "key 'namespace'", "null, not a string"],
    "event-missing-name.jsonl": ["line 6", "no key 'name'"],
    "event-unknown-event.jsonl": ["line 6", "key 'event'", "bookmark"],
    "event-unknown-kind.jsonl": ["line 6", "key 'kind'", "ingress"],
    "line-array.jsonl": ["line 6", "an array, not an object"],
    "line-deeply-nested.jsonl": ["line 6", "nested too deeply"],
    "line-not-utf8.jsonl": ["line 6", "not UTF-8"],
    "line-truncated.jsonl": ["line 6", "not JSON"],
    "file-empty.jsonl": ["no entity events"],
    "file-blank-lines.jsonl": ["no entity events"],
    "file-utf16.jsonl": ["line 1", "not UTF-8"],
    "run-a-list.run.json": ["an array, not an object"],
    "run-empty.run.json": ["line 1", "not JSON"],
    "run-start-nan.run.json": ["NaN"],
    "run-huge-integer.run.json": ["64 bits"],
    "run-deeply-nested.run.json": ["nested too deeply"],
    "run-not-utf8.run.json": ["not UTF-8"],
    "addresses-service-network-host-bits.run.json": ["addresses.service_network", "host bits"],
    "addresses-pod-network-not-a-network.run.json": ["addresses.pod_network", "banana"],
    "addresses-cluster-networks-string.run.json": ["addresses.cluster_networks", "a string, not an array"],
    "addresses-load-generator-integer.run.json": ["addresses.load_generator", "a number"],
    "addresses-load-generator-nested-list.run.json": ["addresses.load_generator.0", "an array, not a string"],
    "addresses-load-generator-not-an-address.run.json": ["addresses.load_generator", "loadgen", "not an IP address"],
    "addresses-a-list.run.json": ["addresses", "an array, not an object"],
    "status-incomplete-problems-integers.run.json": ["problems.0", "a number, not a string"],
    "status-an-integer.run.json": ["status", "a number, not a string"],
    "window-end-before-start.run.json": ["start 1767225600 and end 1767225540", "not a time window"],
    "exfiltration-path-empty.run.json": ["exfiltration.0.path"],
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid flows table and the edges table of the valid run bundle (both seeds), as the fuzzer uses them."""
    root = tmp_path_factory.mktemp("tables")
    run_mimir("ingest", CAPTURE, "-o", root / "flows.parquet", check=True)
    run_mimir("edges", root / "flows.parquet", bundle(root / "run"), "-o", root / "edges.parquet", check=True)
    return root


def bundle(folder: Path, entities: bytes | None = None, run: bytes | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "entities.jsonl").write_bytes(VALID_ENTITIES.read_bytes() if entities is None else entities)
    (folder / "run.json").write_bytes(VALID_RUN.read_bytes() if run is None else run)
    return folder


def seed_bundle(folder: Path, seed: str) -> tuple[Path, Path]:
    """The run bundle of one seed with the valid other file (as the fuzzer makes it), and the file under test."""
    data = (SEEDS / seed).read_bytes()
    if seed.endswith(".run.json"):
        return bundle(folder, run=data), folder / "run.json"
    return bundle(folder, entities=data), folder / "entities.jsonl"


def mimir(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """The command line in this process (the fuzzer's way): its exit code and its error output."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("seed", sorted(HOSTILE))
def test_hostile_run_bundle_names_file_line_and_key(
    tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: str
) -> None:
    run, culprit = seed_bundle(tmp_path / "run", seed)
    code, err = mimir(capsys, "edges", tables / "flows.parquet", run, "-o", tmp_path / "edges.parquet")
    assert code == 3, err
    assert f"mimir: error: {culprit}" in err
    for fragment in HOSTILE[seed]:
        assert fragment in err
    assert "\n" not in err.strip()  # one line, never a traceback
    assert not (tmp_path / "edges.parquet").exists()


def test_every_hostile_seed_is_checked() -> None:
    seeds = {p.name for p in SEEDS.iterdir() if p.name != "README.md" and not p.name.startswith("valid-")}
    assert set(HOSTILE) <= seeds
    assert all((SEEDS / name).stat().st_size < 20_000 for name in seeds)


def test_a_byte_order_mark_and_crlf_line_ends_change_nothing(
    tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = seed_bundle(tmp_path / "run", "valid-bom-crlf.jsonl")
    code, err = mimir(capsys, "edges", tables / "flows.parquet", run, "-o", tmp_path / "edges.parquet")
    assert code == 0, err
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "edges.parquet"), pd.read_parquet(tables / "edges.parquet")
    )


def test_events_out_of_order_repeated_or_never_added_are_replayed(
    tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = SEEDS / "valid-out-of-order-duplicates.jsonl"
    events = read_events(path)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    spans = timeline(events)
    assert not spans.duplicated(["ip", "start", "entity"]).any()  # a repeated "added" opens no second span
    assert "default/never-added" not in set(spans["entity"])  # a deletion alone holds no address
    run, _ = seed_bundle(tmp_path / "run", path.name)
    code, err = mimir(capsys, "edges", tables / "flows.parquet", run, "-o", tmp_path / "edges.parquet")
    assert code == 0, err
    assert len(pd.read_parquet(tmp_path / "edges.parquet")) > 0


def test_a_very_long_line_is_read(tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = VALID_ENTITIES.read_text().splitlines()
    pod = json.loads(lines[5])
    long_labels = json.dumps({**pod, "labels": {**pod["labels"], "note": "x" * 8_000_000}})
    run = bundle(tmp_path / "run", entities="\n".join([*lines, long_labels, ""]).encode())
    code, err = mimir(capsys, "edges", tables / "flows.parquet", run, "-o", tmp_path / "edges.parquet")
    assert code == 0, err
    garbage = bundle(tmp_path / "garbage", entities="\n".join([*lines[:5], "x" * 8_000_000, ""]).encode())
    code, err = mimir(capsys, "edges", tables / "flows.parquet", garbage, "-o", tmp_path / "garbage.parquet")
    assert code == 3
    assert "entities.jsonl: line 6, column 1: not JSON" in err
    assert len(err) < 500  # the line is not quoted whole


def test_a_long_run_replays_every_pod_life() -> None:
    """Many pod lives (a long collection): each is one span, closed by its deletion; the replay stays linear."""
    count = 20_000
    events = []
    for k in range(count):
        pod = {
            "kind": "pod",
            "namespace": "shop",
            "name": f"cart-{k}",
            "ips": [f"10.{k // 65536}.{k // 256 % 256}.{k % 256}"],
        }
        events += [{"ts": 10.0 * k, "event": "added", **pod}, {"ts": 10.0 * k + 5, "event": "deleted", **pod}]
    spans = timeline(events)
    assert len(spans) == count
    assert ((spans["end"] - spans["start"]) == 5).all()


@pytest.mark.parametrize(
    ("missing", "code", "message"),
    [("folder", 5, "no such folder"), ("run.json", 3, "no run.json"), ("entities.jsonl", 3, "no such file")],
)
def test_a_bundle_missing_a_file(
    tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str, code: int, message: str
) -> None:
    run = bundle(tmp_path / "run")
    if missing == "folder":
        shutil.rmtree(run)
    else:
        (run / missing).unlink()
    got, err = mimir(capsys, "edges", tables / "flows.parquet", run, "-o", tmp_path / "edges.parquet")
    assert got == code, err
    assert message in err


def other_tables(root: Path, tables: Path) -> dict[str, Path]:
    """Files that are not the table a stage reads."""
    flows = pq.read_table(tables / "flows.parquet")
    data = (tables / "flows.parquet").read_bytes()
    made = {
        "not-parquet": b"ts,src,dst\n1,a,b\n",
        "empty-file": b"",
        "cut-short": data[: len(data) // 2],
        "damaged-page": data[:8] + bytes(200) + data[208:],
    }
    paths = {}
    for name, content in made.items():
        paths[name] = root / f"{name}.parquet"
        paths[name].write_bytes(content)
    paths["another-table"] = root / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), paths["another-table"])
    paths["no-bin"] = root / "no-bin.parquet"
    pq.write_table(flows.replace_schema_metadata({}), paths["no-bin"])
    paths["ts-as-text"] = root / "ts-as-text.parquet"
    pq.write_table(flows.set_column(0, "ts", flows["ts"].cast(pa.string())), paths["ts-as-text"])
    metadata = flows.schema.metadata
    src = flows["src"].to_pylist()
    paths["src-not-an-address"] = root / "src-not-an-address.parquet"
    not_an_address = pa.array(["banana", *src[1:]], flows.schema.field("src").type)
    pq.write_table(
        flows.set_column(1, "src", not_an_address).replace_schema_metadata(metadata), paths["src-not-an-address"]
    )
    paths["ts-empty"] = root / "ts-empty.parquet"
    empty_ts = pa.array([None, *flows["ts"].to_pylist()[1:]], pa.int64())
    pq.write_table(flows.set_column(0, "ts", empty_ts).replace_schema_metadata(metadata), paths["ts-empty"])
    return paths


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("edges", "an edges table (written by `mimir edges`), not a flows table (written by `mimir ingest`)"),
        ("not-parquet", "not a readable parquet table"),
        ("empty-file", "not a readable parquet table"),
        ("cut-short", "not a readable parquet table"),
        ("damaged-page", "not a readable parquet table"),
        ("another-table", "a table of columns a, not a flows table"),
        ("no-bin", "does not record its time bin"),
        ("ts-as-text", "column 'ts' holds string"),
        ("src-not-an-address", "column 'src' holds 'banana', not an IP address"),
        ("ts-empty", "column 'ts' has 1 empty value(s)"),
    ],
)
def test_edges_refuses_what_is_not_a_flows_table(
    tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, message: str
) -> None:
    path = tables / "edges.parquet" if table == "edges" else other_tables(tmp_path, tables)[table]
    code, err = mimir(capsys, "edges", path, bundle(tmp_path / "run"), "-o", tmp_path / "out.parquet")
    assert code == 3, err
    assert f"mimir: error: {path}: " in err
    assert message in err
    assert not (tmp_path / "out.parquet").exists()


FEATURES = ("--tg", "10", "--rates", "1", "--seeds", "1")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("flows", "a flows table (written by `mimir ingest`), not an edges table (written by `mimir edges`)"),
        ("benign-flows", "a flows table (written by `mimir ingest`), not an edges table"),
        ("another-table", "a table of columns a, not an edges table (written by `mimir edges`)"),
        ("not-parquet", "not a readable parquet table"),
        ("cut-short", "not a readable parquet table"),
    ],
)
def test_features_refuses_what_is_not_an_edges_table(
    tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, message: str
) -> None:
    run, out = bundle(tmp_path / "run"), tmp_path / "features"
    if table == "benign-flows":
        path = tables / "flows.parquet"
        args = [tables / "edges.parquet", run, "-o", out, "--benign-edges", path]
    else:
        path = tables / "flows.parquet" if table == "flows" else other_tables(tmp_path, tables)[table]
        args = [path, run, "-o", out]
    code, err = mimir(capsys, "features", *args, *FEATURES)
    assert code == 3, err
    assert f"mimir: error: {path}: {message}" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start": None}, "no 'start'"),
        ({"end": 1e15}, "not a time window"),
        ({"status": "incomplete", "problems": ["capture stopped"]}, "the run is incomplete (capture stopped)"),
        ({"sensitive": "user-db"}, "sensitive: a string, not an array"),
        ({"exfiltration": [{"start": 1767225610, "end": 1767225600, "path": ["carts", "outside"]}]}, "exfiltration.0"),
    ],
)
def test_features_refuses_a_run_json_it_cannot_use(
    tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, message: str
) -> None:
    run = bundle(tmp_path / "run", run=json.dumps({**json.loads(VALID_RUN.read_text()), **change}).encode())
    code, err = mimir(capsys, "features", tables / "edges.parquet", run, "-o", tmp_path / "f", *FEATURES)
    assert code == 3, err
    assert f"mimir: error: {run / 'run.json'}: " in err
    assert message in err


def empty_capture(folder: Path, maker: str) -> Path:
    """A valid capture with no packets: tcpdump's, filtering out the only packet of a crafted one, or crafted."""
    packet = Record(1767225601_000000, ether(ipv4("10.244.0.5", "10.96.0.10", 17, udp(5353, 53)), 0x0800))
    empty = folder / "empty.pcap"
    if maker == "crafted":
        empty.write_bytes(pcap([], 1))
        return empty
    if shutil.which("tcpdump") is None:
        pytest.skip("no tcpdump")
    one = folder / "one.pcap"
    one.write_bytes(pcap([packet], 1))
    subprocess.run(["tcpdump", "-r", one, "-w", empty, "tcp"], check=True, capture_output=True)
    return empty


@pytest.mark.parametrize("maker", ["tcpdump", "crafted"])
def test_a_capture_without_packets_goes_through_every_stage(tmp_path: Path, maker: str) -> None:
    """No packets: an empty flows table, an empty edges table of the right columns, benign feature tables."""
    capture, run = empty_capture(tmp_path, maker), bundle(tmp_path / "run")
    assert capture.stat().st_size == 24  # the global header only
    run_mimir("ingest", capture, "-o", tmp_path / "flows.parquet", check=True)
    done = run_mimir("edges", tmp_path / "flows.parquet", run, "-o", tmp_path / "edges.parquet", check=True)
    assert "0 edges from 0 flow rows" in done.stdout
    edges = pq.read_table(tmp_path / "edges.parquet")
    assert edges.num_rows == 0 and edges.schema.names == EDGE_COLUMNS
    assert edges.schema.metadata[b"mimir.bin_seconds"] == b"1"
    done = run_mimir("features", tmp_path / "edges.parquet", run, "-o", tmp_path / "features", *FEATURES, check=True)
    assert "no policy-abiding path" in done.stdout
    table = pd.read_parquet(tmp_path / "features" / "features" / "10s" / "1.parquet")
    assert table["start"].tolist() == [1767225600, 1767225610, 1767225620]  # the run's 30 s, every interval
    assert (table["label"] == 0).all()
