"""Hostile inputs for the four readers, drawn from a `random.Random`: mutations of the seed corpus and inputs built
from each format's structure.

Every generator takes its choices from the `rng` it is given, so the same code serves both drivers: `make fuzz`
hands it a seeded `random.Random` (an input is re-made from the run's seed and its number), and the suite's
hypothesis tests hand it `st.randoms()`, whose choices hypothesis makes, records and replays.
"""

from __future__ import annotations

import collections
import copy
import functools
import gzip
import json
import pickle
import pickletools
import random
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).resolve().parent / "corpus"
READERS = ("capture", "entities", "pickle", "config")


@dataclass(frozen=True)
class Seed:
    """One corpus file: its name tells the reader which file of the input it is (entities: .jsonl or .run.json)."""

    name: str
    data: bytes


@dataclass(frozen=True)
class FuzzInput:
    """One input: the seed it came from, how it was made, and the bytes of the file under test."""

    reader: str
    seed: str
    how: str
    data: bytes

    @property
    def suffix(self) -> str:
        """The seed's extension (kept so a failing input can be dropped into the corpus as it is)."""
        name = self.seed
        for ext in (".run.json", ".pcap.gz", ".pcapng.gz"):
            if name.endswith(ext):
                return ext
        return Path(name).suffix or ".bin"


def load_seeds(reader: str) -> list[Seed]:
    folder = CORPUS / reader
    return [Seed(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "README.md"]


# --- byte-level mutations ------------------------------------------------------------------------------------------

WIDTHS = {1: "B", 2: "H", 4: "I", 8: "Q"}


def boundary_values(width: int, current: int | None = None) -> list[int]:
    """The integers a reader's arithmetic breaks on: zero, one, the signed and unsigned edges, the value ± 1."""
    top = (1 << (8 * width)) - 1
    values = [0, 1, 2, 3, 4, 7, 8, 12, 16, 255, top, top - 1, top >> 1, (top >> 1) + 1, top - 3]
    if width >= 4:
        values += [0x7FFF, 0x8000, 0xFFFF, 0x10000, 1 << 20, 16 << 20, (16 << 20) + 1, 262144, 262145]
    if current is not None:
        values += [(current + 1) & top, (current - 1) & top, (current * 2) & top, (current << 8) & top]
    return [v & top for v in values]


def put_int(data: bytearray, offset: int, width: int, order: str, value: int) -> None:
    if offset + width <= len(data):
        struct.pack_into(order + WIDTHS[width], data, offset, value)


def mutate_bytes(rng: random.Random, data: bytes, other: bytes) -> tuple[bytes, str]:
    """One to four stacked byte mutations; `other` is a second seed for splices. Returns the bytes and their log."""
    out = bytearray(data)
    done = []
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(("flip", "byte", "insert", "delete", "duplicate", "truncate", "splice", "int"))
        at = rng.randrange(len(out) + 1)
        if op == "flip" and out:
            at = min(at, len(out) - 1)
            out[at] ^= 1 << rng.randrange(8)
        elif op == "byte" and out:
            at = min(at, len(out) - 1)
            out[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == "insert":
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif op == "delete":
            del out[at : at + rng.randint(1, 256)]
        elif op == "duplicate" and out:
            start = rng.randrange(len(out))
            chunk = out[start : start + rng.randint(1, 512)]
            out[at:at] = chunk * rng.choice((1, 2, 16, 200))
        elif op == "truncate":
            del out[at:]
        elif op == "splice" and other:
            out = out[:at] + other[rng.randrange(len(other)) :]
        elif op == "int" and out:
            width = rng.choice((1, 2, 4, 8))
            at = min(at, max(0, len(out) - width))
            order = rng.choice("<>")
            put_int(out, at, width, order, rng.choice(boundary_values(width)))
        else:
            continue
        done.append(f"{op}@{at}")
    return bytes(out), "+".join(done) or "as-is"


# --- captures: header fields at their offsets ----------------------------------------------------------------------

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
MAX_FIELDS = 400


def capture_fields(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, width, byte order) of every length, type and count a reader trusts: the pcap file and record
    headers, or each pcapng block's type and lengths and its fixed fields."""
    fields: list[tuple[int, int, str]] = []
    order = PCAP_MAGICS.get(data[:4])
    if order is not None:
        fields += [(o, w, order) for o, w in ((4, 2), (6, 2), (8, 4), (12, 4), (16, 4), (20, 4))]
        at = 24
        while at + 16 <= len(data) and len(fields) < MAX_FIELDS:
            fields += [(at + k, 4, order) for k in (0, 4, 8, 12)]
            at += 16 + struct.unpack_from(order + "I", data, at + 8)[0]
        return fields
    at, order = 0, "<"
    while at + 12 <= len(data) and len(fields) < MAX_FIELDS:
        if data[at : at + 4] == PCAPNG_SHB:
            order = ">" if data[at + 8 : at + 12] == b"\x1a\x2b\x3c\x4d" else "<"
            fields += [(at + 12, 2, order), (at + 14, 2, order), (at + 16, 8, order)]
        btype, length = struct.unpack_from(order + "II", data, at)
        fields += [(at, 4, order), (at + 4, 4, order)]
        fixed = {1: ((8, 2), (12, 4), (16, 2), (18, 2), (20, 1)), 2: ((8, 2), (20, 4), (24, 4)), 3: ((8, 4),),
                 6: ((8, 4), (12, 4), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2))}.get(btype, ())  # fmt: skip
        fields += [(at + o, w, order) for o, w in fixed if at + o + w <= len(data)]
        if length < 12 or length % 4:
            break
        fields.append((at + length - 4, 4, order))  # the trailing copy of the length
        at += length
    return fields


def mutate_capture(rng: random.Random, seed: Seed, other: Seed) -> tuple[bytes, str]:
    """A gzip seed is mutated inside (then recompressed, maybe cut) or as compressed bytes; a plain one gets
    boundary values in its header fields, byte mutations, or both."""
    data = seed.data
    if data[:2] == b"\x1f\x8b" and rng.random() < 0.6:
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            inner = data
        mutated, how = mutate_capture(rng, Seed(seed.name.removesuffix(".gz"), inner), other)
        packed = gzip.compress(mutated, compresslevel=rng.choice((1, 6, 9)), mtime=0)
        if rng.random() < 0.3:
            cut = rng.randrange(len(packed) + 1)
            return packed[:cut], f"gzip({how})+cut@{cut}"
        if rng.random() < 0.2:
            return packed + rng.choice((b"\x00" * 16, packed, b"garbage")), f"gzip({how})+trailing"
        return packed, f"gzip({how})"
    fields = capture_fields(data)
    if fields and rng.random() < 0.6:
        out = bytearray(data)
        done = []
        for _ in range(rng.randint(1, 3)):
            offset, width, order = rng.choice(fields)
            current = int.from_bytes(out[offset : offset + width], "little" if order == "<" else "big")
            value = rng.choice(boundary_values(width, current))
            put_int(out, offset, width, order, value)
            done.append(f"field@{offset}={value:#x}")
        how = "+".join(done)
        if rng.random() < 0.3:
            more, extra = mutate_bytes(rng, bytes(out), other.data)
            return more, f"{how}+{extra}"
        return bytes(out), how
    return mutate_bytes(rng, data, other.data)


# --- JSON values: the entity events and run.json -------------------------------------------------------------------


def hostile_json(rng: random.Random) -> Any:
    """A JSON value of the wrong type, the wrong size or an edge of its type (Python's json writes and reads NaN)."""
    choices: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.choice((True, False)),
        lambda: rng.choice((0, -1, 1, 2**31, 2**63, -(2**63), 2**64, 10**400)),
        lambda: rng.choice((float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, -0.0, 1.5)),
        lambda: rng.choice(("", " ", "x" * rng.choice((1, 300, 100_000)), "\ud800", "\x00", "é☃", "10.0.0.1/33")),
        lambda: rng.choice(("10.244.0.5", "::1", "fe80::1%eth0", "256.1.1.1", "10.96.0.0/12", "0.0.0.0", "::")),  # noqa: S104
        lambda: [hostile_json(rng) for _ in range(rng.randint(0, 3))],
        lambda: {rng.choice(("a", "", "ts", "\ud800")): hostile_json(rng) for _ in range(rng.randint(0, 3))},
        lambda: Deep(rng.choice((50, 5000, 200_000)), rng.choice(("list", "dict"))),
        lambda: [f"10.244.0.{k}" for k in range(rng.choice((100, 20_000)))],
    ]
    return rng.choice(choices)()


def nested(depth: int, kind: str) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@dataclass(frozen=True)
class Deep:
    """A nest too deep for json.dumps and yaml.safe_dump to write: they write its token, replaced by its text."""

    depth: int
    kind: str

    @property
    def token(self) -> str:
        return f"@@deep-{self.kind}-{self.depth}@@"


DEEP_TOKEN = re.compile(r"""['"]?@@deep-(list|dict)-(\d+)@@['"]?""")


def _deep_text(match: re.Match) -> str:
    kind, depth = match.group(1), int(match.group(2))
    opening, closing = ("[", "]") if kind == "list" else ('{"k": ', "}")
    return opening * depth + "0" + closing * depth


def dumps(value: Any) -> str:
    """JSON text of a document that may hold `Deep` nests."""
    return DEEP_TOKEN.sub(_deep_text, json.dumps(value, default=lambda deep: deep.token))


class _DeepDumper(yaml.CSafeDumper):
    """yaml.safe_dump that writes a `Deep` nest as its token (replaced by its flow-style text afterwards)."""


_DeepDumper.add_representer(Deep, lambda dumper, deep: dumper.represent_str(deep.token))


def yaml_dumps(value: Any, *, unicode: bool) -> str:
    return DEEP_TOKEN.sub(_deep_text, yaml.dump(value, Dumper=_DeepDumper, allow_unicode=unicode))


def paths(value: Any, most: int = 2000) -> list[tuple]:
    """Paths to values inside nested dicts and lists, breadth first: 12 deep and `most` at most (a document of
    aliases repeats its nodes exponentially often). The root's path is ()."""
    found: list[tuple] = []
    queue = collections.deque([((), value)])
    while queue and len(found) < most:
        path, node = queue.popleft()
        found.append(path)
        if len(path) < 12 and isinstance(node, dict):
            queue.extend(((*path, key), sub) for key, sub in node.items())
        elif len(path) < 12 and isinstance(node, list):
            queue.extend(((*path, k), sub) for k, sub in enumerate(node[:20]))
    return found


def replace_at(value: Any, path: tuple, new: Any, *, delete: bool = False) -> Any:
    if not path:
        return new
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return value


def mutate_tree(rng: random.Random, tree: Any, hostile: Callable[[random.Random], Any]) -> tuple[Any, str]:
    """One to three changes to a parsed document: a value replaced by a hostile one, a key deleted or added."""
    done = []
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths(tree))
        op = rng.choice(("replace", "replace", "delete", "add"))
        if op == "delete" and path:
            tree = replace_at(tree, path, None, delete=True)
        elif op == "add" and isinstance(_at(tree, path), dict):
            _at(tree, path)[rng.choice(("unknown", "status", "ts", "ips", "kind", "x" * 50))] = hostile(rng)
        else:
            tree = replace_at(tree, path, hostile(rng))
        done.append(f"{op}:{'.'.join(map(str, path)) or '(root)'}")
    return tree, "+".join(done)


def _at(tree: Any, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


ENTITY_KINDS = ("pod", "service", "node", "endpoints")


def random_ip(rng: random.Random) -> Any:
    if rng.random() < 0.15:
        return hostile_json(rng)
    if rng.random() < 0.2:
        return f"fd00::{rng.randrange(1 << 16):x}"
    return f"10.{rng.choice((244, 96, 0))}.{rng.randrange(3)}.{rng.randrange(8)}"


def random_event(rng: random.Random, t0: float) -> dict[str, Any]:
    """An entity event of plausible shape, its values drawn from a few names and addresses so that events meet."""
    labels = {rng.choice(("name", "app")): rng.choice(("front-end", "carts", "db")) for _ in range(rng.randint(0, 2))}
    event = {
        "ts": t0 + rng.choice((0, 1, 5, 29.5, 30, -1e9, 1e12)) if rng.random() < 0.9 else hostile_json(rng),
        "event": rng.choice(("added", "modified", "deleted")),
        "kind": rng.choice(ENTITY_KINDS),
        "name": rng.choice(("front-end", "carts", "db", "node-1", "kube-dns")),
        "namespace": rng.choice(("sock-shop", "kube-system", "")),
        "ips": [random_ip(rng) for _ in range(rng.randint(0, 3))],
        "labels": labels,
        "selector": dict(labels) if rng.random() < 0.5 else {},
        "owner": rng.choice(("", "ReplicaSet/front-end-1", "/")),
        "app": rng.choice(("", "front-end")),
    }
    if rng.random() < 0.3:
        event, _ = mutate_tree(rng, event, hostile_json)
    return event


def mutate_entities(rng: random.Random, seed: Seed, other: Seed) -> tuple[bytes, str]:
    """run.json: a hostile value somewhere in its tree. entities.jsonl: events changed, added or made up."""
    text = seed.data.decode("utf-8", "replace")
    if seed.name.endswith(".run.json"):
        try:
            tree = json.loads(text)
        except (ValueError, RecursionError):
            return mutate_bytes(rng, seed.data, other.data)
        tree, how = mutate_tree(rng, tree, hostile_json)
        return dumps(tree).encode("utf-8", "surrogatepass"), how
    lines = [line for line in text.splitlines() if line.strip()]
    t0 = 1767225600.0
    choice = rng.random()
    if choice < 0.3 or not lines:
        events = [dumps(random_event(rng, t0)) for _ in range(rng.randint(1, 40))]
        return "\n".join(events).encode("utf-8", "surrogatepass"), f"generated:{len(events)}"
    done = []
    for _ in range(rng.randint(1, 3)):
        k = rng.randrange(len(lines))
        op = rng.choice(("value", "value", "event", "duplicate", "line"))
        if op == "value":
            try:
                tree, how = mutate_tree(rng, json.loads(lines[k]), hostile_json)
            except (ValueError, RecursionError):
                continue
            lines[k] = dumps(tree)
            done.append(f"line{k + 1}:{how}")
        elif op == "event":
            lines.insert(k, dumps(random_event(rng, t0)))
            done.append(f"insert-event@{k + 1}")
        elif op == "duplicate":
            # many copies of a short line, a few of a long one: an input of a few MiB at most
            lines[k:k] = [lines[k]] * min(rng.choice((1, 5000)), 1 + (4 << 20) // (len(lines[k]) + 1))
            done.append(f"duplicate@{k + 1}")
        else:
            lines[k] = rng.choice(("[1, 2]", "null", '"x"', "{", "NaN", "\x00", "{}", '{"ts": 1}', "\ufeff{}"))
            done.append(f"line{k + 1}:{lines[k]!r}")
    return "\n".join(lines).encode("utf-8", "surrogatepass"), "+".join(done) or "as-is"


# --- pickles: opcode streams and data of the wrong shape -----------------------------------------------------------

OPCODES = [op for op in pickletools.opcodes if op.name not in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ")]


def pickle_argument(rng: random.Random, arg: pickletools.ArgumentDescriptor) -> bytes:
    """An opcode's argument as its descriptor says it is encoded, with lengths that are honest or lie."""
    n = arg.n
    if n >= 0:
        return struct.pack("<" + WIDTHS[n], rng.choice(boundary_values(n))) if n in WIDTHS else bytes(n)
    if n == pickletools.UP_TO_NEWLINE:
        text = rng.choice(("0", "-1", "1" * 400, "1.5", "nan", "'x'", "'", "x", "00", "01", "True", "", "9" * 5000))
        if arg.name == "stringnl_noescape_pair":
            text = rng.choice(("os\nsystem", "builtins\neval", "__builtin__\nset", "copy_reg\n_reconstructor"))
        return text.encode() + b"\n"
    body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 20)))
    honest = len(body)
    length = honest if rng.random() < 0.7 else rng.choice(boundary_values(1 if n == -2 else 4))
    width = {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT8U: 8}.get(n, 4)
    top = (1 << (8 * width)) - 1
    return struct.pack("<" + WIDTHS[width], length & top) + body


def opcode_stream(rng: random.Random) -> bytes:
    """A random sequence of pickle opcodes with encoded arguments, usually framed by PROTO and ended by STOP."""
    out = b""
    if rng.random() < 0.7:
        out += b"\x80" + bytes([rng.randrange(6)])
    for _ in range(rng.randint(1, 40)):
        op = rng.choice(OPCODES)
        out += op.code.encode("latin-1") + (pickle_argument(rng, op.arg) if op.arg else b"")
    if rng.random() < 0.2:  # a deep or wide nest that builds cheaply
        out += rng.choice((b"(", b"]", b"}", b")")) * rng.choice((1000, 100_000))
    return out + (b"." if rng.random() < 0.8 else b"")


def hostile_log(rng: random.Random) -> Any:
    """Data shaped somewhat like a cluster-creation log, with the wrong types, sizes and nesting where it matters."""

    def entry() -> Any:
        fields = ["10.0.0.1", "+", "default", rng.choice(("pod", "svc")), "app=x", "Running"]
        for _ in range(rng.randint(0, 3)):
            k = rng.randrange(len(fields))
            fields[k] = rng.choice(
                (
                    None,
                    0,
                    -1,
                    2**70,
                    1.5,
                    float("nan"),
                    b"bytes",
                    "",
                    "-",
                    ("t",),
                    [1],
                    {1: 2},
                    nested(rng.choice((10, 3000)), "list"),
                    "x" * 100_000,
                    "a=b=c,=",
                    "<none>",
                )
            )
        return tuple(fields[: rng.choice((6, 6, 5, 4, 0, 7))]) if rng.random() < 0.9 else fields

    log: Any = {rng.choice((0, 1, -1, 2**63, 10**30, 5)): {rng.choice(("p", "", 0, None)): entry()
                for _ in range(rng.randint(0, 3))} for _ in range(rng.randint(0, 4))}  # fmt: skip
    if rng.random() < 0.2:
        log = rng.choice(([log], (log,), None, {"0": {}}, {0: []}, {True: {}}, {0.5: {}}, log.get(0, {})))
    return log


def mutate_pickle(rng: random.Random, seed: Seed, other: Seed) -> tuple[bytes, str]:
    choice = rng.random()
    if choice < 0.25:
        return opcode_stream(rng), "opcodes"
    if choice < 0.45:
        protocol = rng.randrange(6)
        try:
            return pickle.dumps(hostile_log(rng), protocol=protocol), f"data-protocol-{protocol}"
        except RecursionError:
            return opcode_stream(rng), "opcodes"
    return mutate_bytes(rng, seed.data, other.data)


# --- YAML configs ---------------------------------------------------------------------------------------------------


def hostile_yaml_value(rng: random.Random) -> Any:
    if rng.random() < 0.7:
        return hostile_json(rng)
    return rng.choice((-5, 0, 10**6, 1.0e30, "sockshop", "testbed", "import", "train", "nope", [], {}, [0], [1, 1]))


def alias_bomb(rng: random.Random) -> str:
    """A YAML document whose aliases expand exponentially (each level names the previous one `width` times)."""
    width, depth = rng.choice(((9, 9), (10, 6), (2, 40), (4, 12)))
    lines = ["a0: &a0 [x]"]
    for k in range(1, depth + 1):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * width) + "]")
    key = rng.choice(("runs", "defaults", "seed", "features", "realism"))
    return "\n".join(lines) + f"\n{key}: *a{depth}\n"


@functools.lru_cache(maxsize=64)
def parsed_yaml(data: bytes) -> Any:
    """A seed's document (parsed once: the mutations work on copies), None where it is not YAML."""
    try:
        return yaml.load(data, Loader=yaml.CSafeLoader)
    except (yaml.YAMLError, RecursionError):
        return None


def mutate_config(rng: random.Random, seed: Seed, other: Seed) -> tuple[bytes, str]:
    choice = rng.random()
    if choice < 0.08:
        return alias_bomb(rng).encode(), "alias-bomb"
    if choice < 0.12:
        depth = rng.choice((100, 1000, 50_000))
        return ("runs: " + "[" * depth + "]" * depth + "\n").encode(), f"nested-{depth}"
    if choice < 0.16:
        tag = rng.choice(("!!python/object/apply:os.system ['true']", "!!binary AAAA", "!!set {a}", "!!timestamp x",
                          "!!omap [a: 1]", "!custom x", "!!float nan", "!!int 0x"))  # fmt: skip
        return f"seed: {tag}\n".encode() + seed.data, "tag"
    if choice < 0.65:
        tree = copy.deepcopy(parsed_yaml(seed.data))
        if isinstance(tree, (dict, list)):
            tree, how = mutate_tree(rng, tree, hostile_yaml_value)
            try:
                return yaml_dumps(tree, unicode=rng.random() < 0.5).encode("utf-8", "surrogatepass"), how
            except (yaml.YAMLError, UnicodeEncodeError):
                pass
    return mutate_bytes(rng, seed.data, other.data)


MUTATORS: dict[str, Callable[[random.Random, Seed, Seed], tuple[bytes, str]]] = {
    "capture": mutate_capture,
    "entities": mutate_entities,
    "pickle": mutate_pickle,
    "config": mutate_config,
}


def draw(reader: str, rng: random.Random, seeds: list[Seed]) -> FuzzInput:
    """One input: now and then a seed as it is, else a mutation of one (spliced with another where it helps)."""
    seed, other = rng.choice(seeds), rng.choice(seeds)
    if reader == "entities":  # a splice of entities.jsonl and run.json makes neither
        same = [s for s in seeds if s.name.endswith(".run.json") == seed.name.endswith(".run.json")]
        other = rng.choice(same)
    if rng.random() < 0.03:
        return FuzzInput(reader, seed.name, "as-is", seed.data)
    data, how = MUTATORS[reader](rng, seed, other)
    return FuzzInput(reader, seed.name, how, data)
