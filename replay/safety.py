"""Is this replay safe? Checked before every replay, single or bulk, and stored with it.

- stale: a newer message for the same business key and system was delivered after this
  one failed; replaying would move the target backwards.
- already delivered: the flow shows the target received this very message after all.
- side effects: the target does not deduplicate by idempotency key (or is not declared).
- poison: its last two replays failed the same way.

The facts behind a verdict are read for many dead letters at once (`safety_evidence`): a
bulk job's chunk costs a few set-based queries, not a few per message. A single replay
reads the same facts for its one dead letter, through the same queries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from replay.models import ApprovalRule, Destination
from tracing.flows.models import FlowInstance
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


@dataclass
class Evidence:
    """What the database says about some dead letters, for their verdicts; by dead letter ID."""

    destinations: list[Destination]
    approval_rules: set[tuple[str, str]]
    delivered_after_all: dict[int, str]
    newer_delivered: dict[int, str]
    poison: dict[int, str]
    definitions: dict[str, str]  # correlation ID → the name of its flow's definition

    def definition_of(self, dead_letter: DeadLetter) -> str | None:
        return self.definitions.get(dead_letter.correlation_id or "")


def safety_evidence(dead_letters: Sequence[DeadLetter]) -> Evidence:
    """Everything a verdict needs about these dead letters, in a handful of queries."""
    return Evidence(
        destinations=list(Destination.objects.all()),
        approval_rules=set(ApprovalRule.objects.values_list("scope", "name")),
        delivered_after_all=_delivered_after_all(dead_letters),
        newer_delivered=_newer_delivered(dead_letters),
        poison=poison_of([dead_letter.id for dead_letter in dead_letters]),
        definitions=_definitions(dead_letters),
    )


def destination_for(
    address: str, destinations: list[Destination] | None = None
) -> Destination | None:
    """The longest declared prefix of this address, if an admin declared one."""
    known = Destination.objects.all() if destinations is None else destinations
    declared = [d for d in known if address.startswith(d.address_prefix)]
    return max(declared, key=lambda d: len(d.address_prefix), default=None)


def address_allowed(address: str, destinations: list[Destination] | None = None) -> bool:
    prefixes = list(settings.TIDELINE_REPLAY_ALLOWED_DESTINATIONS)
    return destination_for(address, destinations) is not None or any(
        address.startswith(p) for p in prefixes
    )


def replay_verdict(
    *, dead_letter: DeadLetter, address: str, redirected: bool, evidence: Evidence
) -> Verdict:
    verdict = Verdict()
    verdict.already_delivered = evidence.delivered_after_all.get(dead_letter.id, "")
    verdict.stale = evidence.newer_delivered.get(dead_letter.id, "")
    verdict.poison = evidence.poison.get(dead_letter.id, "")
    target = destination_for(address, evidence.destinations)
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
    definition = evidence.definition_of(dead_letter)
    verdict.needs_approval += [
        f"replays for {scope} {name} need approval"
        for scope, name in sorted(evidence.approval_rules)
        if (scope, name) in {("system", dead_letter.system), ("definition", definition)}
    ]
    return verdict


def _definitions(dead_letters: Sequence[DeadLetter]) -> dict[str, str]:
    correlations = {d.correlation_id for d in dead_letters if d.correlation_id}
    if not correlations:
        return {}
    found = FlowInstance.objects.filter(
        correlation_id__in=correlations, definition__isnull=False
    ).values_list("correlation_id", "definition__name")
    return dict(found)


def _delivered_after_all(dead_letters: Sequence[DeadLetter]) -> dict[int, str]:
    """A `delivered` record for the very message, after it died: the target has it."""
    asked = [d for d in dead_letters if d.message_id]
    if not asked:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT asked.id, found.system, found.step, found.occurred_at, found.record_id
            FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[]) AS asked(id, message_id, failed_at)
            CROSS JOIN LATERAL (
                SELECT system, step, occurred_at, record_id FROM ingest_record
                WHERE message_id = asked.message_id AND event = 'delivered'
                  AND occurred_at > asked.failed_at
                ORDER BY occurred_at DESC LIMIT 1
            ) AS found
            """,
            [
                [d.id for d in asked],
                [d.message_id for d in asked],
                [d.first_failed_at for d in asked],
            ],
        )
        rows = cursor.fetchall()
    return {
        dead_letter_id: f"{system} recorded {step} delivered at {occurred_at:%Y-%m-%d %H:%M:%S} (record {record_id})"
        for dead_letter_id, system, step, occurred_at, record_id in rows
    }


def _business_keys(dead_letters: Sequence[DeadLetter]) -> list[tuple[DeadLetter, dict[str, str]]]:
    """Each message's business keys, one pair per key, from the audit records with its ID."""
    by_message: dict[str, list[DeadLetter]] = {}
    for dead_letter in dead_letters:
        if dead_letter.message_id:
            by_message.setdefault(dead_letter.message_id, []).append(dead_letter)
    if not by_message:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT message_id, business_keys FROM ingest_record WHERE message_id = ANY(%s)",
            [list(by_message)],
        )
        found = [(m, json.loads(k) if isinstance(k, str) else k) for m, k in cursor.fetchall()]
    return [
        (dead_letter, {name: value})
        for message_id, keys in found
        for name, value in keys.items()
        for dead_letter in by_message[message_id]
    ]


def _newer_delivered(dead_letters: Sequence[DeadLetter]) -> dict[int, str]:
    """A later message about the same thing that reached the same system after this one died."""
    asked = _business_keys(dead_letters)
    if not asked:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT asked.n, found.message_id, found.occurred_at
            FROM unnest(%s::int[], %s::jsonb[], %s::text[], %s::timestamptz[], %s::text[])
                 AS asked(n, key, system, failed_at, message_id)
            CROSS JOIN LATERAL (
                SELECT message_id, occurred_at FROM ingest_record
                WHERE business_keys @> asked.key AND system = asked.system AND event = 'delivered'
                  AND occurred_at > asked.failed_at AND message_id IS DISTINCT FROM asked.message_id
                ORDER BY occurred_at DESC LIMIT 1
            ) AS found
            ORDER BY asked.n
            """,
            [
                list(range(len(asked))),
                [json.dumps(key) for _, key in asked],
                [d.system for d, _ in asked],
                [d.first_failed_at for d, _ in asked],
                [d.message_id for d, _ in asked],
            ],
        )
        rows = cursor.fetchall()
    stale: dict[int, str] = {}
    for n, message_id, occurred_at in rows:
        dead_letter, key = asked[n]
        ((name, value),) = key.items()
        stale.setdefault(
            dead_letter.id,
            f"a newer message for {name} {value} ({message_id}) reached {dead_letter.system} "
            f"at {occurred_at:%Y-%m-%d %H:%M:%S}; replaying this one would move it backwards",
        )
    return stale


def poison_of(dead_letter_ids: Sequence[int]) -> dict[int, str]:
    """The dead letters whose last two replays failed the same way, with that error."""
    if not dead_letter_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT dead_letter_id, array_agg(outcome ORDER BY n) FROM (
                SELECT dead_letter_id, outcome,
                       row_number() OVER (PARTITION BY dead_letter_id ORDER BY finished_at DESC) AS n
                FROM replay_replayattempt
                WHERE dead_letter_id = ANY(%s) AND state = 'failed'
            ) AS failed
            WHERE n <= 2 GROUP BY dead_letter_id
            """,
            [list(dead_letter_ids)],
        )
        rows = cursor.fetchall()
    return {
        dead_letter_id: f"its last two replays failed the same way: {last_two[0]}"
        for dead_letter_id, last_two in rows
        if len(last_two) == 2 and last_two[0] == last_two[1]
    }
