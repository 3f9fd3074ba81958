"""Attacks on the built-in tools and the shared rate limit (issue 20, item 8).

HTTP: a caller (an agent, perhaps steered by a prompt injection) tries to make
``http_request`` reach the worker's own host, private networks or the cloud
metadata address, by name, by numeric spelling, by DNS answer, by rebinding
and by redirect. SQL: a caller reads tables it was not given, writes, attaches
another database file, or runs a query that would not stop or would eat the
worker's memory. Rate limit: a burst timed on a window edge.

Each attack has its control (the honest call works). The HTTP targets are
real servers on 127.0.0.1 that count their requests: a refused attack must
leave their count unchanged.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from agenticflow.cluster.nats_auth import make_test_ca
from agenticflow.shared.errors import (
    RateLimitedError,
    ToolError,
    ToolRefusedError,
    ToolTimeoutError,
)
from agenticflow.worker.tools import (
    MemoryToolState,
    RateLimit,
    ToolBox,
    ToolRegistry,
    http_tool,
    sql_tool,
)
from agenticflow.worker.tools.spec import Tool

pytestmark = pytest.mark.timeout(60)

LOOPBACK = ["127.0.0.0/8"]


def box(*tools: Tool) -> ToolBox:
    return ToolBox(
        ToolRegistry(tools, permissions={"*"}),
        state=MemoryToolState(),
        workflow_id="wf",
        task_id="t",
        agent="a",
    )


# --- servers that count what reaches them --------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", unquote(self.path[len("/to/") :]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Server:
    port: int
    hits: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def serve(context: ssl.SSLContext | None = None) -> Iterator[Server]:
    hits: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {"hits": hits}))
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Server(server.server_address[1], hits)
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def target() -> Iterator[Server]:
    """The internal service an attacker wants to reach."""
    yield from serve()


@pytest.fixture(scope="module")
def other() -> Iterator[Server]:
    """A second internal service on another port."""
    yield from serve()


class FakeDns:
    """An attacker's name server: fixed answers in turn, lookups counted."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        turns = self.answers.get(host)
        if not turns:
            raise socket.gaierror(f"no such host {host}")
        return turns[min(len(self.lookups), len(turns)) - 1]


# --- HTTP: reaching what is not public -------------------------------------------------


@pytest.mark.parametrize(
    ("host", "answer"),
    [
        ("127.0.0.1", None),
        ("localhost", None),  # the system resolver: 127.0.0.1 and/or ::1
        ("127.1", None),
        ("2130706433", None),  # 127.0.0.1 as one decimal number
        ("0x7f.0.0.1", None),
        ("017700000001", None),  # octal
        ("0.0.0.0", None),  # Linux connects that to the local host
        ("[::1]", None),
        ("[::ffff:127.0.0.1]", None),
        ("[::ffff:7f00:1]", None),
        ("internal.attacker.test", "127.0.0.1"),  # a public name, a loopback answer
        ("meta.attacker.test", "169.254.169.254"),
        ("mapped.attacker.test", "::ffff:127.0.0.1"),
    ],
)
async def test_http_cannot_reach_loopback_even_when_the_name_is_listed(
    target: Server, host: str, answer: str | None
) -> None:
    """The name (with the server's port) is on the allow-list, so only the
    address check stands between the caller and the internal server."""
    dns = FakeDns({host: [[answer]]}) if answer else None
    request = http_tool([f"{host}:{target.port}"], resolver=dns)
    before = len(target.hits)
    with pytest.raises(ToolRefusedError, match=r"resolves to .*refused"):
        await box(request).call("http_request", url=f"http://{host}:{target.port}/secret")
    assert len(target.hits) == before
    # The control: the same tool with the explicit opt-in reaches it.
    if host in ("127.0.0.1", "2130706433", "internal.attacker.test"):
        opted = http_tool([f"{host}:{target.port}"], resolver=dns, allow_networks=LOOPBACK)
        answered = await box(opted).call("http_request", url=f"http://{host}:{target.port}/ok")
        assert answered["status"] == 200
        assert len(target.hits) == before + 1


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.0.1/",
    ],
)
async def test_http_cannot_reach_metadata_or_private_addresses(url: str) -> None:
    host = url.split("/")[2]
    request = http_tool([host], allow_networks=LOOPBACK)  # loopback opted in, not these
    with pytest.raises(ToolRefusedError, match="refused"):
        await box(request).call("http_request", url=url)


async def test_http_dns_rebinding_gets_the_checked_address_only(target: Server) -> None:
    """The attacker's name answers an allowed address first and the internal
    server's address after: a tool that looked up the name again to connect
    would reach the server. It connects to the checked address (127.0.0.2,
    where nothing listens) and looks up once."""
    dns = FakeDns({"rebind.attacker.test": [["127.0.0.2"], ["127.0.0.1"]]})
    request = http_tool(
        [f"rebind.attacker.test:{target.port}"], resolver=dns, allow_networks=["127.0.0.2/32"]
    )
    before = len(target.hits)
    with pytest.raises(ToolError, match="failed"):
        await box(request).call(
            "http_request", url=f"http://rebind.attacker.test:{target.port}/secret"
        )
    assert dns.lookups == ["rebind.attacker.test"]
    assert len(target.hits) == before
    # The second lookup (a new request) answers 127.0.0.1: refused, not reached.
    with pytest.raises(ToolRefusedError, match=r"resolves to 127\.0\.0\.1"):
        await box(request).call(
            "http_request", url=f"http://rebind.attacker.test:{target.port}/secret"
        )
    assert len(target.hits) == before


async def test_http_redirects_off_the_list_are_refused(target: Server, other: Server) -> None:
    """An allowed server (the attacker controls what it answers) redirects to
    the metadata address, to another port of the allowed host, and to a listed
    name that resolves to a private address: every hop is checked."""
    dns = FakeDns({"127.0.0.1": [["127.0.0.1"]], "evil.test": [["10.0.0.1"]]})
    request = http_tool(
        [f"127.0.0.1:{target.port}", f"evil.test:{target.port}", "169.254.169.254:*"],
        allow_networks=LOOPBACK,
        max_redirects=3,
        resolver=dns,
    )
    tools = box(request)
    for location, why in (
        (f"http://127.0.0.1:{other.port}/secret", f"port {other.port} of '127.0.0.1'"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a link-local"),
        (f"http://evil.test:{target.port}/", "10.0.0.1, a private address"),
        ("http://localhost/", "host 'localhost' is not allowed"),
    ):
        with pytest.raises(ToolRefusedError, match=f"redirect 1 to .* refused.*{why}"):
            await tools.call("http_request", url=f"{target.url}/to/{quote(location, safe='')}")
    assert other.hits == []
    # The control: a redirect within the list is followed.
    followed = await tools.call("http_request", url=f"{target.url}/to/{quote('/fine')}")
    assert followed["redirects"] == 1
    assert followed["status"] == 200


async def test_http_ports_of_a_listed_host_are_closed_unless_listed(
    target: Server, other: Server
) -> None:
    request = http_tool([f"127.0.0.1:{target.port}"], allow_networks=LOOPBACK)
    with pytest.raises(ToolRefusedError, match=f"port {other.port} of '127.0.0.1' is not allowed"):
        await box(request).call("http_request", url=f"{other.url}/admin")
    assert other.hits == []
    assert (await box(request).call("http_request", url=f"{target.url}/ok"))["status"] == 200


async def test_https_verifies_the_name_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    """TLS to a pinned address still sends the name (SNI), verifies the
    certificate for the name and sends ``Host: name``; a certificate for
    another name is refused."""
    ca, cert, key = make_test_ca(tmp_path, ["api.partner.test"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    for server in serve(context):
        dns = FakeDns({"api.partner.test": [["127.0.0.1"]], "wrong.test": [["127.0.0.1"]]})
        request = http_tool(
            [f"api.partner.test:{server.port}", f"wrong.test:{server.port}"],
            allow_networks=LOOPBACK,
            resolver=dns,
            ca_bundle=ca,
        )
        tools = box(request)
        answer = await tools.call(
            "http_request", url=f"https://api.partner.test:{server.port}/echo"
        )
        assert json.loads(answer["text"])["host"] == f"api.partner.test:{server.port}"
        with pytest.raises(ToolError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await tools.call("http_request", url=f"https://wrong.test:{server.port}/echo")
        assert len(server.hits) == 1


# --- SQL -------------------------------------------------------------------------------


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO items (name) VALUES ('tea'), ('coffee')")
        conn.execute("CREATE TABLE users (name TEXT, password_hash TEXT)")
        conn.execute("INSERT INTO users VALUES ('admin', 'pbkdf2$secret')")
    conn.close()
    secrets = tmp_path / "secrets.db"
    with sqlite3.connect(secrets) as conn:
        conn.execute("CREATE TABLE keys (value TEXT)")
        conn.execute("INSERT INTO keys VALUES ('sk-live-123')")
    conn.close()
    return path


async def test_sql_cannot_read_a_table_it_was_not_given(shop: Path) -> None:
    tools = box(sql_tool(shop, tables=["items"]))
    for query in (
        "SELECT password_hash FROM users",
        "SELECT name FROM items UNION ALL SELECT password_hash FROM users",
        "WITH items AS (SELECT password_hash AS name FROM users) SELECT name FROM items",
        "SELECT sql FROM sqlite_master",
    ):
        with pytest.raises(ToolRefusedError, match="only reading listed tables is allowed"):
            await tools.call("sql_query", query=query)
    found = await tools.call("sql_query", query="SELECT name FROM items ORDER BY id")
    assert found["rows"] == [["tea"], ["coffee"]]


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO items (name) VALUES ('x')",
        "UPDATE items SET name = 'x'",
        "DELETE FROM items",
        "DROP TABLE items",
        "PRAGMA query_only = OFF",
    ],
)
async def test_sql_cannot_write_without_the_option(shop: Path, query: str) -> None:
    with pytest.raises(ToolRefusedError):
        await box(sql_tool(shop, tables=["items"])).call("sql_query", query=query)
    with sqlite3.connect(shop) as conn:
        assert conn.execute("SELECT name FROM items ORDER BY id").fetchall() == [
            ("tea",),
            ("coffee",),
        ]
    conn.close()


@pytest.mark.parametrize("allow_writes", [False, True])
async def test_sql_cannot_attach_another_file(shop: Path, allow_writes: bool) -> None:
    secrets = shop.parent / "secrets.db"
    tools = box(sql_tool(shop, tables=["items", "keys"], allow_writes=allow_writes))
    for query in (
        f"ATTACH DATABASE '{secrets}' AS s",
        f"ATTACH DATABASE 'file:{secrets}?mode=ro' AS s",
        "SELECT value FROM s.keys",
        "SELECT load_extension('/tmp/evil.so')",
    ):
        with pytest.raises(ToolRefusedError):
            await tools.call("sql_query", query=query)
    found = await tools.call("sql_query", query="SELECT count(*) FROM items")
    assert found["rows"] == [[2]]


async def test_sql_a_runaway_query_is_stopped_and_the_tool_stays_usable(shop: Path) -> None:
    tools = box(sql_tool(shop, tables=["items"], timeout_s=0.3))
    runaway = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT max(x) FROM n"
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(ToolTimeoutError, match=r"longer than 0\.3s"):
        await tools.call("sql_query", query=runaway)
    assert loop.time() - began < 3
    found = await tools.call("sql_query", query="SELECT count(*) FROM items")
    assert found["rows"] == [[2]]


def test_sql_a_query_needing_more_memory_than_allowed_fails_not_the_worker(shop: Path) -> None:
    """SQLite's heap limit is per process: run in a child so the cap does not
    stay on this test process. 24 values of 1 MB in one row need 24 MB."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from agenticflow.shared.errors import ToolRefusedError
        from agenticflow.worker.tools import MemoryToolState, ToolBox, ToolRegistry, sql_tool

        def box(max_memory_mb):
            tool = sql_tool({str(shop)!r}, tables=["items"], max_memory_mb=max_memory_mb,
                            max_result_bytes=100_000_000)
            return ToolBox(ToolRegistry([tool], permissions={{"*"}}), state=MemoryToolState(),
                           workflow_id="wf", task_id="t", agent="a")

        query = "SELECT " + ", ".join(["randomblob(1000000)"] * 24)

        async def main():
            try:
                await box(16).call("sql_query", query=query)
            except ToolRefusedError as exc:
                print("refused:", exc)
            small = await box(16).call("sql_query", query="SELECT count(*) FROM items")
            print("then:", small["rows"])

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "refused: sql_query: the query needs more memory than the tool allows" in done.stdout
    assert "then: [[2]]" in done.stdout


# --- rate limit ------------------------------------------------------------------------


async def test_a_burst_on_a_window_edge_gets_no_more_than_the_limit() -> None:
    """The fixed window admitted 5 calls at 0.999 s and 5 more at 1.000 s (10
    within 1 ms for a limit of 5 per second). Two workers share the record."""
    now = [1000.999]
    shared = MemoryToolState(worker="w1", clock=lambda: now[0])
    second = MemoryToolState(worker="w2", clock=lambda: now[0])
    second.data = shared.data
    limit = RateLimit(5, per_s=1.0, burst=5)
    admitted: list[float] = []
    for at in (1000.999, 1001.0):
        now[0] = at
        for state in (shared, second, shared, second, shared):
            try:
                await state.acquire("pager", limit, max_wait_s=0)
            except RateLimitedError:  # refused: that is the point
                continue
            admitted.append(at)
    assert len(admitted) == 5
    # The control: a second later, the limit is there again.
    now[0] = 1002.0
    await shared.acquire("pager", limit, max_wait_s=0)
