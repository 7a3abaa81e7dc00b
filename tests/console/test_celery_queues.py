"""The flow summarizer's tasks wait on a queue of their own, never behind replay sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from console.celery import app
from replay.tasks import replays_sweep_task
from tracing.flows.tasks import flows_stalled_task, flows_summarize_task

QUEUES = ("celery", "flows")


@pytest.fixture
def channel() -> Iterator[Any]:
    """The broker's channel, both queues emptied before and after (no worker runs here)."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in QUEUES:
            channel.queue_purge(queue)
        yield channel
        for queue in QUEUES:
            channel.queue_purge(queue)


def waiting(channel: Any) -> dict[str, int]:
    return {queue: channel.client.llen(queue) for queue in QUEUES}


def test_flow_tasks_go_to_the_flows_queue_and_nowhere_else(channel: Any) -> None:
    flows_summarize_task.delay()
    flows_stalled_task.delay()
    assert waiting(channel) == {"celery": 0, "flows": 2}


def test_replay_tasks_stay_on_the_default_queue(channel: Any) -> None:
    replays_sweep_task.delay()
    assert waiting(channel) == {"celery": 1, "flows": 0}


def test_a_worker_started_without_queues_consumes_both() -> None:
    assert {queue.name for queue in app.amqp.queues.consume_from.values()} >= set(QUEUES)
