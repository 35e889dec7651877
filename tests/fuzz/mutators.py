"""Mutations of files, as hypothesis strategies of plain, printable operations, and the functions
that apply them. A variant is described by its operations, so a failure names what was done.

Bytes: bit flips, truncations, insertions, deletions, overwrites, duplicated runs, interesting
integers written over a position (huge declared sizes, 0, -1), an empty file.
JSON: a node deleted, replaced (wrong type, huge integer, NaN, ±Infinity, 1e999, deep nesting,
long string, lone surrogate, empty container), a key renamed or added; then maybe bytes mutations
of the text (a BOM, a byte that is not UTF-8, a truncation).
"""
from __future__ import annotations

import json
import struct

from hypothesis import strategies as st

# 32-bit values that break size arithmetic: 0, tiny, powers of two, the sign bit, all ones
INTERESTING_U32 = (0, 1, 2, 3, 7, 255, 256, 1023, 1024, 4095, 4096, 65535, 65536, 1_000_000,
                   10_000_000, 2 ** 24, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32 - 2)
INTERESTING_U64 = (0, 1, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1)
SPECIAL_BYTES = (b"\x00", b"\xff", b"\x80", b"\n", b"\r\n", b"\"", b"\\", b"{", b"}", b"[", b"]",
                 b",", b":", b"\xef\xbb\xbf", b"\xc3\x28", b"\xed\xa0\x80", b"%", b"<", b"&")


def _pos(where: int, n: int) -> int:
    return where % (n + 1)


def apply_bytes(data: bytes, ops) -> bytes:
    """data with ops applied in turn; positions are taken modulo the current length + 1."""
    b = bytearray(data)
    for op in ops:
        kind = op[0]
        if kind == "flip":
            if b:
                i = op[1] % len(b)
                b[i] ^= 1 << op[2]
        elif kind == "truncate":
            del b[_pos(op[1], len(b)):]
        elif kind == "cut_head":
            del b[:_pos(op[1], len(b))]
        elif kind == "insert":
            i = _pos(op[1], len(b))
            b[i:i] = op[2]
        elif kind == "delete":
            i = _pos(op[1], len(b))
            del b[i:i + op[2]]
        elif kind == "overwrite":
            i = _pos(op[1], len(b))
            b[i:i + len(op[2])] = op[2]
        elif kind == "dup":
            i = _pos(op[1], len(b))
            chunk = bytes(b[i:i + op[2]])
            b[i:i] = chunk * op[3]
        elif kind == "int":
            i = _pos(op[1], len(b))
            b[i:i + op[3]] = op[2].to_bytes(op[3], op[4])
        elif kind == "empty":
            b.clear()
        elif kind == "append":
            b += op[1]
        else:  # pragma: no cover - a typo in a strategy
            raise ValueError(kind)
    return bytes(b)


# Positions: mostly near the start, where the headers are, else anywhere.
_where = st.one_of(st.integers(0, 64), st.integers(0, 2 ** 20))

byte_op = st.one_of(
    st.tuples(st.just("flip"), _where, st.integers(0, 7)),
    st.tuples(st.just("truncate"), _where),
    st.tuples(st.just("cut_head"), st.integers(1, 64)),
    st.tuples(st.just("insert"), _where, st.one_of(st.sampled_from(SPECIAL_BYTES), st.binary(min_size=1, max_size=16))),
    st.tuples(st.just("delete"), _where, st.integers(1, 64)),
    st.tuples(st.just("overwrite"), _where, st.one_of(st.sampled_from(SPECIAL_BYTES), st.binary(min_size=1, max_size=8))),
    st.tuples(st.just("dup"), _where, st.integers(1, 64), st.integers(1, 20)),
    st.tuples(st.just("int"), _where, st.sampled_from(INTERESTING_U32), st.just(4), st.sampled_from(("big", "little"))),
    st.tuples(st.just("int"), _where, st.sampled_from(INTERESTING_U64), st.just(8), st.just("little")),
    st.tuples(st.just("append"), st.one_of(st.sampled_from(SPECIAL_BYTES), st.binary(min_size=1, max_size=32))),
)


def byte_ops(max_ops: int = 4):
    """A few byte mutations; sometimes the empty file."""
    return st.integers(0, 19).flatmap(
        lambda k: st.just([("empty",)]) if k == 0 else st.lists(byte_op, min_size=1, max_size=max_ops))


# ---- JSON -------------------------------------------------------------------------------------

DEEP = 100_000  # deeper than any recursion limit
# Raw JSON texts that json.dumps cannot write: substituted for placeholders after dumping.
RAW_VALUES = (
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 5000, "-" + "9" * 5000,
    "1e308", "-1e308", "5e-324", "18446744073709551616", "-9223372036854775809", "1.5", "-1", "0",
    "true", "false", "null", '""', "[]", "{}", '"\\ud800"', '"\\u0000"', '"<script>&"', '"%s%n"',
    "[" * DEEP + "]" * DEEP, '{"a":' * 5000 + "1" + "}" * 5000, "[" + "0," * 100_000 + "0]",
    '"' + "x" * 200_000 + '"', "1e1000000", "0.1e-999999",
)
HOSTILE_KEYS = ("", "__proto__", "\u202e", "a" * 1000, "\ud800", "..", "format_version", "0")


def _paths(doc, prefix=()):
    """Every node's path (keys and indices), the root first; at most 400 (a long history)."""
    out = [prefix]
    stack = [(doc, prefix)]
    while stack and len(out) < 400:
        node, p = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append(p + (k,))
            stack.append((v, p + (k,)))
    return out


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def _placeholder(i: int) -> str:
    return f"\x01RAW{i}\x01"


def apply_json(text: bytes, ops) -> bytes:
    """The JSON document `text` with structural ops applied, written again (raw values spliced
    in where json.dumps could not write them)."""
    doc = json.loads(text)
    raws = []
    for op in ops:
        kind = op[0]
        if kind == "unicode":
            continue
        paths = _paths(doc)
        path = paths[op[1] % len(paths)]
        if kind == "replace":
            value = op[2]
            if isinstance(value, tuple) and value[0] == "raw":
                raws.append(value[1])
                value = _placeholder(len(raws) - 1)
            elif isinstance(value, tuple) and value[0] == "wrap":  # the old value, one level down
                old = _get(doc, path)
                value = [old] if value[1] == "list" else {"v": old} if value[1] == "dict" else str(old)
            if not path:
                doc = value
            else:
                _get(doc, path[:-1])[path[-1]] = value
        elif kind == "delete" and path:
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
        elif kind == "rename" and path and isinstance(_get(doc, path[:-1]), dict):
            parent = _get(doc, path[:-1])
            parent[op[2]] = parent.pop(path[-1])
        elif kind == "add":
            node = _get(doc, path)
            if isinstance(node, dict):
                node[op[2]] = op[3]
            elif isinstance(node, list):
                node.append(op[3])
    out = json.dumps(doc, ensure_ascii=op_ascii(ops))
    for i, raw in enumerate(raws):
        out = out.replace(json.dumps(_placeholder(i), ensure_ascii=op_ascii(ops)), raw)
    return out.encode("utf-8", "surrogatepass")


def op_ascii(ops) -> bool:
    return not any(op[0] == "unicode" for op in ops)


_value = st.one_of(
    st.tuples(st.just("raw"), st.sampled_from(RAW_VALUES)),
    st.tuples(st.just("wrap"), st.sampled_from(("list", "dict", "str"))),
    st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), st.none(), st.booleans(),
    st.lists(st.integers(-3, 3), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
json_op = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10_000), _value),
    st.tuples(st.just("delete"), st.integers(0, 10_000)),
    st.tuples(st.just("rename"), st.integers(0, 10_000), st.sampled_from(HOSTILE_KEYS)),
    st.tuples(st.just("add"), st.integers(0, 10_000), st.sampled_from(HOSTILE_KEYS), _value.filter(
        lambda v: not isinstance(v, tuple))),
    st.tuples(st.just("unicode")),  # write non-ASCII characters as themselves
)


def json_ops(max_ops: int = 3):
    return st.lists(json_op, min_size=1, max_size=max_ops)


def mutate_json_strategy(max_ops: int = 3):
    """("json", ops, text ops): structure first, then maybe the text's bytes."""
    return st.tuples(st.just("json"), json_ops(max_ops),
                     st.one_of(st.just([]), st.just([]), st.lists(byte_op, min_size=1, max_size=2)))


def apply_json_variant(text: bytes, variant) -> bytes:
    _, ops, text_ops = variant
    return apply_bytes(apply_json(text, ops), text_ops)


def u32be(value: int) -> bytes:
    return struct.pack(">I", value)
