"""time: dates and zones against hand-computed calendars and offsets."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from localassist.tools import ToolContext, run_tool
from localassist.tools.clock import ClockTool


def ask(now=None, **arguments):
    return run_tool(ClockTool(now=now), arguments, ToolContext())


@pytest.mark.parametrize(
    ("date", "weekday"),
    [("2024-07-04", "Thursday"), ("2000-01-01", "Saturday"), ("2024-02-29", "Thursday"), ("1969-07-20", "Sunday")],
)
def test_weekday_of_hand_checked_dates(date, weekday):
    assert ask(action="weekday", date=date).content == f"{date} is a {weekday}"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"date": "2024-01-31", "days": 1}, "2024-02-01 (Thursday)"),
        ({"date": "2024-02-28", "days": 1}, "2024-02-29 (Thursday)"),  # leap year
        ({"date": "2023-02-28", "days": 1}, "2023-03-01 (Wednesday)"),  # not a leap year
        ({"date": "2024-12-25", "weeks": 2}, "2025-01-08 (Wednesday)"),
        ({"date": "2024-03-01", "days": -1}, "2024-02-29 (Thursday)"),
        ({"date": "2024-01-31", "weeks": 1, "days": 3}, "2024-02-10 (Saturday)"),
    ],
)
def test_adding_days_and_weeks_gives_hand_computed_dates(arguments, expected):
    result = ask(action="add", **arguments)
    assert not result.is_error, result.content
    assert result.content.endswith(f"= {expected}")


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [("2024-01-01", "2024-03-01", "60 days"), ("2023-01-01", "2023-03-01", "59 days"),
     ("2024-03-01", "2024-01-01", "-60 days"), ("2024-01-01", "2025-01-01", "366 days"),
     ("2024-05-05", "2024-05-06", "1 day")],
)  # fmt: skip
def test_days_between_hand_counted(start, end, days):
    assert ask(action="days_between", date=start, end_date=end).content == f"from {start} to {end}: {days}"


def test_convert_between_zones_uses_the_offsets_in_force_that_day():
    summer = ask(action="convert", datetime="2024-07-01T12:00", from_zone="Europe/Paris", to_zone="America/New_York")
    assert "= 2024-07-01 06:00 Monday" in summer.content  # CEST +2 to EDT -4
    winter = ask(action="convert", datetime="2024-01-15T12:00", from_zone="Europe/Paris", to_zone="Asia/Tokyo")
    assert "= 2024-01-15 20:00 Monday" in winter.content  # CET +1 to JST +9
    late = ask(action="convert", datetime="2024-01-15T23:30", from_zone="UTC", to_zone="Asia/Kolkata")
    assert "= 2024-01-16 05:00 Tuesday" in late.content  # +5:30 crosses midnight


def test_a_wall_time_skipped_by_daylight_saving_is_an_error():
    result = ask(action="convert", datetime="2024-03-10T02:30", from_zone="America/New_York", to_zone="UTC")
    assert result.is_error
    assert "does not exist" in result.content


def test_now_in_a_zone_matches_the_system_clock():
    result = ask(action="now", zone="Asia/Tokyo")
    stamp = datetime.fromisoformat(result.content.split(" ")[0])
    assert stamp.utcoffset().total_seconds() == 9 * 3600
    assert abs((stamp - datetime.now(ZoneInfo("Asia/Tokyo"))).total_seconds()) < 5
    assert "Asia/Tokyo" in result.content


def test_today_depends_on_the_zone():
    clock = lambda: datetime(2024, 3, 10, 23, 30, tzinfo=timezone.utc)  # noqa: E731
    assert ask(clock, action="today", zone="Asia/Tokyo").content.startswith("2024-03-11 (Monday")
    assert ask(clock, action="today", zone="America/Los_Angeles").content.startswith("2024-03-10 (Sunday")
    assert ask(clock, action="add", date="today", days=1, zone="Asia/Tokyo").content.endswith("= 2024-03-12 (Tuesday)")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"action": "weekday", "date": "2023-02-29"}, "not a valid date: '2023-02-29'"),
        ({"action": "weekday", "date": "next tuesday"}, "use YYYY-MM-DD"),
        ({"action": "now", "zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"action": "now", "zone": "../../etc/passwd"}, "unknown time zone"),
        ({"action": "add", "date": "2024-01-01"}, "needs 'days' or 'weeks'"),
        ({"action": "days_between", "date": "2024-01-01"}, "needs 'end_date'"),
        ({"action": "add", "date": "9999-12-31", "days": 1}, "out of range"),
    ],
)
def test_bad_dates_and_zones_are_clear_tool_errors(arguments, message):
    result = ask(**arguments)
    assert result.is_error
    assert message in result.content


def test_an_unknown_action_gets_a_repair_message_with_the_schema():
    result = ask(action="yesterday")
    assert result.is_error
    assert "'yesterday' is not one of" in result.content
    assert '"enum":["now","today"' in result.content
