"""The simulator sends its history the tour's flows first and then newest first, so a fresh
`make run` shows order 4711, the QMS dead letters and today's flows before older days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from console.simulator.backfill import arrival_key
from console.simulator.world import world_plan

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # a Monday morning: the weekend behind it


def test_the_tour_flows_come_first_and_the_rest_newest_first() -> None:
    world = world_plan(seed=0, now=NOW, history=timedelta(hours=60), rate_per_minute=0.5)
    key = arrival_key(world)
    order_keys = {order.number: key(order.number, 0.0) for order in world.orders}
    refused = [o.number for o in world.orders if world.qms_down_at(o.certificate_at)]
    tour = {str(number) for number in range(4701, 4712)} | set(refused)
    last_stock = world.stock_runs[-1].correlation_id

    first = [number for number, _ in sorted(order_keys.items(), key=lambda item: item[1])]
    assert "4711" in refused and len(refused) >= 5
    assert set(first[: len(tour)]) == tour
    assert key(last_stock, 0.0) < min(order_keys[number] for number in first[len(tour) :])
    rest = [o for o in world.orders if o.number not in tour]
    assert [o.number for o in sorted(rest, key=lambda o: order_keys[o.number])] == [
        o.number for o in reversed(rest)
    ]
    # FIN's invoice run carries no order's ID: it goes by its own time among the others.
    hour_ago = NOW - timedelta(hours=1)
    older = next(order for order in reversed(rest) if order.created_at < hour_ago)
    assert key(None, hour_ago.timestamp()) < order_keys[older.number]
