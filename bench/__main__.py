"""`make bench`: the bus against raw Kafka on the same broker, in the same run.

    python -m bench [--records 100000] [--quick]
                    [--only throughput,fanout,http,latency,revocation,control,sealing]

Every scenario prints its baseline next to the bus figure and the ratio; the whole run is written
as JSON to bench/results/<timestamp>.json (and latest.json). Absolute numbers on a shared 2-core
machine mean little; ratios measured in the same run are the point.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench import sealing
from bench.busrig import BusRig
from bench.common import run_pipeline
from bus.client import Publisher, Subscriber
from bus.exchange.kafka import assign_from_committed, new_consumer
from bus.samples import licence_record

console = Console()
RESULTS = Path(__file__).resolve().parent / "results"


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _publish_all(pub: Publisher, n: int, records: list[dict[str, Any]]) -> None:
    for i in range(n):
        pub.publish(records[i % len(records)], key=str(i))
    pub.flush(120)


def _count_topics(bootstrap: str, topics: list[str], n: int, timeout: float, done: dict[str, float]) -> None:
    consumer = new_consumer(bootstrap, f"bench-count-{uuid.uuid4().hex[:6]}")
    got = 0
    deadline = time.monotonic() + timeout
    while got < n and time.monotonic() < deadline:
        if not consumer.assignment():
            assign_from_committed(consumer, topics)
            if not consumer.assignment():
                time.sleep(0.05)
                continue
        got += sum(1 for m in consumer.consume(1000, 0.05) if m.error() is None)
    done["end"] = time.perf_counter()
    done["count"] = got
    consumer.close()


def _subscribe_all(
    rig: BusRig, agency: str, grant: dict[str, Any], n: int, timeout: float, done: dict[str, float]
) -> None:
    sub = Subscriber.from_gateway(rig.url, rig.keys[agency], grant["id"])
    got = 0
    deadline = time.monotonic() + timeout
    while got < n and time.monotonic() < deadline:
        batch = sub.poll(1000, 0.05)
        got += len(batch)
        if batch:
            sub.ack(batch)
    done["end"] = time.perf_counter()
    done["count"] = got
    sub.close()


class Bench:
    def __init__(self, rig: BusRig, n: int) -> None:
        self.rig = rig
        self.n = n
        self.records = [licence_record(i) for i in range(10_000)]
        rig.agency("market")
        self.grantees = [f"grantee{i}" for i in range(16)]
        for g in self.grantees:
            rig.agency(g)

    def _dataset(self) -> str:
        ds = f"licences-{uuid.uuid4().hex[:6]}"
        self.rig.dataset("market", ds)
        return ds

    def _publisher(self, ds: str) -> Publisher:
        schema, version = self.rig.schema_of(ds)
        return Publisher(self.rig.bootstrap, "market", self.rig.keys["market"], ds, schema, version)

    # --- scenario 1 and 2 -------------------------------------------------------------------------
    def bus_throughput(self, grants: int, decode: bool) -> dict[str, float]:
        ds = self._dataset()
        gs = [self.rig.grant(self.grantees[i], ds) for i in range(grants)]
        pub = self._publisher(ds)
        pub.publish(self.records[0], key="warm")  # producer connected before the clock starts
        pub.flush(30)
        total = self.n * grants + grants  # the warm-up record is delivered too
        done: dict[str, float] = {}
        if decode:
            t = threading.Thread(
                target=_subscribe_all, args=(self.rig, gs[0]["agency"], gs[0], total, 300, done)
            )
        else:
            topics = [f"deliver.{g['id']}" for g in gs]
            t = threading.Thread(target=_count_topics, args=(self.rig.bootstrap, topics, total, 300, done))
        t.start()
        start = time.perf_counter()
        _publish_all(pub, self.n, self.records)
        t.join()
        pub.close()
        elapsed = done["end"] - start
        delivered = done["count"] - grants
        return {
            "records": self.n,
            "delivered": delivered,
            "seconds": elapsed,
            "records_per_s": self.n / elapsed,
            "delivered_per_s": delivered / elapsed,
        }

    # --- scenario 3 --------------------------------------------------------------------------------
    def http_publish(self, batch: int = 100, clients: int = 4) -> dict[str, float]:
        ds = self._dataset()
        key = self.rig.keys["market"]
        n = self.n - self.n % (batch * clients)
        done: dict[str, float] = {}
        counter = threading.Thread(
            target=_count_topics, args=(self.rig.bootstrap, [f"data.{ds}"], n, 300, done)
        )
        errors: list[str] = []

        def client(part: int) -> None:
            with httpx.Client(
                base_url=self.rig.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as c:
                for b in range(part, n // batch, clients):
                    body = {
                        "records": [self.records[(b * batch + j) % len(self.records)] for j in range(batch)]
                    }
                    r = c.post(f"/v1/datasets/{ds}/records", json=body)
                    if r.status_code >= 300 or r.json().get("rejected"):
                        errors.append(r.text[:200])

        counter.start()
        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        http_done = time.perf_counter()
        counter.join()
        elapsed = done["end"] - start
        return {
            "records": n,
            "accepted_in_data_topic": done["count"],
            "seconds": elapsed,
            "records_per_s": done["count"] / elapsed,
            "http_records_per_s": n / (http_done - start),
            "errors": len(errors),
        }

    # --- scenario 4 --------------------------------------------------------------------------------
    def latency(self, rate: int, seconds: float) -> dict[str, float]:
        ds = self._dataset()
        g = self.rig.grant(self.grantees[0], ds)
        pub = self._publisher(ds)
        sent: dict[str, float] = {}
        lat: list[float] = []
        warmup = 1.0  # the first second (connections, first fetches) is sent but not measured
        total = int(rate * (seconds + warmup))
        measured = int(rate * seconds)
        measure_from = float("inf")
        stop = threading.Event()

        def receive() -> None:
            sub = Subscriber.from_gateway(self.rig.url, self.rig.keys[g["agency"]], g["id"])
            deadline = time.monotonic() + seconds + 30
            while len(lat) < measured and time.monotonic() < deadline and not stop.is_set():
                batch = sub.poll(500, 0.01)
                now = time.perf_counter()
                for d in batch:
                    t0 = sent.get(d.record_id)
                    if t0 is not None and t0 >= measure_from:
                        lat.append((now - t0) * 1000)
                if batch:
                    sub.ack(batch)
            sub.close()

        pub.publish(self.records[0], key="warm")
        pub.flush(30)
        rt = threading.Thread(target=receive)
        rt.start()
        start = time.perf_counter()
        measure_from = start + warmup
        for i in range(total):
            target = start + i / rate
            while (now := time.perf_counter()) < target:
                time.sleep(min(0.001, target - now))
            rid = pub.publish(self.records[i % len(self.records)], key=str(i))
            sent[rid] = time.perf_counter()
            pub.producer.poll(0)
        pub.flush(30)
        rt.join(seconds + 40)
        stop.set()
        pub.close()
        return {
            "rate": rate,
            "seconds": seconds,
            "received": len(lat),
            "p50_ms": _pct(lat, 50),
            "p99_ms": _pct(lat, 99),
            "max_ms": max(lat) if lat else float("nan"),
        }

    def raw_latency(self, hops: int, rate: int, seconds: float) -> dict[str, float]:
        from bench.common import raw_latency

        return raw_latency(self.rig.bootstrap, f"rawlat{hops}-{uuid.uuid4().hex[:4]}.", hops, rate, seconds)

    # --- scenario 5 --------------------------------------------------------------------------------
    def revocation(self, trials: int, rate: int = 1000) -> dict[str, Any]:
        ds = self._dataset()
        pub = self._publisher(ds)
        stop = threading.Event()

        def stream() -> None:
            i = 0
            start = time.perf_counter()
            while not stop.is_set():
                target = start + i / rate
                while (now := time.perf_counter()) < target:
                    time.sleep(min(0.001, target - now))
                pub.publish(self.records[i % len(self.records)], key=str(i))
                pub.producer.poll(0)
                i += 1
            pub.flush(30)

        st = threading.Thread(target=stream)
        st.start()
        results: list[float] = []
        try:
            for trial in range(trials):
                agency = self.grantees[trial % len(self.grantees)]
                g = self.rig.grant(agency, ds)
                topic = f"deliver.{g['id']}"
                consumer = new_consumer(self.rig.bootstrap, f"bench-rev-{uuid.uuid4().hex[:6]}")
                # wait for deliveries to flow on this grant
                seen = 0
                deadline = time.monotonic() + 30
                while seen < 50 and time.monotonic() < deadline:
                    if not consumer.assignment():
                        assign_from_committed(consumer, [topic])
                        continue
                    seen += sum(1 for m in consumer.consume(500, 0.05) if m.error() is None)
                self.rig.revoke(g["id"])
                revoked_at = time.perf_counter()
                last = revoked_at
                # arrival at a consumer of deliver.<grant> (an upper bound: includes ~10 ms consumer lag);
                # record timestamps are the publisher's, so they cannot tell when the router delivered
                quiet_until = time.monotonic() + 2.0
                while time.monotonic() < quiet_until:
                    for m in consumer.consume(500, 0.01):
                        if m.error() is None:
                            last = time.perf_counter()
                            quiet_until = max(quiet_until, time.monotonic() + 1.0)
                consumer.close()
                results.append((last - revoked_at) * 1000)
                console.print(
                    f"    trial {trial + 1}/{trials}: last delivery {results[-1]:.0f} ms after revoke"
                )
        finally:
            stop.set()
            st.join()
            pub.close()
        return {
            "trials": trials,
            "p50_ms": _pct(results, 50),
            "p99_ms": _pct(results, 99),
            "max_ms": max(results),
        }

    # --- scenario 6 --------------------------------------------------------------------------------
    def control(self, decisions: int = 300) -> dict[str, float]:
        ds = self._dataset()
        agency = self.grantees[0]
        body = {
            "dataset": ds,
            "fields": ["licence_no", "status"],
            "scenario": {"code": "bench", "description": "benchmark"},
            "legal_basis": "bench",
        }
        with self.rig.api(self.rig.keys[agency]) as c:
            start = time.perf_counter()
            for _ in range(decisions):
                c.post("/v1/grants", json=body).raise_for_status()
            elapsed = time.perf_counter() - start
        return {"grant_decisions": decisions, "seconds": elapsed, "decisions_per_s": decisions / elapsed}


def audit_verify(sizes: list[int]) -> dict[str, float]:
    import tempfile

    from bench.audit_verify import fill
    from bus.lineage.audit import verify
    from bus.store import Store

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bus.db'}").start()
        try:
            for n in sizes:
                with console.status(f"appending {n:,} audit events..."):
                    fill(store, n)
                t0 = time.perf_counter()
                result = verify(store)
                out[f"verify_{n}_s"] = time.perf_counter() - t0
                out[f"verify_{n}_ok"] = bool(result["ok"] and result["events"] == n)
        finally:
            store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records per throughput run")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", default="", help="comma-separated scenarios to run")
    parser.add_argument(
        "--inproc", action="store_true", help="run validator and router inside the gateway process"
    )
    args = parser.parse_args(argv)
    n = 5_000 if args.quick else args.records
    lat_seconds = 3.0 if args.quick else 20.0
    trials = 3 if args.quick else 20
    verify_sizes = [10_000] if args.quick else [100_000, 1_000_000]
    only = set(filter(None, args.only.split(",")))

    def want(name: str) -> bool:
        return not only or name in only

    res: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "records": n,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "mode": "inproc" if args.inproc else "processes",
    }
    table = Table(title="databus vs raw Kafka (same broker, same run)")
    for col in ("scenario", "bus", "baseline", "ratio", "target"):
        table.add_column(col)

    with console.status("starting broker, Redis, gateway, validator and router..."):
        rig = BusRig(inproc=args.inproc).start()
    try:
        bench = Bench(rig, n)
        if want("throughput"):
            console.print(
                "[bold]1. throughput, one grant[/] (SDK -> validator -> router -> subscriber decoding)"
            )
            raw = run_pipeline(rig.bootstrap, f"raw1-{uuid.uuid4().hex[:4]}.", n, 2, "raw", console.print)
            floor = run_pipeline(
                rig.bootstrap, f"floor1-{uuid.uuid4().hex[:4]}.", n, 2, "floor", console.print
            )
            bus = bench.bus_throughput(1, decode=True)
            console.print(f"  bus: {bus['delivered']}/{n} in {bus['seconds']:.2f}s")
            res["throughput"] = {
                "bus": bus,
                "raw": raw,
                "floor": floor,
                "ratio_raw": bus["records_per_s"] / raw["records_per_s"],
                "ratio_floor": bus["records_per_s"] / floor["records_per_s"],
            }
            table.add_row(
                "1 throughput, records/s",
                f"{bus['records_per_s']:,.0f}",
                f"raw {raw['records_per_s']:,.0f} / floor {floor['records_per_s']:,.0f}",
                f"{res['throughput']['ratio_raw']:.2f} / {res['throughput']['ratio_floor']:.2f}",
                ">= 30k; >= 0.6 of floor",
            )
        if want("fanout"):
            console.print(
                "[bold]2. fan-out[/] (1, 4, 16 grants on one dataset; delivered records/s in total)"
            )
            fan: dict[str, Any] = {}
            for k in (1, 4, 16):
                raw = run_pipeline(
                    rig.bootstrap, f"rawfan{k}-{uuid.uuid4().hex[:4]}.", n, 2, "raw", console.print, fanout=k
                )
                bus = bench.bus_throughput(k, decode=False)
                console.print(f"  {k} grants: delivered {bus['delivered']:,} in {bus['seconds']:.2f}s")
                fan[str(k)] = {
                    "bus": bus,
                    "raw": raw,
                    "ratio_raw": bus["delivered_per_s"] / raw["records_per_s"],
                }
                table.add_row(
                    f"2 fan-out {k} grants, delivered/s",
                    f"{bus['delivered_per_s']:,.0f} ({bus['delivered_per_s'] / k:,.0f}/grant)",
                    f"raw {raw['records_per_s']:,.0f}",
                    f"{fan[str(k)]['ratio_raw']:.2f}",
                    "16 grants >= 4x 1 grant" if k == 16 else "",
                )
            fan["gain_16_over_1"] = fan["16"]["bus"]["delivered_per_s"] / fan["1"]["bus"]["delivered_per_s"]
            res["fanout"] = fan
        if want("http"):
            console.print("[bold]3. HTTP publishing[/] (batches of 100 JSON records, 4 clients)")
            raw = run_pipeline(rig.bootstrap, f"rawhttp-{uuid.uuid4().hex[:4]}.", n, 0, "raw", console.print)
            http = bench.http_publish()
            res["http"] = {"bus": http, "raw": raw, "ratio_raw": http["records_per_s"] / raw["records_per_s"]}
            table.add_row(
                "3 HTTP publish, records/s into data",
                f"{http['records_per_s']:,.0f}",
                f"raw produce {raw['records_per_s']:,.0f}",
                f"{res['http']['ratio_raw']:.2f}",
                ">= 30k",
            )
        if want("latency"):
            console.print(f"[bold]4. latency[/] at 2,000 records/s for {lat_seconds:.0f}s")
            bus = bench.latency(2000, lat_seconds)
            one = bench.raw_latency(0, 2000, lat_seconds)
            three = bench.raw_latency(2, 2000, lat_seconds)
            res["latency"] = {"bus": bus, "raw_one_hop": one, "raw_three_hops": three}
            table.add_row(
                "4 latency p50/p99/max ms",
                f"{bus['p50_ms']:.1f} / {bus['p99_ms']:.1f} / {bus['max_ms']:.0f}",
                f"1 hop {one['p50_ms']:.1f}/{one['p99_ms']:.1f}; 3 hops {three['p50_ms']:.1f}/"
                f"{three['p99_ms']:.1f}",
                f"p99 x{bus['p99_ms'] / three['p99_ms']:.1f} of 3 hops",
                "p99 <= 50 ms",
            )
        if want("revocation"):
            console.print(f"[bold]5. revocation[/] under a steady stream, {trials} trials")
            rev = bench.revocation(trials)
            res["revocation"] = rev
            table.add_row(
                "5 revoke -> last delivery ms",
                f"p50 {rev['p50_ms']:.0f} / p99 {rev['p99_ms']:.0f}",
                "EDC 1 s, Ranger 30 s",
                "",
                "p99 <= 250 ms",
            )
        if want("control"):
            console.print("[bold]6. control path[/]")
            ctl = bench.control(50 if args.quick else 300)
            ver = audit_verify(verify_sizes)
            res["control"] = {**ctl, **ver}
            table.add_row("6 grant decisions/s", f"{ctl['decisions_per_s']:,.0f}", "", "", "")
            for size in verify_sizes:
                table.add_row(
                    f"6 audit verify {size:,} events",
                    f"{ver[f'verify_{size}_s']:.2f} s",
                    "",
                    "",
                    "1M <= 10 s" if size == 1_000_000 else "",
                )
        if want("sealing"):
            console.print("[bold]7. sealing cost per record[/] (AES-256-GCM, in this process)")
            seal = sealing.measure(2_000 if args.quick else 20_000)
            res["sealing"] = seal
            table.add_row(
                "7 seal / open, µs per record",
                f"{seal['seal_us']:.2f} / {seal['open_us']:.2f}",
                f"fastavro encode {seal['avro_encode_us']:.2f}",
                f"{seal['ratio_seal_to_avro']:.2f} / {seal['ratio_open_to_avro']:.2f}",
                "",
            )
    finally:
        with console.status("stopping..."):
            rig.stop()
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(res, indent=2, default=str)
    (RESULTS / f"{stamp}.json").write_text(text)
    (RESULTS / "latest.json").write_text(text)
    console.print(f"results written to bench/results/{stamp}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
