"""Web load: the Start Class roster fetch and the extension's sightings under 64 concurrent clients.

Builds a fresh store with a district whose sections hold 35 students each, a teacher account
with an API token, and an extension key; starts the web app (no scheduler, no sync workers) as a
child process on a free loopback port; then, side by side in one run:

    load generator ceiling  GET of a trivial server (the client's own limit on this machine)
    roster fetch            GET /api/v1/sections/{id} as the teacher, Bearer token
    sightings               POST /api/v1/extension/sightings with the key, new and repeated
                            students; then the store is counted: nothing acknowledged is lost

The load generator is a small asyncio HTTP/1.1 client with keep-alive connections, run in its own
process; every phase is bounded by a number of requests and a number of seconds. See
docs/benchmarks.md for what each figure means and the targets.

    python bench/web_load.py [--db sqlite|postgresql] [--processes 1,2] [--server app|cli]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from run import recreate_postgres  # bench/run.py, beside this script

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/rostersync_bench_web"
DISTRICT = "Bench Unified"
TEACHER = "teacher0@bench.example.org"
URL_VARIABLE = "ROSTERSYNC_BENCH_WEB_URL"
RATE_VARIABLE = "ROSTERSYNC_BENCH_WEB_RATE"


class BenchError(Exception):
    """A step failed or answered something other than what the benchmark expects."""


@dataclass
class Phase:
    """The figures of one measured phase."""

    name: str
    requests: int
    seconds: float
    statuses: dict[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # transport errors and answers other than 200 (429 is counted apart)
    throttled: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_setup(command: list[str], label: str, stdin: str | None = None) -> str:
    """Run an untimed setup command; raise with its output if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, input=stdin)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BenchError(f"{label} failed (exit {result.returncode}): {' '.join(command)}\n{tail}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the load generator (runs in a child process) -------------------------------------------------


def _request_bytes(method: str, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One response: its status, its body, and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, rest = head.partition(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length, close = 0, False
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
        elif name == b"transfer-encoding":
            raise BenchError("chunked answers are not supported by the load generator")
    return status, await reader.readexactly(length), close


async def _drive(plan: dict[str, Any]) -> dict[str, Any]:
    """Send ``plan['requests']`` requests over ``plan['clients']`` connections, within
    ``plan['seconds']``; request i uses body i of the plan (when it has bodies)."""
    bodies = [json.dumps(body).encode() for body in plan.get("bodies", [])]
    total = len(bodies) if bodies else int(plan["requests"])
    fixed = None if bodies else _request_bytes("GET", plan["path"], plan["headers"], None)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    acknowledged: list[int] = []
    next_index = 0
    deadline = time.perf_counter() + float(plan["seconds"])

    async def client() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", plan["port"])
        try:
            while next_index < total and time.perf_counter() < deadline:
                index = next_index
                next_index += 1
                payload = fixed or _request_bytes(
                    "POST", plan["path"], plan["headers"], bodies[index]
                )
                started = time.perf_counter()
                try:
                    writer.write(payload)
                    status, _, close = await _read_answer(reader)
                except (OSError, asyncio.IncompleteReadError) as error:
                    statuses[type(error).__name__] = statuses.get(type(error).__name__, 0) + 1
                    close, status = True, 0
                else:
                    latencies.append(time.perf_counter() - started)
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    if status == 200 and bodies:
                        acknowledged.append(index)
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", plan["port"])
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(int(plan["clients"]))))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "sent": min(next_index, total),
        "latencies": latencies,
        "statuses": statuses,
        "acknowledged": acknowledged,
    }


def load_main(plan_file: str) -> int:
    plan = json.loads(Path(plan_file).read_text())
    print(json.dumps(asyncio.run(_drive(plan))))
    return 0


def percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def drive(name: str, plan: dict[str, Any], workdir: Path) -> tuple[Phase, dict[str, Any]]:
    """Run the load generator in a child process and summarise what it measured."""
    plan_file = workdir / "plan.json"
    plan_file.write_text(json.dumps(plan))
    out = run_setup([sys.executable, __file__, "_load", str(plan_file)], f"{name}: load")
    result = json.loads(out)
    ordered = sorted(result["latencies"])
    statuses = result["statuses"]
    throttled = statuses.get("429", 0)
    errors = sum(count for status, count in statuses.items() if status not in ("200", "429"))
    phase = Phase(
        name=name,
        requests=int(result["sent"]),
        seconds=float(result["seconds"]),
        statuses=dict(sorted(statuses.items())),
        p50_ms=percentile(ordered, 0.50),
        p95_ms=percentile(ordered, 0.95),
        p99_ms=percentile(ordered, 0.99),
        max_ms=ordered[-1] * 1000 if ordered else float("nan"),
        errors=errors,
        throttled=throttled,
    )
    return phase, result


# -- servers (children) ---------------------------------------------------------------------------


class _TrivialProtocol(asyncio.Protocol):
    """Answers every request with a fixed 200 and ``{}``: the ceiling of the load generator."""

    ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            found = re.search(rb"(?i)content-length:\s*(\d+)", self.buffer[:end])
            size = end + 4 + (int(found.group(1)) if found else 0)
            if len(self.buffer) < size:
                return
            self.buffer = self.buffer[size:]
            self.transport.write(self.ANSWER)


def trivial_main(port: str) -> int:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_TrivialProtocol, "127.0.0.1", int(port))
        async with server:
            await server.serve_forever()

    asyncio.run(serve())
    return 0


def bench_app() -> Any:
    """The app as `rostersync serve --no-jobs` builds it, with the extension's rate limit set
    from the environment (the CLI has no option for it)."""
    from rostersync.store.db import make_engine
    from rostersync.web.app import Settings, create_app, uploads_beside

    engine = make_engine(os.environ[URL_VARIABLE])
    rate = float(os.environ[RATE_VARIABLE])
    settings = Settings(
        uploads=uploads_beside(engine),
        run_jobs=False,
        extension_rate=rate,
        extension_burst=max(120.0, rate),
    )
    return create_app(engine, settings)


def serve_main(port: str, processes: str) -> int:
    import uvicorn

    uvicorn.run(
        "web_load:bench_app",
        factory=True,
        app_dir=str(BENCH_DIR),
        host="127.0.0.1",
        port=int(port),
        workers=int(processes),
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        log_level="warning",
    )
    return 0


def start_server(
    command: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server child and wait until it accepts connections (at most 60 s)."""
    with log.open("wb") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise BenchError(f"the server exited ({child.returncode}): {' '.join(command)}\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return child
        except OSError:
            time.sleep(0.1)
    stop_server(child)
    raise BenchError(f"the server did not listen on port {port} within 60 s")


def stop_server(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


# -- the store ------------------------------------------------------------------------------------


def database_url(args: argparse.Namespace) -> str:
    if args.db == "sqlite":
        return f"sqlite:///{(args.workdir / 'web.sqlite').resolve()}"
    return str(args.pg_url)


def fresh_database(args: argparse.Namespace) -> None:
    """An empty store: a new SQLite file, or the PostgreSQL database dropped and created again."""
    if args.db == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{args.workdir / 'web.sqlite'}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(args.workdir / "web-uploads", ignore_errors=True)
        return
    recreate_postgres(str(args.pg_url))


def roster_csv(path: Path, sections: int, students: int) -> None:
    """Sections of ``students`` each, one teacher per section; teacher0 teaches section 0."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            ["Teacher Email", "Class Name", "Section Id", "Student Email", "Student Name", "Grade"]
        )
        for section in range(sections):
            for seat in range(students):
                number = section * students + seat
                writer.writerow(
                    [
                        f"teacher{section}@bench.example.org",
                        f"Period {section % 8 + 1} Biology {section}",
                        f"sec-{section}",
                        f"s{number}@bench.example.org",
                        f"Student{number} Family{number % 97}",
                        str(9 + number % 4),
                    ]
                )


def build_store(args: argparse.Namespace) -> dict[str, str]:
    """The district, its synced sections, the teacher's account and token, an extension key."""
    cli = [str(args.rostersync), "--database-url", database_url(args)]
    fresh_database(args)
    roster = args.workdir / "web-roster.csv"
    roster_csv(roster, args.sections, args.students)
    run_setup([*cli, "init"], "init")
    run_setup([*cli, "district", "add", DISTRICT], "district add")
    run_setup(
        [*cli, "source", "add", "sheet", "--district", DISTRICT, "--kind", "csv",
         "--set", f"path={roster.resolve()}"],
        "source add",
    )  # fmt: skip
    synced = json.loads(run_setup([*cli, "sync", "sheet", "--json"], "sync"))
    if synced.get("status") != "succeeded":
        raise BenchError(f"the roster sync ended {synced.get('status')!r}: {synced}")
    run_setup(
        [*cli, "user", "add", TEACHER, "--district", DISTRICT, "--role", "teacher",
         "--password-stdin"],
        "user add",
        stdin="bench-password-not-secret\n",
    )  # fmt: skip
    token = run_setup([*cli, "token", "create", TEACHER, "--name", "bench"], "token create")
    key = run_setup([*cli, "extension-key", "create", DISTRICT, "--name", "bench"], "key create")
    return {"token": token.split(": ", 1)[1].strip(), "key": key.split(": ", 1)[1].strip()}


def store_counts(args: argparse.Namespace) -> dict[str, int]:
    """Sighting rows, people, and the bench's new students (and any duplicated among them)."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url(args))
    try:
        with engine.connect() as conn:
            people_with = sa.text(
                "SELECT count(*), count(DISTINCT email) FROM people WHERE email LIKE 'new%'"
            )
            new_people, new_distinct = conn.execute(people_with).one()
            return {
                "sightings": conn.execute(sa.text("SELECT count(*) FROM sightings")).scalar_one(),
                "people": conn.execute(sa.text("SELECT count(*) FROM people")).scalar_one(),
                "new_people": int(new_people),
                "new_distinct": int(new_distinct),
            }
    finally:
        engine.dispose()


# -- phases ---------------------------------------------------------------------------------------


def sighting_bodies(count: int, roster_students: int, offset: int) -> list[dict[str, str]]:
    """A mix of new and repeated students: in every four, a new student, a roster student, the
    same new student again (close behind, so repeats race), and an earlier new student again."""
    bodies = []
    for index in range(count):
        group, kind = divmod(index, 4)
        if kind == 0 or kind == 2:
            email = f"new{offset + group}@bench.example.org"
        elif kind == 1:
            email = f"s{(index * 7) % roster_students}@bench.example.org"
        else:
            email = f"new{offset + group // 2}@bench.example.org"
        bodies.append({"email": email, "name": "Seen Student", "device": f"cb-{index % 500}"})
    return bodies


def section_id(port: int, token: str) -> int:
    """The teacher's first section, as the teacher's own section list gives it."""
    import httpx

    answer = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/sections",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    answer.raise_for_status()
    sections = answer.json()
    if not sections:
        raise BenchError("the teacher sees no sections")
    return int(sections[0]["id"])


def run_server_phases(
    args: argparse.Namespace, secrets: dict[str, str], processes: int, offset: int
) -> list[Phase]:
    port = free_port()
    if args.server == "cli":
        command = [str(args.rostersync), "--database-url", database_url(args), "serve",
                   "--no-jobs", "--port", str(port)]  # fmt: skip
        child = start_server(command, port, args.workdir / "web-server.log")
        label = "serve --no-jobs"
    else:
        env = {**os.environ, URL_VARIABLE: database_url(args), RATE_VARIABLE: str(args.rate)}
        command = [sys.executable, __file__, "_serve", str(port), str(processes)]
        child = start_server(command, port, args.workdir / "web-server.log", env)
        label = f"{processes} process{'es' if processes > 1 else ''}"
    phases = []
    try:
        section = section_id(port, secrets["token"])
        roster_plan = {
            "port": port,
            "path": f"/api/v1/sections/{section}",
            "headers": {"Authorization": f"Bearer {secrets['token']}"},
            "clients": args.clients,
            "seconds": args.seconds,
        }
        drive("warm-up", {**roster_plan, "requests": min(2000, args.requests)}, args.workdir)
        phase, _ = drive(
            f"roster fetch ({label})", {**roster_plan, "requests": args.requests}, args.workdir
        )
        answer = json.loads(
            subprocess.run(
                ["curl", "-s", "-H", f"Authorization: Bearer {secrets['token']}",
                 f"http://127.0.0.1:{port}/api/v1/sections/{section}"],
                capture_output=True, text=True, check=True,
            ).stdout
        )  # fmt: skip
        phase.detail = {"section": section, "students": len(answer["students"])}
        if len(answer["students"]) != args.students:
            raise BenchError(f"section {section} has {len(answer['students'])} students")
        phases.append(phase)
        print(f"  {phase.name}: {phase.per_second:,.0f}/s, p99 {phase.p99_ms:.1f} ms", flush=True)

        bodies = sighting_bodies(args.requests, args.sections * args.students, offset)
        before = store_counts(args)
        phase, result = drive(
            f"sightings ({label})",
            {"port": port, "path": "/api/v1/extension/sightings",
             "headers": {"X-Extension-Key": secrets["key"]}, "bodies": bodies,
             "clients": args.clients, "seconds": args.seconds},
            args.workdir,
        )  # fmt: skip
        after = store_counts(args)
        acknowledged = [bodies[index] for index in result["acknowledged"]]
        acked_new = {b["email"] for b in acknowledged if b["email"].startswith("new")}
        stored = after["sightings"] - before["sightings"]
        created = after["new_people"] - before["new_people"]
        phase.detail = {
            "acknowledged": len(acknowledged),
            "stored": stored,
            "lost": max(0, len(acknowledged) - stored),
            "new students acknowledged": len(acked_new),
            "new people stored": created,
            "duplicated people": after["new_people"] - after["new_distinct"],
            "other people created": after["people"] - before["people"] - created,
        }
        phases.append(phase)
        print(
            f"  {phase.name}: {phase.per_second:,.0f}/s, p99 {phase.p99_ms:.1f} ms, "
            f"{stored:,} stored of {len(acknowledged):,} acknowledged",
            flush=True,
        )
    finally:
        stop_server(child)
    return phases


def ceiling(args: argparse.Namespace) -> Phase:
    port = free_port()
    command = [sys.executable, __file__, "_trivial", str(port)]
    child = start_server(command, port, args.workdir / "trivial-server.log")
    try:
        plan = {"port": port, "path": "/", "headers": {}, "clients": args.clients}
        drive("warm-up", {**plan, "requests": 2000, "seconds": 5}, args.workdir)
        phase, _ = drive(
            "load generator ceiling (trivial server)",
            {**plan, "requests": args.requests * 2, "seconds": args.seconds},
            args.workdir,
        )
    finally:
        stop_server(child)
    print(f"  {phase.name}: {phase.per_second:,.0f}/s, p99 {phase.p99_ms:.1f} ms", flush=True)
    return phase


def verdicts(phase: Phase) -> str:
    """What a phase proves against the targets of the brief."""
    if phase.name.startswith("roster"):
        met = phase.per_second >= 1000 and phase.p99_ms <= 50 and not phase.errors
        goal = met and phase.per_second >= 3000
    elif phase.name.startswith("sightings"):
        none_lost = phase.detail.get("lost") == 0 and phase.detail.get("duplicated people") == 0
        met = phase.per_second >= 1000 and none_lost and not phase.errors
        goal = met and phase.per_second >= 3000
    else:
        return ""
    return "goal" if goal else "met" if met else "missed"


def print_table(phases: list[Phase], title: str) -> None:
    header = ("phase", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "429", "target")
    lines = [
        (
            phase.name,
            f"{phase.requests:,}",
            f"{phase.per_second:,.0f}",
            f"{phase.p50_ms:.1f}",
            f"{phase.p95_ms:.1f}",
            f"{phase.p99_ms:.1f}",
            str(phase.errors),
            str(phase.throttled),
            verdicts(phase),
        )
        for phase in phases
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    print(f"\n{title}")
    for cells in [header, tuple("-" * width for width in widths), *lines]:
        first = cells[0].ljust(widths[0])
        rest = "  ".join(
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        )
        print(f"{first}  {rest}")
    for phase in phases:
        if phase.detail and phase.name.startswith("sightings"):
            facts = ", ".join(f"{name} {value:,}" for name, value in phase.detail.items())
            print(f"{phase.name}: {facts}")
        if set(phase.statuses) - {"200"}:
            print(f"{phase.name}: answers {phase.statuses}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL database URL")
    parser.add_argument(
        "--server", choices=["app", "cli"], default="app",
        help="app: the app as `serve --no-jobs` builds it, with the extension rate limit raised "
        "to --rate and --processes uvicorn workers; cli: `rostersync serve --no-jobs` itself "
        "(one process, the stock limit of 600 sightings a minute per key)",
    )  # fmt: skip
    parser.add_argument(
        "--processes", default="1,2",
        help="comma-separated web process counts to measure (--server app; default 1,2)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=float, default=1e6, help="extension requests/s per key (--server app)"
    )
    parser.add_argument("--clients", type=int, default=64, help="concurrent connections")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per phase at most")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per phase at most")
    parser.add_argument("--students", type=int, default=35, help="students per section")
    parser.add_argument("--sections", type=int, default=200, help="sections in the district")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rostersync-bench",
        help="where the store and the roster file go",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    parser.add_argument(
        "--rostersync", type=Path, default=Path(sys.executable).parent / "rostersync",
        help="the product's CLI (default: the one beside this Python)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    counts = [int(value) for value in args.processes.split(",") if value.strip()]
    if args.server == "cli":
        counts = [1]
    if not args.rostersync.exists():
        parser.error(f"{args.rostersync} not found: install the product or pass --rostersync")
    args.workdir.mkdir(parents=True, exist_ok=True)

    try:
        print(f"store: {args.db}; {args.sections} sections of {args.students} students")
        secrets = build_store(args)
        phases = [ceiling(args)]
        for position, processes in enumerate(counts):
            phases += run_server_phases(args, secrets, processes, position * args.requests)
    except BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", file=sys.stderr)
        return 1

    print_table(
        phases,
        f"{args.db}, {args.clients} clients, {os.cpu_count()} cores, --server {args.server}"
        + (f" (extension limit {args.rate:g}/s per key)" if args.server == "app" else ""),
    )
    if args.json:
        figures = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "db": args.db,
            "server": args.server,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "phases": [{**asdict(phase), "per_second": phase.per_second} for phase in phases],
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        sys.exit(load_main(sys.argv[2]))
    if len(sys.argv) > 1 and sys.argv[1] == "_trivial":
        sys.exit(trivial_main(sys.argv[2]))
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        sys.exit(serve_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
