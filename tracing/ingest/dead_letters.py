"""Dead letters as the runtime (or a RabbitMQ dead-letter queue) hands them over.

A batch is validated whole before anything is stored, like audit records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from console.models import IngestToken
from tracing.ingest.records import (
    Name,
    Problem,
    RecordsInvalid,
    Text,
    field_and_message,
    payload_bytes,
)

Moment = Annotated[datetime, msgspec.Meta(tz=True)]


class DeadLetterIn(msgspec.Struct):
    system: Name
    transport: Literal["http", "amqp", "redis"]
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    message_id: Text | None = None
    correlation_id: Text | None = None
    url: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    exchange: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    routing_key: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    queue: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    stream: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    headers: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    content_type: Annotated[str, msgspec.Meta(max_length=200)] = ""
    error: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    attempts: Annotated[int, msgspec.Meta(ge=0)] = 1
    first_failed_at: Moment | None = None
    last_failed_at: Moment | None = None
    x_death: list[dict[str, Any]] = []


@dataclass
class DeadLetterRow:
    """One validated dead letter and the death it reports."""

    position: int
    letter: DeadLetterIn
    payload: bytes
    payload_digest: bytes
    destination: dict[str, str]
    first_failed_at: datetime
    last_failed_at: datetime

    @property
    def message_key(self) -> str:
        return self.letter.message_id or f"sha256:{self.payload_digest.hex()}"

    @property
    def death_id(self) -> str:
        """The same death reported twice (a retried request, a redelivered message) has one ID."""
        # Without a time from the sender, last_failed_at is when Tideline received it, which
        # differs on every retry: then the death is known by the rest alone.
        parts = [
            self.letter.last_failed_at.isoformat() if self.letter.last_failed_at else "",
            str(self.letter.attempts),
            self.letter.error,
            self.payload_digest.hex(),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def dead_letters_parse(
    documents: list[Any], *, token: IngestToken | None, received_at: datetime
) -> list[DeadLetterRow]:
    rows, problems = [], []
    for position, document in enumerate(documents):
        try:
            rows.append(dead_letter_row(position, document, token=token, received_at=received_at))
        except msgspec.ValidationError as error:
            problems.append(Problem(position, *field_and_message(str(error))))
        except _Invalid as invalid:
            problems.append(Problem(position, invalid.field, invalid.message))
    if problems:
        raise RecordsInvalid(
            problems, f"{len(problems)} invalid dead letter(s); nothing was stored."
        )
    return rows


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message


def dead_letter_row(
    position: int, document: Any, *, token: IngestToken | None, received_at: datetime
) -> DeadLetterRow:
    if not isinstance(document, dict):
        raise _Invalid("", "A dead letter must be a JSON object.")
    letter = msgspec.convert(document, DeadLetterIn)
    if token is not None and not token.allows_system(letter.system):
        raise _Invalid(
            "system", f"This ingest token may not send dead letters for system {letter.system!r}."
        )
    try:
        payload = payload_bytes(letter.payload, letter.payload_encoding)
    except ValueError as error:
        raise _Invalid("payload", str(error)) from None
    last = letter.last_failed_at or received_at
    return DeadLetterRow(
        position=position,
        letter=letter,
        payload=payload,
        payload_digest=hashlib.sha256(payload).digest(),
        destination=_destination(letter),
        first_failed_at=letter.first_failed_at or last,
        last_failed_at=last,
    )


def _destination(letter: DeadLetterIn) -> dict[str, str]:
    """Where the message was going, in the fields its transport needs to send it again."""
    if letter.transport == "http":
        if not letter.url or not letter.url.startswith(("http://", "https://")):
            raise _Invalid(
                "url", "An http dead letter needs the url it was sent to (http:// or https://)."
            )
        return {"url": letter.url}
    if letter.transport == "amqp":
        if not (letter.queue or letter.exchange is not None):
            raise _Invalid(
                "queue", "An amqp dead letter needs the queue it died in, or the exchange."
            )
        fields = {
            "exchange": letter.exchange,
            "routing_key": letter.routing_key,
            "queue": letter.queue,
            "url": letter.url,
        }
        return {key: value for key, value in fields.items() if value is not None}
    if not letter.stream:
        raise _Invalid("stream", "A redis dead letter needs the stream it was added to.")
    return {"stream": letter.stream, **({"url": letter.url} if letter.url else {})}
