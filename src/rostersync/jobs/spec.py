"""Schedule specs and their windows in a district's time zone, and blackout date ranges.

A spec is read as wall-clock time in the district's zone: ``nightly@02:30`` means 02:30 on the
district's clocks, whatever the offset that day. Each spec becomes a five-field cron expression
evaluated on naive local times; each local time is then placed on the real time line:

* a local time that does not exist (the hour clocks skip in spring) runs at the first valid
  minute after it — 02:30 on a spring-forward night runs at 03:00;
* a local time that happens twice (the hour clocks repeat in autumn) runs at its first occurrence.

So a nightly schedule runs exactly once on either night.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from rostersync.errors import ConfigError

_NIGHTLY = re.compile(r"^nightly@([01]?\d|2[0-3]):([0-5]\d)$")
_EVERY = re.compile(r"^every\s*(\d+)\s*h$")
_BLACKOUT = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Spec:
    """A parsed schedule: what the admin typed and the cron expression it means."""

    text: str
    cron: str

    def windows(self, after: datetime, until: datetime, zone: ZoneInfo) -> Iterator[datetime]:
        """The windows (aware, UTC) in ``(after, until]``, oldest first."""
        for window in self._iter(after, zone):
            if window > until:
                return
            yield window

    def next_window(self, after: datetime, zone: ZoneInfo) -> datetime:
        """The first window (aware, UTC) strictly after ``after``."""
        return next(self._iter(after, zone))

    def _iter(self, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
        # Start a little before ``after`` in local wall time: near a fall-back transition the
        # naive local time of ``after`` is ambiguous, and a window must not be missed.
        start = after.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3)
        local = croniter(self.cron, start)
        last = after
        while True:
            naive = local.get_next(datetime)
            window = place(naive, zone)
            if window > last:
                last = window
                yield window


def parse(text: str) -> Spec:
    """Parse ``nightly@HH:MM``, ``every Nh`` (N from 1 to 24, on the hour from local midnight)
    or a five-field cron expression; raise ConfigError with the accepted forms otherwise."""
    spec = " ".join(text.strip().split())
    if match := _NIGHTLY.match(spec):
        hour, minute = int(match.group(1)), int(match.group(2))
        return Spec(text=f"nightly@{hour:02d}:{minute:02d}", cron=f"{minute} {hour} * * *")
    if match := _EVERY.match(spec):
        hours = int(match.group(1))
        if not 1 <= hours <= 24:
            raise ConfigError(f"'every {hours}h' is out of range: use every 1h to every 24h.")
        cron = "0 0 * * *" if hours == 24 else f"0 */{hours} * * *"
        return Spec(text=f"every {hours}h", cron=cron)
    if len(spec.split()) == 5 and croniter.is_valid(spec):
        return Spec(text=spec, cron=spec)
    raise ConfigError(
        f"{text!r} is not a schedule. Use nightly@HH:MM (for example nightly@02:30), "
        "every Nh (for example every 4h) or a five-field cron expression such as '0 6 * * 1-5'."
    )


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"Unknown time zone {name!r}; use a name such as America/New_York."
        ) from None


def place(naive: datetime, tz: ZoneInfo) -> datetime:
    """The real instant (UTC) of a local wall-clock time, by the rules in the module docstring."""
    first = naive.replace(tzinfo=tz, fold=0)
    if _exists(first):
        return first.astimezone(UTC)
    # In a gap: the first minute after it that exists (gaps are at most a few hours long).
    probe = naive
    for _ in range(24 * 60):
        probe += timedelta(minutes=1)
        candidate = probe.replace(tzinfo=tz, fold=0)
        if _exists(candidate):
            return candidate.astimezone(UTC)
    raise ValueError(f"No valid local time after {naive} in {tz}")  # pragma: no cover


def _exists(local: datetime) -> bool:
    return local.astimezone(UTC).astimezone(local.tzinfo).replace(tzinfo=None) == local.replace(
        tzinfo=None
    )


@dataclass(frozen=True)
class Blackout:
    """A range of local dates, both ends included, when scheduled runs are skipped."""

    start: date
    end: date

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    def covers(self, window: datetime, tz: ZoneInfo) -> bool:
        return self.start <= window.astimezone(tz).date() <= self.end

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def parse_blackout(text: str) -> Blackout:
    match = _BLACKOUT.match(text.strip())
    try:
        if match is None:
            raise ValueError
        start, end = date.fromisoformat(match.group(1)), date.fromisoformat(match.group(2))
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a blackout. Use FIRST..LAST as local dates, for example "
            "2027-06-20..2027-08-20."
        ) from None
    if end < start:
        raise ConfigError(f"The blackout {text!r} ends before it starts.")
    return Blackout(start, end)


def blackout_of(window: datetime, tz: ZoneInfo, blackouts: list[Blackout]) -> Blackout | None:
    """The blackout that covers ``window``, if any."""
    return next((b for b in blackouts if b.covers(window, tz)), None)


def load_blackouts(stored: list[dict[str, str]] | None) -> list[Blackout]:
    return [
        Blackout(date.fromisoformat(b["start"]), date.fromisoformat(b["end"])) for b in stored or []
    ]
