"""The web console in a real browser (Debian's Chromium via Playwright) against a real bus (issue 15).

One bus and one browser for the module; each test signs in with its own key in a fresh browser context.
Screenshots of the main pages go to docs/console/ (the README shows them).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select, update

from bus.store.models import AuditEvent
from tests.helpers import catalog_entry, licence_schema
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
        assert "Published" in text and "accepted" in text
        s.shot("record-trace")
        _on_bus_only(s)
        assert s.errors == []
