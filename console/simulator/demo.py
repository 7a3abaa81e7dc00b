"""What `serve --demo` adds: the example flows, the simulator and its targets.

Try-out mode shows a living console: the seafood company's flow definitions, owners and
example alert rules are loaded, the targets the simulator runs are declared as replay
destinations that deduplicate, and the simulator starts as one more child (it makes its
history while the web server boots and sends it once the server answers). When RabbitMQ is
reachable, QMS's dead letters go through its dead-letter queue and a `consume_dead_letters`
child stores them; else through the dead-letter API.
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
SIMULATOR_SENDER = "simulator"
SIMULATOR_TOKEN_VARIABLE = "TIDELINE_SIMULATOR_TOKEN"  # noqa: S105 - a variable's name, not a secret
MANAGE = str(Path(__file__).resolve().parents[2] / "manage.py")
# The example alert rules: what the seafood company wants to hear about. Each tells the owner
# of the flow or system concerned (their e-mail, from seafood.yaml).
ALERT_RULES = (
    {"name": "Certificates stuck at QMS", "kind": "flow_failed",
     "definition": "order-to-invoice", "step": "certificate_approved", "threshold": 1},
    {"name": "Orders stalled", "kind": "flow_stalled", "definition": "order-to-invoice",
     "threshold": 1},
    {"name": "Stock-sync missing", "kind": "missing", "definition": "stock-sync"},
    {"name": "QMS dead letters piling up", "kind": "dead_letters", "system": "QMS",
     "threshold": 3},
)  # fmt: skip


@dataclass
class Demo:
    token: str
    targets_port: int
    amqp_url: str | None
    # Seed 0 on a fresh console, so the tour's order 4711 is there; later runs a new world.
    seed: int | None = None
    # Set for every child: the broker replays publish to, and where replays may go.
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def targets_origin(self) -> str:
        return f"http://127.0.0.1:{self.targets_port}/"

    def simulator_command(self, url: str) -> list[str]:
        # The token reaches the child through TIDELINE_SIMULATOR_TOKEN (`environment`): on the
        # command line any local user could read it.
        return [
            sys.executable, MANAGE, "simulate", "--url", url, "--targets", "--targets-port", str(self.targets_port), "--amqp-queue", QUEUE,
            *(["--seed", str(self.seed)] if self.seed is not None else []),
        ]  # fmt: skip

    def dead_letter_consumer_command(self) -> list[str] | None:
        if self.amqp_url is None:
            return None
        # The URL (and its password) reaches the child through TIDELINE_AMQP_URL, not argv.
        return [sys.executable, MANAGE, "consume_dead_letters", "--queue", f"{QUEUE}.dlq"]


def demo_prepare(*, port: int) -> Demo:
    """Load the example world's definitions, declare its targets, and issue its token."""
    from replay.models import Destination
    from tracing.flows.models import FlowInstance

    fresh = not FlowInstance.objects.exists()
    call_command("flows", "import", str(SEAFOOD), stdout=io.StringIO())
    demo_alert_rules_load()
    demo = Demo(
        token=_ingest_token(), targets_port=port + 1, amqp_url=_rabbitmq(),
        seed=0 if fresh else None,
    )  # fmt: skip
    demo.environment[SIMULATOR_TOKEN_VARIABLE] = demo.token
    prefixes = [demo.targets_origin]
    # Children read the broker from TIDELINE_AMQP_URL; one set but not answering is emptied
    # for them, so the simulator sends dead letters through the API instead of failing.
    demo.environment["TIDELINE_AMQP_URL"] = demo.amqp_url or ""
    if demo.amqp_url is not None:
        prefixes.append("amqp://127.0.0.1/%2F/queue/")
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


def demo_alert_rules_load() -> None:
    """The example rules, through the same form and service an admin uses; a rule that
    already exists by name is left as the admin may have changed it."""
    from tracing.alerts.forms import AlertRuleForm
    from tracing.alerts.models import AlertRule
    from tracing.alerts.services import alert_rule_save

    for rule in ALERT_RULES:
        if AlertRule.objects.filter(name=rule["name"]).exists():
            continue
        form = AlertRuleForm(data={"to_owner": "on", "is_active": "on", "threshold": 1, **rule})
        if not form.is_valid():
            raise ValueError(f"example alert rule {rule['name']!r}: {form.errors.as_text()}")
        alert_rule_save(form=form, actor="serve --demo")


def _ingest_token() -> str:
    """A new token for the simulator; the one an earlier start issued is revoked, so tokens
    do not pile up start after start."""
    from console.models import IngestToken
    from console.services import ingest_token_revoke

    for earlier in IngestToken.objects.filter(sender=SIMULATOR_SENDER, revoked_at__isnull=True):
        ingest_token_revoke(token=earlier, actor="serve --demo")
    out = io.StringIO()
    call_command(
        "ingest_token", "create", "--sender", SIMULATOR_SENDER, stdout=out, stderr=io.StringIO()
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
