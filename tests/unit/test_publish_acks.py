"""The wait of an HTTP publish for its own acknowledgements (R14: nothing confirmed that the broker did not
take). The error paths, against a port where no broker listens: the wait gives up at its deadline, and
records the broker never took are counted as failed, with the broker's reason, and their lineage rows get
no position."""

from __future__ import annotations

from confluent_kafka import Producer

from bus.embedded import free_port
from bus.gateway.routes_records import _Acks
from bus.lineage.recorder import position_callback


def _producer_to_nowhere(message_timeout_ms: int) -> Producer:
    return Producer(
        {
            "bootstrap.servers": f"127.0.0.1:{free_port()}",
            "message.timeout.ms": message_timeout_ms,
            "log_level": 0,  # the refused connections are the point here, not news
        }
    )


def test_r14_wait_gives_up_at_its_deadline_when_nothing_is_acknowledged() -> None:
    producer = _producer_to_nowhere(60_000)
    acks = _Acks()
    row: dict = {"partition": None, "offset": None}
    producer.produce("t", b"v", on_delivery=position_callback(row, acks))
    acks.expect(1)
    assert acks.wait(producer, 0.2) is False
    assert acks.failed == 0 and row["partition"] is None
    producer.purge()
    producer.flush(5)


def test_r14_records_the_broker_never_took_are_counted_failed_with_the_reason() -> None:
    producer = _producer_to_nowhere(200)
    acks = _Acks()
    rows = [{"partition": None, "offset": None} for _ in range(3)]
    for row in rows:
        producer.produce("t", b"v", on_delivery=position_callback(row, acks))
    acks.expect(3)
    assert acks.wait(producer, 10) is True  # every report came back: all three failed
    assert acks.failed == 3 and acks.error and "timed out" in acks.error.lower()
    assert all(r["partition"] is None and r["offset"] is None for r in rows)


def test_a_request_with_nothing_to_publish_does_not_wait() -> None:
    assert _Acks().wait(_producer_to_nowhere(200), 0) is True
