"""Template filters of the flow page."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from django import template

from tracing.flows.sentences import clock as status_clock

register = template.Library()
MARKS = {"yes": "✓", "no": "✗"}


@register.filter
def clock(at: datetime | None, now: datetime) -> str:
    """14:02 today, "Fri 13 Mar 14:02" another day; "—" for no time at all."""
    return status_clock(at, now) if at is not None else "—"


@register.filter
def mark(answer: str) -> str:
    """✓ for yes, ✗ for no, nothing for unknown (its words say it)."""
    return MARKS.get(answer, "")


@register.filter
def words(name: str) -> str:
    """in_progress → in progress."""
    return name.replace("_", " ")


@register.filter
def web_url(url: str) -> str:
    """The URL if it is http(s), else "": a runbook must never become a javascript: link."""
    return url if urlsplit(url).scheme in ("http", "https") else ""
