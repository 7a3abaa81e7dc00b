"""`manage.py consume_dead_letters --amqp-url URL --queue orders.dlq`: RabbitMQ dead-letter
queues into Tideline's dead letters. The consumer itself is tracing.ingest.amqp."""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracing.ingest.amqp import ConsumerOptions, DeadLetterConsumer, DeadLetterQueueUnusable


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_seconds(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {raw}")
    return value


@contextmanager
def _stopped_by_signals(consumer: DeadLetterConsumer) -> Iterator[None]:
    """SIGTERM and SIGINT stop the consumer after its current batch, not in the middle of it."""
    numbers = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.signal(number, lambda *_: consumer.stop()) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class Command(BaseCommand):
    help = (
        "Store the messages of RabbitMQ dead-letter queues as dead letters, with what their "
        "x-death header says; each message is acked once its row is committed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--amqp-url", default=os.environ.get("TIDELINE_AMQP_URL"),
            help="e.g. amqp://user:pass@host:5672//; default TIDELINE_AMQP_URL, which keeps the password out of ps",
        )  # fmt: skip
        parser.add_argument(
            "--queue", dest="queues", action="append", required=True, metavar="QUEUE",
            help="a dead-letter queue to consume; repeat for more",
        )  # fmt: skip
        parser.add_argument("--sender", default="rabbitmq", help="who the rows are attributed to")
        parser.add_argument(
            "--system", help="the system of messages without an x-system header (default: queue)"
        )
        parser.add_argument(
            "--batch", type=_positive_int, default=100,
            help="messages stored per transaction, and the prefetch per queue",
        )  # fmt: skip
        parser.add_argument(
            "--idle-exit", type=_positive_seconds, metavar="SECONDS",
            help="exit after this long without a message (default: run until stopped)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["amqp_url"]:
            raise CommandError(
                "Give --amqp-url or set TIDELINE_AMQP_URL, e.g. amqp://user:pass@rabbitmq:5672//."
            )
        sender = options["sender"].strip()
        if not sender:
            raise CommandError("--sender must name who delivers, e.g. rabbitmq.")
        consumer = DeadLetterConsumer(
            ConsumerOptions(
                amqp_url=options["amqp_url"],
                queues=options["queues"],
                sender=sender,
                system=options["system"],
                batch_size=options["batch"],
                idle_exit=options["idle_exit"],
            )
        )
        with _stopped_by_signals(consumer):
            try:
                totals = consumer.run()
            except DeadLetterQueueUnusable as error:
                raise CommandError(str(error)) from None
        self.stdout.write(
            f"Dead letters: {totals.created} new, {totals.reopened} reopened, "
            f"{totals.duplicates} already stored, {totals.refused} refused."
        )
