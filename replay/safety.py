"""Is this replay safe? Checked before every replay, single or bulk, and stored with it.

- stale: a newer message for the same business key and system was delivered after this
  one failed; replaying would move the target backwards.
- already delivered: the flow shows the target received this very message after all.
- side effects: the target does not deduplicate by idempotency key (or is not declared).
- poison: its last two replays failed the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from replay.models import ApprovalRule, Destination, ReplayAttempt
from tracing.ingest.models import DeadLetter


@dataclass
class Verdict:
    stale: str = ""  # evidence, in words, when stale
    already_delivered: str = ""
    side_effects: str = ""
    poison: str = ""
    needs_approval: list[str] = field(default_factory=list)  # why a second operator must approve

    @property
    def safe(self) -> bool:
        return not (self.stale or self.already_delivered or self.poison)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "safe": self.safe}


def destination_for(address: str) -> Destination | None:
    """The longest declared prefix of this address, if an admin declared one."""
    declared = [d for d in Destination.objects.all() if address.startswith(d.address_prefix)]
    return max(declared, key=lambda d: len(d.address_prefix), default=None)


def address_allowed(address: str) -> bool:
    prefixes = list(settings.TIDELINE_REPLAY_ALLOWED_DESTINATIONS)
    return destination_for(address) is not None or any(address.startswith(p) for p in prefixes)


def replay_verdict(
    *, dead_letter: DeadLetter, address: str, redirected: bool, definition: str | None
) -> Verdict:
    verdict = Verdict()
    verdict.already_delivered = _delivered_after_all(dead_letter)
    verdict.stale = _newer_delivered(dead_letter)
    verdict.poison = failed_twice_alike(dead_letter)
    target = destination_for(address)
    if target is None or not target.deduplicates:
        verdict.side_effects = (
            f"{address} does not deduplicate by Idempotency-Key"
            if target is not None
            else f"{address} has not declared whether it deduplicates"
        )
        verdict.needs_approval.append("the target does not deduplicate")
    if target is not None and target.requires_approval:
        verdict.needs_approval.append(f"replays to {target.address_prefix} need approval")
    if redirected:
        verdict.needs_approval.append("the replay goes to another destination")
    verdict.needs_approval += _rules_requiring_approval(dead_letter.system, definition)
    return verdict


def _rules_requiring_approval(system: str, definition: str | None) -> list[str]:
    reasons = []
    for rule in ApprovalRule.objects.all():
        if (rule.scope, rule.name) in {("system", system), ("definition", definition)}:
            reasons.append(f"replays for {rule.scope} {rule.name} need approval")
    return reasons


def _delivered_after_all(dead_letter: DeadLetter) -> str:
    if not dead_letter.message_id:
        return ""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT system, step, occurred_at, record_id FROM ingest_record
            WHERE message_id = %s AND event = 'delivered' AND occurred_at > %s
            ORDER BY occurred_at DESC LIMIT 1
            """,
            [dead_letter.message_id, dead_letter.first_failed_at],
        )
        row = cursor.fetchone()
    if row is None:
        return ""
    system, step, occurred_at, record_id = row
    return f"{system} recorded {step} delivered at {occurred_at:%Y-%m-%d %H:%M:%S} (record {record_id})"


def _business_keys(dead_letter: DeadLetter) -> list[dict[str, str]]:
    """The business keys of this message, from the audit records that carry its message ID."""
    if not dead_letter.message_id:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT business_keys FROM ingest_record WHERE message_id = %s",
            [dead_letter.message_id],
        )
        found = [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in cursor.fetchall()]
    return [{name: value} for keys in found for name, value in keys.items()]


def _newer_delivered(dead_letter: DeadLetter) -> str:
    """A later message about the same thing that reached the same system after this one died."""
    for key in _business_keys(dead_letter):
        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT message_id, occurred_at FROM ingest_record
                WHERE business_keys @> %s::jsonb AND system = %s AND event = 'delivered'
                  AND occurred_at > %s AND message_id IS DISTINCT FROM %s
                ORDER BY occurred_at DESC LIMIT 1
                """,
                [
                    json.dumps(key),
                    dead_letter.system,
                    dead_letter.first_failed_at,
                    dead_letter.message_id,
                ],
            )
            row = cursor.fetchone()
        if row is not None:
            ((name, value),) = key.items()
            return (
                f"a newer message for {name} {value} ({row[0]}) reached {dead_letter.system} "
                f"at {row[1]:%Y-%m-%d %H:%M:%S}; replaying this one would move it backwards"
            )
    return ""


def failed_twice_alike(dead_letter: DeadLetter) -> str:
    last_two = list(
        ReplayAttempt.objects.filter(dead_letter=dead_letter, state=ReplayAttempt.State.FAILED)
        .order_by("-finished_at")
        .values_list("outcome", flat=True)[:2]
    )
    if len(last_two) == 2 and last_two[0] == last_two[1]:
        return f"its last two replays failed the same way: {last_two[0]}"
    return ""
