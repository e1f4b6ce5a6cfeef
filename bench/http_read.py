"""Requests/s of ``GET /v1/grants/{id}/records?limit=100`` (issue 7: pooled readers), and the latency of
``POST /v1/datasets/{id}/records`` (issue 4: lineage positions must not slow the answer).

    .venv/bin/python -m bench.http_read [--records 20000] [--tail 300] [--posts 200]

The gateway, validator and router run as separate processes (``BusRig``), like in production.
Phases, one sequential keep-alive client each:

- ``publish``: ``--posts`` requests of 10 records each; median and p95 answer time;
- ``drain``: follow the ``next`` cursor with ``limit=100`` until every delivered record was read;
- ``tail``: ``--tail`` requests at the end of the topic (``wait=0``), the "anything new?" poll.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from confluent_kafka import Consumer

from bench.busrig import BusRig
from bus.samples import licence_record


def _wait_delivered(bootstrap: str, topic: str, expected: int, timeout: float = 120.0) -> int:
    """Count the records in ``topic`` by reading them (the embedded broker's high watermark is the last
    batch's base offset + 1, so watermarks under-count) until ``expected`` or the deadline."""
    from bus.exchange.kafka import assign_from_committed

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-count-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "fetch.queue.backoff.ms": 10, "fetch.wait.max.ms": 10})
    try:
        count, deadline = 0, time.monotonic() + timeout
        while count < expected and time.monotonic() < deadline:
            if not c.assignment():
                assign_from_committed(c, [topic])
            count += sum(1 for m in c.consume(1000, 0.2) if m.error() is None)
        return count
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--tail", type=int, default=300)
    ap.add_argument("--posts", type=int, default=200)
    ap.add_argument("--publish-only", action="store_true", help="only the publish phase")
    args = ap.parse_args()
    with BusRig() as rig:
        rig.agency("market")
        rig.agency("psb")
        rig.dataset("market", "licences")
        grant = rig.grant("psb", "licences")
        with rig.api(rig.keys["market"]) as market:
            lat = []
            accepted = 0
            for i in range(args.posts):
                t = time.perf_counter()
                r = market.post(
                    "/v1/datasets/licences/records",
                    json={"records": [licence_record(i * 10 + j) for j in range(10)]},
                )
                lat.append(time.perf_counter() - t)
                r.raise_for_status()
                accepted += r.json()["accepted"]
            published = args.posts * 10
            batch = 1000
            for start in range(published, args.records, batch):
                n = min(batch, args.records - start)
                r = market.post(
                    "/v1/datasets/licences/records",
                    json={"records": [licence_record(start + j) for j in range(n)]},
                )
                r.raise_for_status()
                accepted += r.json()["accepted"]
        if args.publish_only:
            lat.sort()
            med, p95 = statistics.median(lat) * 1000, lat[int(len(lat) * 0.95)] * 1000
            print(json.dumps({"publish_10_records_ms": {"median": round(med, 2), "p95": round(p95, 2)}}))
            return
        with rig.api(rig.keys["psb"]) as psb:
            topic = psb.get(f"/v1/grants/{grant['id']}/schema").json()["topic"]
            # wait until the router delivered every record (read back, not from watermarks)
            total = _wait_delivered(rig.bootstrap, topic, accepted)
            url = f"/v1/grants/{grant['id']}/records"
            got, requests, cursor = 0, 0, None
            t = time.perf_counter()
            while got < total:
                params: dict[str, object] = {"limit": 100, "wait": 0.5}
                if cursor:
                    params["after"] = cursor
                page = psb.get(url, params=params).json()
                requests += 1
                got += len(page["records"])
                cursor = page["next"]
            drain = time.perf_counter() - t
            late = 0
            t = time.perf_counter()
            for _ in range(args.tail):
                page = psb.get(url, params={"limit": 100, "wait": 0, "after": cursor}).json()
                late += len(page["records"])
                cursor = page["next"]
            tail = time.perf_counter() - t
    lat.sort()
    result = {
        "publish_10_records_ms": {
            "median": round(statistics.median(lat) * 1000, 2),
            "p95": round(lat[int(len(lat) * 0.95)] * 1000, 2),
        },
        "drain": {
            "records": got,
            "requests": requests,
            "seconds": round(drain, 2),
            "requests_per_s": round(requests / drain, 1),
        },
        "tail": {
            "requests": args.tail,
            "late_records": late,
            "seconds": round(tail, 2),
            "requests_per_s": round(args.tail / tail, 1),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
