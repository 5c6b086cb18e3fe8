"""The csv connector reading a Google Sheet through the Sheets API (the fake Google)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from rostersync.errors import ConfigError, InputError, SourceError
from rostersync.sources import base, google_api
from rostersync.sources.base import FetchContext
from rostersync.sources.csv_simple import read_rows
from tests.fakes.google import FakeGoogle, serve

SHEET = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"
HEADER = ["Teacher Email", "Class Name", "Period", "School", "Student Email", "Student Name"]
ROWS = [
    HEADER,
    ["rivera@lincoln.org", "Algebra I", "1", "Lincoln High", "ann@lincoln.org", "Ann Lee"],
    # The Sheets API leaves out a row's trailing empty cells: ragged rows.
    ["rivera@lincoln.org", "Algebra I", "1", "Lincoln High", "ben@lincoln.org"],
    [],
    ["chen@lincoln.org", "Biology", "3", "Lincoln High", "ann@lincoln.org", "Ann Lee"],
]


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    taken: list[float] = []
    monkeypatch.setattr(google_api, "pause", taken.append)
    return taken


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    yield from serve()


@pytest.fixture
def key(google: FakeGoogle) -> dict[str, Any]:
    key = google.service_account()
    google.sheets[SHEET] = {"Roster": [list(r) for r in ROWS], "Other": [["x"]]}
    google.sheet_readers[SHEET] = {key["client_email"]}
    return key


def settings(google: FakeGoogle, key: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "sheet": SHEET,
        "credentials": json.dumps(key),
        "api_endpoint": google.url,
        **extra,
    }


def fetch(config: dict[str, str]) -> Any:
    return base.build("csv", config).fetch(FetchContext())


def test_sheet_values_become_a_roster(google: FakeGoogle, key: dict[str, Any]) -> None:
    feed = fetch(settings(google, key))
    assert feed.counts()["person"] == 4
    assert feed.counts()["section"] == 2
    assert feed.counts()["enrollment"] == 5
    people = {p["email"]: p for p in feed.frame("person").to_dicts()}
    assert people["ann@lincoln.org"]["family_name"] == "Lee"
    assert people["ben@lincoln.org"]["given_name"] is None
    assert feed.frame("school")["name"].to_list() == ["Lincoln High"]
    call = google.calls("sheets.spreadsheets.values.get")[0]
    assert call["majorDimension"] == ["ROWS"]
    assert google.violations == []


def test_errors_name_the_sheet_row_and_column(google: FakeGoogle, key: dict[str, Any]) -> None:
    google.sheets[SHEET]["Roster"][4][4] = "ann at lincoln"
    with pytest.raises(InputError) as caught:
        fetch(settings(google, key, range="Roster!A:F"))
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.column) == (
        "Google Sheet 'Roster'",
        5,
        "Student Email",
    )


def test_rows_count_from_the_range_start(google: FakeGoogle, key: dict[str, Any]) -> None:
    google.sheets[SHEET]["Roster"][0:0] = [["Lincoln rosters, fall"], []]
    google.sheets[SHEET]["Roster"][6][0] = ""
    with pytest.raises(InputError) as caught:
        fetch(settings(google, key, range="Roster!A3:F"))
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (7, "Teacher Email")
    assert "teacher email is empty" in problem.message


def test_cells_beyond_the_header_are_an_error_with_a_sheet_fix() -> None:
    with pytest.raises(InputError) as caught:
        read_rows(
            [HEADER, [*ROWS[1], "extra"]],
            file="Google Sheet 'Roster'",
        )
    (problem,) = caught.value.problems
    assert problem.line == 2 and "Clear the cells" in (problem.fix or "")


def test_sheet_not_shared_names_the_account(google: FakeGoogle, key: dict[str, Any]) -> None:
    google.sheet_readers[SHEET] = set()
    with pytest.raises(
        SourceError, match=f"cannot be opened by the service account {key['client_email']}"
    ):
        fetch(settings(google, key))


def test_unknown_sheet_and_bad_range(google: FakeGoogle, key: dict[str, Any]) -> None:
    with pytest.raises(SourceError, match="Check the sheet id"):
        fetch({**settings(google, key), "sheet": "nope"})
    with pytest.raises(SourceError, match="range 'Missing!A:Z' is not valid"):
        fetch(settings(google, key, range="Missing!A:Z"))


def test_sheets_api_disabled(google: FakeGoogle, key: dict[str, Any]) -> None:
    google.disable_service("sheets.spreadsheets.values.get", "sheets.googleapis.com")
    with pytest.raises(SourceError, match="Google Sheets API is not enabled"):
        fetch(settings(google, key))


def test_rate_limits_are_waited_out(
    google: FakeGoogle, key: dict[str, Any], waits: list[float]
) -> None:
    google.rate_limit("sheets.spreadsheets.values.get", times=3, retry_after="2")
    assert fetch(settings(google, key)).counts()["person"] == 4
    assert waits.count(2.0) == 3


def test_delegated_subject_reads_as_that_user(google: FakeGoogle, key: dict[str, Any]) -> None:
    google.admins.add("office@lincoln.org")
    google.sheet_readers[SHEET] = {"office@lincoln.org"}
    assert fetch(settings(google, key, subject="office@lincoln.org")).counts()["section"] == 2


def test_sheet_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="exactly one of"):
        base.build("csv", {"sheet": SHEET, "path": "/tmp/x.csv"})
    with pytest.raises(ConfigError, match="needs 'credentials'"):
        base.build("csv", {"sheet": SHEET})


def test_connection_test_reads_the_sheet(google: FakeGoogle, key: dict[str, Any]) -> None:
    checks = base.build("csv", settings(google, key)).check()  # type: ignore[attr-defined]
    assert [c.ok for c in checks] == [True]
    assert "4 people in 2 classes" in checks[0].detail
