"""Reading a pickle that holds only data (the prototype's cluster-creation log), with every resource bounded.

`pickle.Unpickler` trusts the shape of its input even when it refuses every global: a tuple nested 200,000 deep
crashes the interpreter when it is hashed, one memo index of 2**28 allocates gigabytes, and a few hundred bytes of
shared references expand to gigabytes once walked. So this module interprets the opcodes that build data itself
(protocols 0-5: numbers, strings, None/True/False, tuples, lists, dicts, the memo, MARK/POP/DUP) and refuses every
other one (globals, REDUCE, BUILD, INST/OBJ, NEWOBJ, persistent ids, extensions, sets, buffers) by name and byte
offset. While building, it keeps each container's size *as expanded* (a shared reference counts every time it is
placed) and its depth, and it stops at the byte where a limit is crossed, before anything big exists.

It decodes the arguments itself rather than through `pickletools.genops`: genops decodes protocol 0 byte strings
as ASCII where `pickle.load(encoding="latin1")` (how Python 2 logs are read) decodes latin-1, and its decoding
alone takes over ten times as long as `pickle.loads` on the real log. pickletools' table still names the opcodes.

It runs in this process, with no RLIMIT_AS subprocess around it, because its memory is bounded by construction:
the input (at most `max_bytes`), plus at most one object and one bookkeeping entry per opcode, and no step
recurses (depth is counted, never walked). With the default limits the worst inputs peak at 170 MB (see
`PickleLimits`); an address-space limit would add a process start to every import and guard against nothing left.
"""

from __future__ import annotations

import codecs
import pickletools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimir.errors import IOFailure, LegacyError


@dataclass(frozen=True)
class PickleLimits:
    """Bounds on a data pickle. The prototype's largest log (3 hours) is 260 KB: 52,000 opcodes, 13,600 memo
    entries, 25,500 elements, depth 3; the defaults hold one of two days or more. The worst inputs within them (a
    million opcodes that each leave a container behind, placed or not) peak at 170 MB."""

    max_bytes: int = 16 << 20  # the file's size
    max_opcodes: int = 1_000_000
    max_depth: int = 32  # containers within containers (the log's is 3)
    max_memo: int = 1 << 20  # memo entries, and one more than the largest memo index
    max_elements: int = 2_000_000  # values of the result as expanded: a shared reference counts every time
    max_chars: int = 64 << 20  # characters and bytes of its strings, expanded the same way
    max_string: int = 64 << 10  # the length of one string


class PickleRefused(ValueError):
    """The pickle is not data within the limits; the message names the byte offset and the opcode."""

    def __init__(self, offset: int, message: str) -> None:
        self.offset = offset
        super().__init__(f"byte offset {offset}: {message}")


_NAMES = {ord(op.code): op.name for op in pickletools.opcodes}
_CALLS_CODE = frozenset({  # the opcodes that load a global or call one
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "PERSID", "BINPERSID", "EXT1",
    "EXT2", "EXT4",
})  # fmt: skip
_STOP = ord(".")
_HIGHEST_PROTOCOL = 5
# Ints are signed 64-bit: ints that differ by 2**61 - 1 share a hash, so unbounded ones as dict keys could make
# building a dict quadratic.
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1
_LONG_BYTES = 8
_NUMBER_TEXT = 32  # the longest protocol 0 number or memo index, in bytes
_U1, _U2, _I4, _U4, _U8 = (struct.Struct(f) for f in ("<B", "<H", "<i", "<I", "<Q"))
_F8 = struct.Struct(">d")

_EMPTY = (1, 0, 1)  # an empty container's size as expanded: (elements, characters, depth)


DEFAULT_LIMITS = PickleLimits()


def loads_data(data: bytes, limits: PickleLimits = DEFAULT_LIMITS) -> Any:
    """The value of a pickle that holds only builtin data; PickleRefused when it holds anything else or crosses a
    limit."""
    if len(data) > limits.max_bytes:
        raise PickleRefused(limits.max_bytes, f"the pickle is larger than {limits.max_bytes} bytes")
    return _Machine(data, limits).run()


def read_data_pickle(path: Path, limits: PickleLimits = DEFAULT_LIMITS) -> Any:
    """`loads_data` of a file, reading no more of it than the limit; LegacyError (exit 3) names the file."""
    try:
        with path.open("rb") as f:
            data = f.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise IOFailure(f"{path}: no such file") from None
    except OSError as e:
        raise IOFailure(f"{path}: cannot read: {e.strerror}") from None
    if not data:
        raise LegacyError(f"{path}: the file is empty, not a pickle")
    try:
        return loads_data(data, limits)
    except PickleRefused as e:
        raise LegacyError(f"{path}: {e}") from None


class _Machine:
    """The pickle virtual machine, reduced to data: a stack, its MARKs and the memo. The opcodes of the real logs
    (protocol 0: MARK DICT INT STRING PUT GET SETITEM TUPLE) take one or two method calls each: Python's cost per
    opcode is what makes this slower than pickle's C code."""

    def __init__(self, data: bytes, limits: PickleLimits) -> None:
        self.data = data
        self.limits = limits
        self.pos = 0
        self.start = 0  # the offset of the opcode being run
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.sizes: dict[int, tuple[int, int, int]] = {}  # id(container with items) -> its size as expanded
        self.placed: set[int] = set()  # id(container placed in another): it can no longer grow
        push = self.stack.append
        actions: dict[str, Callable[[], Any]] = {
            "PROTO": self._proto,
            "FRAME": lambda: self._fixed(_U8),  # a hint for buffered reading: nothing to do
            "MARK": self._mark,
            "POP": self._pop,
            "POP_MARK": self._pop_to_mark,
            "DUP": lambda: push(self._top(1)[0]),
            "NONE": lambda: push(None),
            "NEWTRUE": lambda: push(True),
            "NEWFALSE": lambda: push(False),
            "INT": self._int,
            "LONG": lambda: push(self._number(b"L")),
            "BININT": lambda: push(self._fixed(_I4)),
            "BININT1": lambda: push(self._fixed(_U1)),
            "BININT2": lambda: push(self._fixed(_U2)),
            "LONG1": lambda: self._binlong(self._fixed(_U1)),
            "LONG4": lambda: self._binlong(self._fixed(_I4)),
            "FLOAT": self._float,
            "BINFLOAT": lambda: push(self._fixed(_F8)),
            "STRING": self._string,
            "BINSTRING": lambda: self._text(self._sized(_I4), "latin-1"),
            "SHORT_BINSTRING": lambda: self._text(self._sized(_U1), "latin-1"),
            "UNICODE": self._unicode,
            "BINUNICODE": lambda: self._text(self._sized(_U4), "utf-8"),
            "SHORT_BINUNICODE": lambda: self._text(self._sized(_U1), "utf-8"),
            "BINUNICODE8": lambda: self._text(self._sized(_U8), "utf-8"),
            "BINBYTES": lambda: push(self._sized(_U4)),
            "SHORT_BINBYTES": lambda: push(self._sized(_U1)),
            "BINBYTES8": lambda: push(self._sized(_U8)),
            "EMPTY_TUPLE": lambda: push(()),
            "TUPLE": lambda: self._tuple(self._pop_to_mark()),
            "TUPLE1": lambda: self._tuple(self._pop_items(1)),
            "TUPLE2": lambda: self._tuple(self._pop_items(2)),
            "TUPLE3": lambda: self._tuple(self._pop_items(3)),
            "EMPTY_LIST": lambda: self._new([]),
            "LIST": lambda: self._list(self._pop_to_mark()),
            "APPEND": lambda: self._append(self._pop_items(1)),
            "APPENDS": lambda: self._append(self._pop_to_mark()),
            "EMPTY_DICT": lambda: self._new({}),
            "DICT": lambda: self._dict(self._pop_to_mark()),
            "SETITEM": self._setitem,
            "SETITEMS": lambda: self._setitems(self._pop_to_mark()),
            "PUT": lambda: self._put(self._number()),
            "BINPUT": lambda: self._put(self._fixed(_U1)),
            "LONG_BINPUT": lambda: self._put(self._fixed(_U4)),
            "MEMOIZE": lambda: self._put(len(self.memo)),
            "GET": lambda: self._get(self._number()),
            "BINGET": lambda: self._get(self._fixed(_U1)),
            "LONG_BINGET": lambda: self._get(self._fixed(_U4)),
        }
        self.table = [actions.get(_NAMES.get(code, ""), self._refuse) for code in range(256)]

    def run(self) -> Any:
        data, table = self.data, self.table
        for _ in range(self.limits.max_opcodes):
            self.start = start = self.pos
            if start >= len(data):
                raise PickleRefused(start, "the pickle ends before its STOP opcode")
            code = data[start]
            self.pos = start + 1
            if code == _STOP:
                if len(self.stack) != 1 or self.marks:
                    raise self._refused(f"leaves {len(self.stack)} values and {len(self.marks)} MARKs, not 1 value")
                return self.stack[0]
            table[code]()
        raise PickleRefused(self.pos, f"more than {self.limits.max_opcodes} opcodes")

    # -- errors and arguments

    def _refused(self, message: str) -> PickleRefused:
        return PickleRefused(self.start, f"opcode {_NAMES[self.data[self.start]]}: {message}")

    def _refuse(self) -> None:
        code = self.data[self.start]
        name = _NAMES.get(code)
        if name is None:
            raise PickleRefused(self.start, f"byte 0x{code:02x} is not a pickle opcode")
        if name == "GLOBAL":
            lines = self.data[self.pos : self.pos + 200].split(b"\n")[:2]
            target = ".".join(part[:60].decode("ascii", "backslashreplace") for part in lines)
            raise self._refused(f"refusing to load the global {target}: a cluster log holds only data")
        if name in _CALLS_CODE:
            raise self._refused("refusing an opcode that loads or calls code: a cluster log holds only data")
        raise self._refused("refusing a value other than numbers, strings, tuples, lists and dicts")

    def _take(self, size: int) -> bytes:
        start, end = self.pos, self.pos + size
        if end > len(self.data):
            raise self._refused(f"needs {size} bytes, the pickle ends {len(self.data) - start} bytes later")
        self.pos = end
        return self.data[start:end]

    def _fixed(self, form: struct.Struct) -> Any:
        start, end = self.pos, self.pos + form.size
        if end > len(self.data):
            raise self._refused(f"needs {form.size} bytes, the pickle ends {len(self.data) - start} bytes later")
        self.pos = end
        return form.unpack_from(self.data, start)[0]

    def _sized(self, length: struct.Struct) -> bytes:
        size = self._fixed(length)
        if size < 0 or size > self.limits.max_string:
            raise self._refused(f"a string of {size} bytes (the limit is {self.limits.max_string})")
        return self._take(size)

    def _line(self, longest: int) -> bytes:
        start = self.pos
        end = self.data.find(b"\n", start, start + longest + 1)
        if end < 0:
            raise self._refused(f"no end of line within {longest} bytes")
        self.pos = end + 1
        return self.data[start:end]

    def _number(self, suffix: bytes = b"") -> int:
        """Protocol 0's decimal argument (a number, a memo index), a signed 64-bit integer."""
        text = self._line(_NUMBER_TEXT)
        digits = text.removesuffix(suffix) if suffix else text
        if not (digits.isdigit() or (digits[:1] in (b"-", b"+") and digits[1:].isdigit())):
            raise self._refused(f"{text[:40]!r} is not a decimal number")
        value = int(digits)
        if not _INT_MIN <= value <= _INT_MAX:
            raise self._refused(f"the number {value} does not fit in a signed 64-bit integer")
        return value

    # -- scalars

    def _proto(self) -> None:
        protocol = self._fixed(_U1)
        if protocol > _HIGHEST_PROTOCOL:
            raise self._refused(f"pickle protocol {protocol} (known: 0 to {_HIGHEST_PROTOCOL})")

    def _int(self) -> None:
        if self.data[self.pos : self.pos + 3] in (b"00\n", b"01\n"):  # Python 2's False and True
            self.stack.append(self.data[self.pos + 1] == ord("1"))
            self.pos += 3
        else:
            self.stack.append(self._number())

    def _binlong(self, size: int) -> None:
        if not 0 <= size <= _LONG_BYTES:
            raise self._refused(f"an integer of {size} bytes (the limit is {_LONG_BYTES})")
        self.stack.append(int.from_bytes(self._take(size), "little", signed=True))

    def _float(self) -> None:
        text = self._line(_NUMBER_TEXT)
        try:
            self.stack.append(float(text))
        except ValueError:
            raise self._refused(f"{text!r} is not a number") from None

    def _string(self) -> None:
        """Protocol 0's Python 2 byte string: quoted, with escapes, read as latin-1 (as pickle.load(encoding=
        'latin1') does)."""
        line = self._line(4 * self.limits.max_string + 2)  # an escape is at most 4 bytes per character
        if len(line) < 2 or line[:1] not in (b"'", b'"') or line[-1:] != line[:1]:
            raise self._refused("a string without matching quotes")
        raw = line[1:-1]
        if b"\\" in raw:
            try:
                raw = codecs.escape_decode(raw)[0]
            except ValueError as e:
                raise self._refused(f"a string with a bad escape: {e}") from None
        self._text(raw, "latin-1")

    def _unicode(self) -> None:
        self._text(self._line(10 * self.limits.max_string), "raw-unicode-escape")  # \UXXXXXXXX: 10 bytes

    def _text(self, raw: bytes, encoding: str) -> None:
        try:
            text = raw.decode(encoding, "surrogatepass" if encoding == "utf-8" else "strict")
        except UnicodeDecodeError as e:
            raise self._refused(f"a string that is not {encoding}: {e.reason}") from None
        if len(text) > self.limits.max_string:
            raise self._refused(f"a string of {len(text)} characters (the limit is {self.limits.max_string})")
        self.stack.append(text)

    # -- the stack, MARKs and the memo

    def _mark(self) -> None:
        if len(self.marks) >= self.limits.max_depth:
            raise self._refused(f"more than {self.limits.max_depth} open MARKs")
        self.marks.append(len(self.stack))

    def _pop_to_mark(self) -> list[Any]:
        if not self.marks:
            raise self._refused("no MARK to take the values from")
        fence = self.marks.pop()
        items = self.stack[fence:]
        del self.stack[fence:]
        return items

    def _top(self, count: int) -> list[Any]:
        """The top `count` values, above the last MARK."""
        above = len(self.stack) - (self.marks[-1] if self.marks else 0)
        if above < count:
            raise self._refused(f"needs {count} values on the stack above the last MARK, finds {above}")
        return self.stack[len(self.stack) - count :]

    def _pop_items(self, count: int) -> list[Any]:
        items = self._top(count)
        del self.stack[-count:]
        return items

    def _pop(self) -> None:
        if self.marks and self.marks[-1] == len(self.stack):
            self.marks.pop()  # as pickle does: POP right after MARK drops the MARK
        else:
            self._pop_items(1)

    def _put(self, index: int) -> None:
        if not 0 <= index < self.limits.max_memo:
            raise self._refused(f"memo index {index} (the limit is {self.limits.max_memo})")
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise self._refused("no value above the last MARK to store")
        self.memo[index] = self.stack[-1]

    def _get(self, index: int) -> None:
        if index not in self.memo:
            raise self._refused(f"memo index {index} was never stored")
        self.stack.append(self.memo[index])

    # -- containers

    def _new(self, container: list | dict) -> list | dict:
        """Push a new empty container; bookkeeping left by a freed one at the same address is dropped."""
        self._forget(container)
        self.stack.append(container)
        return container

    def _forget(self, container: Any) -> None:
        self.sizes.pop(id(container), None)
        self.placed.discard(id(container))

    def _tuple(self, items: list[Any]) -> None:
        value = tuple(items)
        if items:
            self._forget(value)
            self._place(value, items)
        self.stack.append(value)

    def _list(self, items: list[Any]) -> None:
        target = self._new([])
        if items:
            self._place(target, items)
            target.extend(items)

    def _dict(self, items: list[Any]) -> None:
        target = self._new({})
        if items:
            self._update(target, items)

    def _append(self, items: list[Any]) -> None:
        target = self._top(1)[0]
        if type(target) is not list:
            raise self._refused(f"adds items to a {type(target).__name__}, not a list")
        self._place(target, items)
        target.extend(items)

    def _setitem(self) -> None:
        stack = self.stack
        if len(stack) - (self.marks[-1] if self.marks else 0) < 3:
            raise self._refused("needs a dict, a key and a value above the last MARK")
        target, key, value = stack[-3:]
        del stack[-2:]
        if type(target) is not dict:
            raise self._refused(f"adds an item to a {type(target).__name__}, not a dict")
        self._place(target, (key, value))
        try:
            target[key] = value
        except TypeError:
            raise self._refused(f"a {type(key).__name__} as a dict key") from None

    def _setitems(self, items: list[Any]) -> None:
        target = self._top(1)[0]
        if type(target) is not dict:
            raise self._refused(f"adds items to a {type(target).__name__}, not a dict")
        self._update(target, items)

    def _update(self, target: dict, items: list[Any]) -> None:
        if len(items) % 2:
            raise self._refused(f"{len(items)} values for a dict's keys and values: one is missing")
        self._place(target, items)
        try:
            for k in range(0, len(items), 2):
                target[items[k]] = items[k + 1]
        except TypeError:
            raise self._refused(f"a {type(items[k]).__name__} as a dict key") from None

    def _place(self, parent: Any, items: list[Any] | tuple[Any, ...]) -> None:
        """Account for items placed in parent: their expanded sizes add to its, its depth rises above theirs, and
        each container among them is sealed. A sealed container cannot grow (a pickler writes a container's items
        before placing it), so the counts stay exact and no container can end up inside itself."""
        sizes, placed = self.sizes, self.placed
        if id(parent) in placed:
            raise self._refused(f"adds items to a {type(parent).__name__} already placed in another container")
        elements, chars, depth = sizes.get(id(parent), _EMPTY)
        for item in items:
            kind = type(item)
            if kind is str or kind is bytes:
                elements += 1
                chars += len(item)
            elif kind is list or kind is dict or kind is tuple:
                if item is parent:
                    raise self._refused(f"places a {kind.__name__} inside itself")
                placed.add(id(item))
                sub_elements, sub_chars, sub_depth = sizes.get(id(item), _EMPTY)
                elements += sub_elements
                chars += sub_chars
                if sub_depth >= depth:
                    depth = sub_depth + 1
            else:
                elements += 1
        limits = self.limits
        if depth > limits.max_depth or elements > limits.max_elements or chars > limits.max_chars:
            self._overflow(depth, elements)
        sizes[id(parent)] = (elements, chars, depth)

    def _overflow(self, depth: int, elements: int) -> None:
        limits = self.limits
        if depth > limits.max_depth:
            raise self._refused(f"containers nested more than {limits.max_depth} deep")
        if elements > limits.max_elements:
            raise self._refused(
                f"the data expands to more than {limits.max_elements} values (a shared reference counts each time)"
            )
        raise self._refused(f"the data's strings expand to more than {limits.max_chars} characters")
