"""The web console in a real browser (Debian's Chromium via Playwright) against a real bus (issue 15).

One bus and one browser for the module; each test signs in with its own key in a fresh browser context.
Screenshots of the main pages go to docs/console/ (the README shows them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from bus.store.models import AuditEvent
from tests.helpers import catalog_entry, licence_record, licence_schema, poll_until
from tests.integration.console_helpers import Session, World, browser, world

__all__ = ["browser", "world"]  # fixtures

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _on_bus_only(session: Session) -> None:
    """Every request the page made went to the bus itself, and none carried the key in its URL."""
    assert session.requests, "the page made no request"
    foreign = [u for u in session.requests if not u.startswith(session.world.url + "/")]
    assert foreign == []
    assert not [u for u in session.requests if session.key in u]


def test_r14_auditor_opens_a_record_and_sees_each_delivery(browser: Any, world: World) -> None:
    """R14: the record trace lists publication, validation and every delivery (grant, agency, scenario)."""
    rid = world.record_ids[0]
    with Session(browser, world, "auditor") as s:
        page = s.go(f"#/record/{rid}")
        page.wait_for_selector("ol.timeline li.delivery")
        deliveries = page.locator("ol.timeline li.delivery")
        assert deliveries.count() == 2
        grants = sorted(deliveries.nth(i).get_attribute("data-grant") for i in range(2))
        assert grants == sorted(world.grants.values())
        text = page.locator("ol.timeline").inner_text()
        assert "psb" in text and "tax" in text
        assert "licence-check" in text and "tax-registration" in text
        assert "consumed by psb" in text  # psb acknowledged, tax did not
        assert "via the SDK" in text
        assert "Published" in text and "accepted" in text
        s.shot("record-trace")
        _on_bus_only(s)
        assert s.errors == []


def test_r14_a_record_published_over_http_shows_http_as_its_channel(browser: Any, world: World) -> None:
    """R14: the timeline says how a record came in; one posted to the HTTP API shows HTTP."""
    with world.api("market") as market:
        r = market.post(f"/v1/datasets/{world.dataset}/records", json={"records": [licence_record(8100)]})
        assert r.status_code == 200, r.text
        (rid,) = r.json()["record_ids"]
    with world.api("auditor") as api:  # delivered to both grants before the next test counts edges
        poll_until(
            lambda: len(api.get(f"/v1/lineage/records/{rid}").json().get("deliveries", [])) == 2,
            timeout=20,
            what="the HTTP record delivered under both grants",
        )
    with Session(browser, world, "auditor") as s:
        page = s.go(f"#/record/{rid}")
        page.wait_for_selector("ol.timeline li.published")
        assert "via HTTP" in page.locator("ol.timeline li.published").inner_text()


def test_r18_dataset_graph_shows_grant_nodes_and_edge_counts(browser: Any, world: World) -> None:
    """R18: the lineage graph draws both grants, and its edges carry the delivered record counts."""
    with world.api("auditor") as api:
        graph = api.get(f"/v1/lineage/datasets/{world.dataset}").json()
    delivered = {e["to"]: e["records"] for e in graph["edges"] if e["kind"] == "delivered"}
    assert set(delivered) == {f"grant:{g}" for g in world.grants.values()}
    assert min(delivered.values()) >= len(world.record_ids)
    with Session(browser, world, "auditor") as s:
        page = s.go(f"#/lineage/{world.dataset}")
        page.wait_for_selector("#graph[data-grant-nodes]")
        box = page.locator("#graph")
        assert box.get_attribute("data-grant-nodes") == "2"
        assert box.get_attribute("data-edges") == str(len(graph["edges"]))
        assert page.locator("#graph canvas").count() >= 1  # Cytoscape drew it
        rows = page.locator("#lineage-out table").first.locator("tbody tr")
        seen = {}
        for i in range(rows.count()):
            cells = rows.nth(i).locator("td")
            if cells.nth(2).inner_text() == "delivered":
                seen[cells.nth(1).inner_text().split()[1]] = int(cells.nth(3).inner_text())
        assert seen == {gid: delivered[f"grant:{gid}"] for gid in world.grants.values()}
        s.shot("dataset-lineage")
        # clicking a grant opens it: the same page as the grants list links to
        page.locator("#lineage-out table").nth(1).locator("a.id").first.click()
        page.wait_for_selector("text=Fields and masking")
        _on_bus_only(s)
        assert s.errors == []


def test_r14_tampered_audit_row_shows_as_the_first_bad_event(browser: Any, world: World) -> None:
    """R14: an audit row edited in the store behind the bus's back is the first bad event, highlighted
    among its neighbours."""
    store = world.stack.ctx.store  # type: ignore[union-attr]
    with store.session() as db:
        victim = db.scalars(
            select(AuditEvent).where(AuditEvent.action == "dataset.reviewed").order_by(AuditEvent.seq)
        ).first()
        assert victim is not None
        seq, original = victim.seq, dict(victim.data)
    with Session(browser, world, "auditor") as s:
        page = s.go("#/audit")
        page.click("#verify")
        page.wait_for_selector("#verify-result.ok")
        with store.session() as db:
            db.execute(
                update(AuditEvent).where(AuditEvent.seq == seq).values(data={**original, "by": "nobody"})
            )
        try:
            page.click("#verify")
            page.wait_for_selector("#verify-result.problem")
            assert page.locator("#verify-result").get_attribute("data-first-bad") == str(seq)
            bad = page.locator("#verify-out tr.bad")
            assert bad.count() == 1
            assert bad.locator("td").first.inner_text() == str(seq)
            assert page.locator("#verify-out tbody tr").count() >= 3  # its neighbours around it
            s.shot("audit-first-bad")
        finally:
            with store.session() as db:
                db.execute(update(AuditEvent).where(AuditEvent.seq == seq).values(data=original))
        page.click("#verify")
        page.wait_for_selector("#verify-result.ok")
        _on_bus_only(s)


def test_r14_audit_events_filter_and_csv_export(browser: Any, world: World) -> None:
    """R14: the events list filters by action and exports the filtered events as CSV."""
    with Session(browser, world, "auditor") as s:
        page = s.go("#/audit")
        page.wait_for_selector("#events-out table")
        page.fill("input[name=action]", "grant.*")
        page.click("#events-out >> xpath=.. >> button[type=submit]")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#events-out tbody tr td:nth-child(4)')]"
            ".every(td => td.textContent.startsWith('grant.')) && "
            "document.querySelectorAll('#events-out tbody tr td:nth-child(4)').length > 0"
        )
        with page.expect_download() as dl:
            page.click("#csv")
        csv = Path(dl.value.path()).read_text(encoding="utf-8").splitlines()
        assert csv[0].startswith("seq,at,actor,action")
        actions = {line.split(",")[3] for line in csv[1:]}
        assert actions and all(a.startswith("grant.") for a in actions)
        _on_bus_only(s)


def test_r1_reviewer_approves_an_entry_in_the_queue_and_the_api_reports_it_approved(
    browser: Any, world: World
) -> None:
    """R1: a submitted entry waits in the reviewer's queue; approving it there approves it in the API."""
    ds = f"{world.dataset}-v2"
    schema = licence_schema()
    schema["name"] = "LicenceCopy"
    with world.api("market") as market:
        assert market.post("/v1/datasets", json=catalog_entry(ds, schema)).status_code == 201
        assert market.post(f"/v1/datasets/{ds}/submit").status_code == 200
    with Session(browser, world, "reviewer") as s:
        page = s.go("#/review")
        card = page.locator(f"article.review[data-dataset='{ds}']")
        card.wait_for()
        partial = page.locator("article.review", has_text="tax-licences-")  # R9: its overlap report
        partial.locator("summary").click()
        assert "legal_rep_id" in partial.locator(".overlap").inner_text()
        assert "Request instead" in partial.locator(".overlap").inner_text()
        partial.scroll_into_view_if_needed()
        s.shot("review-queue")
        card.locator("textarea").fill("complete and accurate")
        card.locator("button.approve").click()
        page.wait_for_selector(f"article.review[data-dataset='{ds}'] .ok")
        _on_bus_only(s)
    with world.api("auditor") as api:
        entry = api.get(f"/v1/datasets/{ds}").json()
    assert entry["status"] == "approved"
    assert entry["review_comment"] == "complete and accurate"


def test_r10_owner_approves_a_pending_grant_request_in_the_console(browser: Any, world: World) -> None:
    """R10: a conditional dataset's request waits for its owner; the owner approves it on the grants page
    and the API reports the grant active; the grantee then sees it with its masking per field."""
    ds = f"{world.dataset}-cond"
    schema = licence_schema()
    schema["name"] = "LicenceConditional"
    sharing = {
        "attribute": "conditional",
        "reason": "legal representatives' id numbers are personal information",
        "legal_basis": "Personal Information Protection Law art. 13",
        "eligible_agencies": ["psb"],
    }
    with world.api("market") as market:
        assert market.post("/v1/datasets", json=catalog_entry(ds, schema, sharing)).status_code == 201
        assert market.post(f"/v1/datasets/{ds}/submit").status_code == 200
    with world.api("reviewer") as reviewer:
        assert reviewer.post(f"/v1/datasets/{ds}/review", json={"decision": "approve"}).status_code == 200
    with world.api("psb") as psb:
        body = {
            "dataset": ds,
            "fields": ["licence_no", "legal_rep_id", "phone"],
            "scenario": {"code": "fraud-inquiry", "description": "licence fraud inquiries"},
            "legal_basis": "Public Security Administration Punishments Law art. 87",
        }
        pending = psb.post("/v1/grants", json=body).json()
    assert pending["status"] == "pending"
    with Session(browser, world, "market") as s:
        page = s.go("#/grants")
        card = page.locator(f"article.pending-grant[data-grant='{pending['id']}']")
        card.wait_for()
        s.shot("grants")
        card.locator("input[name=reason]").fill("lawful duty, eligible agency")
        card.locator("button", has_text="Approve").click()
        card.locator(".ok").wait_for()
        _on_bus_only(s)
    with world.api("psb") as psb:
        assert psb.get(f"/v1/grants/{pending['id']}").json()["status"] == "active"
    with Session(browser, world, "psb") as s:
        page = s.go(f"#/grants/{pending['id']}")
        masking = {
            row.locator("td").nth(0).inner_text(): row.locator("td").nth(1).inner_text()
            for row in page.locator("tbody tr").all()
        }
        assert masking == {"licence_no": "raw", "legal_rep_id": "pseudonym", "phone": "mask"}  # R12
        s.shot("grant-masking")


def test_r14_an_agency_key_sees_no_audit_page_and_the_api_refuses_it(browser: Any, world: World) -> None:
    """R14: the console hides what the API refuses: no audit link for an agency, the page says so, and the
    API answers 403 to the same key."""
    with Session(browser, world, "psb") as s:
        page = s.page
        assert page.locator("#nav a[href='#/audit']").is_hidden()
        assert page.locator("#nav a[href='#/grants']").is_visible()
        s.go("#/audit")
        page.wait_for_selector("text=Not available")
        status = page.evaluate(
            "async () => (await fetch('/v1/audit/verify', {headers: {Authorization: "
            "'Bearer ' + sessionStorage.getItem('databus.key')}})).status"
        )
        assert status == 403
        _on_bus_only(s)
    with world.api("psb") as api:
        r = api.get("/v1/audit/events")
        assert r.status_code == 403 and r.json()["code"] == "auth.forbidden"


def test_r14_problem_json_is_shown_with_title_detail_and_code(browser: Any, world: World) -> None:
    """R14: a refused call shows the problem's title, detail and code, linking to the code's page."""
    with Session(browser, world, "auditor") as s:
        page = s.go("#/record/" + "f" * 32)
        box = page.locator(".problem[data-code='lineage.not_found']")
        box.wait_for()
        assert "never published" in box.inner_text()
        box.locator("a").click()
        page.wait_for_selector("h1 >> text=lineage.not_found")
        _on_bus_only(s)


def test_r14_who_received_data_about_a_person(browser: Any, world: World) -> None:
    """R14/R12: asked for a legal representative's id number, the console lists both grants that
    received it; the value never enters a URL of the page and the question is audited with its reason."""
    person = world.records[1]["legal_rep_id"]
    with Session(browser, world, "auditor") as s:
        page = s.go("#/subjects")
        page.fill("input[name=semantic]", "person.id_number")
        page.fill("input[name=value]", person)
        page.fill("input[name=reason]", "subject access request 2026-118")
        page.click("#subjects-out >> xpath=.. >> button[type=submit]")
        page.wait_for_selector("#subjects-out h2")
        assert page.locator("#subjects-out h2").inner_text().startswith("1 records")
        text = page.locator("#subjects-out").inner_text()
        assert world.grants["psb"] in text and world.grants["tax"] in text
        s.shot("who-received")
        assert person not in page.url
        _on_bus_only(s)
    with world.api("auditor") as api:
        events = api.get("/v1/audit/events", params={"action": "lineage.subject_lookup"}).json()["events"]
    assert events[-1]["data"]["reason"] == "subject access request 2026-118"
    assert person not in str(events[-1])


def test_r14_every_page_talks_only_to_the_bus_and_never_puts_the_key_in_a_url(
    browser: Any, world: World
) -> None:
    """R14: an admin walks every page; each request goes to the bus, the key is in no URL and no cookie,
    only in this tab's sessionStorage (none in localStorage)."""
    with Session(browser, world, "admin") as s:
        page = s.page
        pages = [
            "catalogue",
            "grants",
            "incidents",
            "usage",
            "lineage",
            "record",
            "subjects",
            "audit",
            "review",
        ]
        for name in pages:
            s.go(f"#/{name}")
            assert page.locator(f"#nav a[href='#/{name}']").get_attribute("aria-current") == "page"
            assert page.locator(".problem").count() == 0, (
                f"{name}: {page.locator('.problem').first.inner_text()}"
            )
            if name in ("catalogue", "usage"):
                s.shot(name)
        s.go(f"#/catalogue/{world.dataset}")
        page.wait_for_selector("text=Schema versions")
        s.go(f"#/grants/{world.grants['tax']}")
        page.wait_for_selector("text=Fields and masking")
        _on_bus_only(s)
        assert s.context.cookies() == []
        assert page.evaluate("() => localStorage.length") == 0
        assert page.evaluate("() => sessionStorage.getItem('databus.key')") == s.key
        assert all(s.key not in u for u in [page.url, *s.requests])
        assert s.errors == []


def test_r14_console_is_readable_on_a_narrow_window(browser: Any, world: World) -> None:
    """Habit: on a 390 px window the record trace still fits (no horizontal page scroll)."""
    s = Session(browser, world, "auditor", width=390, height=844)
    try:
        s.sign_in()
        page = s.go(f"#/record/{world.record_ids[0]}")
        page.wait_for_selector("ol.timeline li.delivery")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1
        s.shot("record-trace-narrow")
    finally:
        s.close()


def test_r14_console_pages_carry_a_strict_content_security_policy(world: World) -> None:
    """R14: no inline script may run in the console; scripts, styles and requests stay on the bus."""
    import httpx

    r = httpx.get(f"{world.url}/console")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "connect-src 'self'" in csp
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text)  # no inline script at all


def test_r15_admin_resolves_an_incident_with_its_evidence(browser: Any, world: World) -> None:
    """R15: the re-collection refused at set-up is an open incident with evidence; the admin resolves it
    in the console and the API reports it resolved."""
    with world.api("auditor") as api:
        (incident,) = api.get("/v1/incidents", params={"status": "open", "agency": "tax"}).json()["incidents"]
    with Session(browser, world, "admin") as s:
        page = s.go("#/incidents")
        card = page.locator(f"article.incident[data-incident='{incident['id']}']")
        card.locator("summary").click()
        assert "recollection" in card.locator("pre").inner_text()
        s.shot("incidents")
        card.locator("input[name=note]").fill("reported to the tax bureau; entry withdrawn")
        card.locator("button", has_text="Resolve").click()
        page.wait_for_selector(f"article.incident[data-incident='{incident['id']}']", state="detached")
        _on_bus_only(s)
    with world.api("auditor") as api:
        assert api.get(f"/v1/incidents/{incident['id']}").json()["status"] == "resolved"


def test_r15_admin_suspends_and_resumes_a_grant_after_confirming(browser: Any, world: World) -> None:
    """R15: the emergency switch asks for a confirmation, then suspends the grant at once; resume lifts it."""
    gid = world.grants["tax"]
    with Session(browser, world, "admin") as s:
        page = s.go("#/incidents")
        page.select_option("select[name=kind]", "grant")
        page.fill("input[name=id]", gid)
        page.fill("input[name=reason]", "suspected leak under investigation")
        page.click("button:has-text('Suspend…')")
        with world.api("auditor") as api:
            assert api.get(f"/v1/grants/{gid}").json()["status"] == "active"  # nothing before confirming
        page.click("#confirm-switch")
        page.wait_for_selector(f"#suspensions-out td:has-text('{gid}')")
        with world.api("auditor") as api:
            assert api.get(f"/v1/grants/{gid}").json()["status"] == "suspended"
        page.click("button:has-text('Resume…')")
        page.click("#confirm-switch")
        page.wait_for_selector("#suspensions-out td:has-text('Nothing to show')")
        _on_bus_only(s)
    with world.api("auditor") as api:
        assert api.get(f"/v1/grants/{gid}").json()["status"] == "active"


def test_r14_console_works_from_the_keyboard(browser: Any, world: World) -> None:
    """Habit: sign in and reach a page with the keyboard alone (focus starts in the key field)."""
    s = Session(browser, world, "auditor")
    try:
        page = s.page
        page.goto(f"{world.url}/console")
        page.keyboard.type(s.key)
        page.keyboard.press("Enter")
        page.wait_for_selector("#view[data-ready]")
        for _ in range(20):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.getAttribute('href')") == "#/audit":
                break
        else:
            raise AssertionError("the Audit link is not reachable with Tab")
        page.keyboard.press("Enter")
        page.wait_for_selector("#view[data-ready='audit']")
        page.focus("#verify")
        page.keyboard.press("Enter")
        page.wait_for_selector("#verify-result")
        _on_bus_only(s)
    finally:
        s.close()


def test_r1_catalogue_filters_by_status_and_searches(browser: Any, world: World) -> None:
    """R1: the catalogue filters by status (the API's filter) and searches the page's entries by id,
    title and description; an entry opens with its schema versions."""
    with Session(browser, world, "reviewer") as s:
        page = s.go("#/catalogue")
        page.select_option("select[name=status]", "submitted")
        page.click("#view form button[type=submit]")
        page.wait_for_function(
            "() => { const s = [...document.querySelectorAll('#catalogue-out tbody tr td:nth-child(7)')];"
            " return s.length > 0 && s.every(td => td.textContent === 'submitted'); }"
        )
        page.select_option("select[name=status]", "")
        page.fill("input[name=q]", "tax-licences-")
        page.click("#view form button[type=submit]")
        page.wait_for_function("() => document.querySelectorAll('#catalogue-out tbody tr').length === 1")
        assert page.locator("#catalogue-out tbody a").inner_text().startswith("tax-licences-")
        page.locator("#catalogue-out tbody a").click()
        page.wait_for_selector("#view[data-ready='catalogue'] >> text=Schema versions")
        _on_bus_only(s)
