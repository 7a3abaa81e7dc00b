"""Delivery and evaluation in a real Celery worker: retries until delivered, and beat's schedule."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.utils import timezone

from tests.receivers import Receiver
from tests.tracing.seafood import Runtime, definitions_load
from tracing.alerts.evaluation import evaluate
from tracing.alerts.models import AlertRule, Channel, DeliveryAttempt, Incident, Notification

SECRET = "tla_the-receivers-shared-secret"


def qms_dead_letters_rule(receiver: Receiver) -> AlertRule:
    channel = Channel.objects.create(
        name="ops-webhook",
        kind="webhook",
        url=receiver.url,
        secret=SECRET,
        secret_prefix=SECRET[:12],
    )
    rule = AlertRule.objects.create(
        name="qms letters", kind="dead_letters", system="QMS", threshold=0, to_owner=False
    )
    rule.channels.set([channel])
    return rule


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_webhook_down_three_times_is_retried_until_delivered_with_one_delivery_id(
    worker: Callable[..., Any], receiver: Receiver
) -> None:
    definitions_load()
    Runtime.connected().dead_letter(
        "QMS", timezone.now() - timedelta(minutes=5), correlation="PO-1"
    )
    qms_dead_letters_rule(receiver)
    receiver.statuses = [503, 503, 503]
    worker()

    evaluate(now=timezone.now())  # commits, and queues the delivery for the worker
    posts = receiver.wait_for(4, seconds=60)

    assert [post["answered"] for post in posts] == [503, 503, 503, 200]
    for post in posts:
        expected = hmac.new(SECRET.encode(), post["body"], hashlib.sha256).hexdigest()
        assert post["headers"]["X-Tideline-Signature"] == f"sha256={expected}"
    delivery_ids = {json.loads(post["body"])["delivery_id"] for post in posts}
    assert delivery_ids == {post["headers"]["X-Tideline-Delivery"] for post in posts}
    assert len(delivery_ids) == 1, "a repeat carries the same delivery ID"
    assert len({post["body"] for post in posts}) == 1, "and the same bytes"
    notification = Notification.objects.get()
    assert wait_until(lambda: Notification.objects.get().state == "delivered", 10)
    assert str(notification.delivery_id) in delivery_ids
    outcomes = list(DeliveryAttempt.objects.order_by("at").values_list("outcome", "status_code"))
    assert outcomes == [("failed", 503)] * 3 + [("delivered", 200)]
    time.sleep(1)
    assert len(receiver.deliveries) == 4, "delivered: no more tries"


def test_beat_runs_the_evaluation_in_a_worker(
    worker: Callable[..., Any], receiver: Receiver
) -> None:
    definitions_load()
    Runtime.connected().dead_letter(
        "QMS", timezone.now() - timedelta(minutes=5), correlation="PO-2"
    )
    qms_dead_letters_rule(receiver)

    worker(beat=True, env={"TIDELINE_ALERT_EVALUATE_SECONDS": "1"})

    assert wait_until(Incident.objects.exists, 60), "beat never ran the evaluation"
    posts = receiver.wait_for(1, seconds=30)
    assert len(posts) == 1
    assert json.loads(posts[0]["body"])["summary"].startswith("1 dead letter waiting for QMS")
