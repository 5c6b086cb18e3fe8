"""Schedule specs: parsing, windows in a district's time zone across DST, and blackouts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rostersync.errors import ConfigError
from rostersync.jobs import spec

NY = spec.zone("America/New_York")


def local(window: datetime) -> str:
    return window.astimezone(NY).strftime("%Y-%m-%d %H:%M %Z")


def windows(text: str, start: datetime, end: datetime) -> list[str]:
    return [local(w) for w in spec.parse(text).windows(start, end, NY)]


def test_forms_are_parsed_into_cron() -> None:
    assert spec.parse("nightly@2:30") == spec.Spec("nightly@02:30", "30 2 * * *")
    assert spec.parse(" every 4h ") == spec.Spec("every 4h", "0 */4 * * *")
    assert spec.parse("every 24h").cron == "0 0 * * *"
    assert spec.parse("0 6 * * 1-5").cron == "0 6 * * 1-5"
    for wrong in ("nightly@25:00", "every 0h", "every 30h", "hourly", "* * *", "61 * * * *"):
        with pytest.raises(ConfigError):
            spec.parse(wrong)


def test_nightly_runs_once_at_the_first_valid_time_on_spring_forward() -> None:
    # 2027-03-14: clocks in New York jump from 02:00 EST to 03:00 EDT.
    got = windows(
        "nightly@02:30",
        datetime(2027, 3, 12, 12, tzinfo=UTC),
        datetime(2027, 3, 16, 12, tzinfo=UTC),
    )
    assert got == [
        "2027-03-13 02:30 EST",
        "2027-03-14 03:00 EDT",
        "2027-03-15 02:30 EDT",
        "2027-03-16 02:30 EDT",
    ]


def test_nightly_runs_once_on_fall_back() -> None:
    # 2027-11-07: clocks go back from 02:00 EDT to 01:00 EST; 01:30 happens twice.
    got = windows(
        "nightly@01:30",
        datetime(2027, 11, 5, 12, tzinfo=UTC),
        datetime(2027, 11, 8, 12, tzinfo=UTC),
    )
    assert got == ["2027-11-06 01:30 EDT", "2027-11-07 01:30 EDT", "2027-11-08 01:30 EST"]


def test_every_n_hours_follows_local_midnight() -> None:
    got = windows(
        "every 6h",
        datetime(2027, 3, 14, 4, 59, tzinfo=UTC),
        datetime(2027, 3, 15, 5, 0, tzinfo=UTC),
    )
    assert got == [
        "2027-03-14 00:00 EST",
        "2027-03-14 06:00 EDT",
        "2027-03-14 12:00 EDT",
        "2027-03-14 18:00 EDT",
        "2027-03-15 00:00 EDT",
    ]


def test_next_window_is_strictly_after() -> None:
    nightly = spec.parse("nightly@02:30")
    at = datetime(2027, 3, 13, 7, 30, tzinfo=UTC)  # 02:30 EST exactly
    assert local(nightly.next_window(at, NY)) == "2027-03-14 03:00 EDT"


def test_blackouts_are_inclusive_local_dates() -> None:
    summer = spec.parse_blackout("2027-06-20..2027-08-20")
    assert str(summer) == "2027-06-20..2027-08-20"
    # 2027-08-21 01:00 UTC is still 2027-08-20 in New York.
    assert summer.covers(datetime(2027, 8, 21, 1, tzinfo=UTC), NY)
    assert not summer.covers(datetime(2027, 8, 21, 5, tzinfo=UTC), NY)
    for wrong in ("2027-06-20", "2027-08-20..2027-06-20", "2027-13-01..2027-13-02"):
        with pytest.raises(ConfigError):
            spec.parse_blackout(wrong)
