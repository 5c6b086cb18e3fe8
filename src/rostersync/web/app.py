"""The FastAPI application: the JSON API, the pages, error answers, and — when asked — the
scheduler and sync workers running in the same process (the embedded mode on SQLite)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from rostersync.errors import ConfigError, NotFound, RosterError
from rostersync.web import api, pages
from rostersync.web.auth import Throttled
from rostersync.web.extension import RateLimiter
from rostersync.web.policy import Forbidden, Unauthenticated

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class Settings:
    #: Where uploaded roster files are kept (a folder beside the store).
    uploads: Path
    #: Run the scheduler and the embedded worker pool in this process.
    run_jobs: bool = False
    workers: int = 2
    #: Seconds between two scheduler ticks.
    interval: float = 10.0
    #: Extension requests per second per key, and the burst allowed.
    extension_rate: float = 10.0
    extension_burst: float = 120.0


def uploads_beside(engine: sa.Engine) -> Path:
    """The uploads folder: beside a SQLite store's file, else ./uploads."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        path = Path(database).resolve()
        return path.parent / f"{path.stem}-uploads"
    return Path("uploads").resolve()


def create_app(engine: sa.Engine, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings(uploads=uploads_beside(engine))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        pool = None
        ticker_thread = None
        if settings.run_jobs:
            from rostersync.jobs import embedded, queue
            from rostersync.jobs.scheduler import Scheduler

            if queue.mode_of(engine) == "embedded":
                pool = embedded.WorkerPool(engine, settings.workers).start()
                app.state.wake = pool.wake
                ticker = Scheduler(engine, on_queued=pool.wake, sweep=pool.sweep)
            else:
                logger.info("Procrastinate mode: syncs run in `rostersync worker` processes.")
                ticker = Scheduler(engine)
            ticker_thread = threading.Thread(
                target=ticker.run, args=(stop, settings.interval), name="scheduler", daemon=True
            )
            ticker_thread.start()
        try:
            yield
        finally:
            stop.set()
            if ticker_thread is not None:
                ticker_thread.join(timeout=30)
            if pool is not None:
                pool.stop(timeout=60)

    app = FastAPI(
        title="ClassPilot roster service",
        version="1",
        description="Rosters, syncs and class sessions. Authenticate with a session cookie, "
        "a personal token (`Authorization: Bearer rs_…`), or for the extension routes the "
        "district's `X-Extension-Key`.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.uploads = settings.uploads
    app.state.limiter = RateLimiter(settings.extension_rate, settings.extension_burst)
    app.state.wake = None
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _error_handlers(app)
    return app


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error_handlers(app: FastAPI) -> None:
    def answer(request: Request, status: int, message: str, **headers: str) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": message}, status_code=status, headers=headers)
        return pages.error_page(request, status, message, headers)

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(request: Request, exc: Unauthenticated) -> Response:
        if _is_api(request):
            return JSONResponse(
                {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/sign-in?next={quote(target)}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return answer(request, 403, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return answer(request, 404, str(exc))

    @app.exception_handler(Throttled)
    async def throttled(request: Request, exc: Throttled) -> Response:
        return answer(request, 429, str(exc), **{"Retry-After": str(exc.retry_after)})

    @app.exception_handler(ConfigError)
    async def bad_input(request: Request, exc: ConfigError) -> Response:
        return answer(request, 422, str(exc))

    @app.exception_handler(RosterError)
    async def conflict(request: Request, exc: RosterError) -> Response:
        return answer(request, 409, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
        return answer(request, 422, "Some fields of the form are missing or not valid.")
