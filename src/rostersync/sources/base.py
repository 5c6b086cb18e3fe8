"""The interface every source connector implements, and the registry of connector kinds.

A connector only reads and normalises: it turns its provider's data into a :class:`Feed` and
never touches the store. It declares whether it yields a full snapshot of its scope or a delta.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from rostersync.domain.feed import Feed
from rostersync.errors import ConfigError

Progress = Callable[[str, int], None]
"""Called by a connector as it reads: ``(what, count_so_far)``, for progress displays."""


def no_progress(what: str, count: int) -> None:
    return None


@dataclass(frozen=True)
class FetchContext:
    """What the engine tells a connector about the run it fetches for."""

    #: The source's state from its last successful run (for example a delta cursor).
    cursor: str | None = None
    progress: Progress = no_progress


@dataclass(frozen=True)
class Check:
    """One step of a connection test (``rostersync source test``): what was tried, and how it
    went, in words an admin can act on."""

    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


class Source(Protocol):
    """A configured connector for one source."""

    kind: str
    #: "full" if each fetch lists the whole scope, "delta" if it lists only changes.
    mode: Literal["full", "delta", "either"]

    def fetch(self, context: FetchContext) -> Feed: ...


SourceFactory = Callable[[Mapping[str, str]], Source]

_REGISTRY: dict[str, SourceFactory] = {}


def register(kind: str) -> Callable[[SourceFactory], SourceFactory]:
    def decorate(factory: SourceFactory) -> SourceFactory:
        _REGISTRY[kind] = factory
        return factory

    return decorate


def kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build(kind: str, config: Mapping[str, str]) -> Source:
    """Build the connector for ``kind`` from a source's settings; raise ConfigError if unknown."""
    if kind not in _REGISTRY:
        _load_builtin(kind if kind in BUILTIN else None)
    try:
        factory = _REGISTRY[kind]
    except KeyError:
        raise ConfigError(
            f"Unknown source kind {kind!r}. Known kinds: {', '.join(sorted(_REGISTRY))}."
        ) from None
    return factory(config)


#: The module of each built-in kind, imported only when that kind is used (the Google client
#: libraries, for one, take a noticeable share of a command's start-up).
BUILTIN: dict[str, str] = {
    "csv": "rostersync.sources.csv_simple",
    "oneroster-csv": "rostersync.sources.oneroster_csv",
    "google": "rostersync.sources.google_classroom",
}


def _load_builtin(kind: str | None = None) -> None:
    import importlib

    for name, module in BUILTIN.items():
        if kind is None or kind == name:
            importlib.import_module(module)
