"""TIDELINE_PAYLOAD_RETENTION: how many days each system's payloads are kept.

`default=90d,QMS=3650d,WMS=30d`: a certificate is evidence for years, a stock snapshot for
weeks. Systems not named keep the default. Parsed when settings load, so a typo stops the
start with a message naming it rather than pruning the wrong thing.
"""

from __future__ import annotations

import re

from django.core.exceptions import ImproperlyConfigured

_ITEM = re.compile(r"^([A-Za-z0-9_-]{1,50})=(\d{1,6})d$")
DEFAULT = "default"


def retention_policy_parse(text: str) -> dict[str, int]:
    """'default=90d,QMS=3650d' → {'default': 90, 'QMS': 3650}; a default is required."""
    policy: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _ITEM.match(item)
        if not match:
            raise ImproperlyConfigured(
                f"TIDELINE_PAYLOAD_RETENTION: {item[:60]!r} is not SYSTEM=<days>d (e.g. QMS=3650d)"
            )
        name, days = match.group(1), int(match.group(2))
        if days < 1:
            raise ImproperlyConfigured(f"TIDELINE_PAYLOAD_RETENTION: {name} keeps at least 1d")
        if name in policy:
            raise ImproperlyConfigured(f"TIDELINE_PAYLOAD_RETENTION: {name} is named twice")
        policy[name] = days
    if DEFAULT not in policy:
        raise ImproperlyConfigured("TIDELINE_PAYLOAD_RETENTION needs default=<days>d")
    return policy
