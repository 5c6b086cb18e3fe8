"""Fixtures of the jobs tests: a store with a district in America/New_York and slow sources."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from rostersync import service
from rostersync.store.schema import runs
from tests.jobs import slow_source

DISTRICT = "Lincoln Unified"

AddSource = Callable[..., int]


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The embedded queue, on PostgreSQL too."""
    monkeypatch.setenv("ROSTERSYNC_QUEUE", "embedded")
    yield


@pytest.fixture
def district(store: sa.Engine) -> sa.Engine:
    service.add_district(store, DISTRICT, "America/New_York")
    return store


@pytest.fixture
def add_source(district: sa.Engine) -> AddSource:
    """Add a ``slow`` source: ``add_source("sis", seconds=0.5, fail=1)``."""

    def add(name: str, **settings: object) -> int:
        config = {key: str(value) for key, value in settings.items()}
        return service.add_source(district, name, DISTRICT, slow_source.KIND, config)

    return add


def run_rows(engine: sa.Engine, source_id: int | None = None) -> list[dict[str, object]]:
    with engine.connect() as conn:
        query = sa.select(runs).order_by(runs.c.id)
        if source_id is not None:
            query = query.where(runs.c.source_id == source_id)
        return [dict(row._mapping) for row in conn.execute(query)]
