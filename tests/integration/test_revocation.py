"""R14: revocation and suspension take effect within one second on a steady stream; fail closed, resume."""

from __future__ import annotations

import threading
import time

from bus.exchange.policy_events import announce
from bus.grants import service
from bus.store.models import Agency
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import agency, grant, headers_of, publisher, read_topic

FIELDS = ["licence_no", "status"]


class Pump:
    """Publishes a steady stream (~1,000 records/s) until stopped; counts what it sent."""

    def __init__(self, pub) -> None:
        self.pub = pub
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in range(20):
                self.pub.publish(licence_record(self.sent))
                self.sent += 1
            self.pub.producer.poll(0)
            self._stop.wait(0.02)

    def __enter__(self) -> Pump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pub.flush()


def _stream_then_cut(ctx, data_plane, pub, cut) -> tuple[int, int]:
    """Stream until both grants deliver, ``cut()`` (timed from its return), then stream 1,000 more."""
    validator, router = data_plane
    with Pump(pub) as pump:
        poll_until(lambda: router.delivered >= 400, what="a steady stream delivered to both grants")
        cut()
        cut_ms = int(time.time() * 1000)
        after = validator.accepted
        poll_until(lambda: validator.accepted >= after + 1000, timeout=20, what="1,000 more records accepted")
    return cut_ms, pump.sent


def test_r14_revocation_stops_delivery_within_one_second(
    ctx, agency_factory, dataset_factory, data_plane
) -> None:
    market, market_key = agency_factory("market")
    psb, _ = agency_factory("psb")
    tax, _ = agency_factory("tax")
    ds = dataset_factory(market)
    revoked = grant(ctx, psb, ds, FIELDS)
    control = grant(ctx, tax, ds, FIELDS)
    with publisher(ctx, market, market_key, ds) as pub:
        cut_ms, sent = _stream_then_cut(
            ctx, data_plane, pub, lambda: service.revoke(ctx, agency(market), revoked["id"], "duty ended")
        )
    # the control grant got everything, so the router has read past the revocation
    assert len(read_topic(ctx, ctx.topics.deliver(control["id"]), sent, timeout=30)) == sent
    delivered = read_topic(ctx, ctx.topics.deliver(revoked["id"]), sent, timeout=1)
    late = [m for m in delivered if m.timestamp()[1] > cut_ms + 1000]
    assert 0 < len(delivered) < sent
    assert late == [], f"{len(late)} records delivered more than 1 s after the revocation"


def test_r15_suspending_the_consumer_agency_stops_delivery_within_one_second_and_resume_restarts_it(
    ctx, agency_factory, dataset_factory, data_plane
) -> None:
    market, market_key = agency_factory("market")
    psb, _ = agency_factory("psb")
    tax, _ = agency_factory("tax")
    ds = dataset_factory(market)
    suspended = grant(ctx, psb, ds, FIELDS)
    control = grant(ctx, tax, ds, FIELDS)

    def suspend(flag: bool) -> None:
        with ctx.store.session() as s:
            s.get(Agency, psb).suspended = flag
        announce(ctx, "agency", psb)

    with publisher(ctx, market, market_key, ds) as pub:
        cut_ms, sent = _stream_then_cut(ctx, data_plane, pub, lambda: suspend(True))
        assert len(read_topic(ctx, ctx.topics.deliver(control["id"]), sent, timeout=30)) == sent
        during = read_topic(ctx, ctx.topics.deliver(suspended["id"]), sent, timeout=1)
        assert [m for m in during if m.timestamp()[1] > cut_ms + 1000] == []
        suspend(False)
        resumed_id = pub.publish(licence_record(10**6))
        pub.flush()
    poll_until(
        lambda: any(
            headers_of(m)["bus-record-id"] == resumed_id
            for m in read_topic(ctx, ctx.topics.deliver(suspended["id"]), len(during) + 1, timeout=0.5)
        ),
        timeout=15,
        what="delivery after resume",
    )
