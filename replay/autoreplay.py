"""Auto-replay: a target that was down answers again, and its dead letters go out by themselves.

Beat polls every enabled rule's health URL. When it answers 2xx and dead letters of the
rule's error class wait for the rule's destination, the rule starts ONE ordinary bulk
replay over them (`bulk_replay_create`: the same preview, safety checks, skips, rate and
trail), with the rule as the named actor. No person approves it, because the destination
promised to drop a message whose Idempotency-Key it has seen; an approval an admin asked
for on a system, a flow or the destination still holds, and the job then waits for it.

A rule takes each death once: only dead letters that nobody (person, bulk job or rule) has
tried to replay since they last failed. One whose replay failed waits for a person instead
of going round every 15 seconds; when the runtime dead-letters it again, it is a new death.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import httpx
from django.db import transaction
from django.db.models import Exists, OuterRef

from console.services import journal_append
from replay import transports
from replay.bulk import Selection, bulk_replay_create, dead_letters_selected
from replay.models import (
    RATE_PER_SECOND_MAX,
    AutoReplayRule,
    BulkReplay,
    Destination,
    ReplayAttempt,
)
from replay.safety import address_allowed
from replay.services import ReplayRefused, broker_url
from replay.transports.common import in_words

if TYPE_CHECKING:
    from django.db.models import QuerySet

HEALTH_TIMEOUT_SECONDS = 3.0
HEALTH_CONNECT_SECONDS = 2.0
# A job in one of these states is still the rule's business: no second one starts.
JOB_OPEN = (BulkReplay.State.PENDING_APPROVAL, BulkReplay.State.RUNNING, BulkReplay.State.PAUSED)
_TRANSPORT_OF_SCHEME = {
    "http": "http", "https": "http", "amqp": "amqp", "amqps": "amqp",
    "redis": "redis", "rediss": "redis", "redis+socket": "redis",
}  # fmt: skip


@dataclass(frozen=True)
class HealthCheck:
    healthy: bool
    result: str  # in words, for the admin list: "HTTP 503 Service Unavailable"


def health_address(url: str) -> str:
    """The URL exactly as the poll requests it; ValueError says why it is not one."""
    try:
        parsed = httpx.URL(url)
        address = transports.destination_address("http", {"url": url}, "")
    except (httpx.InvalidURL, transports.DestinationInvalid) as invalid:
        raise ValueError(f"The health URL {url!r} is not an http:// or https:// URL.") from invalid
    if parsed.userinfo or parsed.query or parsed.fragment:
        raise ValueError("A health URL carries no user name, password, query or fragment.")
    return address


def health_url_problem(url: str) -> str:
    """Why the poll may not call this URL, or "" when it may (checked on save and every poll)."""
    try:
        address = health_address(url)
    except ValueError as invalid:
        return str(invalid)
    if not address_allowed(address):
        return (
            f"{address} is not on the replay allow-list; an admin declares it as a destination "
            "or in TIDELINE_REPLAY_ALLOWED_DESTINATIONS."
        )
    return ""


def auto_replay_rule_problems(rule: AutoReplayRule) -> dict[str, list[str]]:
    """What makes this rule unsafe to run, by field (empty: none)."""
    problems: dict[str, list[str]] = {}
    destination = Destination.objects.filter(id=rule.destination_id).first()
    if destination is not None and not destination.deduplicates:
        problems["destination"] = [
            f"{destination.address_prefix} does not deduplicate by Idempotency-Key, so its "
            "replays need a person's approval; auto-replay is only for targets that deduplicate."
        ]
    if rule.health_url and (problem := health_url_problem(rule.health_url)):
        problems["health_url"] = [problem]
    if rule.rate_per_second is not None and not 0 < rule.rate_per_second <= RATE_PER_SECOND_MAX:
        problems["rate_per_second"] = [
            f"The rate must be more than 0 and at most {RATE_PER_SECOND_MAX:,} messages per second."
        ]
    return problems


def health_check(url: str) -> HealthCheck:
    """One GET, short timeouts, redirects not followed (they could lead anywhere)."""
    problem = health_url_problem(url)
    if problem:
        return HealthCheck(False, f"not called: {problem}")
    address = health_address(url)
    timeout = httpx.Timeout(HEALTH_TIMEOUT_SECONDS, connect=HEALTH_CONNECT_SECONDS)
    try:
        # Streamed and closed unread: only the status matters, whatever the body's size.
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", address) as response,
        ):
            status, reason = response.status_code, response.reason_phrase
    except httpx.TimeoutException:
        return HealthCheck(False, f"no answer from {address} within {HEALTH_TIMEOUT_SECONDS:g} s")
    except httpx.HTTPError as error:
        return HealthCheck(False, f"could not reach {address}: {in_words(error)}")
    return HealthCheck(200 <= status < 300, f"HTTP {status} {reason}".strip())


def auto_replay_poll(*, now: datetime) -> dict[str, str]:
    """Beat: every enabled rule checks its target and perhaps starts a job; what each did."""
    rules = AutoReplayRule.objects.filter(enabled=True).values_list("id", "name")
    return {name: auto_replay_rule_poll(rule_id=rule_id, now=now) for rule_id, name in rules}


def auto_replay_rule_poll(*, rule_id: int, now: datetime) -> str:
    rule = AutoReplayRule.objects.filter(id=rule_id, enabled=True).first()
    if rule is None:
        return "disabled"
    check = health_check(rule.health_url)  # network I/O: before the transaction
    with transaction.atomic():
        # The row lock makes one poll at a time decide for this rule: two never start two jobs.
        rule = (
            AutoReplayRule.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("destination", "last_job")
            .filter(id=rule_id, enabled=True)
            .first()
        )
        if rule is None:
            return "polled elsewhere"
        rule.last_checked_at, rule.last_check_healthy = now, check.healthy
        outcome = _job_start_if_due(rule, check, now)
        rule.last_check = f"{check.result}; {outcome}"[:500]
        rule.save(update_fields=["last_checked_at", "last_check_healthy", "last_check", "last_job"])
    return outcome


def _job_start_if_due(rule: AutoReplayRule, check: HealthCheck, now: datetime) -> str:
    """What the rule did this time, in words."""
    if not check.healthy:
        return "waiting for the target"
    previous = rule.last_job
    if previous is not None and previous.state in JOB_OPEN:
        return f"bulk replay {previous.id} is still {previous.get_state_display().lower()}"
    # The destination or the allow-list may have changed since the rule was saved.
    problems = auto_replay_rule_problems(rule)
    if problems:
        return "no replay: " + " ".join(p for found in problems.values() for p in found)
    bound = _dead_letters_bound_for(rule.destination, error=rule.error_class)
    if not bound:
        return "nothing to replay"
    selection = Selection(error=rule.error_class, dead_letter_ids=tuple(bound))
    try:
        job = bulk_replay_create(
            selection=selection, rate_per_second=rule.rate_per_second, include_stale=False,
            reason=f"{rule.actor}: {rule.health_url} answered {check.result}", actor=rule.actor, now=now,
        )  # fmt: skip
    except ReplayRefused as refused:
        return f"no replay: {refused.message}"
    rule.last_job = job
    journal_append(actor=rule.actor, action="auto_replay_rule.start", subject=f"auto_replay_rule:{rule.id}",
                   details={"bulk_replay": str(job.id), "health": check.result, "matched": job.matched,
                            "state": job.state})  # fmt: skip
    return f"started bulk replay {job.id} ({job.matched} dead letters, {job.get_state_display().lower()})"


def _dead_letters_bound_for(destination: Destination, *, error: str) -> list[int]:
    """IDs of the dead letters with this error, untried since they last failed, whose replays
    this destination (and not a longer, more specific prefix) would receive: the address is
    computed as for the replay itself."""
    scheme = destination.address_prefix.partition("://")[0]
    tried = ReplayAttempt.objects.filter(
        dead_letter=OuterRef("pk"), requested_at__gte=OuterRef("last_failed_at")
    )
    letters: QuerySet = (
        dead_letters_selected(Selection(error=error))
        .filter(transport=_TRANSPORT_OF_SCHEME.get(scheme, ""))
        .exclude(Exists(tried))
    )
    declared = sorted(Destination.objects.all(), key=lambda d: len(d.address_prefix), reverse=True)
    bound = []
    for letter_id, transport, where in letters.values_list("id", "transport", "destination"):
        try:
            address = transports.destination_address(transport, where, broker_url(transport))
        except transports.DestinationInvalid:
            continue  # a replay could not go anywhere; bulk would skip it too
        nearest = next((d for d in declared if address.startswith(d.address_prefix)), None)
        if nearest is not None and nearest.id == destination.id:
            bound.append(letter_id)
    return bound
