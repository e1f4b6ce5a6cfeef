"""The cost of sealing, per record, measured in this process in the same run as its baseline.

    python -m bench.sealing [--records 20000]     (also a row of `python -m bench`)

Seal and open a licence record the way the pipeline and the subscriber do (AES-256-GCM, a fresh nonce,
the associated data of a ``deliver.<grant>`` record with its packed ``bus-meta``), against the cost of
encoding the same record with fastavro, which every hop pays anyway. Absolute microseconds move with
the machine's load; the ratio to the Avro encode is the figure to compare.
"""

from __future__ import annotations

import argparse
import io
import secrets
import time
from typing import Any

import fastavro

from bus.exchange.envelope import Meta, Sealer
from bus.samples import licence_record, licence_schema
from bus.vocab import TopicKind


def _per_record_us(fn: Any, items: list[Any]) -> float:
    best = float("inf")
    for _ in range(3):  # the best of three: the least disturbed by the rest of the machine
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        best = min(best, time.perf_counter() - t0)
    return best / len(items) * 1e6


def measure(n: int = 20_000) -> dict[str, float]:
    parsed = fastavro.parse_schema(licence_schema())
    records = [licence_record(i) for i in range(n)]

    def encode(r: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, r)
        return buf.getvalue()

    values = [encode(r) for r in records]
    sealer = Sealer("1.0", secrets.token_bytes(32))
    metas = [
        Meta(secrets.token_hex(16), "market", "licences", 1, 1_700_000_000 + i, "gr-1", "check", "1.0").pack()
        for i in range(n)
    ]
    items = list(zip(metas, values, strict=True))
    sealed = [(m, sealer.seal(TopicKind.DELIVER, "gr-1", m, b"key", v)) for m, v in items]
    avro_us = _per_record_us(encode, records)
    seal_us = _per_record_us(lambda it: sealer.seal(TopicKind.DELIVER, "gr-1", it[0], b"key", it[1]), items)
    open_us = _per_record_us(lambda it: sealer.open(TopicKind.DELIVER, "gr-1", it[0], it[1]), sealed)
    return {
        "records": n,
        "value_bytes": sum(len(v) for v in values) / n,
        "seal_us": seal_us,
        "open_us": open_us,
        "avro_encode_us": avro_us,
        "ratio_seal_to_avro": seal_us / avro_us,
        "ratio_open_to_avro": open_us / avro_us,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sealing", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records sealed and opened")
    r = measure(parser.parse_args(argv).records)
    print(
        f"{r['records']:,} records of {r['value_bytes']:.0f} B: "
        f"seal {r['seal_us']:.2f} µs, open {r['open_us']:.2f} µs; "
        f"fastavro encode {r['avro_encode_us']:.2f} µs -> seal/encode {r['ratio_seal_to_avro']:.2f}, "
        f"open/encode {r['ratio_open_to_avro']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
