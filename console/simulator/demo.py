"""What `serve --demo` adds: the example flows, the simulator and its targets.

Try-out mode shows a living console: the seafood company's flow definitions and owners are
loaded, the targets the simulator runs are declared as replay destinations that
deduplicate, and once the web server answers the simulator starts as one more child. When
RabbitMQ is reachable, QMS's dead letters go through its dead-letter queue and a
`consume_dead_letters` child stores them; else through the dead-letter API.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from django.core.management import call_command
from kombu import Connection

from console.simulator.failures import queue_arguments

SEAFOOD = Path(__file__).resolve().parents[2] / "tracing" / "flows" / "fixtures" / "seafood.yaml"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
QUEUE = "qms.certificates"
MANAGE = str(Path(__file__).resolve().parents[2] / "manage.py")


@dataclass
class Demo:
    token: str
    targets_port: int
    amqp_url: str | None
    # Set for every child: the broker replays publish to, and where replays may go.
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def targets_origin(self) -> str:
        return f"http://127.0.0.1:{self.targets_port}/"

    def simulator_command(self, url: str) -> list[str]:
        return [
            sys.executable, MANAGE, "simulate", "--url", url, "--token", self.token,
            "--targets", "--targets-port", str(self.targets_port), "--amqp-queue", QUEUE,
        ]  # fmt: skip

    def dead_letter_consumer_command(self) -> list[str] | None:
        if self.amqp_url is None:
            return None
        # The URL (and its password) reaches the child through TIDELINE_AMQP_URL, not argv.
        return [sys.executable, MANAGE, "consume_dead_letters", "--queue", f"{QUEUE}.dlq"]


def demo_prepare(*, port: int) -> Demo:
    """Load the example world's definitions, declare its targets, and issue its token."""
    from replay.models import Destination

    call_command("flows", "import", str(SEAFOOD), stdout=io.StringIO())
    demo = Demo(token=_ingest_token(), targets_port=port + 1, amqp_url=_rabbitmq())
    prefixes = [demo.targets_origin]
    if demo.amqp_url is not None:
        prefixes.append("amqp://127.0.0.1/%2F/queue/")
        demo.environment["TIDELINE_AMQP_URL"] = demo.amqp_url
    for prefix in prefixes:
        Destination.objects.update_or_create(
            address_prefix=prefix,
            defaults={
                "deduplicates": True, "side_effects": False,
                "note": "the simulator's stand-in receivers (serve --demo)",
            },
        )  # fmt: skip
    demo.environment["TIDELINE_REPLAY_ALLOWED_DESTINATIONS"] = ",".join(prefixes)
    return demo


def _ingest_token() -> str:
    out = io.StringIO()
    call_command(
        "ingest_token", "create", "--sender", "simulator", stdout=out, stderr=io.StringIO()
    )
    return out.getvalue().strip().splitlines()[-1]


def _rabbitmq() -> str | None:
    """The broker's URL if it answers, with the QMS queues declared so the consumer can start."""
    url = os.environ.get("TIDELINE_AMQP_URL") or DEFAULT_AMQP_URL
    try:
        with Connection(url, connect_timeout=2, heartbeat=0) as broker:
            broker.ensure_connection(max_retries=0)
            channel = broker.channel()
            channel.queue_declare(queue=f"{QUEUE}.dlq", durable=True, auto_delete=False)
            channel.queue_declare(
                queue=QUEUE, durable=True, auto_delete=False,
                arguments=queue_arguments(f"{QUEUE}.dlq"),
            )  # fmt: skip
    except Exception:
        return None
    return url
