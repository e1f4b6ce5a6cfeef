"""The one batch decision (R1, R5, R7-R10, R12-R15), pure: ``process_batch`` as parametrised tables and
hypothesis — the same input always gives the same outcome, nothing outside a grant's fields ever appears
in its delivery, every refusal has a stable code, one bad record costs only itself."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime, timedelta

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.errors import BusError, RecollectionDetected, all_codes
from bus.policy.batch import Incoming, classify, process_batch
from bus.policy.projection import field_rules, strip_logical_types, view_schema
from bus.policy.routes import RouteTable
from bus.policy.snapshot import AgencyState, DatasetState, GrantState, PolicySnapshot
from bus.samples import licence_record, licence_schema
from bus.vocab import ViolationKind

NOW_MS = 1_800_000_000_000
SCHEMA = licence_schema()
PARSED = fastavro.parse_schema(strip_logical_types(SCHEMA), named_schemas={})
FIELDS = [f["name"] for f in SCHEMA["fields"]]
MASTER = bytes(range(32))


def _encode(record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, PARSED, record)
    return buf.getvalue()


def _grant(gid: str, agency: str, fields: tuple[str, ...], **kw) -> GrantState:
    return GrantState(gid, "ds", agency, fields, (), "check", kw.pop("status", "active"), None, 1, **kw)


def _snap(*, ds: dict | None = None, grants: list[GrantState] | None = None, agencies: dict | None = None
          ) -> PolicySnapshot:
    ags = {a: AgencyState(a, False, b"s" * 32) for a in ("market", "psb", "tax")}
    for a, suspended in (agencies or {}).items():
        ags[a] = AgencyState(a, suspended, b"s" * 32)
    state = DatasetState(**{"id": "ds", "owner_id": "market", "status": "approved", "attribute": "unconditional",
                            "suspended": False, "schema_version": 1, "schemas": {1: SCHEMA}, **(ds or {})})
    gs = grants if grants is not None else [_grant("g1", "psb", ("licence_no", "legal_rep_id", "phone")),
                                            _grant("g2", "tax", ("licence_no", "status"))]
    return PolicySnapshot(1, ags, {"ds": state}, {g.id: g for g in gs}, {"ds": gs})


def _item(i: int, *, value: bytes | None = None, publisher: str = "market", version: int = 1,
          dataset: str = "ds") -> Incoming:
    return Incoming(i, f"{i:032x}", dataset, publisher, version, None,
                    _encode(licence_record(i)) if value is None else value)


def _no_copies(_d, _p, records):
    return [None] * len(records)


def _decide(snap: PolicySnapshot, items: list[Incoming], copies=_no_copies, limit: int = 1_000_000):
    return process_batch(snap, items, copies=copies, routes=RouteTable(MASTER), limit=limit, accepted_at_ms=NOW_MS)


def _view(grant: GrantState) -> dict:
    return view_schema(SCHEMA, field_rules(SCHEMA, grant.fields, grant.unmasked_fields), grant.id)


REFUSALS = [
    # (what, snapshot changes, item changes, code)
    ("uncatalogued dataset", {}, {"dataset": "nope"}, "catalog.not_found"),
    ("dataset not approved", {"ds": {"status": "submitted"}}, {}, "dataset.not_approved"),
    ("dataset retired", {"ds": {"status": "retired"}}, {}, "dataset.not_approved"),
    ("not the owner", {}, {"publisher": "psb"}, "auth.forbidden"),
    ("owner suspended", {"agencies": {"market": True}}, {}, "suspended"),
    ("dataset suspended", {"ds": {"suspended": True}}, {}, "suspended"),
    ("not Avro", {}, {"value": b"\x00\xffnot avro"}, "record.invalid"),
    ("trailing bytes", {}, {"value": _encode(licence_record(1)) + b"x"}, "record.invalid"),
    ("unknown schema version", {}, {"version": 9}, "record.invalid"),
    ("too large", {}, {"value": b"x" * 2_000}, "record.too_large"),
]


@pytest.mark.parametrize(("what", "snap_kw", "item_kw", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_r1_r13_r14_r15_each_refusal_has_its_stable_code(what, snap_kw, item_kw, code) -> None:
    snap = _snap(**snap_kw)
    out = _decide(snap, [_item(1, **item_kw)], limit=1_000)
    assert out.accepted == [] and [r.code for r in out.refused] == [code]
    assert code in all_codes()
    kinds = [v.kind for v in out.violations()]
    assert kinds == ([classify(code)] if classify(code) else [])


@pytest.mark.parametrize(("code", "kind"), [
    ("record.unauthenticated", ViolationKind.UNAUTHENTICATED), ("recollection.detected", ViolationKind.RECOLLECTION),
    ("forwarding.detected", ViolationKind.FORWARDING), ("suspended", ViolationKind.SUSPENDED),
    ("auth.forbidden", ViolationKind.FORBIDDEN), ("record.invalid", None), ("record.too_large", None),
    ("catalog.not_found", None), ("dataset.not_approved", None),
])
def test_r15_classify_names_the_violation_of_each_code(code: str, kind) -> None:
    assert classify(code) == kind


GRANT_STATES = [
    ({"status": "active"}, True), ({"status": "pending"}, False), ({"status": "revoked"}, False),
    ({"status": "suspended"}, False), ({"status": "expired"}, False), ({"status": "denied"}, False),
]


@pytest.mark.parametrize(("kw", "delivers"), GRANT_STATES)
def test_r10_r14_only_an_active_grant_receives_a_view(kw: dict, delivers: bool) -> None:
    g = _grant("g1", "psb", ("licence_no",), **kw)
    out = _decide(_snap(grants=[g]), [_item(1)])
    assert len(out.accepted) == 1
    assert [d.grant.id for d in out.accepted[0].deliveries] == (["g1"] if delivers else [])


@pytest.mark.parametrize("flag", ["grantee", "owner"])
def test_r15_a_suspended_grantee_or_owner_receives_or_sends_nothing(flag: str) -> None:
    g = _grant("g1", "psb", ("licence_no",))
    snap = _snap(grants=[g], agencies={"psb" if flag == "grantee" else "market": True})
    out = _decide(snap, [_item(1)])
    if flag == "grantee":
        assert out.accepted[0].deliveries == ()
    else:
        assert out.accepted == [] and out.refused[0].code == "suspended"


def test_r14_an_expired_grant_and_a_grant_active_only_later_receive_nothing() -> None:
    past = datetime.fromtimestamp(NOW_MS / 1000, UTC) - timedelta(seconds=1)
    expired = dataclasses.replace(_grant("g1", "psb", ("licence_no",)), valid_until=past)
    later = dataclasses.replace(_grant("g2", "tax", ("licence_no",)), active_since_ms=NOW_MS + 1)
    out = _decide(_snap(grants=[expired, later]), [_item(1)])
    assert out.accepted[0].deliveries == ()


def test_r9_a_copy_costs_only_its_record_and_groups_one_violation_per_batch() -> None:
    def copies(_d, _p, records):
        return [RecollectionDetected("copy", grant="gx") if r["licence_no"].endswith(("1", "3")) else None
                for r in records]

    out = _decide(_snap(), [_item(i) for i in range(5)], copies=copies)
    assert sorted(a.item.ref for a in out.accepted) == [0, 2, 4]
    assert sorted(r.ref for r in out.refused) == [1, 3]
    [v] = out.violations()
    assert v.kind == ViolationKind.RECOLLECTION and v.grant_id == "gx" and sorted(v.record_ids) == [f"{1:032x}",
                                                                                                  f"{3:032x}"]


def test_r14_the_copy_check_is_asked_once_per_dataset_and_publisher() -> None:
    calls: list[int] = []

    def copies(_d, _p, records):
        calls.append(len(records))
        return [None] * len(records)

    _decide(_snap(), [_item(i) for i in range(7)], copies=copies)
    assert calls == [7]


def test_r14_a_copy_check_that_cannot_be_made_fails_the_batch_closed() -> None:
    def down(_d, _p, _records):
        raise BusError("Redis down")

    with pytest.raises(BusError):
        _decide(_snap(), [_item(1)], copies=down)


records = st.fixed_dictionaries({
    "licence_no": st.text(max_size=20), "credit_code": st.text(max_size=20), "enterprise_name": st.text(max_size=30),
    "legal_rep_name": st.text(max_size=20), "legal_rep_id": st.text(max_size=20), "phone": st.text(max_size=15),
    "address": st.text(max_size=30), "region_code": st.text(max_size=6), "business_scope": st.text(max_size=30),
    "registered_capital": st.integers(-(2**63), 2**63 - 1), "issued_on": st.text(max_size=10),
    "status": st.text(max_size=10),
})
field_sets = st.lists(st.sampled_from(FIELDS), min_size=1, max_size=len(FIELDS), unique=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(records, min_size=1, max_size=8), field_sets, st.lists(st.binary(max_size=40), max_size=3))
def test_r7_r12_nothing_outside_a_grant_appears_in_its_delivery_and_decisions_repeat(recs, fields, junk) -> None:
    g = _grant("g1", "psb", tuple(f for f in FIELDS if f in fields))
    snap = _snap(grants=[g])
    items = [Incoming(i, f"{i:032x}", "ds", "market", 1, None, _encode(r)) for i, r in enumerate(recs)]
    items += [Incoming(100 + i, f"{100 + i:032x}", "ds", "market", 1, None, b) for i, b in enumerate(junk)]
    first, again = _decide(snap, items), _decide(snap, items)
    assert [(a.item.ref, [d.value for d in a.deliveries]) for a in first.accepted] == \
        [(a.item.ref, [d.value for d in a.deliveries]) for a in again.accepted]
    assert [(r.ref, r.code) for r in first.refused] == [(r.ref, r.code) for r in again.refused]
    assert len(first.accepted) + len(first.refused) == len(items)  # every record has one outcome
    assert {a.item.ref for a in first.accepted} >= set(range(len(recs)))  # junk never costs a good record
    assert all(r.code in all_codes() for r in first.refused)
    view = fastavro.parse_schema(strip_logical_types(_view(g)), named_schemas={})
    for a in first.accepted:
        [d] = a.deliveries
        delivered = fastavro.schemaless_reader(io.BytesIO(d.value), view)
        assert set(delivered) == set(g.fields)
        for name in ("legal_rep_id", "phone", "legal_rep_name"):  # protected: never delivered raw
            raw = a.record[name]
            if name in delivered and len(raw) >= 8:
                assert delivered[name] != raw
