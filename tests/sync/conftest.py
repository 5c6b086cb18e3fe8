"""Fixtures of the sync tests: the memory source, and a district with one source on each store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from rostersync.domain.feed import Feed
from tests.fakes import memory_source
from tests.sync.helpers import World


@pytest.fixture
def memory_feeds() -> Iterator[dict[str, Feed]]:
    """Register the ``memory`` source kind; the test puts feeds in the returned dict."""
    memory_source.register()
    memory_source.FEEDS.clear()
    yield memory_source.FEEDS
    memory_source.FEEDS.clear()


@pytest.fixture
def world(store: sa.Engine, memory_feeds: dict[str, Feed]) -> World:
    """The district of Springfield with one memory source, ``sis``, on a fresh store."""
    world = World(store)
    world.setup()
    return world
