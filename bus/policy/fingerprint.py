"""Record fingerprints (R8, R9) as pure functions: what makes a record a copy of another agency's record.

Every accepted record leaves, for each *identifier* field it carries, a compact entry:
``keyed-hash(identifier value) -> record id + 4-byte keyed tokens of every semantic field's value``.
The key derives from the bus's master secret, so the store of fingerprints holds no personal data and
nobody without the key can test a guess against it.

A record of another dataset is a copy when, on the semantic fields the two datasets share (and the
publisher could obtain by sharing), it **agrees on at least two fields, one of them an identifier and one
of them an attribute, and contradicts none**. Values the publisher could not have in clear (masked
``****1234`` strings, bus pseudonyms, nulls) count as neither agreement nor contradiction, so a grantee
republishing the masked view it received is still caught. A record that names the same person or
enterprise (identifiers and names only) with new attributes never qualifies.

Because entries do not depend on which datasets share fields, a dataset approved later is checked
against everything published before it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from bus.keys import derive
from bus.policy.overlap import Field
from bus.policy.pseudonyms import grant_tag

# Semantics whose last segment is one of these identify one person, enterprise or document.
IDENTIFIER_ENDINGS = frozenset({"id", "id_number", "credit_code", "number", "no", "uid"})
# Names identify too, loosely; a record that agrees only on identifiers and names merely names its subject.
NAME_ENDINGS = frozenset({"name"})

TOKEN_BYTES = 4
ANCHOR_BYTES = 8
MASKED = re.compile(r"^\*+[^*]{0,4}$")
PSEUDONYM = re.compile(r"\bps-([a-z2-7]{8})-([a-z2-7]{20})\b")
_HEX_ID = re.compile(r"^(?:[0-9a-f]{2}){4,32}$")


def fingerprint_key(master: bytes) -> bytes:
    """The one key of every fingerprint: the same on every dataset, so copies across datasets match."""
    return derive(master, "fingerprint", "v1")


def _ending(semantic: str) -> str:
    return semantic.rsplit(".", 1)[-1]


@functools.lru_cache(maxsize=4096)
def is_identifier(semantic: str) -> bool:
    return _ending(semantic) in IDENTIFIER_ENDINGS


@functools.lru_cache(maxsize=4096)
def is_naming(semantic: str) -> bool:
    """Identifiers and names: fields that say *who* a record is about, not *what* it says about them."""
    return is_identifier(semantic) or _ending(semantic) in NAME_ENDINGS


def qualifies(semantics: Collection[str]) -> bool:
    """At least two fields: an identifier (to look records up) and an attribute (not just naming)."""
    sems = set(semantics)
    return len(sems) >= 2 and any(is_identifier(s) for s in sems) and any(not is_naming(s) for s in sems)


def normalise(value: Any) -> str | None:
    """A canonical text for comparison, or None when the value cannot be compared.

    Text is NFKC-normalised (full-width digits become ASCII), trimmed, whitespace-collapsed and case-folded;
    numbers compare by value (``1`` equals ``1.0``); masked strings and pseudonyms are unknown.
    """
    if isinstance(value, str):
        if not value.isascii():
            value = unicodedata.normalize("NFKC", value)
        text = " ".join(value.split()).casefold()
        if (
            not text
            or ("*" in text and MASKED.match(text))
            or (text.startswith("ps-") and PSEUDONYM.fullmatch(text))
        ):
            return None
        return text
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # exact, so 3e16 equals the integer 30000000000000000
    if isinstance(value, float | Decimal):
        d = Decimal(repr(value)) if isinstance(value, float) else value
        if not d.is_finite():
            return None
        return "0" if d.is_zero() else format(d.normalize(), "f")
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex() or None
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return normalise(str(value))


class Digest(NamedTuple):
    """The keyed hash of one (semantic, value): its anchor (lookup key), bucket and short token.

    A named tuple, not a dataclass: several are made per record on the publish path."""

    anchor: bytes
    bucket: int
    token: bytes


@functools.lru_cache(maxsize=64)
def _keyed(key: bytes) -> Any:
    """The BLAKE2b state after absorbing ``key``; copied per digest instead of keying afresh."""
    return hashlib.blake2b(key=key, digest_size=16)


def digest(key: bytes, semantic: str, normalised: str, buckets: int) -> Digest:
    """Keyed BLAKE2b (a MAC by construction, and several times faster than HMAC-SHA256 here)."""
    h = _keyed(key).copy()
    h.update(f"{semantic}\x1f{normalised}".encode())
    d = h.digest()
    return Digest(
        d[:ANCHOR_BYTES],
        int.from_bytes(d[ANCHOR_BYTES : ANCHOR_BYTES + 4], "big") % buckets,
        d[ANCHOR_BYTES + 4 : ANCHOR_BYTES + 4 + TOKEN_BYTES],
    )


assert ANCHOR_BYTES == 8 and TOKEN_BYTES == 4  # record_digests slices the 16-byte digest as digest() does


def record_digests(
    key: bytes,
    record: Mapping[str, Any],
    fields: Sequence[Field],
    buckets: int,
    only: Collection[str] | None = None,
) -> dict[str, Digest]:
    """Digests of the record's comparable semantic values (optionally only the semantics in ``only``).

    ``digest`` inlined: this runs for every semantic field of every published record."""
    out: dict[str, Digest] = {}
    seen: set[str] = set()  # the first field carrying a semantic wins, comparable or not
    base = _keyed(key)
    for f in fields:
        sem = f.semantic
        if not sem or sem in seen or f.name not in record:
            continue
        seen.add(sem)
        if only is not None and sem not in only:
            continue
        norm = normalise(record[f.name])
        if norm is None:
            continue
        h = base.copy()
        h.update(f"{sem}\x1f{norm}".encode())
        d = h.digest()
        out[sem] = Digest(d[:8], int.from_bytes(d[8:12], "big") % buckets, d[12:16])
    return out


# --- stored entries -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    tokens: frozenset[bytes]
    record_id: str


def encode_entry(tokens: Collection[bytes], record_id: str) -> bytes:
    """``count | tokens | flag | record id``; hex record ids are stored as raw bytes (half the size)."""
    head = bytes([len(tokens)]) + b"".join(sorted(tokens))
    if _HEX_ID.match(record_id):
        return head + b"\x01" + bytes.fromhex(record_id)
    return head + b"\x00" + record_id.encode()


def decode_entry(raw: bytes) -> Entry:
    n = raw[0]
    end = 1 + n * TOKEN_BYTES
    tokens = frozenset(raw[1 + i * TOKEN_BYTES : 1 + (i + 1) * TOKEN_BYTES] for i in range(n))
    flag, rest = raw[end], raw[end + 1 :]
    return Entry(tokens, rest.hex() if flag == 1 else rest.decode())


@functools.lru_cache(maxsize=256)
def _plan(fields: tuple[Field, ...]) -> tuple[tuple[str, tuple[str, ...], bytes, bool], ...]:
    """``(semantic, names of the fields carrying it, b"<semantic>\\x1f", is identifier)`` per semantic, in
    semantic order (the order ``entry_for`` sorts anchors in); the first of the names a record has wins."""
    names: dict[str, list[str]] = {}
    for f in fields:
        if f.semantic:
            names.setdefault(f.semantic, []).append(f.name)
    return tuple(
        (sem, tuple(names[sem]), f"{sem}\x1f".encode(), is_identifier(sem)) for sem in sorted(names)
    )


def stored_entries(
    key: bytes,
    records: Sequence[Mapping[str, Any]],
    fields: Sequence[Field],
    buckets: int,
    record_ids: Sequence[str],
) -> list[tuple[list[tuple[str, bytes, int]], bytes]]:
    """``entry_for(record_digests(...))`` of many records at once, as ``(anchors, entry)`` with anchors
    ``(semantic, anchor, bucket)``; records that cannot be compared are left out.

    The same bytes as the per-record functions (a unit test holds them equal), without a ``Digest`` per
    field: this runs for every semantic field of every accepted record."""
    plan = _plan(tuple(fields))
    blake = hashlib.blake2b
    out: list[tuple[list[tuple[str, bytes, int]], bytes]] = []
    for rec, rid in zip(records, record_ids, strict=True):
        anchors: list[tuple[str, bytes, int]] = []
        tokens: list[bytes] = []
        for sem, names, prefix, ident in plan:
            name = names[0]
            if name not in rec:
                name = next((n for n in names[1:] if n in rec), "")
                if not name:
                    continue
            v = rec[name]
            if type(v) is str and v.isascii():  # normalise's common case, inlined
                norm: str | None = " ".join(v.split()).casefold()
                if (
                    not norm
                    or ("*" in norm and MASKED.match(norm))
                    or (norm.startswith("ps-") and PSEUDONYM.fullmatch(norm))
                ):
                    continue
            else:
                norm = normalise(v)
                if norm is None:
                    continue
            d = blake(prefix + norm.encode(), key=key, digest_size=16).digest()
            tokens.append(d[12:16])
            if ident:
                anchors.append((sem, d[:8], int.from_bytes(d[8:12], "big") % buckets))
        if not anchors or len(tokens) < 2 or len(tokens) > 255:
            continue
        out.append((anchors, encode_entry(tokens, rid)))
    return out


def entry_for(digests: Mapping[str, Digest], record_id: str) -> tuple[list[tuple[str, Digest]], bytes] | None:
    """What to store for an accepted record: ``(anchors, entry)``, or None when it cannot be compared."""
    anchors = [(sem, d) for sem, d in sorted(digests.items()) if is_identifier(sem)]
    if not anchors or len(digests) < 2 or len(digests) > 255:
        return None
    return anchors, encode_entry([d.token for d in digests.values()], record_id)


@dataclass(frozen=True)
class Agreement:
    agree: frozenset[str]
    disagree: frozenset[str]

    @property
    def is_copy(self) -> bool:
        return not self.disagree and qualifies(self.agree)


def compare(probe: Mapping[str, Digest], shared: Collection[str], entry: Entry) -> Agreement:
    """How the probe's comparable values on the ``shared`` semantics relate to a stored record."""
    agree: set[str] = set()
    disagree: set[str] = set()
    for sem in shared:
        d = probe.get(sem)
        if d is None:
            continue
        (agree if d.token in entry.tokens else disagree).add(sem)
    return Agreement(frozenset(agree), frozenset(disagree))


def anchors_of(probe: Mapping[str, Digest], shared: Collection[str]) -> list[tuple[str, Digest]]:
    """The identifier values through which the probe looks for stored records."""
    return [(sem, probe[sem]) for sem in sorted(shared) if sem in probe and is_identifier(sem)]


def shared_semantics(publisher_fields: Sequence[Field], obtainable: Sequence[Field]) -> frozenset[str] | None:
    """The semantics a publisher's dataset shares with what it could obtain, if they can reveal a copy."""
    mine = {f.semantic for f in publisher_fields if f.semantic}
    theirs = {f.semantic for f in obtainable if f.semantic}
    shared = frozenset(mine & theirs)
    return shared if qualifies(shared) else None


# --- pseudonyms inside records -------------------------------------------------------------------
_SCALARS = (int, float, bool, type(None), bytes, Decimal)


def may_carry_pseudonym(record: Mapping[str, Any]) -> bool:
    """False when no value of a flat record can hold a pseudonym (the common case, checked cheaply);
    True means ``find_pseudonyms`` must look."""
    for v in record.values():
        if type(v) is str:
            if "ps-" in v:
                return True
        elif not isinstance(v, _SCALARS):
            return True  # nested: let find_pseudonyms walk it
    return False


def find_pseudonyms(obj: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """``(path, pseudonym, tag)`` for every bus pseudonym inside a value (nested, or inside longer text)."""
    if isinstance(obj, str):
        if "ps-" not in obj:
            return
        for m in PSEUDONYM.finditer(obj):
            yield path, m.group(0), m.group(1)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from find_pseudonyms(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from find_pseudonyms(v, f"{path}[{i}]")


def tag_index(
    master: bytes, grant_ids: Collection[str], known: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``tag -> grant id`` for the given grants; ``known`` (grant -> tag) saves recomputing old ones."""
    out: dict[str, str] = {}
    for gid in grant_ids:
        tag = known.get(gid) if known else None
        out[tag or grant_tag(master, gid)] = gid
    return out
