"""Built-in tool ``sql_query``: read-only, parameterised queries on SQLite.

::

    sql_query = sql_tool(database="tickets.db", max_rows=500)
    await ctx.tools.call("sql_query", query="SELECT * FROM tickets WHERE id = ?", params=[7])

Safety rules:

- the database is opened read-only (``file:...?mode=ro``) with
  ``PRAGMA query_only``, and an authorizer allows reading and nothing else
  (no writes, no ``ATTACH``, no pragmas): anything else is refused
  (:class:`~shared.errors.ToolRefusedError`);
- one statement per call; values go in ``params`` (``?`` or ``:name``
  placeholders), never into the query text;
- at most ``max_rows`` rows come back (``truncated`` says when there were
  more); a query running past the timeout is interrupted
  (:class:`~shared.errors.ToolTimeoutError`); no text or blob may grow past
  ``max_value_bytes`` (1 MiB), nor the query text past 100 KB.

Connections come from a :class:`Pool` (``pool_size`` per worker), each used by
one thread at a time.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from shared.errors import ConfigError, ToolRefusedError, ToolTimeoutError
from worker.tools.pool import Pool
from worker.tools.spec import Tool, make_tool

Scalar = str | int | float | bool | None

_ALLOWED = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


_MAX_QUERY_BYTES = 100_000


class SqlQuery(BaseModel):
    """Input of ``sql_query``."""

    query: str = Field(description="One SELECT statement with ? or :name placeholders")
    params: list[Scalar] | dict[str, Scalar] = Field(
        default_factory=list, description="Values for the placeholders"
    )


def _authorize(action: int, *_: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY


def connect_read_only(
    database: str | os.PathLike[str], *, max_value_bytes: int = 1024 * 1024
) -> sqlite3.Connection:
    """A read-only connection that may only read (see the module docstring), on
    which no text or blob may grow past ``max_value_bytes`` and no query text
    past 100 KB (SQLite's own limits)."""
    uri = f"file:{quote(os.path.abspath(database))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(_authorize)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, _MAX_QUERY_BYTES)
    return conn


def sql_tool(
    database: str | os.PathLike[str],
    *,
    name: str = "sql_query",
    max_rows: int = 1000,
    max_value_bytes: int = 1024 * 1024,
    timeout_s: float = 10.0,
    pool_size: int = 2,
    permission: str = "db:read",
) -> Tool:
    """A ``sql_query`` tool on the SQLite file ``database``; raises ConfigError
    if it does not exist. No value a query makes may pass ``max_value_bytes``
    (``randomblob(999999999)`` is refused instead of allocating 1 GB)."""
    if not Path(database).is_file():
        raise ConfigError(f"{name}: no SQLite database at {database!s}")
    if max_rows < 1:
        raise ConfigError(f"{name}: max_rows must be at least 1")

    def close(conn: sqlite3.Connection) -> None:
        conn.close()

    pool: Pool[sqlite3.Connection] = Pool(
        name,
        factory=lambda: connect_read_only(database, max_value_bytes=max_value_bytes),
        close=close,
        limit=pool_size,
    )

    def run(conn: sqlite3.Connection, params: SqlQuery) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            cursor = conn.execute(params.query, params.params)
            columns = [d[0] for d in cursor.description or ()]
            rows = cursor.fetchmany(max_rows + 1)
            cursor.close()
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise ToolTimeoutError(
                    f"{name}: query ran longer than {timeout_s:g}s", tool=name
                ) from exc
            raise ToolRefusedError(f"{name}: {_why(exc)}", tool=name) from exc
        except (sqlite3.DatabaseError, sqlite3.ProgrammingError) as exc:
            raise ToolRefusedError(f"{name}: {_why(exc)}", tool=name) from exc
        finally:
            conn.set_progress_handler(None, 0)
        return {
            "columns": columns,
            "rows": [list(row) for row in rows[:max_rows]],
            "truncated": len(rows) > max_rows,
        }

    async def sql_query(params: SqlQuery) -> dict[str, Any]:
        """Run one read-only, parameterised SQL query; returns columns and rows."""
        async with pool.acquire() as conn:
            return await asyncio.to_thread(run, conn, params)

    return make_tool(
        sql_query,
        name=name,
        permissions={permission},
        timeout_s=timeout_s + 1,  # the query's own deadline answers first
        once=False,
        breaker=None,
        pools=(pool,),
    )


def _why(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not authorized" in text or "readonly" in text or "read-only" in text:
        return f"only reading is allowed ({text})"
    return text


__all__ = ["SqlQuery", "connect_read_only", "sql_tool"]
