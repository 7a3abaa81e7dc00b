"""The dashboard's windows (the last hour, today, 7 days) and its words for statuses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from tracing.flows.models import FlowInstance

STATUSES = [status for status, _ in FlowInstance.Status.choices]
STATUS_WORDS = {
    "completed": "Completed",
    "in_progress": "In progress",
    "stalled": "Stalled",
    "failed": "Failed",
    "partial": "Partial",
}


@dataclass(frozen=True)
class Window:
    key: str  # "hour", "today", "week": what the page's selector sends
    label: str  # "Last hour": the selector's words
    words: str  # "in the last hour": how a sentence says it
    start: datetime
    now: datetime


WINDOW_KEYS = ("hour", "today", "week")
DEFAULT_WINDOW = "today"


def dashboard_window(key: str, *, now: datetime) -> Window:
    """The window the selector names; an unknown key means today."""
    if key == "hour":
        return Window("hour", "Last hour", "in the last hour", now - timedelta(hours=1), now)
    if key == "week":
        return Window("week", "7 days", "in the last 7 days", now - timedelta(days=7), now)
    # Today in the console's time zone: the day the people reading it are living.
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return Window("today", "Today", "today", midnight, now)
