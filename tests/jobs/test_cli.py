"""The jobs commands: source schedule, source list, sync --queue [--wait], runs."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from rostersync import cli
from rostersync.jobs import embedded
from tests.jobs.conftest import AddSource

pytestmark = pytest.mark.usefixtures("embedded")


def invoke(engine: sa.Engine, *args: str) -> Result:
    url = engine.url.render_as_string(hide_password=False)
    return CliRunner().invoke(cli.main, ["--database-url", url, *args])


def test_schedule_is_set_shown_and_listed(district: sa.Engine, add_source: AddSource) -> None:
    add_source("sis")
    result = invoke(
        district,
        "source",
        "schedule",
        "sis",
        "--set",
        "nightly@02:30",
        "--blackout",
        "2027-06-20..2027-08-20",
        "--blackout",
        "2027-12-20..2028-01-03",
        "--json",
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["schedule"] == "nightly@02:30"
    assert shown["blackouts"] == ["2027-06-20..2027-08-20", "2027-12-20..2028-01-03"]
    assert shown["next_run_at"] and not shown["paused"]

    assert invoke(district, "source", "schedule", "sis", "--pause").exit_code == 0
    [listed] = json.loads(invoke(district, "source", "list", "--json").output)
    assert (listed["schedule"], listed["paused"], listed["next_run_at"], listed["health"]) == (
        "nightly@02:30",
        True,
        None,
        "new",
    )
    assert "paused" in invoke(district, "source", "list").output

    wrong = invoke(district, "source", "schedule", "sis", "--set", "hourly")
    assert wrong.exit_code == 1 and "nightly@HH:MM" in wrong.output


def test_sync_queue_returns_the_run_at_once_and_dedups(
    district: sa.Engine, add_source: AddSource
) -> None:
    add_source("sis")
    first = json.loads(invoke(district, "sync", "sis", "--queue", "--by", "admin", "--json").output)
    again = json.loads(invoke(district, "sync", "sis", "--queue", "--json").output)
    assert first == {"run": first["run"], "queued": True, "status": "queued"}
    assert again == {"run": first["run"], "queued": False, "status": "queued"}
    assert "already waiting" in invoke(district, "sync", "sis", "--queue").output
    [run] = json.loads(invoke(district, "runs", "sis", "--json").output)
    assert (run["status"], run["trigger"], run["requested_by"]) == ("queued", "sync-now", "admin")


def test_sync_queue_wait_follows_the_run_to_its_end(
    district: sa.Engine, add_source: AddSource
) -> None:
    add_source("sis", seconds=0.5)
    pool = embedded.WorkerPool(district, 1, poll=0.05, heartbeat=0.1)
    threading.Timer(0.2, pool.start).start()
    try:
        result = invoke(district, "sync", "sis", "--queue", "--wait")
    finally:
        pool.stop()
    assert result.exit_code == 0, result.output
    assert "Run 1: queued" in result.output
    assert "Run 1: running, fetch" in result.output
    assert "Run 1: succeeded\n" in result.output
    assert "  person: create 15\n" in result.output
