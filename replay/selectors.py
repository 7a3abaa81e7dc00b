"""Reads of dead letters shared by the console, the API and bulk replay.

One filter, `dead_letters_matching`, for all three. Its time window is the dead letter's
last failure, given as times (`since`, `until`) or as ages an operator says out loud:
`age=1h` (failed in the last hour), `older_than=15m` (failed more than 15 minutes ago).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_duration

from tracing.flows.models import FlowInstance
from tracing.ingest.models import DeadLetter

AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
AGE_PART = re.compile(r"(\d{1,6})([smhdw])")
# Past ten years every dead letter matches; a larger age would overflow a datetime.
AGE_LIMIT = timedelta(days=3650)
AGE_HELP = "a duration such as 30m, 1h, 1h30m, 2d or 1w (s, m, h, d, w)"


class AgeInvalid(ValueError):
    """An age that is not a duration an operator could mean; the message says what is."""


def age_parse(text: str) -> timedelta:
    """`90m`, `1h30m`, `2d`, `1w` (or an ISO 8601 duration such as `PT1H`) as a timedelta."""
    compact = text.strip().lower().replace(" ", "")
    if compact and AGE_PART.sub("", compact) == "":
        age = sum(
            (timedelta(**{AGE_UNITS[unit]: int(n)}) for n, unit in AGE_PART.findall(compact)),
            timedelta(),
        )
    else:
        try:
            age = parse_duration(text.strip()) or timedelta(-1)
        except OverflowError:  # P1000000000D: more days than a timedelta holds
            age = AGE_LIMIT * 2
        if age < timedelta(0):
            raise AgeInvalid(f"{text!r} is not {AGE_HELP}")
    if not timedelta(0) < age <= AGE_LIMIT:
        raise AgeInvalid(f"{text!r} must be more than 0 and at most {AGE_LIMIT.days} days")
    return age


def failed_window(
    wanted: dict[str, Any], now: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """The last-failure window of a filter as times: (since, until), either may be None.

    Ages count back from `now`; given both a time and an age, the narrower bound holds.
    """
    now = now or timezone.now()
    starts = [wanted.get("since"), now - wanted["age"] if wanted.get("age") else None]
    ends = [wanted.get("until"), now - wanted["older_than"] if wanted.get("older_than") else None]
    since = max((start for start in starts if start), default=None)
    until = min((end for end in ends if end), default=None)
    return since, until


def window_problem(since: datetime | None, until: datetime | None) -> str | None:
    """Why a window holds no time at all, if it holds none: the filter would match nothing."""
    if since and until and since >= until:
        return (
            f"failed since {since:%Y-%m-%d %H:%M} and before {until:%Y-%m-%d %H:%M} "
            "leaves no time between them"
        )
    return None


def dead_letters_matching(
    wanted: dict[str, Any], *, now: datetime | None = None
) -> QuerySet[DeadLetter]:
    """Dead letters by system, flow definition, state, error text and when they last failed
    (since, until, age, older_than); an empty or missing filter filters nothing."""
    letters = DeadLetter.objects.all()
    if wanted.get("system"):
        letters = letters.filter(system=wanted["system"])
    if wanted.get("definition"):
        flows = FlowInstance.objects.filter(definition__name=wanted["definition"])
        letters = letters.filter(correlation_id__in=flows.values("correlation_id"))
    if wanted.get("state"):
        letters = letters.filter(state=wanted["state"])
    if wanted.get("error"):
        letters = letters.filter(error__icontains=wanted["error"])
    since, until = failed_window(wanted, now)
    if since:
        letters = letters.filter(last_failed_at__gte=since)
    if until:
        letters = letters.filter(last_failed_at__lt=until)
    return letters
