"""Hostile cluster-creation logs: each ends in exit 3 naming the file and the place (byte offset and opcode, or
second, entity and field), never a crash, a traceback, exit 1 or a run bundle written.

The pickles are written here opcode by opcode (protocol 0 as the prototype's Python 2 wrote it, protocol 2 where
binary arguments make a case small), so each says what it holds. The reader's cases are kept as fuzzing seeds in
tests/fuzz/corpus/pickle/, named by the case with hyphens (test_every_seed_is_refused).
"""

from __future__ import annotations

import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_mimir
from craft import ETH_IPV4, Record, ether, ipv4, pcap, tcp

from mimir.cli import main
from mimir.sources.legacy_pickle import PickleLimits, PickleRefused, loads_data

SEEDS = Path(__file__).parent / "fuzz" / "corpus" / "pickle"
PROTO2 = b"\x80\x02"


def text(value: str) -> bytes:
    """STRING, protocol 0's Python 2 byte string."""
    return b"S'" + value.encode() + b"'\n"


def uni(value: str) -> bytes:
    """BINUNICODE."""
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


GOOD = (text("10.0.0.1"), text("+"), text("default"), text("pod"), text("app=web"), text("Running"))


def log0(*fields: bytes, second: bytes = b"I0\n", name: bytes = text("web-1"), entry: bytes | None = None) -> bytes:
    """{second: {name: (fields...)}} in protocol 0, the way the prototype wrote it; every part is given as opcodes."""
    body = entry if entry is not None else b"(" + b"".join(fields or GOOD) + b"tp2\n"
    return b"(dp0\n" + second + b"(dp1\n" + name + body + b"s" + b"s."


def field(index: int, opcodes: bytes) -> bytes:
    """The one-entry log with field `index` replaced."""
    return log0(*GOOD[:index], opcodes, *GOOD[index + 1 :])


def reference_bomb(levels: int = 12, fan: int = 10) -> bytes:
    """Each level a list of `fan` references to the level below: ~300 bytes that expand to fan**levels values."""
    out = PROTO2 + b"]q\x000"  # level 0: [], memo 0, off the stack
    for level in range(1, levels + 1):
        out += b"]q" + bytes([level]) + b"(" + (b"h" + bytes([level - 1])) * fan + b"e"
        out += b"0" if level < levels else b""  # POP: only the top level stays on the stack
    return out + b"."


# name: (pickle, what the message says). Each is small enough to keep as a seed.
HOSTILE: dict[str, tuple[bytes, str]] = {
    # the findings
    "memo_index_huge": (PROTO2 + b"}r\x00\x00\x00\x10.", "opcode LONG_BINPUT: memo index 268435456"),
    "memo_index_huge_p0": (b"(dp268435456\n.", "opcode PUT: memo index 268435456"),
    "reference_bomb": (reference_bomb(), "opcode APPENDS: the data expands to more than 2000000 values"),
    "deep_tuple_key": (PROTO2 + b"})" + b"\x85" * 5000 + b"K\x01s.", "opcode TUPLE1: containers nested more than 32"),
    "deep_lists": (b"(l" * 5000 + b"a" * 4999 + b".", "opcode APPEND: containers nested more than 32"),
    "deep_marks": (b"(" * 5000 + b"t.", "opcode MARK: more than 32 open MARKs"),
    "appends_on_dict": (PROTO2 + b"}(K\x01e.", "opcode APPENDS: adds items to a dict, not a list"),
    "append_on_dict": (PROTO2 + b"}K\x01a.", "opcode APPEND: adds items to a dict, not a list"),
    "setitem_on_list": (PROTO2 + b"]K\x01K\x02s.", "opcode SETITEM: adds an item to a list, not a dict"),
    "setitems_on_list": (PROTO2 + b"](K\x01K\x02u.", "opcode SETITEMS: adds items to a list, not a dict"),
    "build_on_list": (PROTO2 + b"]}b.", "opcode BUILD: refusing an opcode that loads or calls code"),
    "second_huge_p0": (log0(second=b"L" + b"9" * 400 + b"L\n"), "opcode LONG: no end of line within 32 bytes"),
    "second_huge_long1": (PROTO2 + b"}\x8a\x09" + b"\xff" * 9 + b"}s.", "opcode LONG1: an integer of 9 bytes"),
    "second_2_62": (log0(second=b"L4611686018427387904L\n"), "second 4611686018427387904: not a number of seconds"),
    "second_1e300": (log0(second=b"F1e300\n"), "second 1e+300: not a number of seconds"),
    "second_negative": (log0(second=b"I-5\n"), "second -5: not a number of seconds"),
    "second_nan": (log0(second=b"Fnan\n"), "second nan: not a number of seconds"),
    "second_infinity": (log0(second=b"Finf\n"), "second inf: not a number of seconds"),
    "second_text": (log0(second=text("0")), "second '0': not a number of seconds"),
    "second_bool": (log0(second=b"I01\n"), "second True: not a number of seconds"),
    "name_tuple": (log0(name=b"(S'a'\nS'b'\ntp9\n"), "second 0: the name ('a', 'b') is not a non-empty string"),
    "name_int": (log0(name=b"I7\n"), "second 0: the name 7 is not a non-empty string"),
    "name_empty": (log0(name=text("")), "second 0: the name '' is not a non-empty string"),
    "ip_nan": (field(0, b"Fnan\n"), "second 0, 'web-1': field ip: nan is not an address string"),
    "ip_infinity": (field(0, b"Finf\n"), "second 0, 'web-1': field ip: inf is not an address string"),
    "ip_list": (field(0, b"(lp3\n" + text("10.0.0.1") + b"a"), "field ip: ['10.0.0.1'] is not an address string"),
    "ip_not_an_address": (field(0, text("999.0.0.1")), "field ip: '999.0.0.1' is not an IPv4 or IPv6 address"),
    "sign_other": (field(1, text("x")), "field sign: 'x' is neither '+' nor '-'"),
    "namespace_int": (field(2, b"I7\n"), "field namespace: 7 is not a non-empty string"),
    "kind_list": (field(3, b"(lp3\n" + text("pod") + b"a"), "field kind: ['pod'] is neither pod nor svc"),
    "kind_other": (field(3, text("deployment")), "field kind: 'deployment' is neither pod nor svc"),
    "labels_int": (field(4, b"I1\n"), "field labels: 1 is not a string"),
    "status_dict": (field(5, b"(dp3\n"), "field status: {} is not a string"),
    "entry_list": (log0(entry=b"(lp2\n" + text("10.0.0.1") + b"a"), "expected (ip, +/-, namespace, kind, labels"),
    "entry_short": (log0(*GOOD[:4]), "expected (ip, +/-, namespace, kind, labels, status), found ('10.0.0.1'"),
    "log_list": (PROTO2 + b"].", "not a cluster-creation log: expected {second: {name: entry}}, found a list"),
    "second_holds_list": (PROTO2 + b"}K\x00]s.", "second 0: expected {name: entry}, found a list"),
    # pickles that are not data
    "global": (b"cposix\nsystem\n(S'touch pwned'\ntR.", "opcode GLOBAL: refusing to load the global posix.system"),
    "stack_global": (PROTO2 + uni("os") + uni("system") + b"\x93.", "opcode STACK_GLOBAL: refusing an opcode"),
    "reduce": (PROTO2 + b"]]R.", "opcode REDUCE: refusing an opcode that loads or calls code"),
    "inst": (b"(ios\nsystem\n.", "opcode INST: refusing an opcode that loads or calls code"),
    "obj": (PROTO2 + b"(]o.", "opcode OBJ: refusing an opcode that loads or calls code"),
    "newobj": (PROTO2 + b"])\x81.", "opcode NEWOBJ: refusing an opcode that loads or calls code"),
    "persid": (b"P1\n.", "opcode PERSID: refusing an opcode that loads or calls code"),
    "binpersid": (PROTO2 + b"K\x01Q.", "opcode BINPERSID: refusing an opcode that loads or calls code"),
    "ext1": (PROTO2 + b"\x82\x01.", "opcode EXT1: refusing an opcode that loads or calls code"),
    "set": (b"\x80\x04\x8f.", "opcode EMPTY_SET: refusing a value other than numbers"),
    # broken pickles
    "empty": (b"", "the file is empty, not a pickle"),
    "not_a_pickle": (b'{"0": {}}', "byte offset 0: byte 0x7b is not a pickle opcode"),
    "no_stop": (b"(dp0\n", "byte offset 5: the pickle ends before its STOP opcode"),
    "truncated_argument": (PROTO2 + b"X\x10\x00\x00\x00ab", "opcode BINUNICODE: needs 16 bytes, the pickle ends"),
    "stop_on_empty_stack": (b".", "opcode STOP: leaves 0 values and 0 MARKs, not 1 value"),
    "stop_leaves_two": (PROTO2 + b"}}.", "opcode STOP: leaves 2 values"),
    "setitem_underflow": (PROTO2 + b"}K\x01s.", "opcode SETITEM: needs a dict, a key and a value"),
    "tuple_without_mark": (PROTO2 + b"K\x01t.", "opcode TUPLE: no MARK to take the values from"),
    "get_never_put": (PROTO2 + b"h\x05.", "opcode BINGET: memo index 5 was never stored"),
    "dict_odd_items": (b"(I1\nd.", "opcode DICT: 1 values for a dict's keys and values"),
    "list_as_key": (PROTO2 + b"}]K\x01s.", "opcode SETITEM: a list as a dict key"),
    "list_inside_itself": (PROTO2 + b"]q\x00h\x00a.", "opcode APPEND: places a list inside itself"),
    "dict_inside_itself": (PROTO2 + b"}q\x00K\x01h\x00s.", "opcode SETITEM: places a dict inside itself"),
    "list_grown_after_placed": (
        PROTO2 + b"]q\x00]h\x00a0h\x00K\x01a.",
        "opcode APPEND: adds items to a list already placed in another container",
    ),
    "string_without_quotes": (b"Sabc\n.", "opcode STRING: a string without matching quotes"),
    "string_bad_escape": (b"S'\\x4'\n.", "opcode STRING: a string with a bad escape"),
    "unicode_not_utf8": (PROTO2 + b"X\x01\x00\x00\x00\xff.", "opcode BINUNICODE: a string that is not utf-8"),
    "string_too_long": (PROTO2 + b"X\x01\x00\x01\x00.", "opcode BINUNICODE: a string of 65537 bytes"),
    "int_not_decimal": (b"I1_000\n.", "opcode INT: b'1_000' is not a decimal number"),
    "float_not_a_number": (b"Fabc\n.", "opcode FLOAT: b'abc' is not a number"),
    "protocol_6": (b"\x80\x06}.", "opcode PROTO: pickle protocol 6"),
}

# The cases kept as fuzzing seeds: the reader's (the field checks' cases are variations of one valid log).
SEEDED = (
    "memo_index_huge", "memo_index_huge_p0", "reference_bomb", "deep_tuple_key", "deep_lists", "deep_marks",
    "appends_on_dict", "setitem_on_list", "build_on_list", "second_huge_p0", "second_huge_long1", "second_nan",
    "name_tuple", "ip_nan", "kind_list", "global", "stack_global", "reduce", "inst", "newobj", "persid", "ext1",
    "set", "no_stop", "truncated_argument", "get_never_put", "list_as_key", "list_inside_itself",
    "list_grown_after_placed", "string_bad_escape", "unicode_not_utf8",
)  # fmt: skip


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    frames = [ether(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, b"x")), ETH_IPV4)]
    path = tmp_path / "legacy.pcap"
    path.write_bytes(pcap([Record(1_554_948_000 * 10**6, f) for f in frames], 1))
    return path


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], capture: Path, log_bytes: bytes) -> str:
    """Import the log: exit 3, a message naming it, and nothing written (not even a temporary folder)."""
    log = tmp_path / "log.txt"
    log.write_bytes(log_bytes)
    out = tmp_path / "run"
    code = main(["import-legacy", "--pcap", str(capture), "--cluster-log", str(log), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert f"mimir: error: {log}: " in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["legacy.pcap", "log.txt"]
    return err


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_log_is_refused(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], capture: Path):
    data, message = HOSTILE[case]
    assert message in refused(tmp_path, capsys, capture, data)


def test_the_findings_at_full_size(tmp_path: Path, capsys: pytest.CaptureFixture[str], capture: Path) -> None:
    """The issue's inputs as found: a tuple key nested 200,000 deep (SIGSEGV), a string of 60,000 characters
    referenced 1,200 times (72 million characters as expanded), 200,000 nested lists (RecursionError)."""
    deep = PROTO2 + b"})" + b"\x85" * 200_000 + b"K\x01s."
    assert "byte offset 35: opcode TUPLE1: containers nested more than 32 deep" in refused(
        tmp_path, capsys, capture, deep
    )
    strings = PROTO2 + uni("x" * 60_000) + b"q\x00(" + b"h\x00" * 1200 + b"l."
    assert "opcode LIST: the data's strings expand to more than 67108864 characters" in refused(
        tmp_path, capsys, capture, strings
    )
    lists = b"]" * 200_000 + b"a" * 199_999 + b"."
    assert "opcode APPEND: containers nested more than 32 deep" in refused(tmp_path, capsys, capture, lists)


def test_the_bombs_stay_small_in_memory(tmp_path: Path, capture: Path) -> None:
    """The memo, reference and nesting bombs end in exit 3 in a process that never grows beyond what importing
    mimir takes (the unpickler reached 2.27 and 3.7 GB, or crashed)."""
    bombs = {
        "memo": PROTO2 + b"}r\x00\x00\x00\x10.",
        "refs": reference_bomb(levels=30),
        "deep": PROTO2 + b"})" + b"\x85" * 200_000 + b"K\x01s.",
    }
    for name, data in bombs.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "valid").write_bytes(
        pickle.dumps({0: {"web-1": ("10.0.0.5", "+", "default", "pod", "app=web", "Running")}}, 0)
    )
    # a valid import first, so that the peak it leaves (imports, compiled kernels) is the baseline of the bombs'
    script = (
        "import resource, sys\nfrom mimir.cli import main\n"
        "def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
        "main(['import-legacy', '--pcap', sys.argv[1], '--cluster-log', sys.argv[3], '-o', sys.argv[2] + '-valid'])\n"
        "before = peak()\n"
        "codes = [main(['import-legacy', '--pcap', sys.argv[1], '--cluster-log', log, '-o', sys.argv[2]])"
        " for log in sys.argv[4:]]\n"
        "print(codes, peak() - before)\n"
    )
    logs = [str(tmp_path / n) for n in ("valid", *bombs)]
    done = subprocess.run(
        [sys.executable, "-c", script, str(capture), str(tmp_path / "run"), *logs],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    codes, growth_mb = done.stdout.splitlines()[-1].rsplit(" ", 1)
    assert codes == "[3, 3, 3]", done.stderr
    assert int(growth_mb) < 100, f"the bombs grew the peak by {growth_mb} MB"
    assert not (tmp_path / "run").exists()


def test_a_crash_is_not_possible_from_the_command_line(tmp_path: Path, capture: Path) -> None:
    """The tuple key nested 200,000 deep, through the installed command: exit 3 and a message, not SIGSEGV."""
    log = tmp_path / "deep.pickle"
    log.write_bytes(PROTO2 + b"})" + b"\x85" * 200_000 + b"K\x01s.")
    done = run_mimir("import-legacy", "--pcap", capture, "--cluster-log", log, "-o", tmp_path / "run")
    assert done.returncode == 3 and "containers nested more than 32 deep" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("data", "limits", "message"),
    [
        (b"}" + b"\x94" * 101 + b".", PickleLimits(max_memo=100), "opcode MEMOIZE: memo index 100"),
        (b"(" + b"N" * 100 + b"l.", PickleLimits(max_opcodes=50), "byte offset 50: more than 50 opcodes"),
        (b"N" * 20 + b"0" * 19 + b".", PickleLimits(max_bytes=32), "the pickle is larger than 32 bytes"),
        (b"(" + b"N" * 11 + b"l.", PickleLimits(max_elements=10), "the data expands to more than 10 values"),
        (PROTO2 + uni("abcdef") + b".", PickleLimits(max_string=5), "a string of 6 bytes (the limit is 5)"),
        (b"S'AB'\n.", PickleLimits(max_string=1), "a string of 2 characters (the limit is 1)"),
    ],
)
def test_each_limit_is_kept(data: bytes, limits: PickleLimits, message: str) -> None:
    with pytest.raises(PickleRefused, match=re.escape(message)):
        loads_data(data, limits)


LOG = {
    0: {
        "web-1": ("172.17.0.5", "+", "default", "pod", "app=web,tier=front", "Running"),
        "web": ("10.96.0.7", "+", "default", "svc", "app=web", "10.96.0.7"),
        "headless": ("None", "+", "default", "svc", "app=db", "None"),
        "caf\xe9": ("fd00::1", "-", "k\xfcbe", "pod", "<none>", "Pending"),
    },
    7: {},
    1.5: {"web-2": ("172.17.0.6", "+", "default", "pod", "app=web", "Running")},
}


@pytest.mark.parametrize("protocol", range(6))
def test_data_pickles_read_as_pickle_reads_them(protocol: int) -> None:
    """The reader is pickle for data: every protocol, latin-1 byte strings, shared and nested values."""
    shared = ["x"]
    values = [LOG, [shared, shared, (shared, 1)], {(1, "a"): -(2**63), None: 1e-300, True: 2**63 - 1}]
    if protocol >= 3:  # before 3, Python 3 pickles bytes by calling _codecs.encode, refused as code
        values.append({"b": b"\x00\xff"})
    for value in values:
        data = pickle.dumps(value, protocol=protocol)
        assert loads_data(data) == pickle.loads(data)  # noqa: S301 (pickled just above)
    python2 = b"(dp0\nI3\nS'caf\\xe9 \\'q\\' \\n'\np1\nsS'ab'\np2\n(I01\nI00\nL12L\nF-0.5\ntp3\ns."
    expected = {3: "café 'q' \n", "ab": (True, False, 12, -0.5)}
    assert loads_data(python2) == pickle.loads(python2, encoding="latin1") == expected  # noqa: S301 (written here)


def test_a_python2_binary_log_imports(tmp_path: Path, capture: Path) -> None:
    """Protocol 2 as Python 2 wrote it (SHORT_BINSTRING, BININT1, TUPLE via MARK): the same events as protocol 0."""

    def short(value: str) -> bytes:
        return b"U" + bytes([len(value)]) + value.encode()

    entry = b"(" + b"".join(short(v) for v in ("10.0.0.1", "+", "default", "pod", "app=web", "Running")) + b"t"
    binary = PROTO2 + b"}q\x00K\x00}q\x01" + short("web-1") + entry + b"ss."
    results = []
    for name, data in (("p2", binary), ("p0", log0())):
        (tmp_path / name).write_bytes(data)
        run_mimir(
            "import-legacy",
            "--pcap",
            capture,
            "--cluster-log",
            tmp_path / name,
            "-o",
            tmp_path / f"run-{name}",
            check=True,
        )
        results.append((tmp_path / f"run-{name}" / "entities.jsonl").read_text())
    assert results[0] == results[1] and '"ips": ["10.0.0.1"]' in results[0] and '"labels": {"app": "web"}' in results[0]


def test_every_seed_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], capture: Path) -> None:
    """The fuzzing seeds are the hostile cases above, each still refused with exit 3."""
    seeds = sorted(s for s in SEEDS.glob("*.pickle") if not s.name.startswith("valid-"))
    assert {s.stem for s in seeds} >= {name.replace("_", "-") for name in SEEDED}
    for seed in seeds:
        refused(tmp_path, capsys, capture, seed.read_bytes())
