"""Scale-out (docker-compose runs pipeline replicas with ``--group bus.pipeline``): pipelines that *subscribe*
as one Kafka consumer group share the ingress partitions, pick up topics created after they started, and
together deliver every record (R14: nothing lost when the work is spread)."""

from __future__ import annotations

import dataclasses
import time

from bus.exchange.pipeline import Pipeline
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import market_and_psb, publisher, receive, subscriber

N = 400


def test_r14_pipeline_replicas_in_one_group_share_new_topics_and_deliver_everything(
    ctx, agency_factory, dataset_factory
) -> None:
    group = f"{ctx.topics.prefix}bus.pipeline"
    # as in docker-compose: the bus's own pipeline (BUS_WORKER_GROUP_MODE) next to a `--group` replica
    in_bus = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update={"worker_group_mode": True}))
    routers = [Pipeline(in_bus), Pipeline(ctx, group=group)]
    assert routers[0].group_id == group and all(r.group_mode for r in routers)
    for w in routers:
        w.start()
    try:
        # the dataset, its topics and the grant come after the replicas joined: they must find them
        market, market_key, psb, psb_key, ds, g = market_and_psb(ctx, agency_factory, dataset_factory)
        with publisher(ctx, market, market_key, ds) as pub:
            ids = {pub.publish(licence_record(i), key=f"k{i}") for i in range(N)}
            pub.flush()
        with subscriber(ctx, psb, psb_key, g["id"]) as sub:
            got = receive(sub, N, timeout=60)
        assert {d.record_id for d in got} == ids
        poll_until(lambda: sum(r.delivered for r in routers) >= N, timeout=20, what="delivery counted")
        assert all(r.delivered > 0 for r in routers), "both replicas took a share of the partitions"
        assert sum(r.delivered for r in routers) < 2 * N, "partitions are shared, not each routed twice"
    finally:
        for w in routers:
            w.stop()


def test_r14_a_replica_joining_mid_stream_rebalances_without_losing_records_or_a_worker(
    ctx, agency_factory, dataset_factory
) -> None:
    """A second pipeline joining under load revokes partitions from the first while it works; the first
    must survive the rebalance (its commit for a revoked partition is refused) and nothing is lost."""
    group = f"{ctx.topics.prefix}bus.pipeline"
    first, second = Pipeline(ctx, group=group), Pipeline(ctx, group=group)
    first.start()
    try:
        market, market_key, psb, psb_key, ds, g = market_and_psb(ctx, agency_factory, dataset_factory)
        ids: set[str] = set()
        seen: set[str] = set()
        with publisher(ctx, market, market_key, ds) as pub, subscriber(ctx, psb, psb_key, g["id"]) as sub:

            def drain() -> set[str]:
                seen.update(d.record_id for d in sub.poll(1000, 0.05))
                return seen

            def publish(count: int) -> None:
                for _ in range(count):
                    ids.add(pub.publish(licence_record(len(ids)), key=f"k{len(ids)}"))
                pub.flush()

            publish(50)
            poll_until(lambda: drain(), timeout=60, what="the first pipeline delivering")
            second.start()  # joins mid-stream: a rebalance while the first works
            deadline = time.monotonic() + 60
            while (second.delivered == 0 or len(ids) < N) and time.monotonic() < deadline:
                publish(20)  # a steady stream until the replica has taken its share
                drain()
            poll_until(lambda: ids <= drain(), timeout=60, what="every record delivered")
        assert second.delivered > 0, "the replica that joined took a share"
        assert first.alive() and second.alive(), "a rebalance must not stop a worker"
    finally:
        for w in (second, first):
            w.stop()
