"""A source kind ``slow`` for the jobs tests: a small district's roster, fetched slowly.

Importing this module registers the kind, so worker subprocesses load it through
``ROSTERSYNC_PLUGINS=tests.jobs.slow_source``. Settings: ``seconds`` to sleep while fetching,
``students`` (the roster's size), ``fail`` ("1" to fail the fetch), and ``marker``: a folder where
each fetch leaves a file named after its run's process id, so a test can find (and kill) the
worker that is running it.

With ``ROSTERSYNC_TEST_APPLY_PAUSE`` (seconds) and ``ROSTERSYNC_TEST_APPLY_MARKER`` (a folder)
set in a worker's environment, every apply of that worker stops for that long after it has
written the people — half-way through the run's one transaction — and leaves a file named after
its process id in the folder first, so a test can kill it mid-apply.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rostersync.domain.feed import Feed
from rostersync.errors import SourceError
from rostersync.sources import base
from tests.fakes import memory_source

KIND = "slow"


@dataclass
class SlowSource:
    seconds: float
    students: int
    fail: bool
    marker: str | None
    kind: str = KIND
    mode: Literal["full", "delta", "either"] = "full"

    def fetch(self, context: base.FetchContext) -> Feed:
        if self.marker:
            Path(self.marker, str(os.getpid())).write_text(str(time.time()))
        time.sleep(self.seconds)
        if self.fail:
            raise SourceError("The test server refused the request (HTTP 401). Renew the token.")
        context.progress("people", self.students)
        return memory_source.district(self.students).feed()


def create(config: Mapping[str, str]) -> SlowSource:
    return SlowSource(
        seconds=float(config.get("seconds", "0")),
        students=int(config.get("students", "12")),
        fail=config.get("fail") == "1",
        marker=config.get("marker") or None,
    )


base.register(KIND)(create)


def _pause_mid_apply() -> None:
    pause = float(os.environ.get("ROSTERSYNC_TEST_APPLY_PAUSE", "0") or 0)
    folder = os.environ.get("ROSTERSYNC_TEST_APPLY_MARKER")
    if not pause or not folder:
        return
    from rostersync.sync import apply

    write_entity = apply._apply_entity

    def paused(conn: Any, plan: Any, *args: Any) -> None:
        write_entity(conn, plan, *args)
        if plan.entity == "person":
            Path(folder, f"applying-{os.getpid()}").write_text(str(time.time()))
            time.sleep(pause)

    apply._apply_entity = paused


_pause_mid_apply()
