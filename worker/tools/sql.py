"""Built-in tool ``sql_query``: parameterised queries on SQLite, read-only by default.

::

    sql_query = sql_tool(database="tickets.db", tables=["tickets"], max_rows=500)
    await ctx.tools.call("sql_query", query="SELECT * FROM tickets WHERE id = ?", params=[7])

Safety rules (refusals are :class:`~agenticflow.shared.errors.ToolRefusedError`):

- **tables**: a query may touch only the tables (or views) in ``tables``
  (``"*"``: every table, an explicit choice); reading any other table, a
  table-valued pragma or ``sqlite_master`` is refused. What counts is the
  table actually read: a view needs its tables listed too, and ``count(*)``
  over a CTE reads a "table" named like the CTE (write ``count(x)``);
- **read-only by default**: the database is opened read-only
  (``file:...?mode=ro``) with ``PRAGMA query_only``, and an authorizer
  allows reading and nothing else. With ``allow_writes=True`` the file is
  opened read-write and ``INSERT``/``UPDATE``/``DELETE`` on listed tables are
  allowed (the tool then needs ``db:write`` and its results are kept under the
  call's idempotency key, so a retried task does not write twice); schema
  changes, ``ATTACH``, pragmas and ``load_extension`` are refused either way
  (and ``ATTACH`` is also limited to 0 databases);
- one statement per call; values go in ``params`` (``?`` or ``:name``
  placeholders), never into the query text;
- **time**: a query running past ``timeout_s`` is interrupted by a progress
  handler (:class:`~agenticflow.shared.errors.ToolTimeoutError`), runaway recursive CTEs
  included;
- **memory and size**: no text or blob may grow past ``max_value_bytes``
  (1 MiB) nor the query text past 100 KB; at most ``max_rows`` rows come back
  (``truncated`` says when there were more) and at most ``max_result_bytes``
  (8 MiB) of values; each connection's page cache is 2 MiB; SQLite's heap in
  the worker process is capped at ``max_memory_mb`` (256; SQLite's hard heap
  limit is per process, so the smallest of the process's sql tools applies):
  a query that needs more fails with "out of memory", the worker lives on.

Connections come from a :class:`Pool` (``pool_size`` per worker), each used by
one thread at a time.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field

from agenticflow.shared.errors import ConfigError, ToolRefusedError, ToolTimeoutError
from agenticflow.worker.tools.pool import Pool
from agenticflow.worker.tools.spec import Tool, make_tool

Scalar = str | int | float | bool | None

_READING = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE})
_WRITING = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})
_REFUSED_FUNCTIONS = frozenset(
    {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "sqlite_dbpage"}
)
"""Functions that reach outside the database (or, for ``fts3_tokenizer``, into
the process's memory), refused even if the build has them."""

_MAX_QUERY_BYTES = 100_000
_CACHE_KIB = 2048


class SqlQuery(BaseModel):
    """Input of ``sql_query``."""

    query: str = Field(description="One SQL statement with ? or :name placeholders")
    params: list[Scalar] | dict[str, Scalar] = Field(
        default_factory=list, description="Values for the placeholders"
    )


def authorizer(
    tables: frozenset[str] | None, *, writes: bool
) -> Any:  # the sqlite3 callback type is not exported
    """The authorizer for a table allow-list (``None``: every table)."""

    def listed(name: str | None) -> bool:
        return tables is None or (name is not None and name.lower() in tables)

    def allowed(action: int, arg1: str | None, arg2: str | None, inner: str | None) -> bool:
        if action in _READING:
            return True
        if action == sqlite3.SQLITE_READ:
            # Only the table actually read counts: ``inner`` names a view *or a
            # CTE*, and a CTE called like a listed table could wrap any other.
            return listed(arg1)
        if action == sqlite3.SQLITE_FUNCTION:
            return (arg2 or "").lower() not in _REFUSED_FUNCTIONS
        if writes and action in _WRITING:
            return listed(arg1) and not (arg1 or "").lower().startswith("sqlite_")
        return writes and action == sqlite3.SQLITE_TRANSACTION

    def authorize(
        action: int, arg1: str | None, arg2: str | None, db: str | None, inner: str | None
    ) -> int:
        if db in (None, "main") and allowed(action, arg1, arg2, inner):  # no temp, no attached
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    return authorize


def connect(
    database: str | os.PathLike[str],
    *,
    tables: frozenset[str] | None,
    allow_writes: bool = False,
    max_value_bytes: int = 1024 * 1024,
    max_memory_mb: int = 256,
) -> sqlite3.Connection:
    """A connection with the module docstring's rules: read-only unless
    ``allow_writes``, only ``tables`` (None: all), SQLite's own limits."""
    mode = "rw" if allow_writes else "ro"
    uri = f"file:{quote(os.path.abspath(database))}?mode={mode}"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    try:
        if not allow_writes:
            conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA trusted_schema = OFF")  # no functions with side effects in views
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        # Process-wide, and only ever lowered by the pragma: the smallest wins.
        conn.execute(f"PRAGMA hard_heap_limit = {max_memory_mb * 1024 * 1024}")
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, _MAX_QUERY_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_WORKER_THREADS, 0)
        conn.set_authorizer(authorizer(tables, writes=allow_writes))
    except BaseException:
        conn.close()
        raise
    return conn


def connect_read_only(
    database: str | os.PathLike[str], *, max_value_bytes: int = 1024 * 1024
) -> sqlite3.Connection:
    """A read-only connection to every table (see :func:`connect`)."""
    return connect(database, tables=None, max_value_bytes=max_value_bytes)


def sql_tool(
    database: str | os.PathLike[str],
    *,
    tables: Iterable[str] | Literal["*"] | None = None,
    allow_writes: bool = False,
    name: str = "sql_query",
    max_rows: int = 1000,
    max_value_bytes: int = 1024 * 1024,
    max_result_bytes: int = 8 * 1024 * 1024,
    max_memory_mb: int = 256,
    timeout_s: float = 10.0,
    pool_size: int = 2,
    permission: str | None = None,
) -> Tool:
    """A ``sql_query`` tool on the SQLite file ``database`` (see the module
    docstring). ``tables`` is required: the tables a query may touch, or
    ``"*"`` for all. ``permission`` defaults to ``db:read``, or ``db:write``
    with ``allow_writes``. Raises ConfigError for a missing file or a bad option."""
    allowed = _table_list(name, tables)
    if not Path(database).is_file():
        raise ConfigError(f"{name}: no SQLite database at {database!s}")
    if max_rows < 1:
        raise ConfigError(f"{name}: max_rows must be at least 1")
    if max_memory_mb < 8:
        raise ConfigError(f"{name}: max_memory_mb must be at least 8")
    permission = permission or ("db:write" if allow_writes else "db:read")

    def close(conn: sqlite3.Connection) -> None:
        conn.close()

    pool: Pool[sqlite3.Connection] = Pool(
        name,
        factory=partial(
            connect,
            database,
            tables=allowed,
            allow_writes=allow_writes,
            max_value_bytes=max_value_bytes,
            max_memory_mb=max_memory_mb,
        ),
        close=close,
        limit=pool_size,
    )

    def run(conn: sqlite3.Connection, params: SqlQuery) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            cursor = conn.execute(params.query, params.params)
            try:
                columns = [d[0] for d in cursor.description or ()]
                rows: list[list[Any]] = []
                size = 0
                for row in cursor:
                    if len(rows) == max_rows:
                        return {"columns": columns, "rows": rows, "truncated": True}
                    size += sum(len(v) if isinstance(v, str | bytes) else 8 for v in row)
                    if size > max_result_bytes:
                        raise ToolRefusedError(
                            f"{name}: the result is over {max_result_bytes} bytes "
                            f"after {len(rows)} rows; select fewer rows or columns",
                            tool=name,
                        )
                    rows.append(list(row))
            finally:
                cursor.close()
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise ToolTimeoutError(
                    f"{name}: query ran longer than {timeout_s:g}s", tool=name
                ) from exc
            raise ToolRefusedError(f"{name}: {_why(exc, allow_writes)}", tool=name) from exc
        except (sqlite3.DatabaseError, sqlite3.ProgrammingError, MemoryError) as exc:
            raise ToolRefusedError(f"{name}: {_why(exc, allow_writes)}", tool=name) from exc
        finally:
            conn.set_progress_handler(None, 0)
        return {"columns": columns, "rows": rows, "truncated": False}

    async def sql_query(params: SqlQuery) -> dict[str, Any]:
        """Run one parameterised SQL query on the allowed tables; returns columns and rows."""
        async with pool.acquire() as conn:
            return await asyncio.to_thread(run, conn, params)

    return make_tool(
        sql_query,
        name=name,
        permissions={permission},
        timeout_s=timeout_s + 1,  # the query's own deadline answers first
        once=allow_writes,  # a write is a side effect: not repeated on a retry
        breaker=None,
        pools=(pool,),
    )


def _table_list(name: str, tables: Iterable[str] | str | None) -> frozenset[str] | None:
    """The allow-list as lower-case names; None for ``"*"``; ConfigError otherwise."""
    if tables is None:
        raise ConfigError(
            f"{name}: name the tables a query may use, e.g. sql_tool(db, tables=['tickets']) "
            "(tables='*' allows every table)"
        )
    if isinstance(tables, str):
        if tables != "*":
            raise ConfigError(f"{name}: tables must be a list of names or '*', not {tables!r}")
        return None
    allowed = frozenset(t.lower() for t in tables)
    if not allowed:
        raise ConfigError(f"{name}: tables is empty (tables='*' allows every table)")
    return allowed


def _why(exc: BaseException, writes: bool) -> str:
    text = str(exc) or type(exc).__name__
    if "not authorized" in text or "prohibited" in text:
        allowed = "listed tables" if writes else "reading listed tables"
        return f"only {allowed} is allowed ({text})"
    if "readonly" in text or "read-only" in text:
        return f"only reading is allowed ({text})"
    if isinstance(exc, MemoryError) or "out of memory" in text:
        return f"the query needs more memory than the tool allows ({text})"
    return text


__all__ = ["SqlQuery", "authorizer", "connect", "connect_read_only", "sql_tool"]
