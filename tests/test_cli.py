"""The rostersync command, end to end on both databases: JSON documents, exit codes, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from rostersync.cli import main

ROSTER = """Teacher Email,Class Name,Student Email,School,Period
ms.rivera@lincoln.org,Algebra I,ann@lincoln.org,Lincoln High,1
ms.rivera@lincoln.org,Algebra I,ben@lincoln.org,Lincoln High,1
ms.rivera@lincoln.org,Geometry,cara@lincoln.org,Lincoln High,2
mr.chen@lincoln.org,Biology,ann@lincoln.org,Lincoln High,3
mr.chen@lincoln.org,Biology,dev@lincoln.org,Lincoln High,3
"""


class Cli:
    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> Result:
        result = self.runner.invoke(main, ["--database-url", self.url, *args])
        assert result.exit_code == code, (result.exit_code, result.output, result.exception)
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "--json", code=code).stdout)


@pytest.fixture
def cli(store_url: str, tmp_path: Path) -> Cli:
    tool = Cli(store_url)
    tool("init")
    tool("district", "add", "Lincoln", "--timezone", "America/Chicago")
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER)
    tool(
        "source",
        "add",
        "sheet",
        "--district",
        "Lincoln",
        "--kind",
        "csv",
        "--set",
        f"path={roster}",
    )
    return tool


def test_sync_reports_changes_then_nothing(cli: Cli) -> None:
    first = cli.json("sync", "sheet")
    assert first["status"] == "succeeded"
    assert first["changes"]["person"] == {"create": 6}
    assert first["changes"]["section"] == {"create": 3}
    assert first["changes"]["enrollment"] == {"create": 8}

    again = cli.json("sync", "sheet")
    assert again["status"] == "succeeded"
    assert again["changes"] == {}
    assert again["run"] == first["run"] + 1

    runs = cli.json("runs", "sheet")
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert runs[1]["summary"]["person"] == {"create": 6}


def test_dry_run_changes_nothing(cli: Cli) -> None:
    plan = cli.json("sync", "sheet", "--dry-run")
    assert plan["status"] == "dry-run"
    assert plan["changes"]["person"] == {"create": 6}
    planned = cli.json("changes", str(plan["run"]), "--entity", "section")
    assert sorted(json.loads(c["after"])["name"] for c in planned) == [
        "Algebra I",
        "Biology",
        "Geometry",
    ]
    real = cli.json("sync", "sheet")
    assert real["changes"]["person"] == {"create": 6}


def test_mass_withdrawal_is_held_then_approved_or_discarded(cli: Cli, tmp_path: Path) -> None:
    cli.json("sync", "sheet")
    cli("district", "set", "Lincoln", "--safety-floor", "1")
    (tmp_path / "roster.csv").write_text(
        ROSTER.splitlines()[0] + "\n" + ROSTER.splitlines()[1] + "\n"
    )
    held = cli.json("sync", "sheet", code=2)
    assert held["status"] == "held"
    assert any("would be archived or ended" in reason for reason in held["held_reasons"])
    export_before = cli.json("runs", "sheet")[0]
    assert export_before["status"] == "held"

    discarded = cli.json("sync", "sheet", "--discard", str(held["run"]))
    assert discarded["status"] == "discarded"
    assert cli.json("sync", "sheet", "--dry-run")["changes"]["enrollment"]["end"] == 6

    held_again = cli.json("sync", "sheet", code=2)
    approved = cli.json("sync", "sheet", "--approve", str(held_again["run"]), "--by", "admin@x")
    assert approved["status"] == "succeeded"
    assert approved["changes"]["enrollment"]["end"] == 6
    assert cli.json("runs", "sheet")[0]["decided_by"] == "admin@x"


def test_bad_input_fails_with_location_and_exit_1(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "roster.csv").write_text(ROSTER + "ms.rivera@lincoln.org,Art,not-an-email,L,4\n")
    result = cli("sync", "sheet", code=1)
    assert "Traceback" not in result.output
    assert "roster.csv" in result.output and "line 7" in result.output
    failed = cli.json("runs", "sheet")[0]
    assert failed["status"] == "failed"
    assert failed["problems"][0]["line"] == 7
    assert cli.json("sync", "sheet", "--dry-run", code=1)["status"] == "failed"


def test_user_errors_are_messages_not_tracebacks(cli: Cli) -> None:
    missing = cli("sync", "nope", code=1)
    assert "no source named 'nope'" in missing.output
    duplicate = cli("district", "add", "Lincoln", code=1)
    assert "already exists" in duplicate.output
    kind = cli("source", "add", "x", "--district", "Lincoln", "--kind", "ftp", code=1)
    assert "Unknown source kind" in kind.output
    zone = cli("district", "add", "Other", "--timezone", "Mars/Olympus", code=1)
    assert "Unknown time zone" in zone.output


def test_sighting_is_pending_then_matched_by_a_roster(cli: Cli, tmp_path: Path) -> None:
    seen = cli.json("sighting", "Lincoln", "--email", "Eve@Lincoln.org", "--name", "Eve Park")
    assert seen["status"] == "pending" and seen["created"] is True
    again = cli.json("sighting", "Lincoln", "--email", "eve@lincoln.org")
    assert again == {**seen, "created": False}

    (tmp_path / "roster.csv").write_text(
        ROSTER + "mr.chen@lincoln.org,Biology,eve@lincoln.org,Lincoln High,3\n"
    )
    result = cli.json("sync", "sheet")
    assert result["changes"]["person"] == {"create": 6, "attach": 1}
    matched = cli.json("sighting", "Lincoln", "--email", "eve@lincoln.org")
    assert matched["person"] == seen["person"] and matched["status"] == "matched"


def test_export_round_trips_through_the_oneroster_connector(cli: Cli, tmp_path: Path) -> None:
    cli.json("sync", "sheet")
    out = tmp_path / "export"
    files = cli.json("export", "Lincoln", "--out", str(out))["files"]
    assert files["users"] == 6 and files["classes"] == 3 and files["enrollments"] == 8
    header = (out / "enrollments.csv").read_text().splitlines()[0]
    assert header.startswith("sourcedId,status,dateLastModified,classSourcedId")

    cli("district", "add", "Copy")
    cli(
        "source",
        "add",
        "copy",
        "--district",
        "Copy",
        "--kind",
        "oneroster-csv",
        "--set",
        f"path={out}",
    )
    copied = cli.json("sync", "copy")
    assert copied["status"] == "succeeded", copied
    assert copied["changes"]["person"] == {"create": 6}
    assert copied["changes"]["section"] == {"create": 3}
    assert copied["changes"]["enrollment"] == {"create": 8}
