"""The data plane end to end on the real embedded broker and Redis: SDK -> validator -> router -> SDK."""

from __future__ import annotations

import io

import fastavro

from bus.grants import service
from tests.helpers import licence_record, licence_schema, poll_until
from tests.integration.dataplane_helpers import (
    agency,
    grant,
    headers_of,
    market_and_psb,
    open_as_publisher,
    opened,
    publisher,
    raw_ingress,
    read_topic,
    receive,
    subscriber,
)


def test_r10_unconditional_grant_delivers_published_records_end_to_end(
    ctx, agency_factory, dataset_factory, data_plane
) -> None:
    market, market_key, psb, psb_key, ds, g = market_and_psb(ctx, agency_factory, dataset_factory)
    assert g["status"] == "active"
    with publisher(ctx, market, market_key, ds) as pub:
        ids = [pub.publish(licence_record(i), key=f"k{i}") for i in range(50)]
        pub.flush()
    with subscriber(ctx, psb, psb_key, g["id"]) as sub:
        got = receive(sub, 50)
        sub.ack()
    assert sorted(d.record_id for d in got) == sorted(ids)
    first = got[0]
    assert first.grant_id == g["id"] and first.scenario == "licence-check"
    assert first.headers["bus-grant"] == g["id"] and first.headers["bus-scenario"] == "licence-check"
    assert first.headers["bus-publisher"] == market and first.headers["bus-dataset"] == ds
    receipts = read_topic(ctx, ctx.topics.receipts, 1)
    assert len(receipts) == 1 and headers_of(receipts[0])["bus-grant"] == g["id"]


def test_r10_conditional_grant_delivers_only_after_the_owner_approves(
    ctx, agency_factory, dataset_factory, data_plane
) -> None:
    health, health_key = agency_factory("health")
    psb, psb_key = agency_factory("psb")
    ds = dataset_factory(health, attribute="conditional", eligible_agencies=["psb"])
    g = grant(ctx, psb, ds, ["licence_no", "enterprise_name"])
    assert g["status"] == "pending"
    with publisher(ctx, health, health_key, ds) as pub:
        before = [pub.publish(licence_record(i)) for i in range(5)]
        pub.flush()
        # the validator accepted them, but nothing is delivered for a pending grant
        read_topic(ctx, ctx.topics.data(ds), 5)
        service.decide(ctx, agency(health), g["id"], "approve", "inspection duty confirmed")
        after = [pub.publish(licence_record(i)) for i in range(5, 15)]
        pub.flush()
    with subscriber(ctx, psb, psb_key, g["id"]) as sub:
        got = receive(sub, 10)
    ids = {d.record_id for d in got}
    assert ids == set(after) and not ids & set(before)
    assert all(set(d.value) == {"licence_no", "enterprise_name"} for d in got)


def test_r7_r12_views_hold_granted_fields_only_masked_and_pseudonymised_per_grant(
    ctx, agency_factory, dataset_factory, data_plane
) -> None:
    market, market_key = agency_factory("market")
    psb, psb_key = agency_factory("psb")
    tax, tax_key = agency_factory("tax")
    ds = dataset_factory(market)
    fields = ["licence_no", "legal_rep_name", "legal_rep_id", "phone"]
    g_psb = grant(ctx, psb, ds, fields)
    g_tax = grant(ctx, tax, ds, fields)
    sent = [licence_record(i) for i in range(20)]
    sent.append({**licence_record(7), "licence_no": "LIC-DUPLICATE-PERSON"})  # same person as record 7
    with publisher(ctx, market, market_key, ds) as pub:
        for rec in sent:
            pub.publish(rec)
        pub.flush()
    views = {}
    for who, key, g in ((psb, psb_key, g_psb), (tax, tax_key, g_tax)):
        with subscriber(ctx, who, key, g["id"]) as sub:
            views[who] = {d.value["licence_no"]: d.value for d in receive(sub, len(sent))}
    by_no = {r["licence_no"]: r for r in sent}
    for no, view in views[psb].items():
        rec = by_no[no]
        assert set(view) == set(fields)  # R7: granted fields only
        assert view["phone"] == "*" * 7 + rec["phone"][-4:]  # R12: personal strings masked
        assert view["legal_rep_name"].endswith(rec["legal_rep_name"][-4:]) and view[
            "legal_rep_name"
        ].startswith("*")
        assert view["legal_rep_id"].startswith("ps-") and rec["legal_rep_id"] not in view["legal_rep_id"]
        # R8/R12: same value, different grants -> different pseudonyms
        assert view["legal_rep_id"] != views[tax][no]["legal_rep_id"]
    # ... and the same value within one grant -> the same pseudonym
    assert (
        views[psb]["LIC-DUPLICATE-PERSON"]["legal_rep_id"]
        == views[psb][sent[7]["licence_no"]]["legal_rep_id"]
    )
    assert (
        views[psb][sent[1]["licence_no"]]["legal_rep_id"] != views[psb][sent[2]["licence_no"]]["legal_rep_id"]
    )


def test_r7_fields_outside_the_grant_never_appear_in_any_delivered_byte(
    ctx, agency_factory, dataset_factory, data_plane
) -> None:
    market, market_key, psb, _, ds, g = market_and_psb(
        ctx, agency_factory, dataset_factory, ["licence_no", "status"]
    )
    with publisher(ctx, market, market_key, ds) as pub:
        for i in range(30):
            pub.publish(
                {
                    **licence_record(i),
                    "address": f"SECRET-ADDRESS-{i}",
                    "legal_rep_id": f"SECRETID{i:06d}",
                    "enterprise_name": f"SECRET-NAME-{i}",
                },
                key=f"LIC{i:08d}",
            )
        pub.flush()
    msgs = read_topic(ctx, ctx.topics.deliver(g["id"]), 30)
    assert len(msgs) == 30
    views = opened(ctx, g["id"], msgs)  # what the grantee opens with its keys
    assert len(views) == 30
    for o in views:
        blob = o.value + b"".join(k.encode() + v.encode() for k, v in o.headers.items())
        assert b"SECRET" not in blob
    view = service.grant_schema(ctx, agency(psb), g["id"])["schema"]
    first = fastavro.schemaless_reader(io.BytesIO(views[0].value), fastavro.parse_schema(view))
    assert set(first) == {"licence_no", "status"}


def test_r14_forged_and_unsigned_records_are_refused(
    ctx, agency_factory, dataset_factory, data_plane
) -> None:
    market, market_key, psb, psb_key, ds, g = market_and_psb(
        ctx, agency_factory, dataset_factory, ["licence_no"]
    )
    value = _avro(licence_record(1))
    # psb claims to be market (forged bus-publisher header), signing with its own key
    forged = raw_ingress(ctx, ds, value, publisher=market, signing_key=psb_key)
    # psb publishes honestly as itself to market's dataset: authenticated, but not the owner
    not_owner = raw_ingress(ctx, ds, value, publisher=psb, signing_key=psb_key)
    genuine = raw_ingress(ctx, ds, value, publisher=market, signing_key=market_key)
    rejected = {
        headers_of(m)["bus-record-id"]: headers_of(m) for m in read_topic(ctx, ctx.topics.rejected(ds), 2)
    }
    assert rejected[forged]["bus-error-code"] == "record.unauthenticated"
    assert rejected[not_owner]["bus-error-code"] == "auth.forbidden"
    delivered = [headers_of(m)["bus-record-id"] for m in read_topic(ctx, ctx.topics.deliver(g["id"]), 1)]
    assert delivered == [genuine]


def test_r13_r14_invalid_and_oversized_records_are_refused_while_the_stream_continues(
    ctx, agency_factory, dataset_factory, data_plane
) -> None:
    market, market_key, psb, psb_key, ds, g = market_and_psb(
        ctx, agency_factory, dataset_factory, ["licence_no"]
    )
    with publisher(ctx, market, market_key, ds) as pub:
        first = pub.publish(licence_record(1))
        pub.flush()
        garbage = raw_ingress(ctx, ds, b"\x00\xffnot avro at all", publisher=market, signing_key=market_key)
        trailing = raw_ingress(
            ctx, ds, _avro(licence_record(2)) + b"extra", publisher=market, signing_key=market_key
        )
        unknown_version = raw_ingress(
            ctx, ds, _avro(licence_record(3)), publisher=market, signing_key=market_key, version="9"
        )
        huge = raw_ingress(
            ctx,
            ds,
            _avro({**licence_record(4), "business_scope": "x" * 1_100_000}),
            publisher=market,
            signing_key=market_key,
        )
        last = pub.publish(licence_record(5))
        pub.flush()
    rejected = {headers_of(m)["bus-record-id"]: m for m in read_topic(ctx, ctx.topics.rejected(ds), 4)}
    assert {rid: headers_of(m)["bus-error-code"] for rid, m in rejected.items()} == {
        garbage: "record.invalid",
        trailing: "record.invalid",
        unknown_version: "record.invalid",
        huge: "record.too_large",
    }
    assert "1000000" in headers_of(rejected[huge])["bus-error-detail"] and rejected[huge].value() is None
    assert rejected[garbage].value() != b"\x00\xffnot avro at all"  # sealed as sent: only the publisher opens it
    assert open_as_publisher(market_key, ds, rejected[garbage]) == b"\x00\xffnot avro at all"
    with subscriber(ctx, psb, psb_key, g["id"]) as sub:
        assert sorted(d.record_id for d in receive(sub, 2)) == [first, last]
    validator, _ = data_plane
    # the counters move once the validator's batch is committed, which may be after delivery
    poll_until(lambda: (validator.accepted, validator.refused) == (2, 4), what="2 accepted and 4 refused")


def test_r14_the_publisher_gets_its_own_refusals_back(
    ctx, agency_factory, dataset_factory, data_plane
) -> None:
    market, market_key = agency_factory("market")
    psb, psb_key = agency_factory("psb")
    ds = dataset_factory(market)
    with publisher(ctx, market, market_key, ds) as owner:
        owner.publish(licence_record(0))
        raw_ingress(ctx, ds, b"junk", publisher=market, signing_key=market_key)  # someone else's refusal
        owner.flush()
    with publisher(ctx, psb, psb_key, ds) as intruder:  # psb signs correctly but does not own the dataset
        sent = [intruder.publish(licence_record(i)) for i in range(3)]
        intruder.flush()
        got = _rejections(intruder, 3)
    assert sorted(r.record_id for r in got) == sent
    assert {r.code for r in got} == {"auth.forbidden"} and "only the owner market" in got[0].detail


def _avro(record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(licence_schema()), record)
    return buf.getvalue()


def _rejections(pub, n: int) -> list:
    import time

    got: list = []
    deadline = time.monotonic() + 15
    while len(got) < n and time.monotonic() < deadline:
        got.extend(pub.rejections(0.2))
    return got
