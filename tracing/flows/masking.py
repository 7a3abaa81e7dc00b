"""Payloads as a role may see them: masked for support, as sent for those who may see more.

JSON is masked by paths (`TIDELINE_MASK_JSON_PATHS`): `customer.email` a key in a key,
`*` any one key or array element, `**` any depth (none included), `lines[*].price` every
element of an array. A matched object or array keeps its keys and loses every value. Any
other content type is masked whole unless `TIDELINE_MASK_UNMASKED_TYPES` lists it (`text/csv`,
`text/*`). Whoever sees payloads unmasked is journaled, once per user, flow and hour.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction

from console.models import JournalEntry
from console.services import journal_append

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User
    from django.http import HttpRequest

MASK = "•••"
DEFAULT_JSON_PATHS = ("customer", "**.email", "**.phone", "**.address", "**.iban")
# Credentials are never a support person's business, whatever the paths say.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
DISPLAY_LIMIT = 64 * 1024  # characters of a payload the page shows
UNMASKED_VIEW = "payload.view_unmasked"
UNMASKED_VIEW_EVERY = timedelta(hours=1)

ANY_KEY, ANY_DEPTH, ANY_INDEX = "*", "**", "[*]"
Segment = str | int
Path = tuple[Segment, ...]
_PART = re.compile(r"^(?P<key>[^\[\]]*)(?P<indexes>(?:\[(?:\*|\d+)\])*)$")
_NOT_JSON = object()


@dataclass(frozen=True)
class Shown:
    """A payload as the page shows it: `text` is still to be escaped by the template."""

    text: str
    masked: bool  # some values, or all of it, hidden
    whole: bool  # hidden entirely: a content type without a rule
    note: str


def mask_paths() -> list[Path]:
    configured = getattr(settings, "TIDELINE_MASK_JSON_PATHS", DEFAULT_JSON_PATHS)
    return [path_parse(path) for path in configured]


def path_parse(text: str) -> Path:
    """A setting's path as segments: `lines[*].price` → ("lines", "[*]", "price")."""
    segments: list[Segment] = []
    for part in text.split("."):
        found = _PART.match(part)
        if found is None or not (found["key"] or found["indexes"]):
            raise ImproperlyConfigured(f"TIDELINE_MASK_JSON_PATHS: cannot read the path {text!r}")
        if found["key"]:
            segments.append(found["key"].casefold())
        for index in re.findall(r"\[(\*|\d+)\]", found["indexes"]):
            segments.append(ANY_INDEX if index == "*" else int(index))
    return tuple(segments)


def json_mask(value: Any, paths: Iterable[Path]) -> Any:
    paths = set(paths)
    if () in paths:
        return _mask_all(value)
    if isinstance(value, dict):
        return {key: json_mask(item, _step(paths, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [json_mask(item, _step(paths, index)) for index, item in enumerate(value)]
    return value


def _step(paths: set[Path], key: str | int) -> set[Path]:
    """The rest of each path that goes on through `key`."""
    after: set[Path] = set()
    for path in paths:
        head, rest = path[0], path[1:]
        if head == ANY_DEPTH:
            after.add(path)  # ** goes deeper still
            after |= _step({rest}, key) if rest else {()}
        elif _segment_matches(head, key):
            after.add(rest)
    return after


def _segment_matches(segment: Segment, key: str | int) -> bool:
    if isinstance(key, int):
        return segment in (ANY_KEY, ANY_INDEX, key)
    return segment == ANY_KEY or segment == key.casefold()


def _mask_all(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _mask_all(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_all(item) for item in value]
    return MASK


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def json_document(payload: bytes, content_type: str) -> Any:
    """The payload as JSON when it is JSON (declared, or untyped and parseable); else _NOT_JSON."""
    kind = media_type(content_type)
    if kind and kind not in ("application/json", "text/json") and not kind.endswith("+json"):
        return _NOT_JSON
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def is_json(document: Any) -> bool:
    return document is not _NOT_JSON


def payload_shown(payload: bytes | None, content_type: str, *, unmasked: bool) -> Shown | None:
    if payload is None:
        return None
    document = json_document(payload, content_type)
    if unmasked or _type_unmasked(content_type):
        text = _json_text(document) if is_json(document) else payload.decode(errors="replace")
        return _shown(text, masked=False, note="as sent")
    if is_json(document):
        text = _json_text(json_mask(document, mask_paths()))
        return _shown(text, masked=True, note=f"values at masked paths show as {MASK}")
    kind = media_type(content_type) or "untyped"
    note = f"{kind} payload of {len(payload):,} bytes, masked whole for your role"
    return Shown(text="", masked=True, whole=True, note=note)


def _type_unmasked(content_type: str) -> bool:
    kind = media_type(content_type)
    if not kind:
        return False
    allowed = {rule.lower() for rule in getattr(settings, "TIDELINE_MASK_UNMASKED_TYPES", ())}
    return kind in allowed or f"{kind.split('/')[0]}/*" in allowed


def _json_text(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def _shown(text: str, *, masked: bool, note: str) -> Shown:
    if len(text) > DISPLAY_LIMIT:
        note = f"{note}; the first {DISPLAY_LIMIT:,} of {len(text):,} characters shown"
        text = text[:DISPLAY_LIMIT]
    return Shown(text=text, masked=masked, whole=False, note=note)


def headers_shown(headers: dict[str, Any], *, unmasked: bool) -> dict[str, Any]:
    if unmasked:
        return headers
    masked = json_mask(headers, mask_paths())
    return {
        name: MASK if name.lower() in CREDENTIAL_HEADERS else value
        for name, value in masked.items()
    }


def payload_view_unmasked_journal(
    *,
    user: User | AnonymousUser,
    subject: str,
    details: dict[str, Any],
    request: HttpRequest,
    now: datetime,
) -> bool:
    """Journal that `user` saw the payloads of `subject` (a flow, a dead letter) as sent,
    unless already within the hour; True when a view was journaled.

    The advisory lock makes two tabs opened at once journal one view, not two.
    """
    subject = subject[:255]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                [f"{UNMASKED_VIEW}|{user.pk}|{subject}"],
            )
        seen = JournalEntry.objects.filter(
            action=UNMASKED_VIEW,
            subject=subject,
            actor_id=user.pk,
            at__gt=now - UNMASKED_VIEW_EVERY,
        ).exists()
        if seen:
            return False
        journal_append(
            actor=user, action=UNMASKED_VIEW, subject=subject, details=details, request=request
        )
    return True
