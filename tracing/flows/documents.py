"""Flow definition files (YAML): read with line numbers, checked whole before anything is saved.

Every problem names its line and field, e.g. "line 23, flows[0].steps[1].after: 'order_creatd'
is not a step of order-to-invoice", so an admin can fix the file without guessing.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any

import yaml
from croniter import croniter
from jsonschema import SchemaError
from jsonschema.validators import validator_for

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVENTS = (
    "received",
    "validated",
    "transformed",
    "routed",
    "delivered",
    "failed",
    "dead_lettered",
    "replayed",
)
_DURATION = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class Located(dict[str, Any]):
    """A YAML mapping that remembers the line of each of its keys."""

    line: int = 0
    lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Located:  # type: ignore[override]
        mapping = Located(
            {str(key): value for key, value in super().construct_mapping(node, deep=True).items()}
        )
        mapping.line = node.start_mark.line + 1
        mapping.lines = {key.value: key.start_mark.line + 1 for key, _ in node.value}
        return mapping


# SafeLoader builds mappings through construct_yaml_map, into plain dicts; route them here.
def _located(loader: _LineLoader, node: yaml.MappingNode) -> Located:
    return loader.construct_mapping(node)


_LineLoader.add_constructor("tag:yaml.org,2002:map", _located)


@dataclass(frozen=True)
class Problem:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, {self.field}: {self.message}"


class DefinitionsInvalid(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


@dataclass
class Checker:
    """Collects every problem of a document instead of stopping at the first."""

    problems: list[Problem] = field(default_factory=list)

    def problem(self, where: Any, key: str, path: str, message: str) -> None:
        line = where.lines.get(key, where.line) if isinstance(where, Located) else 0
        self.problems.append(Problem(line, _joined(path, key), message))

    def text(
        self,
        where: Located,
        key: str,
        path: str,
        *,
        required: bool = True,
        pattern: re.Pattern[str] | None = None,
    ) -> str:
        value = where.get(key)
        if value is None:
            if required:
                self.problem(where, key, path, "is missing")
            return ""
        if not isinstance(value, str | int) or isinstance(value, bool):
            self.problem(where, key, path, f"must be text, not {type(value).__name__}")
            return ""
        if pattern is not None and not pattern.match(str(value)):
            self.problem(
                where, key, path, f"{value!r} may hold only lower-case letters, digits, - and _"
            )
        return str(value)

    def duration(self, where: Located, key: str, path: str) -> int | None:
        value = where.get(key)
        if value is None:
            return None
        match = _DURATION.match(str(value))
        if not match:
            self.problem(
                where, key, path, f"{value!r} is not a duration such as 90s, 15m, 2h or 1d"
            )
            return None
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]

    def items(self, where: Located, key: str, path: str) -> list[tuple[str, Located]]:
        value = where.get(key, [])
        if not isinstance(value, list):
            self.problem(where, key, path, "must be a list")
            return []
        found = []
        for index, item in enumerate(value):
            if isinstance(item, Located):
                found.append((f"{_joined(path, key)}[{index}]", item))
            else:
                self.problem(where, key, path, f"entry {index} must be a mapping")
        return found


def _joined(path: str, key: str) -> str:
    """ "flows[0]" + "steps" → "flows[0].steps"; at the top of the file, the key alone."""
    return f"{path}.{key}" if path and key else path or key


def document_load(text: str) -> Located:
    try:
        document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        reason = getattr(error, "problem", None) or str(error)
        raise DefinitionsInvalid([Problem(line, "(file)", f"not valid YAML: {reason}")]) from None
    if not isinstance(document, Located):
        raise DefinitionsInvalid(
            [
                Problem(
                    1,
                    "(file)",
                    "must be a mapping with owners, systems, calendars, flows and alerts",
                )
            ]
        )
    return document


def duration_text(seconds: int) -> str:
    """900 → "15m": the largest unit that says it exactly, as people write it in the file."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_calendar_days(checker: Checker, where: Located, path: str) -> list[int]:
    days = where.get("days", list(DAYS[:5]))
    if not isinstance(days, list) or any(str(day).lower()[:3] not in DAYS for day in days):
        checker.problem(where, "days", path, f"must be a list of {', '.join(DAYS)}")
        return []
    return sorted({DAYS.index(str(day).lower()[:3]) for day in days})


def parse_hours(checker: Checker, where: Located, path: str) -> tuple[time, time]:
    raw = str(where.get("hours", "00:00-24:00"))
    match = re.match(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$", raw)
    if not match:
        checker.problem(where, "hours", path, f"{raw!r} is not opening hours such as 07:00-18:00")
        return time(0), time(23, 59, 59)
    opens_h, opens_m, closes_h, closes_m = (int(part) for part in match.groups())
    closes = time(23, 59, 59) if (closes_h, closes_m) == (24, 0) else time(closes_h % 24, closes_m)
    return time(opens_h % 24, opens_m), closes


def parse_holidays(checker: Checker, where: Located, path: str) -> list[date]:
    holidays = where.get("holidays", [])
    if not isinstance(holidays, list) or not all(isinstance(day, date) for day in holidays):
        checker.problem(where, "holidays", path, "must be a list of dates such as 2026-12-25")
        return []
    return holidays


def check_timezone(checker: Checker, where: Located, path: str) -> str:
    name = str(where.get("timezone", "UTC"))
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        checker.problem(where, "timezone", path, f"{name!r} is not a time zone such as Europe/Oslo")
    return name


def check_cron(checker: Checker, where: Located, key: str, path: str) -> str:
    expression = str(where.get(key, ""))
    if expression and not croniter.is_valid(expression):
        checker.problem(
            where, key, path, f"{expression!r} is not a cron expression such as */15 * * * *"
        )
    return expression


def check_payload_schema(checker: Checker, where: Located, path: str) -> dict[str, Any] | None:
    schema = where.get("payload_schema")
    if schema is None:
        return None
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        checker.problem(where, "payload_schema", path, f"is not a JSON Schema: {error.message}")
        return None
    return dict(schema)


def occurrences(checker: Checker, where: Located, path: str) -> tuple[int, int | None]:
    raw = str(where.get("occurs", "1")).strip()
    if raw == "*":
        return 0, None
    match = re.match(r"^(\d+)(?:\.\.(\d+|\*))?$", raw)
    if not match:
        checker.problem(where, "occurs", path, f"{raw!r} is not a count such as 1, 1..3 or *")
        return 1, 1
    low = int(match.group(1))
    high = match.group(2)
    return low, (None if high == "*" else int(high) if high else low)


def check_match(checker: Checker, where: Located, path: str) -> dict[str, Any]:
    match = where.get("match")
    if not isinstance(match, Located) or not ({"span", "record"} & set(match)):
        checker.problem(where, "match", path, "needs span (a span name) or record (step and event)")
        return {}
    record = match.get("record")
    if record is not None:
        if not isinstance(record, Located) or not record.get("step"):
            checker.problem(
                match,
                "record",
                f"{path}.match",
                "needs a step, e.g. {step: stock.reserve, event: delivered}",
            )
        elif record.get("event", "delivered") not in EVENTS:
            checker.problem(
                record, "event", f"{path}.match.record", f"must be one of {', '.join(EVENTS)}"
            )
    return _plain(match)


def _plain(value: Any) -> Any:
    """Located mappings back to plain JSON values, for storing."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


plain = _plain
SLUG = _SLUG
