"""``time``: the current date and time, date arithmetic and time-zone conversion (IANA zones, zoneinfo).

Models cannot know today's date and are poor at calendar arithmetic; this tool answers both
exactly. Dates are ISO ``YYYY-MM-DD``; ``today`` is accepted wherever a date is.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from localassist.tools.base import Safety, Tool, ToolContext, ToolError, ToolResult

ACTIONS = ("now", "today", "weekday", "add", "days_between", "convert")
LOCAL_NAMES = ("", "local")


def zone(name: str | None) -> tzinfo | None:
    """The IANA zone ``name``; None for the machine's local zone."""
    if name is None or name.strip().lower() in LOCAL_NAMES:
        return None
    if name.strip().upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ToolError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Paris or America/New_York"
        ) from None


def parse_date(value: str, tz: tzinfo | None = None, now: Callable[[], datetime] | None = None) -> date:
    text = value.strip()
    if text.lower() == "today":
        return _now(tz, now).date()
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ToolError(f"not a valid date: {value!r} ({exc}); use YYYY-MM-DD") from None


def parse_datetime(value: str, tz: tzinfo | None, now: Callable[[], datetime] | None = None) -> datetime:
    """A wall-clock time in ``tz``: ``YYYY-MM-DDTHH:MM[:SS]``, or ``HH:MM`` for today."""
    text = value.strip().replace(" ", "T", 1)
    try:
        if "T" not in text and ":" in text:
            clock = datetime.strptime(text, "%H:%M:%S" if text.count(":") == 2 else "%H:%M").time()
            moment = datetime.combine(_now(tz, now).date(), clock)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ToolError(f"not a valid date and time: {value!r} ({exc}); use YYYY-MM-DDTHH:MM") from None
    if moment.tzinfo is not None:
        return moment
    if tz is None:
        return moment.astimezone()  # the machine's local zone
    local = moment.replace(tzinfo=tz)
    # A wall time in a DST gap does not exist; zoneinfo would silently shift it.
    if local.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) != moment:
        raise ToolError(f"{value} does not exist in {tz} (the clocks skip it for daylight saving time)")
    return local


def _now(tz: tzinfo | None, now: Callable[[], datetime] | None) -> datetime:
    moment = now() if now is not None else datetime.now(timezone.utc)
    return moment.astimezone(tz) if tz is not None else moment.astimezone()


def _zone_label(moment: datetime, tz: tzinfo | None) -> str:
    offset = moment.strftime("%z")
    utc = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    name = "local time" if tz is None else str(tz)
    abbreviation = moment.tzname() or ""
    if abbreviation in (name, "UTC") or abbreviation.startswith(("+", "-", "UTC")):
        return f"{name}, {utc}"
    return f"{name}, {abbreviation}, {utc}"


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if abs(count) == 1 else f"{count} {unit}s"


class ClockTool(Tool):
    name = "time"
    description = (
        "Dates and times. action=now: current date and time (optional zone); today: current date; "
        "weekday: day of the week of date; add: date plus days and/or weeks (negative to go back); "
        "days_between: days from date to end_date; convert: a datetime from from_zone to to_zone. "
        "Zones are IANA names (Europe/Paris); omit for the user's local zone. Dates are YYYY-MM-DD."
    )
    parameters = {  # noqa: RUF012
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": list(ACTIONS)},
            "zone": {"type": "string", "description": "IANA time zone for now/today, e.g. Asia/Tokyo"},
            "date": {"type": "string", "description": "YYYY-MM-DD or today"},
            "end_date": {"type": "string", "description": "YYYY-MM-DD or today (days_between)"},
            "days": {"type": "integer"},
            "weeks": {"type": "integer"},
            "datetime": {"type": "string", "description": "YYYY-MM-DDTHH:MM or HH:MM (convert)"},
            "from_zone": {"type": "string", "description": "IANA zone of datetime; omit for local"},
            "to_zone": {"type": "string", "description": "IANA zone to convert to; omit for local"},
        },
        "required": ["action"],
        "additionalProperties": False,
    }
    safety = Safety.SAFE

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self._now = now  # injectable clock (an aware datetime); the real one by default

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        return ToolResult(self.answer(arguments))

    def answer(self, arguments: dict[str, Any]) -> str:
        action = arguments["action"]
        tz = zone(arguments.get("zone"))
        if action == "now":
            moment = _now(tz, self._now).replace(microsecond=0)
            return f"{moment.isoformat()} ({moment:%A}, {_zone_label(moment, tz)})"
        if action == "today":
            moment = _now(tz, self._now)
            return f"{moment.date().isoformat()} ({moment:%A}, {_zone_label(moment, tz)})"
        if action == "weekday":
            day = parse_date(self._need(arguments, action, "date"), tz, self._now)
            return f"{day.isoformat()} is a {day:%A}"
        if action == "add":
            day = parse_date(self._need(arguments, action, "date"), tz, self._now)
            days, weeks = arguments.get("days", 0), arguments.get("weeks", 0)
            if "days" not in arguments and "weeks" not in arguments:
                raise ToolError("action 'add' needs 'days' or 'weeks' (negative to go back)")
            try:
                result = day + timedelta(days=days, weeks=weeks)
            except OverflowError:
                raise ToolError("the resulting date is out of range (years 1 to 9999)") from None
            sign = -1 if weeks <= 0 and days <= 0 and (weeks or days) else 1
            parts = [_plural(sign * weeks, "week")] * bool(weeks) + [_plural(sign * days, "day")] * bool(
                days or not weeks
            )
            return (
                f"{day.isoformat()} {'-' if sign < 0 else '+'} {' '.join(parts)} = {result.isoformat()} ({result:%A})"
            )
        if action == "days_between":
            start = parse_date(self._need(arguments, action, "date"), tz, self._now)
            end = parse_date(self._need(arguments, action, "end_date"), tz, self._now)
            return f"from {start.isoformat()} to {end.isoformat()}: {_plural((end - start).days, 'day')}"
        if action == "convert":
            source, target = zone(arguments.get("from_zone")), zone(arguments.get("to_zone"))
            moment = parse_datetime(self._need(arguments, action, "datetime"), source, self._now)
            converted = moment.astimezone(target) if target is not None else moment.astimezone()
            return (
                f"{moment:%Y-%m-%d %H:%M} ({_zone_label(moment, source)}) = "
                f"{converted:%Y-%m-%d %H:%M} {converted:%A} ({_zone_label(converted, target)})"
            )
        raise ToolError(f"unknown action {action!r}; one of: {', '.join(ACTIONS)}")

    @staticmethod
    def _need(arguments: dict[str, Any], action: str, key: str) -> str:
        value = arguments.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ToolError(f"action {action!r} needs {key!r}")
        return value
