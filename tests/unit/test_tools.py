"""Tools without a bus: declaration, validation, permissions, breaker, rate limit,
cache, call_many, audit records, and the effect record (rerun)."""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from agenticflow.shared.errors import (
    ConfigError,
    NonRetryableError,
    RateLimitedError,
    RecordedEffectError,
    ToolPermissionError,
    ToolTimeoutError,
    ToolValidationError,
    UnknownToolError,
)
from agenticflow.shared.resilience import CircuitOpenError
from agenticflow.shared.wire.events import (
    ErrorInfo,
    RecordedEffect,
    TaskEffectRecorded,
    TaskToolCalled,
)
from agenticflow.worker.app import AgentApp
from agenticflow.worker.effects import Effects
from agenticflow.worker.tools import (
    BreakerPolicy,
    MemoryToolState,
    RateLimit,
    Tool,
    ToolBox,
    ToolCall,
    ToolRegistry,
    tool,
)
from agenticflow.worker.tools.ratelimit import RateRecord, take
from agenticflow.worker.tools.registry import grants
from agenticflow.worker.tools.state import BREAKERS


class Add(BaseModel):
    a: int
    b: int = Field(default=0, ge=0)


calls: list[tuple[int, int]] = []


@tool(permissions={"math:add"}, timeout_s=2)
async def add(params: Add, call: ToolCall) -> dict[str, Any]:
    """Add two numbers.

    More text that is not part of the description."""
    calls.append((params.a, params.b))
    return {"sum": params.a + params.b, "key": call.key}


@tool(permissions={"admin"})
def wipe(params: Add) -> int:
    calls.append((-1, -1))
    return 0


class Audit:
    """Collects audit records like the worker's publish callback."""

    def __init__(self) -> None:
        self.records: list[tuple[TaskToolCalled, str]] = []

    async def __call__(self, record: TaskToolCalled, suffix: str) -> None:
        self.records.append((record, suffix))

    @property
    def outcomes(self) -> list[str]:
        return [r.outcome for r, _ in self.records]


def make_box(
    *tools: Tool,
    permissions: set[str] | None = None,
    state: MemoryToolState | None = None,
    audit: Audit | None = None,
    effects: Effects | None = None,
    task: str = "t1",
) -> ToolBox:
    return ToolBox(
        ToolRegistry(tools, permissions=permissions if permissions is not None else {"math:*"}),
        state=state or MemoryToolState(worker="w1"),
        workflow_id="wf1",
        task_id=task,
        agent="calc",
        instance="w1.calc.0",
        worker="w1",
        effects=effects,
        publish=audit,
    )


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


# --- declaration -------------------------------------------------------------------


def test_tool_declaration_and_schema() -> None:
    assert add.name == "add"
    assert add.description == "Add two numbers."
    assert add.permissions == frozenset({"math:add"})
    schema = add.schema()
    assert schema["name"] == "add"
    assert schema["parameters"]["required"] == ["a"]
    assert schema["parameters"]["properties"]["b"]["minimum"] == 0
    assert ToolRegistry([add, wipe]).schemas()[1]["name"] == "wipe"
    info = add.info()
    assert info["permissions"] == ["math:add"]
    assert info["breaker"]["failure_threshold"] == 5


def test_rate_limit_parsing() -> None:
    assert RateLimit.parse("60/min") == RateLimit(60, per_s=60)
    assert RateLimit.parse("10/s") == RateLimit(10, per_s=1)
    assert RateLimit.parse("5/2s") == RateLimit(5, per_s=2)
    with pytest.raises(ConfigError, match="must look like"):
        RateLimit.parse("lots")
    with pytest.raises(ConfigError):
        RateLimit(0)


def test_bad_declarations_are_refused() -> None:
    def no_model(params: dict[str, Any]) -> None:
        return None

    with pytest.raises(ConfigError, match="pydantic model"):
        tool(no_model)
    with pytest.raises(ConfigError, match="tool name"):
        tool(name="no spaces please")(add.fn)
    with pytest.raises(ConfigError, match="two tools"):
        ToolRegistry([add, add])

    def local(params: Add) -> None:
        return None

    with pytest.raises(ConfigError, match="module-level"):
        tool(sandbox=True)(local)


def test_agents_get_their_own_registry_and_include_keeps_it() -> None:
    first = AgentApp("a")

    @first.agent(capabilities=["sum"], tools=[add], permissions={"math:add"})
    async def summer(ctx: Any) -> None:
        return None

    both = AgentApp("b").include(first)
    spec = both.for_capability("sum")
    assert spec.tools.get("add") is add
    assert spec.tools.permissions == frozenset({"math:add"})


@pytest.mark.parametrize(
    ("granted", "required", "ok"),
    [
        ({"fs:read"}, "fs:read", True),
        ({"fs:*"}, "fs:write", True),
        ({"*"}, "anything", True),
        ({"fs:read"}, "fs:write", False),
        ({"f*"}, "fs:write", True),
        (set(), "fs:read", False),
    ],
)
def test_permission_matching(granted: set[str], required: str, ok: bool) -> None:
    assert grants(frozenset(granted), required) is ok


# --- refusals ----------------------------------------------------------------------


async def test_refusals_are_typed_recorded_and_change_nothing() -> None:
    audit = Audit()
    state = MemoryToolState()
    box = make_box(add, wipe, state=state, audit=audit)

    with pytest.raises(UnknownToolError, match=r"no tool 'mul' \(it has: add, wipe\)"):
        await box.call("mul", a=1)
    with pytest.raises(ToolValidationError) as invalid:
        await box.call("add", a="one", b=-1)
    assert invalid.value.errors == [
        "a: Input should be a valid integer, unable to parse string as an integer",
        "b: Input should be greater than or equal to 0",
    ]
    with pytest.raises(ToolPermissionError, match="lacks permission admin") as denied:
        await box.call("wipe", a=1)
    assert denied.value.missing == ["admin"]
    for error in (UnknownToolError, ToolValidationError, ToolPermissionError):
        assert issubclass(error, NonRetryableError)

    assert calls == []  # the tool was never reached
    assert audit.outcomes == ["unknown", "invalid", "denied"]
    assert [r.call for r, _ in audit.records] == [0, 1, 2]
    assert all(r.result_hash is None and r.error is not None for r, _ in audit.records)
    assert audit.records[1][0].error is not None
    assert audit.records[1][0].error.retryable is False
    assert state.data == {"breakers": {}, "ratelimits": {}, "results": {}}


# --- a call ------------------------------------------------------------------------


async def test_a_call_is_audited_with_hashes_and_cached_under_its_key() -> None:
    audit = Audit()
    state = MemoryToolState()
    box = make_box(add, state=state, audit=audit)
    assert await box.call("add", a=2, b=3) == {"sum": 5, "key": "wf1:t1:0:tool:add"}
    record, suffix = audit.records[0]
    assert (record.outcome, record.tool, record.agent, record.call) == ("ok", "add", "calc", 0)
    assert record.key == "wf1:t1:0:tool:add"
    assert len(record.params_hash) == 32
    assert record.result_hash is not None
    assert len(record.result_hash) == 32
    assert suffix == "tool:0"

    # The same task again (a redelivery): the first call is served from the cache.
    again = make_box(add, state=state, audit=audit)
    assert await again.call("add", a=2, b=3) == {"sum": 5, "key": "wf1:t1:0:tool:add"}
    assert calls == [(2, 3)]
    cached, suffix = audit.records[1]
    assert (cached.outcome, suffix) == ("cached", "tool:0:cached")
    assert cached.result_hash == record.result_hash
    assert cached.params_hash == record.params_hash

    # Other params under the same key are a new call, not a cache hit.
    third = make_box(add, state=state, audit=audit)
    assert (await third.call("add", a=1))["sum"] == 1
    assert calls == [(2, 3), (1, 0)]


async def test_a_slow_tool_times_out() -> None:
    class Nap(BaseModel):
        seconds: float

    @tool(timeout_s=0.05, input=Nap)
    async def nap(params: Nap) -> str:
        await asyncio.sleep(params.seconds)
        return "woke"

    audit = Audit()
    box = make_box(nap, audit=audit)
    with pytest.raises(ToolTimeoutError, match=r"'nap' ran longer than 0.05s"):
        await box.call("nap", seconds=5)
    assert audit.outcomes == ["timeout"]
    assert issubclass(ToolTimeoutError, TimeoutError)


# --- breaker -----------------------------------------------------------------------


class Fail(BaseModel):
    n: int = 0


attempts: list[int] = []


@tool(breaker=BreakerPolicy(failure_threshold=2, recovery_timeout_s=10), provider="llm")
async def shaky(params: Fail) -> int:
    attempts.append(params.n)
    if params.n < 100:
        raise ConnectionError("provider down")
    return params.n


@tool(breaker=BreakerPolicy(failure_threshold=2, recovery_timeout_s=10), provider="llm")
async def same_provider(params: Fail) -> int:
    attempts.append(-params.n)
    return params.n


async def test_breaker_opens_after_failures_and_covers_the_provider() -> None:
    attempts.clear()
    now = [1000.0]
    state = MemoryToolState(clock=lambda: now[0])
    audit = Audit()
    box = make_box(shaky, same_provider, state=state, audit=audit)
    for n in range(2):
        with pytest.raises(ConnectionError):
            await box.call("shaky", n=n)
    with pytest.raises(CircuitOpenError, match="'llm' is open") as refused:
        await box.call("shaky", n=100)
    assert refused.value.retry_after_s == pytest.approx(10)
    with pytest.raises(CircuitOpenError):
        await box.call("same_provider", n=1)  # one provider, one breaker
    assert attempts == [0, 1]
    assert audit.outcomes == ["error", "error", "open", "open"]
    assert state.data[BREAKERS]["llm"][0]["state"] == "open"

    now[0] += 11  # recovery timeout passed: one trial goes through and closes it
    assert await box.call("shaky", n=100) == 100
    assert state.data[BREAKERS]["llm"][0]["state"] == "closed"
    assert await box.call("same_provider", n=3) == 3


async def test_caller_mistakes_do_not_count_against_the_breaker() -> None:
    class Q(BaseModel):
        q: str

    @tool(breaker=BreakerPolicy(failure_threshold=1), input=Q)
    async def strict(params: Q) -> str:
        raise NonRetryableError("bad question")

    state = MemoryToolState()
    box = make_box(strict, state=state)
    for _ in range(3):
        with pytest.raises(NonRetryableError):
            await box.call("strict", q="?")
    assert state.data[BREAKERS] == {}


# --- rate limit --------------------------------------------------------------------


async def test_rate_limit_spaces_calls_and_waits_or_refuses() -> None:
    now = [60.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    @tool(rate_limit=RateLimit(2, per_s=10, max_wait_s=15), breaker=None, once=False)
    async def ping(params: Fail) -> float:
        return now[0]

    @tool(rate_limit=RateLimit(1, per_s=10, max_wait_s=1), breaker=None, once=False)
    async def impatient(params: Fail) -> float:
        return now[0]

    state = MemoryToolState(clock=lambda: now[0], sleep=sleep)
    audit = Audit()
    box = make_box(ping, impatient, state=state, audit=audit)
    times = [await box.call("ping") for _ in range(5)]
    # Two per 10 seconds, burst 1: one call every 5 seconds (plus <= 5 ms of jitter each).
    assert [round(t - 60) for t in times] == [0, 5, 10, 15, 20]
    assert all(later - earlier >= 5 for earlier, later in itertools.pairwise(times))
    first = await box.call("impatient")
    with pytest.raises(RateLimitedError, match="no free slot within 1s") as limited:
        await box.call("impatient")
    assert limited.value.retry_after_s == pytest.approx(10 - (now[0] - first), abs=0.01)
    assert audit.outcomes[-1] == "rate_limited"


async def test_a_burst_goes_at_once_then_the_sustained_rate_is_lower() -> None:
    now = [1000.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    @tool(rate_limit=RateLimit(4, per_s=10, burst=3, max_wait_s=60), breaker=None, once=False)
    async def bursty(params: Fail) -> float:
        return now[0]

    box = make_box(bursty, state=MemoryToolState(clock=lambda: now[0], sleep=sleep))
    times = [await box.call("bursty") for _ in range(6)]
    # 3 at once; then one per per_s / (calls - burst + 1) = 5 s: 4 in [0, 10), 2 in [5, 15).
    assert [round(t - 1000) for t in times] == [0, 0, 0, 5, 10, 15]
    with pytest.raises(ConfigError, match="burst must be between 1 and calls"):
        RateLimit(2, burst=3)
    assert str(RateLimit(4, per_s=10, burst=3)) == "4/10s burst 3"


def admitted_within(times: list[float], per_s: float) -> int:
    """The most admitted calls in any half-open window ``[t, t + per_s)``."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= per_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def gaps(per_s: float, calls: int) -> st.SearchStrategy[float]:
    """Gaps between attempts, biased to the edges: exact intervals and periods."""
    step = per_s / calls
    edges = [0.0, step, per_s, per_s - 1e-6, per_s + 1e-6, step - 1e-6, step / 2]
    return st.one_of(st.sampled_from(edges), st.floats(0, 2 * per_s, allow_nan=False))


@st.composite
def schedules(draw: st.DrawFn) -> tuple[RateLimit, list[tuple[int, float]]]:
    calls = draw(st.integers(1, 12))
    per_s = draw(st.sampled_from([0.001, 0.5, 1.0, 1 / 3, 60.0, 3600.0]))
    burst = draw(st.integers(1, calls))
    start = draw(st.sampled_from([0.0, 1_765_000_000.0, 1_765_000_000.123457]))
    attempts, now = [], start
    for _ in range(draw(st.integers(1, 120))):
        now += draw(gaps(per_s, calls))
        attempts.append((draw(st.integers(0, 2)), now))
    return RateLimit(calls, per_s=per_s, burst=burst), attempts


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_no_sliding_window_admits_more_than_the_limit(
    schedule: tuple[RateLimit, list[tuple[int, float]]],
) -> None:
    limit, attempts = schedule
    record = RateRecord()
    admitted: list[float] = []
    for _, now in attempts:
        new, wait = take(record, now, limit)
        if new is None:
            assert wait > 0
            # The wait is exact: a call then is admitted.
            assert take(record, now + wait + 1e-6, limit)[0] is not None
            continue
        record = new
        admitted.append(now)
    assert admitted, "the first call is always admitted"
    assert admitted_within(admitted, limit.per_s) <= limit.calls
    # Every call admitted from the start (no sleeping) up to the burst.
    first = [now for _, now in attempts if now == attempts[0][1]]
    assert len([a for a in admitted if a == attempts[0][1]]) == min(len(first), limit.burst)


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_workers_sharing_one_record_never_exceed_the_limit(
    schedule: tuple[RateLimit, list[tuple[int, float]]],
) -> None:
    """Three workers with stale views of the shared record (compare-and-set
    conflicts), attempts in any order of workers: still exact."""
    limit, attempts = schedule
    now = [attempts[0][1]]
    shared = MemoryToolState(clock=lambda: now[0])
    workers = [shared] + [MemoryToolState(worker=f"w{i}", clock=lambda: now[0]) for i in (1, 2)]
    for worker in workers[1:]:
        worker.data = shared.data
    admitted: list[float] = []
    waits: list[float | None] = []

    async def run() -> None:
        for who, at in attempts:
            now[0] = at
            try:
                await workers[who].acquire("k", limit, max_wait_s=0)
            except RateLimitedError as exc:
                waits.append(exc.retry_after_s)
                continue
            admitted.append(at)

    asyncio.run(run())
    assert admitted_within(admitted, limit.per_s) <= limit.calls
    record = RateRecord.from_dict(shared.data["ratelimits"]["k"][0])
    assert record.calls == limit.calls
    assert record.at_us == math.floor(admitted[-1] * 1e6)
    assert all(wait is not None and wait > 0 for wait in waits)


# --- call_many ---------------------------------------------------------------------


async def test_call_many_keeps_input_order_bounds_concurrency_and_collects_errors() -> None:
    running = [0]
    peak = [0]
    gate = asyncio.Event()

    class Slow(BaseModel):
        n: int
        delay: float = 0.0

    @tool(breaker=None, input=Slow)
    async def slow(params: Slow, call: ToolCall) -> dict[str, int]:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        if running[0] >= 2:
            gate.set()
        await asyncio.wait_for(gate.wait(), 5)
        await asyncio.sleep(params.delay)
        running[0] -= 1
        return {"n": params.n, "index": call.index}

    audit = Audit()
    box = make_box(slow, audit=audit)
    requests: list[tuple[str, dict[str, Any]]] = [
        ("slow", {"n": 0, "delay": 0.03}),
        ("slow", {"n": 1}),
        ("slow", {"n": "x"}),
        ("nope", {}),
        ("slow", {"n": 4, "delay": 0.01}),
        ("slow", {"n": 5}),
    ]
    outcomes = await box.call_many(requests, concurrency=2)
    assert [o.ok for o in outcomes] == [True, True, False, False, True, True]
    assert [o.value["n"] for o in outcomes if o.ok] == [0, 1, 4, 5]
    # Indices follow the input order, whatever order the calls finished in.
    assert [o.value["index"] for o in outcomes if o.ok] == [0, 1, 4, 5]
    assert isinstance(outcomes[2].error, ToolValidationError)
    assert isinstance(outcomes[3].error, UnknownToolError)
    with pytest.raises(UnknownToolError):
        outcomes[3].unwrap()
    assert peak[0] == 2
    assert sorted(r.call for r, _ in audit.records) == [0, 1, 2, 3, 4, 5]
    assert {r.call: r.key for r, _ in audit.records}[4] == "wf1:t1:4:tool:slow"


# --- the effect record ---------------------------------------------------------------


async def test_tool_calls_are_recorded_as_effects_and_served_in_a_rerun() -> None:
    recorded: list[TaskEffectRecorded] = []

    async def store(data: TaskEffectRecorded, call: int) -> None:
        recorded.append(data)

    effects = Effects(key_prefix="wf1:t1", worker="w1", publish=store)
    box = make_box(add, effects=effects)
    assert (await box.call("add", a=1, b=2))["sum"] == 3
    with pytest.raises(ToolValidationError):
        await box.call("add", a="x")
    assert (await box.call("add", a=5))["sum"] == 5
    assert [(d.effect.call, d.effect.name) for d in recorded] == [(0, "tool:add"), (2, "tool:add")]
    assert recorded[0].key == "wf1:t1:0:tool:add"
    assert calls == [(1, 2), (5, 0)]

    # A rerun serves the same calls from the recording, without calling the tool.
    calls.clear()
    audit = Audit()
    replay = Effects(
        key_prefix="wf2:t1",
        worker="w2",
        publish=store,
        recorded=[d.effect for d in recorded],
        replay=True,
    )
    rerun = make_box(add, effects=replay, audit=audit)
    assert (await rerun.call("add", a=1, b=2))["sum"] == 3
    with pytest.raises(ToolValidationError):
        await rerun.call("add", a="x")
    assert (await rerun.call("add", a=5))["sum"] == 5
    assert calls == []
    assert audit.outcomes == ["cached", "invalid", "cached"]

    failing = Effects(
        key_prefix="wf3:t1",
        worker="w3",
        publish=store,
        recorded=[
            RecordedEffect(
                call=0,
                name="tool:add",
                params_hash=recorded[0].effect.params_hash,
                error=ErrorInfo(type="ConnectionError", message="down"),
            )
        ],
        replay=True,
    )
    with pytest.raises(RecordedEffectError, match="ConnectionError: down"):
        await make_box(add, effects=failing).call("add", a=1, b=2)
