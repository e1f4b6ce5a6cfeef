"""Chapter 3: grants and the data plane (R5, R7, R8, R10, R12, R13, R14).

Agencies request grants with scenarios (granted at once, pending then approved, refused as not
shared), publish through the SDK and over HTTP, and receive masked and pseudonymised views; a forged
record and a revoked grant are refused. Leaves ``demo.state["grants"] = {label: grant JSON}``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.table import Table

from bus.client import Delivery, Publisher, Subscriber
from bus.demo import Demo
from bus.exchange.envelope import META_HEADER, EnvelopeError, Meta
from bus.exchange.kafka import assign_from_committed, headers_of, new_consumer, new_producer
from bus.exchange.record_ids import new_record_id
from bus.keys import signing_secret_for

LICENCE_FIELDS = ["licence_no", "enterprise_name", "legal_rep_name", "legal_rep_id", "phone", "status"]
CLINIC_FIELDS = ["clinic_id", "clinic_name", "director_name", "director_id"]


def licence(i: int) -> dict[str, Any]:
    return {
        "licence_no": f"LIC{i:08d}",
        "credit_code": f"91140900MA{i:08d}",
        "enterprise_name": f"Xinzhou Trading Co. {i}",
        "legal_rep_name": f"Zhang Wei {i}",
        "legal_rep_id": f"14090219800101{i % 10000:04d}",
        "phone": f"1390350{i % 10000:04d}",
        "address": f"{i} Heping Street, Xinfu District",
        "region_code": "140902",
        "business_scope": "wholesale and retail of general merchandise",
        "registered_capital": 1_000_000 + i,
        "issued_on": "2026-01-15",
        "status": "active",
    }


def clinic(i: int) -> dict[str, Any]:
    return {
        "clinic_id": f"PDY{i:06d}",
        "clinic_name": f"Xinfu Community Clinic {i}",
        "credit_code": f"12140900{i:010d}",
        "address": f"{i} Changzheng Road",
        "region_code": "140902",
        "clinic_type": "clinic",
        "director_name": f"Li Na {i}",
        "director_id": f"14090219750505{i:04d}",
        "director_phone": f"1380350{i:04d}",
        "beds": 20 + i,
        "licensed_until": "2029-12-31",
    }


def _grant(
    client: Any, dataset: str, fields: list[str], code: str, description: str, legal_basis: str
) -> Any:
    return client.post(
        "/v1/grants",
        json={
            "dataset": dataset,
            "fields": fields,
            "scenario": {"code": code, "description": description},
            "legal_basis": legal_basis,
            "valid_until": (datetime.now(UTC) + timedelta(days=90)).isoformat(),
        },
    )


def _receive(sub: Subscriber, n: int, timeout: float = 20) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(sub.poll(500, 0.2))
    return got


def run(demo: Demo) -> None:
    demo.chapter(
        "3. Grants and the exchange: scenarios, masking, pseudonyms, refusals (R5, R7, R10, R12, R14)"
    )
    keys: dict[str, str] = demo.state.get("keys") or {}
    datasets = demo.state.get("datasets") or {}
    if (
        not {"psb", "market", "health"} <= keys.keys()
        or not {"market-licences", "health-clinics"} <= datasets.keys()
    ):
        demo.say("  [yellow]skipped:[/] needs the agencies and approved datasets of chapter 2")
        return
    psb, market, health = (demo.client(keys[a]) for a in ("psb", "market", "health"))
    grants: dict[str, Any] = demo.state.setdefault("grants", {})

    # --- grants ---------------------------------------------------------------------------------------
    demo.say("\n[bold]R7/R10:[/] every request states its scenario and legal basis")
    r = _grant(
        psb,
        "market-licences",
        LICENCE_FIELDS,
        "licence-check",
        "verify business licences during public-order inspections",
        "Public Security Administration Punishment Law, Art. 87",
    )
    g_lic = r.json()
    demo.say(
        f"  psb -> market-licences: {r.status_code} {g_lic.get('status')} ({g_lic.get('decision_reason')})"
    )
    if not demo.expect(
        r.status_code == 201 and g_lic.get("status") == "active",
        "unconditional dataset: psb's grant is active at once",
    ):
        return
    grants["psb-licences"] = g_lic

    r = _grant(
        psb,
        "health-clinics",
        CLINIC_FIELDS,
        "drug-case-check",
        "identify clinic directors in drug-related investigations",
        "Criminal Procedure Law, Art. 54",
    )
    g_cli = r.json()
    demo.say(f"  psb -> health-clinics: {r.status_code} {g_cli.get('status')}")
    demo.expect(
        r.status_code == 201 and g_cli.get("status") == "pending",
        "conditional dataset: the request waits for the owner (health)",
    )
    r = health.post(
        f"/v1/grants/{g_cli.get('id')}/decision",
        json={"decision": "approve", "reason": "investigation duty and legal basis verified"},
    )
    g_cli = r.json()
    demo.expect(
        r.status_code == 200 and g_cli.get("status") == "active", "health approves: the grant is active"
    )
    grants["psb-clinics"] = g_cli

    r = _grant(market, "psb-residents", ["name"], "market-survey", "survey residents", "none")
    demo.say(f"  market -> psb-residents: {r.status_code} {r.json().get('code')}: {r.json().get('detail')}")
    demo.expect(
        r.status_code == 403 and r.json().get("code") == "sharing.not_shared",
        "not-shared dataset: refused with sharing.not_shared (R5)",
    )
    r = psb.post(
        "/v1/grants", json={"dataset": "market-licences", "fields": ["licence_no"], "legal_basis": "Art. 87"}
    )
    demo.expect(
        r.status_code == 422 and r.json().get("code") == "grant.scenario_required",
        "a request without a scenario is refused with grant.scenario_required (R7)",
    )

    # --- publish: SDK and HTTP ----------------------------------------------------------------------------
    demo.say("\n[bold]Publish:[/] market through the SDK (signed Avro), health over HTTP")
    with Publisher.from_gateway(demo.url, keys["market"], "market-licences") as pub:
        sdk_ids = [pub.publish(licence(i), key=f"LIC{i:08d}") for i in range(20)]
        pub.flush()
    demo.say(f"  SDK: 20 licences published (first record id {sdk_ids[0]})")
    r = health.post(
        "/v1/datasets/health-clinics/records",
        json={"records": [clinic(i) for i in range(5)] + [{"clinic_id": "incomplete"}]},
        headers={"Idempotency-Key": "demo-clinics-1"},
    )
    answer = r.json()
    demo.say(f"  HTTP: accepted {answer.get('accepted')}, rejected {answer.get('rejected')}")
    demo.expect(
        answer.get("accepted") == 5 and [x["code"] for x in answer.get("rejected", [])] == ["record.invalid"],
        "HTTP publish answers per record: 5 accepted, the incomplete one refused with record.invalid",
    )

    # --- subscribe: views ---------------------------------------------------------------------------------
    demo.say(
        "\n[bold]R7/R12:[/] psb receives only granted fields, personal fields masked, sensitive pseudonymised"
    )
    with Subscriber.from_gateway(demo.url, keys["psb"], g_lic["id"]) as sub:
        got = _receive(sub, 20)
        sub.ack()
    demo.expect(
        sorted(d.record_id for d in got) == sorted(sdk_ids),
        f"psb's SDK subscriber received all 20 licences ({len(got)}) and acknowledged them",
    )
    if got:
        sample = sorted(got, key=lambda d: d.value["licence_no"])[0]
        original = licence(0)
        table = Table(title=f"one record as published and as delivered under {g_lic['id']}")
        for col in ("field", "published", "delivered"):
            table.add_column(col)
        for f in original:
            table.add_row(f, str(original[f]), str(sample.value.get(f, "— (not granted)")))
        demo.console.print(table)
        v = sample.value
        demo.expect(set(v) == set(LICENCE_FIELDS), "only the 6 granted fields are delivered (R7)")
        demo.expect(
            v["phone"] == "*******0000" and v["legal_rep_name"].startswith("*"),
            "personal fields are masked to their last characters (R12)",
        )
        demo.expect(
            v["legal_rep_id"].startswith("ps-") and original["legal_rep_id"] not in str(v),
            "the ID number is a per-grant pseudonym, never the value (R12)",
        )
        demo.expect(
            sample.headers.get("bus-scenario") == "licence-check",
            "every delivery is stamped with its grant and scenario (R7)",
        )
    r = psb.get(f"/v1/grants/{g_cli['id']}/records", params={"limit": 10, "wait": 5})
    clinics = r.json().get("records", [])
    demo.say(
        f"  psb over HTTP: {len(clinics)} clinics, e.g. {json.dumps(clinics[0]['value']) if clinics else '-'}"
    )
    demo.expect(
        len(clinics) == 5 and all(c["value"]["director_id"].startswith("ps-") for c in clinics),
        "psb reads the approved clinic grant over HTTP with the director's ID pseudonymised",
    )

    # --- refusals -------------------------------------------------------------------------------------------
    demo.say(
        "\n[bold]R8/R14:[/] grants are not transferable, records are authenticated, revocation is immediate"
    )
    r = market.get(f"/v1/grants/{g_lic['id']}/records")
    demo.expect(
        r.status_code == 403 and r.json().get("code") == "auth.forbidden",
        "another agency reading psb's grant gets 403 auth.forbidden",
    )
    ctx = demo.stack.ctx
    assert ctx is not None
    forged_id = _forge(ctx, keys["psb"])
    code = _rejection_code(ctx, forged_id)
    demo.say(f"  psb forges a licence claiming bus-publisher=market -> rejected.market-licences: {code}")
    demo.expect(code == "record.unauthenticated", "the forged record is refused (record.unauthenticated)")
    needles = [licence(i)[f] for i in range(3) for f in ("enterprise_name", "legal_rep_id", "address")]
    seen, found = eavesdrop(ctx, needles)
    demo.say(f"  an eavesdropper on the broker reads {seen} messages of every bus topic with a plain Kafka "
             f"consumer: {found} of {len(needles)} published values found (sealed, AES-256-GCM)")
    demo.expect(seen > 0 and found == 0, "an eavesdropper on the broker sees only ciphertext (R8, R12)")

    r = _grant(psb, "market-licences", ["licence_no"], "one-off-check", "a single follow-up check", "Art. 87")
    g_tmp = r.json()
    r = market.post(f"/v1/grants/{g_tmp['id']}/revoke", json={"reason": "check finished"})
    demo.expect(r.json().get("status") == "revoked", "market revokes psb's one-off grant")
    r = psb.get(f"/v1/grants/{g_tmp['id']}/records")
    demo.say(f"  psb reads the revoked grant -> {r.status_code} {r.json().get('code')}")
    demo.expect(
        r.status_code == 409 and r.json().get("code") == "grant.not_active",
        "a revoked grant is refused with grant.not_active",
    )
    grants["psb-licences-revoked"] = r.json() if r.status_code < 400 else {**g_tmp, "status": "revoked"}


def _forge(ctx: Any, psb_key: str) -> str:
    """psb writes a licence to market's ingress topic, claiming to be market but sealing with its own key."""
    import io

    import fastavro

    from bus.exchange import keyring
    from bus.exchange.envelope import META_HEADER, Meta, Sealer
    from bus.schemas import load_schema
    from bus.vocab import TopicKind

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(load_schema("examples/licence")), licence(999))
    rid = new_record_id()
    sealer = Sealer(keyring.INGRESS_KID, keyring.ingress_key(signing_secret_for(psb_key)))
    meta = Meta(rid, "market", "market-licences", 1, kid=sealer.kid).pack()
    producer = new_producer(ctx.bootstrap)
    producer.produce(
        ctx.topics.ingress("market-licences"),
        sealer.seal(TopicKind.INGRESS, "market-licences", meta, None, buf.getvalue()),
        None,
        headers=[(META_HEADER, meta)],
    )
    producer.flush(10)
    return rid


def eavesdrop(ctx: Any, needles: list[str]) -> tuple[int, int]:
    """A plain Kafka consumer with no bus key reads every bus topic from the start: (messages, needles found)."""
    consumer = new_consumer(ctx.bootstrap, f"demo-eavesdropper-{time.time_ns()}")
    seen = found = 0
    try:
        topics = [t for t in consumer.list_topics(timeout=5).topics if t.startswith(ctx.topics.prefix)
                  and not t.startswith("__")]
        assign_from_committed(consumer, topics)
        while batch := [m for m in consumer.consume(1000, 1.0) if m.error() is None]:
            for m in batch:
                seen += 1
                blob = (m.key() or b"") + (m.value() or b"") + b"".join((v or b"") for _, v in headers_of(m))
                found += sum(1 for n in needles if n.encode() in blob)
    finally:
        consumer.close()
    return seen, found


def _rejection_code(ctx: Any, record_id: str, timeout: float = 15) -> str | None:
    consumer = new_consumer(ctx.bootstrap, f"demo-rejected-{time.time_ns()}")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not consumer.assignment():
                assign_from_committed(consumer, [ctx.topics.rejected("market-licences")])
            for m in consumer.consume(100, 0.2):
                if m.error() is None:
                    h = dict(headers_of(m))
                    try:
                        rid = Meta.unpack(h.get(META_HEADER)).record_id
                    except EnvelopeError:
                        continue
                    if rid == record_id:
                        return (h.get("bus-error-code") or b"").decode()
    finally:
        consumer.close()
    return None
