"""What a grantee sees (R7, R8, R12): the grant's view schema and the compiled record projector.

Pure code, no I/O. For each granted field a rule says how its value is delivered:

- ``raw``: public and internal fields, and fields the owner approved in ``unmasked_fields``;
- ``mask``: personal strings keep at most their last 4 characters (never more than half), the rest ``*``;
  personal fields of any other type are dropped from the view;
- ``pseudonym``: sensitive values become per-grant pseudonyms (`bus.policy.pseudonyms`), strings in the view.

Fields outside the grant never reach the view. ``compile_projector`` turns the rules into one closure
the router calls per record (HMAC state precomputed, no lookups by name beyond the record itself).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro

from bus.catalog.schema import catalog_fields
from bus.vocab import Sensitivity

RAW, MASK, PSEUDONYM = "raw", "mask", "pseudonym"
KEEP_LAST = 4
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_SLUG = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class FieldRule:
    name: str
    how: str  # raw | mask | pseudonym
    type: Any  # the Avro type in the view


def _string_like(t: Any) -> bool:
    """``string`` or a nullable string: the only personal types that can be masked."""
    if t == "string":
        return True
    return isinstance(t, list) and len(t) == 2 and sorted(map(str, t)) == ["null", "string"]


def field_rules(schema: dict[str, Any], fields: Sequence[str],
                unmasked: Sequence[str] = ()) -> list[FieldRule]:
    """The delivery rule of every granted field that appears in the view, in schema order."""
    wanted, raw = set(fields), set(unmasked)
    rules: list[FieldRule] = []
    for spec in catalog_fields(schema):
        if spec.name not in wanted:
            continue
        if spec.name in raw or spec.sensitivity in (Sensitivity.PUBLIC, Sensitivity.INTERNAL):
            rules.append(FieldRule(spec.name, RAW, spec.type))
        elif spec.sensitivity == Sensitivity.PERSONAL:
            if _string_like(spec.type):
                rules.append(FieldRule(spec.name, MASK, spec.type))
        else:  # sensitive
            view_type: Any = "string"
            if spec.nullable:
                view_type = ["null", "string"] if spec.type[0] == "null" else ["string", "null"]
            rules.append(FieldRule(spec.name, PSEUDONYM, view_type))
    return rules


# --- masking and pseudonyms -----------------------------------------------------------------------
def mask_personal(text: str) -> str:
    """Keep at most the last 4 characters and never more than half of them; the rest become ``*``."""
    keep = min(KEEP_LAST, len(text) // 2)
    return "*" * (len(text) - keep) + (text[-keep:] if keep else "")


def stringify(value: Any) -> str:
    """The text a sensitive value is pseudonymised as (stable across types and runs)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes):
        return value.hex()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def pseudonymiser(key: bytes, tag: str) -> Callable[[Any], str]:
    """``value -> ps-<tag>-<mac>``, identical to `bus.policy.pseudonyms.pseudonym`, HMAC state precomputed."""
    base = hmac.new(key, digestmod=hashlib.sha256)
    prefix = f"ps-{tag}-"
    pairs = _B32_PAIRS

    def ps(value: Any) -> str:
        h = base.copy()
        h.update(stringify(value).encode())
        # the first 20 base32 characters are the MAC's first 100 bits: 10 table lookups of 10 bits
        n = int.from_bytes(h.digest()[:13], "big") >> 4
        return prefix + "".join(
            (
                pairs[n >> 90],
                pairs[(n >> 80) & 1023],
                pairs[(n >> 70) & 1023],
                pairs[(n >> 60) & 1023],
                pairs[(n >> 50) & 1023],
                pairs[(n >> 40) & 1023],
                pairs[(n >> 30) & 1023],
                pairs[(n >> 20) & 1023],
                pairs[(n >> 10) & 1023],
                pairs[n & 1023],
            )
        )

    return ps


# Lower-case RFC 4648 base32 of every 10-bit value (two characters), for `pseudonymiser`.
_B32_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = tuple(_B32_ALPHABET[i >> 5] + _B32_ALPHABET[i & 31] for i in range(1024))


Projector = Callable[[dict[str, Any]], dict[str, Any]]


def compile_projector(rules: Sequence[FieldRule], key: bytes, tag: str) -> Projector:
    """One closure: decoded dataset record -> view record (only the rules' fields, masked as ruled)."""
    ps = pseudonymiser(key, tag)
    ops: list[tuple[str, Callable[[Any], Any] | None]] = []
    for r in rules:
        ops.append((r.name, None if r.how == RAW else mask_personal if r.how == MASK else ps))

    def project(record: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        get = record.get
        for name, op in ops:
            v = get(name)
            out[name] = v if op is None or v is None else op(v)
        return out

    return project


# --- view schema ------------------------------------------------------------------------------------
def _fullname(name: str, ns: str | None) -> str:
    return name if "." in name or not ns else f"{ns}.{name}"


def _qualify(t: Any, ns: str | None, defs: dict[str, Any]) -> Any:
    """A copy of type ``t`` with every named type fully qualified; definitions collected in ``defs``."""
    if isinstance(t, str):
        if t in PRIMITIVES:
            return t
        full = _fullname(t, ns)
        return full if full in defs else t
    if isinstance(t, list):
        return [_qualify(b, ns, defs) for b in t]
    if not isinstance(t, dict):
        return t
    out = {k: v for k, v in t.items() if k != "namespace"}
    kind = t.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        full = _fullname(t["name"], t.get("namespace", ns))
        out["name"] = full
        defs[full] = out
        inner_ns = full.rpartition(".")[0] or None
        if kind in ("record", "error"):
            out["fields"] = [{**f, "type": _qualify(f["type"], inner_ns, defs)} for f in t.get("fields", [])]
    elif kind == "array":
        out["items"] = _qualify(t["items"], ns, defs)
    elif kind == "map":
        out["values"] = _qualify(t["values"], ns, defs)
    elif isinstance(kind, dict | list):
        out["type"] = _qualify(kind, ns, defs)
    return out


def _emit(t: Any, defs: dict[str, Any], emitted: set[str]) -> Any:
    """Type ``t`` for the view: a named type is defined where the view first uses it, referenced after."""
    if isinstance(t, str):
        if t in defs and t not in emitted:
            return _emit(defs[t], defs, emitted)
        return t
    if isinstance(t, list):
        return [_emit(b, defs, emitted) for b in t]
    if not isinstance(t, dict):
        return t
    kind = t.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        if t["name"] in emitted:
            return t["name"]
        emitted.add(t["name"])
        out = dict(t)
        if kind in ("record", "error"):
            out["fields"] = [{**f, "type": _emit(f["type"], defs, emitted)} for f in t.get("fields", [])]
        return out
    out = dict(t)
    if kind == "array":
        out["items"] = _emit(t["items"], defs, emitted)
    elif kind == "map":
        out["values"] = _emit(t["values"], defs, emitted)
    elif isinstance(kind, dict | list):
        out["type"] = _emit(kind, defs, emitted)
    return out


def view_schema(schema: dict[str, Any], rules: Sequence[FieldRule], grant_id: str) -> dict[str, Any]:
    """The Avro schema of records delivered under a grant (what ``GET /v1/grants/{id}/schema`` returns)."""
    ns = schema.get("namespace")
    defs: dict[str, Any] = {}
    top = _qualify({**schema, "name": _fullname(schema["name"], ns)}, None, defs)
    by_name = {f["name"]: f for f in top["fields"]}
    emitted: set[str] = set()
    fields: list[dict[str, Any]] = []
    for r in rules:
        src = by_name[r.name]
        f: dict[str, Any] = {"name": r.name, "masking": r.how}
        if src.get("doc"):
            f["doc"] = src["doc"]
        f["sensitivity"] = src.get("sensitivity", Sensitivity.INTERNAL.value)
        if src.get("semantic"):
            f["semantic"] = src["semantic"]
        if r.how == RAW:
            f["type"] = _emit(src["type"], defs, emitted)
            if "default" in src:
                f["default"] = src["default"]
        else:
            f["type"] = r.type
            if isinstance(r.type, list) and r.type[0] == "null":
                f["default"] = None
        fields.append(f)
    return {
        "type": "record",
        "name": f"{schema['name'].rpartition('.')[2]}View",
        "namespace": f"databus.grant.{_SLUG.sub('_', grant_id)}",
        "doc": f"Records of {schema['name']} delivered under grant {grant_id}: granted fields only, personal "
               "fields masked, sensitive fields pseudonymised per grant.",
        "fields": fields,
    }


def strip_logical_types(t: Any) -> Any:
    """The schema without ``logicalType``: the data path moves raw Avro values and never converts them."""
    if isinstance(t, list):
        return [strip_logical_types(b) for b in t]
    if isinstance(t, dict):
        return {k: strip_logical_types(v) for k, v in t.items() if k != "logicalType"}
    return t


# --- view encoding in parts (one decode, many projections) ------------------------------------------
def _zigzag(n: int) -> bytes:
    """Avro ``long``: zigzag, then base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SHORT_LENGTHS = tuple(_zigzag(i) for i in range(64))  # a pseudonym is 32 characters


def rules_key(rules: Sequence[FieldRule]) -> tuple[Any, ...]:
    """Grants whose rules have this key share every byte of their views but the pseudonyms."""
    return tuple((r.name, r.how, json.dumps(r.type, sort_keys=True)) for r in rules)


@dataclass(frozen=True)
class SharedView:
    """The part of a view that does not depend on the grant, for one rule set.

    An Avro record is the concatenation of its fields' encodings, so a view is the encoded runs of
    raw and masked fields between the pseudonymised ones (computed once per record and rule set, by
    `parts`) with each grant's pseudonyms encoded in between (`compile_view_encoder`). The bytes are
    those ``fastavro.schemaless_writer(view schema, project(record))`` writes.
    """

    runs: tuple[tuple[Any, tuple[tuple[str, Callable[[Any], Any] | None], ...]], ...]  # (parsed, ops)
    pseudonyms: tuple[tuple[str, bytes | None, bytes | None], ...]  # (name, string branch, null branch)

    def parts(self, record: dict[str, Any]) -> list[bytes]:
        """The encoded runs between the pseudonymised fields (one more than there are pseudonyms)."""
        out = []
        get = record.get
        for parsed, ops in self.runs:
            if not ops:
                out.append(b"")
                continue
            view: dict[str, Any] = {}
            for name, op in ops:
                v = get(name)
                view[name] = v if op is None or v is None else op(v)
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, parsed, view)
            out.append(buf.getvalue())
        return out


def shared_view(schema: dict[str, Any], rules: Sequence[FieldRule]) -> SharedView:
    view = strip_logical_types(view_schema(schema, rules, "shared"))
    named: dict[str, Any] = {}
    runs: list[tuple[Any, tuple[tuple[str, Callable[[Any], Any] | None], ...]]] = []
    pseudonyms: list[tuple[str, bytes | None, bytes | None]] = []
    run_fields: list[dict[str, Any]] = []
    run_ops: list[tuple[str, Callable[[Any], Any] | None]] = []

    def close_run() -> None:
        parsed = None
        if run_fields:
            seg = {
                "type": "record",
                "name": f"Run{len(runs)}",
                "namespace": "databus.view_runs",
                "fields": list(run_fields),
            }
            parsed = fastavro.parse_schema(seg, named_schemas=named)  # later runs see earlier named types
        runs.append((parsed, tuple(run_ops)))
        run_fields.clear()
        run_ops.clear()

    for r, f in zip(rules, view["fields"], strict=True):
        if r.how == PSEUDONYM:
            close_run()
            t = r.type
            if t == "string":
                pseudonyms.append((r.name, b"", None))
            else:  # ["null", "string"] or ["string", "null"]
                s, n = (b"\x02", b"\x00") if t[0] == "null" else (b"\x00", b"\x02")
                pseudonyms.append((r.name, s, n))
        else:
            run_fields.append(f)
            run_ops.append((r.name, mask_personal if r.how == MASK else None))
    close_run()
    return SharedView(tuple(runs), tuple(pseudonyms))


ViewEncoder = Callable[[dict[str, Any], list[bytes]], bytes]


def compile_view_encoder(shared: SharedView, key: bytes, tag: str) -> ViewEncoder:
    """``(record, shared.parts(record)) -> the grant's encoded view``: only the pseudonyms are per grant."""
    if not shared.pseudonyms:
        return lambda _record, parts: parts[0]
    ps = pseudonymiser(key, tag)
    fields = shared.pseudonyms
    lengths = _SHORT_LENGTHS

    def encode(record: dict[str, Any], parts: list[bytes]) -> bytes:
        out = [parts[0]]
        i = 1
        for name, branch, null in fields:
            v = record.get(name)
            if v is None:
                if null is None:
                    raise ValueError(f"field {name!r} is not nullable")
                out.append(null)
            else:
                p = ps(v).encode()
                n = len(p)
                out.append(branch + (lengths[n] if n < 64 else _zigzag(n)) + p)  # type: ignore[operator]
            out.append(parts[i])
            i += 1
        return b"".join(out)

    return encode
