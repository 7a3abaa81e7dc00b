"""Non-events: the stock export that stops on Friday night, and the orders that do not come.

Pure functions on unsaved definitions and calendars: no database, no patched clock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from tracing.flows.expectations import (
    CRON_COUNT_LIMIT,
    VolumeWindow,
    calendar_is_open,
    duration_words,
    runs_missed,
    volume_shortfall,
    volume_windows,
)
from tracing.flows.models import BusinessCalendar, FlowDefinition

OSLO = ZoneInfo("Europe/Oslo")
HOUR = timedelta(hours=1)


def oslo(year: int, month: int, day: int, hour: int = 0, minute: int = 0, **fold: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=OSLO, **fold)


def stock_sync(**schedule: object) -> FlowDefinition:
    """The running example's scheduled export: every 15 minutes, 5 minutes' grace."""
    fields: dict[str, object] = {"every_seconds": 900, "cron": "", "grace_seconds": 300}
    fields.update(schedule)
    return FlowDefinition(
        name="stock-sync", title="Stock export WMS to ERP", kind="scheduled", **fields
    )


def weekdays(**changes: object) -> BusinessCalendar:
    """The seafood company's calendar, as seafood.yaml declares it."""
    fields: dict[str, object] = {
        "name": "weekdays",
        "timezone": "Europe/Oslo",
        "working_days": [0, 1, 2, 3, 4],
        "opens": time(7),
        "closes": time(18),
        "holidays": [date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 26), date(2027, 1, 1)],
    }
    fields.update(changes)
    return BusinessCalendar(**fields)


def always_open() -> BusinessCalendar:
    # "hours: 00:00-24:00" is stored as closing at 23:59:59 (documents.parse_hours).
    return weekdays(working_days=list(range(7)), opens=time(0), closes=time(23, 59, 59))


def order_to_invoice(**volume: object) -> FlowDefinition:
    return FlowDefinition(
        name="order-to-invoice",
        title="Order to invoice",
        kind="instance",
        volume={"at_least": 20, "at_most": None, "per_seconds": 3600, "calendar": "weekdays"}
        | volume,
    )


FRIDAY_LAST_RUN = oslo(2026, 1, 9, 22, 15)  # Friday night: the export's last run


def missed_count(
    now: datetime, definition: FlowDefinition | None = None, last_run_at: datetime = FRIDAY_LAST_RUN
) -> int:
    found = runs_missed(
        definition=definition or stock_sync(), last_run_at=last_run_at,
        since=oslo(2026, 1, 1), now=now, tz=OSLO,
    )  # fmt: skip
    assert found is None or found.missed > 0
    return found.missed if found else 0


# duration_words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "under a minute"),
        (45, "under a minute"),
        (60, "1 min"),
        (900, "15 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (5400, "1 h 30 min"),
        (11520, "3 h 12 min"),
        (11545, "3 h 12 min"),
        (86400 + 300, "1 d"),
        (86400 + 2 * 3600 + 300, "1 d 2 h"),
        (2 * 86400, "2 d"),
    ],
)
def test_durations_read_as_people_say_them(seconds: int, words: str) -> None:
    assert duration_words(seconds) == words


def test_a_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        duration_words(-1)


# Scheduled flows: every N


def test_the_friday_night_export_that_stopped_is_nine_runs_short_by_saturday() -> None:
    missed = runs_missed(
        definition=stock_sync(),
        last_run_at=FRIDAY_LAST_RUN,
        since=oslo(2026, 1, 1),
        now=oslo(2026, 1, 10, 0, 35),
        tz=OSLO,
    )
    assert missed is not None
    assert missed.sentence == (
        "stock-sync: no run since Fri 22:15 — expected every 15 min; 9 runs missed."
    )
    assert (missed.last_run_at, missed.overdue_since, missed.missed) == (
        FRIDAY_LAST_RUN,
        oslo(2026, 1, 9, 22, 35),
        9,
    )


def test_a_run_is_not_missing_until_its_grace_has_passed() -> None:
    assert missed_count(oslo(2026, 1, 9, 22, 34)) == 0
    assert missed_count(oslo(2026, 1, 9, 22, 34) + timedelta(seconds=59)) == 0
    assert missed_count(oslo(2026, 1, 9, 22, 35)) == 1
    assert missed_count(oslo(2026, 1, 9, 22, 49)) == 1
    assert missed_count(oslo(2026, 1, 9, 22, 50)) == 2


def test_a_run_that_came_after_the_last_counts_from_there() -> None:
    assert missed_count(oslo(2026, 1, 10, 0, 34), last_run_at=oslo(2026, 1, 10, 0, 15)) == 0
    assert missed_count(oslo(2026, 1, 10, 0, 34), last_run_at=oslo(2026, 1, 10, 0, 0)) == 1


def test_one_missed_run_is_said_in_the_singular() -> None:
    missed = runs_missed(
        definition=stock_sync(),
        last_run_at=FRIDAY_LAST_RUN,
        since=oslo(2026, 1, 1),
        now=oslo(2026, 1, 9, 22, 35),
        tz=OSLO,
    )
    assert missed is not None
    assert missed.sentence == (
        "stock-sync: no run since Fri 22:15 — expected every 15 min; 1 run missed."
    )


def test_a_flow_that_never_ran_is_counted_from_its_creation() -> None:
    created = oslo(2026, 1, 9, 22, 0)
    missed = runs_missed(
        definition=stock_sync(),
        last_run_at=None,
        since=created,
        now=oslo(2026, 1, 9, 22, 40),
        tz=OSLO,
    )
    assert missed is not None
    assert missed.sentence == (
        "stock-sync: no run yet since Fri 22:00 — expected every 15 min; 2 runs missed."
    )
    assert (missed.last_run_at, missed.overdue_since) == (None, oslo(2026, 1, 9, 22, 20))


def test_times_are_said_in_the_readers_zone() -> None:
    missed = runs_missed(
        definition=stock_sync(),
        last_run_at=FRIDAY_LAST_RUN.astimezone(UTC),
        since=oslo(2026, 1, 1),
        now=oslo(2026, 1, 10, 0, 35).astimezone(UTC),
        tz=ZoneInfo("America/New_York"),
    )
    assert missed is not None
    assert missed.sentence.startswith("stock-sync: no run since Fri 16:15 — ")


@pytest.mark.parametrize(
    ("every_seconds", "words"),
    [(30, "30 s"), (90, "1 min 30 s"), (5400, "1 h 30 min"), (86400, "1 d")],
)
def test_the_interval_is_stated_exactly(every_seconds: int, words: str) -> None:
    missed = runs_missed(
        definition=stock_sync(every_seconds=every_seconds, grace_seconds=0),
        last_run_at=FRIDAY_LAST_RUN,
        since=oslo(2026, 1, 1),
        now=FRIDAY_LAST_RUN + timedelta(days=1),
        tz=OSLO,
    )
    assert missed is not None
    assert f"— expected every {words};" in missed.sentence


def test_only_scheduled_flows_have_runs_to_miss() -> None:
    with pytest.raises(ValueError, match="not a scheduled flow"):
        runs_missed(
            definition=order_to_invoice(), last_run_at=None, since=oslo(2026, 1, 1),
            now=oslo(2026, 1, 2), tz=OSLO,
        )  # fmt: skip


def test_a_naive_time_is_refused_rather_than_read_in_the_servers_zone() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        runs_missed(
            definition=stock_sync(), last_run_at=datetime(2026, 1, 9, 22, 15),
            since=oslo(2026, 1, 1), now=oslo(2026, 1, 10), tz=OSLO,
        )  # fmt: skip


# Scheduled flows: cron


def test_a_cron_export_is_missed_at_each_fire_time_plus_grace() -> None:
    definition = stock_sync(every_seconds=None, cron="*/15 * * * *")
    missed = runs_missed(
        definition=definition,
        last_run_at=FRIDAY_LAST_RUN + timedelta(seconds=3),  # runs start a moment late
        since=oslo(2026, 1, 1),
        now=oslo(2026, 1, 10, 0, 35),
        tz=OSLO,
    )
    assert missed is not None
    assert missed.sentence == (
        "stock-sync: no run since Fri 22:15 — expected on cron */15 * * * *; 9 runs missed."
    )
    assert missed.overdue_since == oslo(2026, 1, 9, 22, 35)
    assert missed_count(oslo(2026, 1, 9, 22, 34), definition) == 0
    assert missed_count(oslo(2026, 1, 9, 22, 35), definition) == 1


def test_cron_is_read_in_the_given_zone_and_skips_the_weekend() -> None:
    definition = stock_sync(every_seconds=None, cron="0 6 * * 1-5")
    friday_run = oslo(2026, 1, 9, 6, 0)

    assert missed_count(oslo(2026, 1, 12, 6, 4), definition, friday_run) == 0
    assert missed_count(oslo(2026, 1, 12, 6, 5), definition, friday_run) == 1
    assert missed_count(oslo(2026, 1, 13, 6, 5), definition, friday_run) == 2


def test_an_hourly_cron_expects_twenty_five_runs_on_the_day_clocks_go_back() -> None:
    missed = runs_missed(
        definition=stock_sync(every_seconds=None, cron="0 * * * *", grace_seconds=0),
        last_run_at=oslo(2026, 10, 25, 0, 0),
        since=oslo(2026, 1, 1),
        now=oslo(2026, 10, 26, 0, 0),
        tz=OSLO,
    )
    assert missed is not None and missed.missed == 25


def test_a_cron_flow_silent_for_a_month_is_counted_no_further_than_the_limit() -> None:
    missed = runs_missed(
        definition=stock_sync(every_seconds=None, cron="* * * * *", grace_seconds=0),
        last_run_at=FRIDAY_LAST_RUN,
        since=oslo(2026, 1, 1),
        now=FRIDAY_LAST_RUN + timedelta(days=30),
        tz=OSLO,
    )
    assert missed is not None and missed.missed == CRON_COUNT_LIMIT
    assert missed.sentence.endswith(f"; at least {CRON_COUNT_LIMIT} runs missed.")


def test_an_interval_flow_silent_for_months_is_counted_exactly() -> None:
    missed = runs_missed(
        definition=stock_sync(),
        last_run_at=FRIDAY_LAST_RUN,
        since=oslo(2026, 1, 1),
        now=FRIDAY_LAST_RUN + timedelta(days=200, minutes=5),
        tz=OSLO,
    )
    assert missed is not None and missed.missed == 200 * 96
    assert missed.sentence.endswith("; 19200 runs missed.")


def test_a_schedule_without_interval_or_cron_is_refused() -> None:
    with pytest.raises(ValueError, match="neither an interval nor a cron"):
        missed_count(oslo(2026, 1, 10), stock_sync(every_seconds=None))


# Business calendar


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (oslo(2026, 1, 12, 6, 59), False),
        (oslo(2026, 1, 12, 7, 0), True),
        (oslo(2026, 1, 12, 17, 59), True),
        (oslo(2026, 1, 12, 18, 0), False),
        (datetime(2026, 1, 12, 6, 30, tzinfo=UTC), True),  # 07:30 in Oslo
        (oslo(2026, 1, 11, 12, 0), False),  # Sunday
        (oslo(2026, 12, 24, 12, 0), False),  # Christmas Eve, a Thursday
        (oslo(2026, 12, 23, 12, 0), True),
    ],
)
def test_the_seafood_calendar_is_open_on_weekdays_seven_to_six(at: datetime, is_open: bool) -> None:
    assert calendar_is_open(weekdays(), at) is is_open


def test_a_calendar_open_until_24_00_is_open_in_the_last_second() -> None:
    assert calendar_is_open(always_open(), oslo(2026, 1, 11, 23, 59) + timedelta(seconds=59.5))


# Volume windows


def day_windows(
    calendar: BusinessCalendar | None, day: datetime, per_seconds: int = 3600
) -> list[VolumeWindow]:
    return volume_windows(
        per_seconds=per_seconds, calendar=calendar, after=day, until=day + timedelta(days=1)
    )


def local_hours(windows: list[VolumeWindow]) -> list[str]:
    return [
        f"{window.start.astimezone(OSLO):%H:%M}-{window.end.astimezone(OSLO):%H:%M}"
        for window in windows
    ]


def test_a_working_monday_has_eleven_hourly_windows_from_seven_to_six() -> None:
    windows = day_windows(weekdays(), oslo(2026, 1, 12))
    assert len(windows) == 11
    assert windows[0] == VolumeWindow(start=oslo(2026, 1, 12, 7), end=oslo(2026, 1, 12, 8))
    assert windows[-1].end == oslo(2026, 1, 12, 18)
    assert all(window.end - window.start == HOUR for window in windows)


def test_sunday_and_christmas_eve_expect_no_orders() -> None:
    assert day_windows(weekdays(), oslo(2026, 1, 11)) == []
    assert day_windows(weekdays(), oslo(2026, 12, 24)) == []


def test_only_windows_that_have_closed_are_returned() -> None:
    windows = volume_windows(
        per_seconds=3600,
        calendar=weekdays(),
        after=oslo(2026, 1, 12, 7, 30),
        until=oslo(2026, 1, 12, 10, 59),
    )
    assert local_hours(windows) == ["08:00-09:00", "09:00-10:00"]


def test_quarter_hour_windows_fill_the_opening_hours() -> None:
    windows = day_windows(weekdays(), oslo(2026, 1, 12), per_seconds=900)
    assert len(windows) == 44
    assert local_hours(windows)[:2] == ["07:00-07:15", "07:15-07:30"]


def test_without_a_calendar_windows_run_around_the_clock_on_utc_hours() -> None:
    windows = volume_windows(
        per_seconds=3600,
        calendar=None,
        after=datetime(2026, 1, 11, 9, 10, tzinfo=UTC),
        until=datetime(2026, 1, 11, 12, 0, tzinfo=UTC),
    )
    assert windows == [
        VolumeWindow(
            start=datetime(2026, 1, 11, 10, tzinfo=UTC), end=datetime(2026, 1, 11, 11, tzinfo=UTC)
        ),
        VolumeWindow(
            start=datetime(2026, 1, 11, 11, tzinfo=UTC), end=datetime(2026, 1, 11, 12, tzinfo=UTC)
        ),
    ]


def test_a_week_is_the_furthest_back_windows_are_looked_for() -> None:
    until = datetime(2026, 2, 1, tzinfo=UTC)
    windows = volume_windows(
        per_seconds=3600, calendar=None, after=until - timedelta(days=30), until=until
    )
    assert len(windows) == 7 * 24
    assert windows[0].start == until - timedelta(days=7)


def test_the_opening_hours_keep_to_local_time_across_the_spring_change() -> None:
    friday = day_windows(weekdays(), oslo(2026, 3, 27))
    monday = day_windows(weekdays(), oslo(2026, 3, 30))
    assert friday[0].start == datetime(2026, 3, 27, 6, tzinfo=UTC)  # CET
    assert monday[0].start == datetime(2026, 3, 30, 5, tzinfo=UTC)  # CEST
    assert len(friday) == len(monday) == 11


def test_the_hour_skipped_in_spring_is_no_window() -> None:
    windows = day_windows(always_open(), oslo(2026, 3, 29))
    assert len(windows) == 23
    assert "02:00-03:00" not in local_hours(windows)
    assert all(window.end - window.start == HOUR for window in windows)
    assert_back_to_back(windows, oslo(2026, 3, 29), oslo(2026, 3, 30))


def test_quarter_hours_inside_the_skipped_hour_do_not_overlap_the_next() -> None:
    windows = day_windows(always_open(), oslo(2026, 3, 29), per_seconds=900)
    assert len(windows) == 23 * 4
    assert_back_to_back(windows, oslo(2026, 3, 29), oslo(2026, 3, 30))


def test_the_hour_repeated_in_autumn_is_one_window_two_hours_long() -> None:
    windows = day_windows(always_open(), oslo(2026, 10, 25))
    assert len(windows) == 24
    repeated = windows[2]
    # The first 02:00, still summer time. (Said in UTC: Python never finds a repeated wall
    # time equal to a time in another zone.)
    assert repeated.start == datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
    assert repeated.end - repeated.start == 2 * HOUR
    assert_back_to_back(windows, oslo(2026, 10, 25), oslo(2026, 10, 26))


def assert_back_to_back(windows: list[VolumeWindow], start: datetime, end: datetime) -> None:
    """Every moment of the day is in exactly one window: no gap, no overlap."""
    assert windows[0].start == start and windows[-1].end == end
    assert all(one.end == following.start for one, following in pairwise(windows))


def test_a_window_shorter_than_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="at least a second"):
        day_windows(None, oslo(2026, 1, 12), per_seconds=0)


# Volume shortfall


MONDAY_NINE = VolumeWindow(start=oslo(2026, 1, 12, 9), end=oslo(2026, 1, 12, 10))


def test_too_few_orders_are_said_with_what_was_expected() -> None:
    sentence = volume_shortfall(
        definition=order_to_invoice(noun="orders"), window=MONDAY_NINE, count=0,
        system="ERP", tz=OSLO,
    )  # fmt: skip
    assert sentence == "ERP sent 0 orders between 09:00 and 10:00; at least 20 expected."


def test_too_many_orders_are_said_with_the_ceiling() -> None:
    sentence = volume_shortfall(
        definition=order_to_invoice(at_least=None, at_most=500, noun="orders"),
        window=MONDAY_NINE, count=612, system="ERP", tz=OSLO,
    )  # fmt: skip
    assert sentence == "ERP sent 612 orders between 09:00 and 10:00; at most 500 expected."


@pytest.mark.parametrize("count", [20, 21, 500])
def test_a_count_within_bounds_says_nothing(count: int) -> None:
    definition = order_to_invoice(at_least=20, at_most=500)
    assert (
        volume_shortfall(
            definition=definition, window=MONDAY_NINE, count=count, system="ERP", tz=OSLO
        )
        is None
    )


def test_a_flow_without_volume_expects_nothing() -> None:
    definition = stock_sync(volume=None)
    assert (
        volume_shortfall(definition=definition, window=MONDAY_NINE, count=0, system="ERP", tz=OSLO)
        is None
    )


def test_without_a_noun_the_flow_title_is_counted() -> None:
    sentence = volume_shortfall(
        definition=order_to_invoice(), window=MONDAY_NINE, count=3, system="ERP", tz=OSLO
    )
    assert sentence == (
        "ERP sent 3 Order to invoice flows between 09:00 and 10:00; at least 20 expected."
    )


def test_a_window_from_another_day_names_its_day() -> None:
    sentence = volume_shortfall(
        definition=order_to_invoice(noun="orders"), window=MONDAY_NINE, count=0,
        system="ERP", tz=OSLO, now=oslo(2026, 1, 13, 8),
    )  # fmt: skip
    assert sentence == "ERP sent 0 orders between Mon 09:00 and 10:00; at least 20 expected."


def test_a_window_ending_at_midnight_names_both_days() -> None:
    late = VolumeWindow(start=oslo(2026, 1, 12, 23), end=oslo(2026, 1, 13))
    sentence = volume_shortfall(
        definition=order_to_invoice(noun="orders"), window=late, count=0, system="ERP", tz=OSLO
    )
    assert sentence == "ERP sent 0 orders between Mon 23:00 and Tue 00:00; at least 20 expected."
