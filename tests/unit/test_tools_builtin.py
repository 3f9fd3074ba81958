"""Built-in tools and pools: file jail, read-only SQL, HTTP allow-list and size cap."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import socket
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from agenticflow.shared.errors import (
    ConfigError,
    ToolRefusedError,
    ToolTimeoutError,
    ToolValidationError,
)
from agenticflow.worker.tools import (
    MemoryToolState,
    Pool,
    ToolBox,
    ToolRegistry,
    file_tools,
    http_tool,
    sql_tool,
)
from agenticflow.worker.tools.spec import Tool
from agenticflow.worker.tools.web import address_allowed, host_allowed, parse_rule


def box(*tools: Tool, permissions: set[str] | None = None) -> ToolBox:
    return ToolBox(
        ToolRegistry(tools, permissions=permissions or {"*"}),
        state=MemoryToolState(),
        workflow_id="wf",
        task_id="t",
        agent="a",
    )


# --- files -------------------------------------------------------------------------


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    root = tmp_path / "jail"
    root.mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "a.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("top secret", encoding="utf-8")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "outdir").symlink_to(tmp_path)
    (root / "inside").symlink_to(root / "notes" / "a.txt")
    (root / "big.txt").write_text("x" * 200, encoding="utf-8")
    return root


async def test_file_tools_read_and_write_inside_their_directory(jail: Path) -> None:
    reader, writer = file_tools(jail, max_bytes=100)
    tools = box(reader, writer)
    assert (await tools.call("file_read", path="notes/a.txt"))["content"] == "hello"
    assert (await tools.call("file_read", path="inside"))["content"] == "hello"
    written = await tools.call("file_write", path="out/new.txt", content="hi")
    assert written == {"path": "out/new.txt", "bytes": 2, "mode": "overwrite"}
    await tools.call("file_write", path="out/new.txt", content=" there", mode="append")
    assert (jail / "out" / "new.txt").read_text(encoding="utf-8") == "hi there"
    with pytest.raises(ToolRefusedError, match="already exists"):
        await tools.call("file_write", path="out/new.txt", content="x", mode="create")


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../secret.txt", r"'\.\.' is not allowed"),
        ("notes/../../secret.txt", r"'\.\.' is not allowed"),
        ("/etc/passwd", "absolute path outside"),
        ("escape", "symlink out of"),
        ("outdir/secret.txt", "symlink out of"),
        ("big.txt", "over the 100-byte limit"),
        ("missing.txt", "no file"),
        ("notes", "not a regular file"),
        ("", "empty path"),
    ],
)
async def test_file_read_refuses_escapes_and_oversized_files(
    jail: Path, path: str, why: str
) -> None:
    reader, _ = file_tools(jail, max_bytes=100)
    with pytest.raises(ToolRefusedError, match=why):
        await box(reader).call("file_read", path=path)


@pytest.mark.parametrize(
    ("path", "content", "why"),
    [
        ("../evil.txt", "x", r"'\.\.' is not allowed"),
        ("escape", "x", "symlink out of"),
        ("outdir/evil.txt", "x", "symlink out of"),
        ("/tmp/evil.txt", "x", "absolute path outside"),
        ("huge.txt", "y" * 101, "exceed the 100-byte limit"),
    ],
)
async def test_file_write_refuses_escapes_and_oversized_content(
    jail: Path, path: str, content: str, why: str
) -> None:
    _, writer = file_tools(jail, max_bytes=100)
    with pytest.raises(ToolRefusedError, match=why):
        await box(writer).call("file_write", path=path, content=content)
    assert (jail.parent / "secret.txt").read_text(encoding="utf-8") == "top secret"
    assert not (jail.parent / "evil.txt").exists()
    assert not (jail / "huge.txt").exists()


async def test_file_write_does_not_follow_a_symlink_swapped_in_as_the_last_part(
    jail: Path,
) -> None:
    _, writer = file_tools(jail, max_bytes=100)
    # A symlink inside that points inside is allowed to read, but the write goes
    # to the resolved file, never through the link.
    await box(writer).call("file_write", path="inside", content="changed")
    assert (jail / "notes" / "a.txt").read_text(encoding="utf-8") == "changed"
    assert (jail / "inside").is_symlink()


def test_file_tools_need_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        file_tools(tmp_path / "nope")


# --- sql ---------------------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        conn.executemany(
            "INSERT INTO items (name, price) VALUES (?, ?)",
            [(f"item{i}", i * 1.5) for i in range(10)],
        )
        conn.execute("CREATE TABLE users (name TEXT, password_hash TEXT)")
        conn.execute("INSERT INTO users VALUES ('admin', 'pbkdf2$secret')")
        conn.execute("CREATE VIEW cheap AS SELECT name, price FROM items WHERE price < 5")
    conn.close()
    return path


async def test_sql_query_is_parameterised_and_capped(database: Path) -> None:
    query = sql_tool(database, tables=["items"], max_rows=3)
    tools = box(query)
    found = await tools.call(
        "sql_query", query="SELECT name, price FROM items WHERE id = ?", params=[2]
    )
    assert found == {"columns": ["name", "price"], "rows": [["item1", 1.5]], "truncated": False}
    named = await tools.call(
        "sql_query", query="SELECT count(*) AS n FROM items WHERE price > :p", params={"p": 6}
    )
    assert named["rows"] == [[5]]
    many = await tools.call("sql_query", query="SELECT id FROM items ORDER BY id")
    assert many["rows"] == [[1], [2], [3]]
    assert many["truncated"] is True
    # A value with quotes is data, not SQL.
    none = await tools.call(
        "sql_query", query="SELECT id FROM items WHERE name = ?", params=["x' OR '1'='1"]
    )
    assert none["rows"] == []
    with pytest.raises(ToolValidationError):
        await tools.call("sql_query", query="SELECT 1", params=[{"nested": 1}])


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM items",
        "UPDATE items SET price = 0",
        "INSERT INTO items (name) VALUES ('x')",
        "DROP TABLE items",
        "CREATE TABLE t (x)",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA query_only = OFF",
        "SELECT 1; DELETE FROM items",
    ],
)
async def test_sql_query_refuses_anything_but_reading(database: Path, statement: str) -> None:
    with pytest.raises(ToolRefusedError):
        await box(sql_tool(database, tables=["items"])).call("sql_query", query=statement)
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (10,)
        assert conn.execute("SELECT min(price) FROM items").fetchone() == (0.0,)
    conn.close()


async def test_sql_query_cannot_allocate_a_huge_value(database: Path) -> None:
    # randomblob(999999999) allocated 1 GB in the worker.
    with pytest.raises(ToolRefusedError, match="too big"):
        await box(sql_tool(database, tables=["items"])).call(
            "sql_query", query="SELECT randomblob(999999999)"
        )
    with pytest.raises(ToolRefusedError, match="too big"):
        await box(sql_tool(database, tables=["items"], max_value_bytes=1000)).call(
            "sql_query", query="SELECT zeroblob(2000)"
        )
    small = await box(sql_tool(database, tables=["items"])).call(
        "sql_query", query="SELECT length(zeroblob(10))"
    )
    assert small["rows"] == [[10]]  # the control


async def test_sql_query_times_out(database: Path) -> None:
    slow = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(x) FROM n"
    with pytest.raises(ToolTimeoutError, match=r"longer than 0\.2s"):
        await box(sql_tool(database, tables=["items"], timeout_s=0.2)).call("sql_query", query=slow)


async def test_sql_query_reads_only_listed_tables(database: Path) -> None:
    tools = box(sql_tool(database, tables=["items", "cheap"]))
    for statement in (
        "SELECT * FROM users",
        "SELECT name FROM items UNION SELECT password_hash FROM users",
        "SELECT (SELECT password_hash FROM users LIMIT 1)",
        "SELECT sql FROM sqlite_master",
        "SELECT * FROM pragma_table_info('users')",
        "WITH u AS (SELECT * FROM users) SELECT * FROM u",
        # A CTE (or alias) named like a listed table or view does not make its source listed.
        "WITH items AS (SELECT * FROM users) SELECT * FROM items",
        "WITH cheap AS (SELECT * FROM users) SELECT * FROM cheap",
        "SELECT * FROM (SELECT * FROM users) AS items",
        "SELECT count(*) FROM users",
        "SELECT * FROM dbstat",
        "SELECT * FROM json_each('[1]')",
    ):
        with pytest.raises(
            ToolRefusedError, match=r"only reading listed tables|vtable constructor"
        ):
            await tools.call("sql_query", query=statement)
    # The controls: a listed table, and a listed view (on a listed table).
    assert (await tools.call("sql_query", query="SELECT count(*) FROM items"))["rows"] == [[10]]
    assert (await tools.call("sql_query", query="SELECT count(*) FROM cheap"))["rows"] == [[4]]
    # Every table only when asked for by name.
    everything = box(sql_tool(database, tables="*"))
    found = await everything.call("sql_query", query="SELECT name FROM users")
    assert found["rows"] == [["admin"]]


def test_sql_tool_needs_a_table_list(database: Path) -> None:
    with pytest.raises(ConfigError, match="name the tables a query may use"):
        sql_tool(database)
    with pytest.raises(ConfigError, match="tables is empty"):
        sql_tool(database, tables=[])
    with pytest.raises(ConfigError, match="list of names or '\\*'"):
        sql_tool(database, tables="items")


async def test_sql_writes_need_the_option_and_stay_on_listed_tables(database: Path) -> None:
    writer = sql_tool(database, tables=["items"], allow_writes=True)
    assert writer.permissions == frozenset({"db:write"})
    assert writer.once  # a retried task does not write twice
    tools = box(writer)
    await tools.call("sql_query", query="UPDATE items SET price = ? WHERE id = 1", params=[99])
    for statement in (
        "UPDATE users SET password_hash = 'x'",
        "DELETE FROM users",
        "CREATE TABLE t (x)",
        "DROP TABLE items",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA journal_mode = OFF",
    ):
        with pytest.raises(ToolRefusedError):
            await tools.call("sql_query", query=statement)
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT price FROM items WHERE id = 1").fetchone() == (99.0,)
        assert conn.execute("SELECT password_hash FROM users").fetchone() == ("pbkdf2$secret",)
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (3,)
    conn.close()


async def test_sql_result_size_is_capped(database: Path) -> None:
    tools = box(sql_tool(database, tables=["items"], max_result_bytes=100_000))
    big = "SELECT randomblob(20000) FROM items"
    with pytest.raises(ToolRefusedError, match="over 100000 bytes after 5 rows"):
        await tools.call("sql_query", query=big)
    small = await tools.call("sql_query", query="SELECT randomblob(9000) FROM items")
    assert len(small["rows"]) == 10  # the control


async def test_sql_connections_come_from_a_bounded_pool(database: Path) -> None:
    query = sql_tool(database, tables=["items"], pool_size=2)
    tools = box(query)
    results = await tools.call_many(
        [("sql_query", {"query": "SELECT ?", "params": [i]}) for i in range(6)], concurrency=6
    )
    assert [r.value["rows"] for r in results] == [[[i]] for i in range(6)]
    (metrics,) = ToolRegistry([query]).pool_metrics()
    assert metrics["name"] == "sql_query"
    assert metrics["created"] <= 2
    assert metrics["acquired"] == 6
    assert metrics["in_use"] == 0


# --- http --------------------------------------------------------------------------

LOOPBACK = ["127.0.0.0/8"]
"""The tests' server is on 127.0.0.1: reaching it needs this explicit opt-in."""


class _Handler(BaseHTTPRequestHandler):
    hits: list[str]  # set per server

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path.startswith("/big"):
            body = b"z" * 5000
        elif self.path.startswith("/stream"):
            self.send_response(200)
            self.end_headers()  # no Content-Length: the size shows while reading
            for _ in range(50):
                self.wfile.write(b"y" * 1000)
            return
        elif self.path.startswith("/redirect"):
            self._redirect("http://example.com/")
            return
        elif self.path.startswith("/to/"):  # /to/<url>: a redirect there
            self._redirect(urllib.parse.unquote(self.path[len("/to/") :]))
            return
        elif self.path.startswith("/loop"):
            self._redirect("/loop")
            return
        elif self.path.startswith("/echo"):
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        else:
            body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Server:
    url: str
    port: int
    hits: list[str]


@pytest.fixture(scope="module")
def http_server() -> Iterator[Server]:
    hits: list[str] = []
    handler = type("Handler", (_Handler,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    yield Server(f"http://127.0.0.1:{port}", port, hits)
    server.shutdown()
    server.server_close()
    thread.join(5)


def local_tool(server: Server, *more: str, **options: Any) -> Tool:
    return http_tool(
        [f"127.0.0.1:{server.port}", *more], allow_networks=LOOPBACK, max_bytes=1000, **options
    )


async def test_http_request_to_an_allowed_host(http_server: Server) -> None:
    request = local_tool(http_server)
    tools = box(request)
    answer = await tools.call("http_request", url=f"{http_server.url}/hi", params={"q": "1"})
    assert answer["status"] == 200
    assert answer["text"] == "hello /hi?q=1"
    moved = await tools.call("http_request", url=f"{http_server.url}/redirect")
    assert moved["status"] == 302  # not followed by default: the caller sees where it leads
    assert moved["redirect_to"] == "http://example.com/"
    (metrics,) = ToolRegistry([request]).pool_metrics()
    assert metrics["created"] == 1
    assert metrics["acquired"] == 2


@pytest.mark.parametrize(
    ("url", "method", "why"),
    [
        ("http://localhost:1/x", "GET", "host 'localhost' is not allowed"),
        ("http://example.com/", "GET", "host 'example.com' is not allowed"),
        ("file:///etc/passwd", "GET", "only http"),
        ("{server}/x", "DELETE", "method DELETE is not allowed"),
        ("{server}/big", "GET", "5000 bytes is over the 1000-byte limit"),
        ("{server}/stream", "GET", "over the 1000-byte limit \\(aborted\\)"),
        ("http://127.0.0.1/x", "GET", "port 80 of '127.0.0.1' is not allowed"),
        ("https://127.0.0.1:1/x", "GET", "port 1 of '127.0.0.1' is not allowed"),
    ],
)
async def test_http_request_refusals(http_server: Server, url: str, method: str, why: str) -> None:
    request = local_tool(http_server, "*.example.org")
    with pytest.raises(ToolRefusedError, match=why):
        await box(request).call(
            "http_request", url=url.format(server=http_server.url), method=method
        )


@pytest.mark.parametrize("header", ["Host", "host", ":authority", "Transfer-Encoding", "Forwarded"])
async def test_http_request_refuses_headers_that_route_the_request(
    http_server: Server, header: str
) -> None:
    # A Host header would reach another virtual host behind the allowed address.
    request = local_tool(http_server)
    with pytest.raises(ToolRefusedError, match="may not set header"):
        await box(request).call(
            "http_request", url=f"{http_server.url}/hi", headers={header: "internal.admin"}
        )
    answer = await box(request).call(  # the control: an ordinary header goes through
        "http_request", url=f"{http_server.url}/hi", headers={"Accept": "text/plain"}
    )
    assert answer["status"] == 200


def test_host_allow_list_hosts_and_ports() -> None:
    allow = ["api.example.com", "*.example.org", "10.0.0.1:8080", "any.example.net:*", "[::1]:99"]
    assert host_allowed(allow, "API.example.com.", None)
    assert host_allowed(allow, "api.example.com", 443, "https")
    assert host_allowed(allow, "api.example.com", 80, "http")
    # A bare host allows the scheme's default port only.
    assert not host_allowed(allow, "api.example.com", 8443, "https")
    assert not host_allowed(allow, "api.example.com", 80, "https")
    assert not host_allowed(allow, "api.example.com", 443, "http")
    assert host_allowed(allow, "a.b.example.org", 443)
    assert not host_allowed(allow, "a.b.example.org", 444)
    assert not host_allowed(allow, "example.org", 443)
    assert not host_allowed(allow, "evil-example.org", 443)
    assert host_allowed(allow, "10.0.0.1", 8080)
    assert host_allowed(allow, "10.0.0.1", 8080, "http")
    assert not host_allowed(allow, "10.0.0.1", 8081)
    assert not host_allowed(allow, "10.0.0.1", None)
    assert host_allowed(allow, "any.example.net", 1)
    assert host_allowed(allow, "0:0::1", 99)
    assert str(parse_rule("*.Example.org:*")) == "*.example.org:*"
    for bad in ("", "host:0", "host:70000", "host:x", "a*.b", "*", "[::1", "10.0.0.0/8"):
        with pytest.raises(ConfigError, match="allow_hosts entry"):
            parse_rule(bad)
    with pytest.raises(ConfigError, match="allow_networks entry 'x' is not a network"):
        http_tool(["example.com"], allow_networks=["x"])


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "not a public address"),
        ("240.0.0.1", "private|reserved"),
        ("::ffff:127.0.0.1", "loopback.*inside"),
        ("::ffff:169.254.169.254", "link-local.*inside"),
        ("::127.0.0.1", "loopback.*inside"),
        ("64:ff9b::a9fe:a9fe", "link-local.*inside"),
        ("2002:7f00:1::1", "loopback.*inside"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("fec0::1", "site-local"),
    ],
)
def test_addresses_that_are_not_public_are_refused(address: str, why: str) -> None:
    ip = ipaddress.ip_address(address)
    assert re.search(why, address_allowed(ip, ()) or "")


def test_public_addresses_and_opted_in_networks_are_allowed() -> None:
    for public in ("93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946"):
        assert address_allowed(ipaddress.ip_address(public), ()) is None
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    assert address_allowed(ipaddress.ip_address("127.0.0.2"), loopback) is None
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), loopback) is None
    assert address_allowed(ipaddress.ip_address("169.254.169.254"), loopback) is not None


class FakeDns:
    """A resolver with fixed answers that counts its lookups."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise socket.gaierror(f"no such host {host}")
        return self.answers[host]


async def test_the_connection_goes_to_the_checked_address_keeping_the_name(
    http_server: Server,
) -> None:
    # api.test exists only in this resolver: the request reaches the server,
    # so the connection used the checked address, not a second lookup.
    dns = FakeDns({"api.test": ["127.0.0.1"]})
    request = http_tool([f"api.test:{http_server.port}"], allow_networks=LOOPBACK, resolver=dns)
    answer = await box(request).call("http_request", url=f"http://api.test:{http_server.port}/echo")
    assert json.loads(answer["text"])["host"] == f"api.test:{http_server.port}"
    assert dns.lookups == ["api.test"]
    # One answer out of range refuses the name, whatever the order.
    dns.answers["api.test"] = ["127.0.0.1", "10.0.0.7"]
    with pytest.raises(
        ToolRefusedError, match=re.escape("resolves to 10.0.0.7, a private address")
    ):
        await box(request).call("http_request", url=f"http://api.test:{http_server.port}/echo")


async def test_redirects_are_followed_only_when_asked_and_each_hop_is_checked(
    http_server: Server,
) -> None:
    other = f"other.test:{http_server.port}"
    dns = FakeDns({"other.test": ["127.0.0.1"], "127.0.0.1": ["127.0.0.1"]})
    request = local_tool(
        http_server,
        other,
        max_redirects=2,
        resolver=dns,
        headers={"Authorization": "Bearer s3cret"},
    )
    tools = box(request)
    same = await tools.call("http_request", url=f"{http_server.url}/to/{quote('/echo', safe='')}")
    assert same["redirects"] == 1
    assert same["url"] == f"{http_server.url}/echo"
    assert json.loads(same["text"])["authorization"] == "Bearer s3cret"
    # Another allowed origin: followed, without the tool's credentials.
    there = quote(f"http://{other}/echo", safe="")
    moved = await tools.call("http_request", url=f"{http_server.url}/to/{there}")
    assert moved["url"] == f"http://{other}/echo"
    assert "authorization" not in json.loads(moved["text"])
    with pytest.raises(
        ToolRefusedError, match=re.escape("redirect 1 to http://example.com/ refused")
    ):
        await tools.call("http_request", url=f"{http_server.url}/redirect")
    with pytest.raises(ToolRefusedError, match="more than 2 redirects"):
        await tools.call("http_request", url=f"{http_server.url}/loop")


# --- pool --------------------------------------------------------------------------


async def test_pool_bounds_reuses_discards_and_reports() -> None:
    made: list[int] = []
    closed: list[int] = []

    def make() -> int:
        made.append(len(made))
        return made[-1]

    pool: Pool[int] = Pool("things", factory=make, close=closed.append, limit=2)
    inside = [0]
    peak = [0]
    both = asyncio.Event()

    async def use(n: int) -> int:
        async with pool.acquire() as thing:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            if inside[0] == 2:
                both.set()
            await asyncio.wait_for(both.wait(), 5)
            inside[0] -= 1
            return thing

    await asyncio.gather(*(use(n) for n in range(6)))
    assert peak[0] == 2
    assert made == [0, 1]
    with pytest.raises(RuntimeError):
        async with pool.acquire():
            raise RuntimeError("broken resource")
    assert len(closed) == 1  # a resource whose user failed is not reused
    metrics = pool.metrics()
    assert metrics["limit"] == 2
    assert metrics["acquired"] == 7
    assert metrics["waits"] >= 4
    assert metrics["discarded"] == 1
    assert metrics["in_use"] == 0
    await pool.aclose()
    assert sorted(closed) == [0, 1]
    with pytest.raises(ConfigError, match="closed"):
        async with pool.acquire():
            pass
    with pytest.raises(ConfigError):
        Pool("bad", factory=make, limit=0)


def test_pool_metrics_are_plain_data() -> None:
    pool: Pool[object] = Pool("p", factory=object)
    assert set(pool.metrics()) >= {"in_use", "idle", "created", "waits", "wait_s"}
    assert os.sep  # keeps the os import honest on every platform
