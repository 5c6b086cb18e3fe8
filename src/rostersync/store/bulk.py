"""Bulk reads and writes of polars frames, per database dialect.

The engine hands whole columns to these functions; they use each database's fast path —
``executemany`` in large batches on SQLite, ``COPY`` on PostgreSQL — inside the caller's
transaction. Nothing here builds an object per row.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl
import sqlalchemy as sa

BATCH = 50_000


def dialect(conn: sa.Connection) -> str:
    return conn.dialect.name


def _raw(conn: sa.Connection) -> Any:
    return conn.connection.driver_connection


def _batches(frame: pl.DataFrame) -> Iterator[list[tuple[Any, ...]]]:
    for offset in range(0, frame.height, BATCH):
        yield frame.slice(offset, BATCH).rows()


def insert(conn: sa.Connection, table: str, frame: pl.DataFrame) -> int:
    """Insert every row of ``frame`` into ``table``; the frame's columns name the table's."""
    if frame.height == 0:
        return 0
    columns = frame.columns
    if dialect(conn) == "postgresql":
        _copy_in(conn, table, frame)
        return frame.height
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
    cursor = _raw(conn).cursor()
    for batch in _batches(frame):
        cursor.executemany(sql, batch)
    cursor.close()
    return frame.height


def _copy_in(conn: sa.Connection, table: str, frame: pl.DataFrame) -> None:
    # CSV through COPY is the fastest way into PostgreSQL. Strings are always quoted, so an
    # empty string stays an empty string and an unquoted empty field is NULL.
    columns = ", ".join(frame.columns)
    sql = f"COPY {table} ({columns}) FROM STDIN (FORMAT csv)"
    cursor = _raw(conn).cursor()
    with cursor.copy(sql) as copy:
        for offset in range(0, frame.height, 200_000):
            chunk = frame.slice(offset, 200_000)
            copy.write(chunk.write_csv(include_header=False, quote_style="non_numeric"))
    cursor.close()


def update(conn: sa.Connection, table: str, key: str | Sequence[str], frame: pl.DataFrame) -> int:
    """Set the frame's non-key columns on the rows whose ``key`` column(s) match."""
    if frame.height == 0:
        return 0
    keys = [key] if isinstance(key, str) else list(key)
    values = [c for c in frame.columns if c not in keys]
    ordered = frame.select([*values, *keys])
    if dialect(conn) == "postgresql":
        return _update_pg(conn, table, keys, values, ordered)
    sets = ", ".join(f"{c} = ?" for c in values)
    where = " AND ".join(f"{k} = ?" for k in keys)
    sql = f"UPDATE {table} SET {sets} WHERE {where}"
    cursor = _raw(conn).cursor()
    for batch in _batches(ordered):
        cursor.executemany(sql, batch)
    cursor.close()
    return frame.height


def _update_pg(
    conn: sa.Connection, table: str, keys: list[str], values: list[str], frame: pl.DataFrame
) -> int:
    temp = f"_upd_{table}"
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {temp}")
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS "
        f"SELECT {', '.join([*values, *keys])} FROM {table} WITH NO DATA"
    )
    _copy_in(conn, temp, frame)
    sets = ", ".join(f"{c} = u.{c}" for c in values)
    where = " AND ".join(f"t.{k} = u.{k}" for k in keys)
    conn.exec_driver_sql(f"UPDATE {table} AS t SET {sets} FROM {temp} AS u WHERE {where}")
    conn.exec_driver_sql(f"DROP TABLE {temp}")
    return frame.height


def delete(conn: sa.Connection, table: str, frame: pl.DataFrame) -> int:
    """Delete the rows whose columns equal a row of ``frame`` (used for snapshots only)."""
    if frame.height == 0:
        return 0
    keys = frame.columns
    if dialect(conn) == "postgresql":
        temp = f"_del_{table}"
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {temp}")
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS "
            f"SELECT {', '.join(keys)} FROM {table} WITH NO DATA"
        )
        _copy_in(conn, temp, frame)
        where = " AND ".join(f"t.{k} = d.{k}" for k in keys)
        conn.exec_driver_sql(f"DELETE FROM {table} AS t USING {temp} AS d WHERE {where}")
        conn.exec_driver_sql(f"DROP TABLE {temp}")
        return frame.height
    where = " AND ".join(f"{k} = ?" for k in keys)
    cursor = _raw(conn).cursor()
    for batch in _batches(frame):
        cursor.executemany(f"DELETE FROM {table} WHERE {where}", batch)
    cursor.close()
    return frame.height


def read(
    conn: sa.Connection, sql: str, params: dict[str, Any], schema: dict[str, pl.DataType]
) -> pl.DataFrame:
    """Run a query and return its rows as a frame with ``schema`` (columns in select order)."""
    if dialect(conn) == "postgresql":
        return _read_pg(conn, sql, params, schema)
    result = conn.execute(sa.text(sql), params)
    cursor = result.cursor
    assert cursor is not None
    parts = []
    while True:
        rows = cursor.fetchmany(200_000)
        if not rows:
            break
        parts.append(pl.DataFrame(rows, schema=schema, orient="row"))
    result.close()
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts, rechunk=True)


def read_committed(
    conn: sa.Connection, sql: str, params: dict[str, Any], schema: dict[str, pl.DataType]
) -> pl.DataFrame:
    """Like :func:`read`, for large reads of data this transaction has not written yet.

    On a SQLite file the rows come through a second, read-only connection of the ADBC driver,
    which hands over Arrow columns instead of one Python tuple per row (several times faster
    for millions of rows). It sees the last committed state: the caller must not have written
    the rows it reads in its own transaction — the sync engine reads snapshots before it
    writes anything, under the write lock, so both views are the same.
    """
    path = conn.engine.url.database if dialect(conn) == "sqlite" else None
    if not path or path == ":memory:":
        return read(conn, sql, params, schema)
    import adbc_driver_sqlite.dbapi as adbc

    names = list(params)
    positional = sql
    for name in sorted(names, key=len, reverse=True):
        positional = positional.replace(f":{name}", "?")
    order = sorted(names, key=lambda n: sql.index(f":{n}"))
    with adbc.connect(f"file:{path}?mode=ro") as reader, reader.cursor() as cursor:
        cursor.execute(positional, [params[n] for n in order])
        table = cursor.fetch_arrow_table()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if frame.height == 0:
        return pl.DataFrame(schema=schema)
    frame.columns = list(schema)
    return frame.cast(schema)  # type: ignore[arg-type]


def _read_pg(
    conn: sa.Connection, sql: str, params: dict[str, Any], schema: dict[str, pl.DataType]
) -> pl.DataFrame:
    from psycopg import sql as pgsql

    raw = _raw(conn)
    bound = (
        sa.text(sql)
        .bindparams(**params)
        .compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    )
    query = pgsql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(pgsql.SQL(str(bound)))
    buffer = io.BytesIO()
    with raw.cursor() as cursor, cursor.copy(query) as copy:
        for data in copy:
            buffer.write(data)
    if buffer.tell() == 0:
        return pl.DataFrame(schema=schema)
    buffer.seek(0)
    text_schema = {name: pl.Utf8() for name in schema}
    frame = pl.read_csv(buffer, has_header=False, schema=text_schema)
    return frame.with_columns([_parse(name, dtype) for name, dtype in schema.items()])


def _parse(name: str, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Boolean():
        return (pl.col(name) == "t").alias(name)
    return pl.col(name).cast(dtype)


def allocate_ids(conn: sa.Connection, table: str, count: int) -> pl.Series:
    """Reserve ``count`` new ids for ``table`` inside the caller's write transaction.

    SQLite serialises writers (the transaction began with BEGIN IMMEDIATE), so the next ids
    after the largest are free. PostgreSQL draws them from the table's sequence
    (``<table>_ids``, made by the migrations).
    """
    if count == 0:
        return pl.Series("id", [], dtype=pl.Int64)
    if dialect(conn) == "postgresql":
        # Drawn one by one from the table's sequence, so concurrent runs of other districts
        # never receive the same id.
        return _read_pg(
            conn,
            f"SELECT nextval('{table}_ids') FROM generate_series(1, {int(count)})",
            {},
            {"id": pl.Int64()},
        ).to_series()
    top = conn.exec_driver_sql(f"SELECT COALESCE(MAX(id), 0) FROM {table}").scalar_one()
    first = int(top) + 1
    return pl.int_range(first, first + count, dtype=pl.Int64, eager=True).alias("id")
