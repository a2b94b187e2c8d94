"""Pickle analysis: walk the opcode stream, simulate the stack, never unpickle.

Every global the stream can import (GLOBAL, INST, STACK_GLOBAL) must be on the allowlist;
STACK_GLOBAL must take its module and name from string constants (pushed, or fetched from
the memo); every call (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ) must call an imported global, not a
value computed at load time (a `getattr` result, a call result); container mutations and
BUILD must not target an imported global; the copyreg extension registry (EXT1/2/4) is
refused. Whatever the simulation cannot follow (unknown opcode, protocol above 5, stack or
memo underflow, truncation, an over-long line) is a finding too: unknown is not safe.
Large byte payloads are skipped, not read, so a multi-GB pickle is walked in one pass.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
import struct
from dataclasses import dataclass
from typing import IO

from stablemirror.scanning.allowlist import Allowlist
from stablemirror.scanning.findings import Findings
from stablemirror.scanning.pickle_reader import (
    READ_CHUNK,
    SPECULATIVE_CHUNK,
    PickleReader,
    Unfollowable,
)

KEEP_STRING = 1 << 16  # longer strings become opaque values (never a resolvable name)
HIGHEST_PROTOCOL = 5
LEGACY_PICKLES = 5  # magic number, protocol version, sys info, the object, storage keys


@dataclass(frozen=True, slots=True)
class Global:
    module: str
    name: str


@dataclass(frozen=True, slots=True)
class Payload:
    """A bytes constant, by where it sits in the stream (never read into memory)."""

    start: int  # absolute stream offset
    length: int


@dataclass(frozen=True, slots=True)
class Tup:
    items: tuple[object, ...]


# torch.storage._load_from_bytes(b) is torch.load(BytesIO(b)): how `pickle.dump` of a
# tensor writes its storage. Allowed when b is a constant, which is then analyzed itself.
NESTED_LOAD = ("torch.storage", "_load_from_bytes")


class _Mark:
    pass


MARK = _Mark()
OPAQUE = object()  # any value whose content the analysis does not need
_OPS = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
# opcodes that push one data value and pop nothing
_PLAIN_PUSH = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
                         "BYTEARRAY8", "NONE",
                         "NEWTRUE", "NEWFALSE", "FLOAT", "BINFLOAT", "EMPTY_LIST",
                         "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET", "NEXT_BUFFER"})
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
               "BINSTRING", "SHORT_BINSTRING"}
_LENGTH = {"bytes1": ("<B", 1), "string1": ("<B", 1), "unicodestring1": ("<B", 1),
           "bytes4": ("<I", 4), "string4": ("<i", 4), "unicodestring4": ("<I", 4),
           "bytes8": ("<Q", 8), "bytearray8": ("<Q", 8), "unicodestring8": ("<Q", 8),
           "long1": ("<B", 1), "long4": ("<i", 4)}
_FIXED = {"uint1": ("<B", 1), "uint2": ("<H", 2), "uint4": ("<I", 4), "uint8": ("<Q", 8),
          "int4": ("<i", 4), "float8": (">d", 8)}
_STRUCTS = {name: struct.Struct(fmt) for name, (fmt, _n) in {**_FIXED, **_LENGTH}.items()}


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Unfollowable(f"{what} is not UTF-8") from e


class PickleWalker:
    """One pickle, from PROTO (or the first opcode) to STOP."""

    def __init__(self, reader: PickleReader, allow: Allowlist, out: Findings) -> None:
        self.r = reader
        self.allow = allow
        self.out = out
        self.stack: list[object] = []
        self.memo: dict[int, object] = {}
        self.proto = 0
        self.calls = 0  # opcodes that call or instantiate (what makes an import matter)
        self.nested: list[Payload] = []  # bytes handed to torch.load while loading

    # -- the value an opcode's argument carries -------------------------------------------
    def _arg(self, op: pickletools.OpcodeInfo) -> object:
        arg = op.arg
        if arg is None:
            return None
        name = arg.name
        if name in _FIXED:
            return self.r.unpack(_STRUCTS[name])
        if name in _LENGTH:
            length = self.r.unpack(_STRUCTS[name])
            if length < 0:
                raise Unfollowable(f"{op.name}: negative length")
            if name.startswith("bytes"):
                start = self.r.origin + self.r.pos
                self.r.skip(length)
                return Payload(start, length)
            if name.startswith("long") or (length <= KEEP_STRING and name.startswith(
                    ("unicodestring", "string"))):
                data = self.r.read(length)
                if name.startswith("unicodestring"):
                    try:
                        return data.decode("utf-8", "surrogatepass")
                    except UnicodeDecodeError as e:
                        raise Unfollowable(f"{op.name}: not UTF-8") from e
                if name.startswith("string"):
                    return data.decode("latin-1")
                return OPAQUE
            self.r.skip(length)
            return OPAQUE
        if name == "stringnl_noescape_pair":
            module = _text(self.r.line()[:-1], f"{op.name} module")
            qualname = _text(self.r.line()[:-1], f"{op.name} name")
            return (module, qualname)
        line = self.r.line()
        if name == "stringnl_noescape":
            return OPAQUE
        try:
            value = getattr(pickletools, f"read_{name}")(io.BytesIO(line))
        except (ValueError, SyntaxError, UnicodeDecodeError) as e:
            raise Unfollowable(f"{op.name}: bad argument ({e})") from e
        if name == "stringnl" and isinstance(value, bytes | str):
            value = value.decode("latin-1") if isinstance(value, bytes) else value
        return value

    # -- the stack ------------------------------------------------------------------------
    def _pop(self, what: str, nested_load_ok: bool = False) -> object:
        if not self.stack or self.stack[-1] is MARK:
            raise Unfollowable(f"{what}: stack underflow")
        value = self.stack.pop()
        if not nested_load_ok:
            self._other_use(value, what)
        return value

    def _pop_mark(self, what: str) -> list[object]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is MARK:
                items = self.stack[i + 1:]
                del self.stack[i:]
                for item in items:
                    self._other_use(item, what)
                return items
        raise Unfollowable(f"{what}: no MARK on the stack")

    def _other_use(self, value: object, what: str) -> None:
        """torch.storage._load_from_bytes is only allowed as the callable of a REDUCE on a
        constant: passed anywhere else, something could call it on bytes never analyzed."""
        if isinstance(value, Global) and (value.module, value.name) == NESTED_LOAD:
            self.out.add("unsafe_code", "global",
                         f"{what} uses torch.storage._load_from_bytes (torch.load) other than "
                         "on constant bytes", self.r.pos, *NESTED_LOAD)

    def _check_global(self, module: str, name: str, offset: int) -> Global:
        if self.proto < 3:  # what the unpickler's fix_imports does with Python 2 names
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if not self.allow.allows(module, name) and (module, name) != NESTED_LOAD:
            self.out.add("unsafe_code", "global",
                         f"imports {module}.{name}, which is not on the allowlist",
                         offset, module, name)
        return Global(module, name)

    def _nested_load(self, args: object, offset: int) -> None:
        if isinstance(args, Tup) and len(args.items) == 1 and isinstance(args.items[0],
                                                                          Payload):
            self.nested.append(args.items[0])
        else:
            self.out.add("unsafe_code", "global",
                         "torch.storage._load_from_bytes (torch.load) of bytes that are not "
                         "a constant", offset, *NESTED_LOAD)

    def _callable(self, value: object, opname: str, offset: int) -> None:
        if not isinstance(value, Global):
            self.out.add("unsafe_code", "indirect_call",
                         f"{opname} calls a value computed while loading, not an imported "
                         "global (getattr chains and similar)", offset)

    def _target(self, value: object, opname: str, offset: int) -> None:
        if isinstance(value, Global):
            self.out.add("unsafe_code", "global_target",
                         f"{opname} modifies the imported global {value.module}.{value.name}",
                         offset, value.module, value.name)

    # -- one opcode -----------------------------------------------------------------------
    def walk(self) -> None:
        while True:
            offset = self.r.pos
            code = self.r.opcode()
            op = _OPS.get(code)
            if op is None:
                raise Unfollowable(f"unknown opcode 0x{code:02x} at byte {offset}")
            arg = self._arg(op)
            if op.name == "STOP":
                self._pop("STOP")
                return
            self._step(op, arg, offset)

    def _step(self, op: pickletools.OpcodeInfo, arg: object, offset: int) -> None:
        name = op.name
        if name in _PLAIN_PUSH:
            self.stack.append(OPAQUE)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not self.stack or self.stack[-1] is MARK:
                raise Unfollowable(f"{name}: nothing to memoize")
            index = len(self.memo) if name == "MEMOIZE" else arg
            assert isinstance(index, int)
            self.memo[index] = self.stack[-1]
        elif name == "PROTO":
            assert isinstance(arg, int)
            if arg > HIGHEST_PROTOCOL:
                raise Unfollowable(f"pickle protocol {arg} (newest known: 5)")
            self.proto = arg
        elif name in _STRING_OPS:
            self.stack.append(arg if isinstance(arg, str) else OPAQUE)
        elif name == "GLOBAL":
            assert isinstance(arg, tuple)
            self.stack.append(self._check_global(arg[0], arg[1], offset))
        elif name == "STACK_GLOBAL":
            qualname, module = self._pop(name), self._pop(name)
            if isinstance(module, str) and isinstance(qualname, str):
                self.stack.append(self._check_global(module, qualname, offset))
            else:
                self.out.add("unsafe_code", "unresolved_global",
                             "STACK_GLOBAL imports a name computed while loading", offset)
                self.stack.append(Global("?", "?"))
        elif name == "INST":
            assert isinstance(arg, tuple)
            self._check_global(arg[0], arg[1], offset)
            self._pop_mark(name)
            self.calls += 1
            self.stack.append(OPAQUE)
        elif name == "OBJ":
            items = self._pop_mark(name)
            if not items:
                raise Unfollowable("OBJ without a class")
            self._callable(items[0], name, offset)
            self.calls += 1
            self.stack.append(OPAQUE)
        elif name == "REDUCE":
            args = self._pop(name)
            fn = self._pop(name, nested_load_ok=True)
            if isinstance(fn, Global) and (fn.module, fn.name) == NESTED_LOAD:
                self._nested_load(args, offset)
            else:
                self._callable(fn, name, offset)
            self.calls += 1
            self.stack.append(OPAQUE)
        elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
            self.stack.append(arg)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = [self._pop(name) for _ in range(n)][::-1]
            self.stack.append(Tup(tuple(items)))
        elif name == "TUPLE":
            self.stack.append(Tup(tuple(self._pop_mark(name))))
        elif name in ("NEWOBJ", "NEWOBJ_EX"):
            self._pop(name)
            if name == "NEWOBJ_EX":
                self._pop(name)
            self._callable(self._pop(name), name, offset)
            self.calls += 1
            self.stack.append(OPAQUE)
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.out.add("unsafe_code", "extension_registry",
                         f"{name} imports global #{arg} of the copyreg extension registry",
                         offset)
            self.stack.append(Global("?", "?"))
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            assert isinstance(arg, int)
            if arg not in self.memo:
                raise Unfollowable(f"{name} of memo entry {arg}, never stored")
            self.stack.append(self.memo[arg])
        elif name == "DUP":
            if not self.stack or self.stack[-1] is MARK:
                raise Unfollowable("DUP: empty stack")  # the unpickler keeps marks apart
            self.stack.append(self.stack[-1])
        elif name == "MARK":
            self.stack.append(MARK)
        elif name == "POP":
            if self.stack and self.stack[-1] is MARK:
                self.stack.pop()  # the unpickler's POP drops a bare mark too
            else:
                self._pop(name)
        elif name == "POP_MARK":
            self._pop_mark(name)
        elif name in ("BUILD", "APPEND", "SETITEM"):
            for _ in range(2 if name == "SETITEM" else 1):
                self._pop(name)
            target = self._pop(name)
            self._target(target, name, offset)
            self.stack.append(target if name != "BUILD" else OPAQUE)
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            self._pop_mark(name)
            target = self._pop(name)
            self._target(target, name, offset)
            self.stack.append(target)
        else:
            self._generic(op)

    def _generic(self, op: pickletools.OpcodeInfo) -> None:
        below_mark, pops, after = _GENERIC[op.name]
        if below_mark is not None:
            self._pop_mark(op.name)
            pops = below_mark
        for _ in range(pops):
            self._pop(op.name)
        self.stack.extend(after)


def _plan(op: pickletools.OpcodeInfo) -> tuple[int | None, int, tuple[object, ...]]:
    """(items under the mark to pop, or None without a mark; items to pop; what to push)"""
    before = [s.name for s in op.stack_before]
    after = tuple(MARK if s.name == "mark" else OPAQUE for s in op.stack_after)
    return (before.index("mark") if "mark" in before else None), len(before), after


_GENERIC = {op.name: _plan(op) for op in pickletools.opcodes}


def scan_pickle_stream(stream: IO[bytes], allow: Allowlist, out: Findings,
                       legacy_torch: bool = False, speculative: bool = False,
                       nested: list[Payload] | None = None) -> int:
    """Walk the pickle(s) at the stream's position; returns the bytes consumed.

    After the first pickle, further ones are walked while the next byte starts one (PROTO):
    a loader calling `load` again would run them. `legacy_torch`: the file is a legacy
    `torch.save` (five pickles, then raw storage bytes that are never unpickled).
    `speculative`: for content of no known format (a protocol 0 pickle has no magic):
    breaking off is not a finding, since every way the walk breaks (unknown opcode,
    underflow, missing memo entry, truncation) also stops the real unpickler there; what
    the walk found stands if it reached STOP or a call (an import alone, from text that
    merely starts like a pickle, is dropped)."""
    reader = PickleReader(stream, SPECULATIVE_CHUNK if speculative else READ_CHUNK)
    count = 0
    while True:
        before = len(out.items)
        walker = PickleWalker(reader, allow, out)
        try:
            walker.walk()
        except Unfollowable as e:
            if nested is not None:
                nested.extend(walker.nested)  # loaded before the stream broke off
            # pickles after the first (but a legacy torch file's five) are only a guess
            if not speculative and (count == 0 or (legacy_torch and count < LEGACY_PICKLES)):
                out.add("unsafe_code", "unanalyzable",
                        f"pickle cannot be followed: {e}", reader.pos)
            elif walker.calls == 0:
                # a guess that broke before calling anything: text that happens to start
                # like a pickle ("c..." reads as GLOBAL), not a payload
                del out.items[before:]
            return reader.pos
        if nested is not None:
            nested.extend(walker.nested)  # bytes torch.load would load: analyzed by the caller
        count += 1
        if legacy_torch and count == LEGACY_PICKLES:
            return reader.pos
        if reader.peek_byte() != 0x80:
            return reader.pos
        if count >= 64:
            out.add("unsafe_code", "unanalyzable", "more than 64 pickles in a row", reader.pos)
            return reader.pos
