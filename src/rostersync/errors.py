"""The one error family of the roster service; every message is meant for a district admin."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem found in a source's input, located as precisely as the input allows."""

    message: str
    file: str | None = None
    line: int | None = None
    column: str | None = None
    record_id: str | None = None
    fix: str | None = None

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column:
            where.append(f"column {self.column!r}")
        if self.record_id:
            where.append(f"record {self.record_id!r}")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        if self.fix:
            text += f" {self.fix}"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "record_id": self.record_id,
            "fix": self.fix,
        }


class RosterError(Exception):
    """Root of every error the service reports to a person instead of a traceback."""


class ConfigError(RosterError):
    """A district, source or setting is missing or set wrongly."""


class SourceError(RosterError):
    """A source could not be read: unreachable, refused, or its data is unusable as a whole."""


class InputError(SourceError):
    """The source's data has problems that must be fixed before it can be synced.

    Carries every problem found, not just the first, so an admin can fix a file in one go.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} problem(s) in the input: {shown}{more}")


class SafetyHold(RosterError):
    """A run would change more than the safety thresholds allow; it waits for an admin."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


class NotFound(RosterError):
    """A named district, source or run does not exist."""
