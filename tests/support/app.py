"""The agent app the integration tests run in real worker processes."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from agenticflow import (
    AgentApp,
    AgentLoad,
    AuctionCall,
    NonRetryableError,
    TaskContext,
    TaskError,
)

core = AgentApp("tests")
"""The agents the chaos tests run (few capabilities: they use one slot per worker)."""


@core.agent(capabilities=["echo"])
async def echo(ctx: TaskContext) -> dict[str, Any]:
    """Return the params, the dependency results and who ran it."""
    return {"task": ctx.task_id, "params": ctx.params, "inputs": ctx.inputs, "agent": ctx.agent}


@core.agent(capabilities=["add"])
async def add(ctx: TaskContext) -> int:
    """Sum ``params.value`` and every integer dependency result."""
    own = int(ctx.params.get("value", 0))
    return own + sum(v for v in ctx.inputs.values() if isinstance(v, int))


@core.agent(capabilities=["flaky"])
async def flaky(ctx: TaskContext) -> dict[str, int]:
    """Fail until attempt ``params.succeed_on`` (deterministic, keyed on the attempt)."""
    if ctx.attempt < int(ctx.params.get("succeed_on", 3)):
        raise TaskError(f"transient failure on attempt {ctx.attempt}")
    return {"succeeded_on": ctx.attempt}


@core.agent(capabilities=["fatal"])
async def fatal(ctx: TaskContext) -> None:
    """Always fail in a way retrying cannot fix."""
    raise NonRetryableError(f"cannot process {ctx.params.get('item', 'this')}: bad input")


@core.agent(capabilities=["slow"])
async def slow(ctx: TaskContext) -> str:
    """Take ``params.seconds`` (a stand-in for a long LLM call)."""
    await asyncio.sleep(float(ctx.params.get("seconds", 1.0)))
    return "done"


@core.agent(capabilities=["solo"], instances=1)
async def solo(ctx: TaskContext) -> dict[str, Any]:
    """One instance per worker: its tasks on one worker never overlap."""
    began = time.monotonic_ns()
    await asyncio.sleep(float(ctx.params.get("seconds", 0.2)))
    return {"worker": ctx.worker, "began": began, "ended": time.monotonic_ns()}


@core.agent(capabilities=["sync_upper"])
def sync_upper(ctx: TaskContext) -> str:
    """A plain (non-async) handler: runs in a thread."""
    return str(ctx.input.get("text", "")).upper()


@core.agent(capabilities=["big"])
async def big(ctx: TaskContext) -> str:
    """Return a result larger than the server's max_payload."""
    return "x" * int(ctx.params.get("size", 2 * 1024 * 1024))


@core.agent(capabilities=["crash_once"])
async def crash_once(ctx: TaskContext) -> str:
    """Succeed; the hook below kills the process before the ack, once per marker file."""
    return f"done by {ctx.worker}"


@core.on_outcome_stored
async def _crash_before_ack(ctx: TaskContext, outcome: str) -> None:
    marker = ctx.params.get("crash_marker")
    if ctx.capability == "crash_once" and marker and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(ctx.worker)
        os._exit(137)  # die like SIGKILL: the outcome is stored, the task is not acked


@core.agent(capabilities=["block"])
async def block(ctx: TaskContext) -> str:
    """Block the event loop (no keep-alives) for ``params.seconds``: redelivered each time.

    Returns at once when the file ``params.unless_exists`` exists."""
    skip = ctx.params.get("unless_exists")
    if skip and os.path.exists(skip):
        return "not blocked"
    time.sleep(float(ctx.params.get("seconds", 5)))  # deliberately blocking the loop
    return "woke up"


debugging = AgentApp("tests-debugging")
"""Agents with recorded side effects and a fixable bug, for fork/rerun/diff."""

OUTSIDE_OFF = "AGENTICFLOW_TEST_OUTSIDE_OFF"
"""Set in a process whose side effects must come from a recording: they raise."""
FIXED = "AGENTICFLOW_TEST_FIXED"
"""Set in a process running the fixed version of the ``buggy`` agent."""
QUERY_SUFFIX = "AGENTICFLOW_TEST_QUERY_SUFFIX"
"""Changes the ``research`` agent's search query: a re-execution diverges."""


def _outside(kind: str, query: str) -> dict[str, str]:
    """A call to the outside world: a different answer every time it really runs."""
    if os.environ.get(OUTSIDE_OFF):
        raise RuntimeError(f"{kind} really called the outside world during a re-execution")
    return {"query": query, "nonce": os.urandom(8).hex()}


@debugging.agent(capabilities=["research"])
async def research(ctx: TaskContext) -> dict[str, Any]:
    """Two recorded side effects (a sync search tool, an async LLM call); fails
    before attempt ``params.succeed_on`` after making them."""

    async def llm(prompt: str) -> dict[str, str]:
        return _outside("llm", prompt)

    query = str(ctx.params.get("q", "")) + os.environ.get(QUERY_SUFFIX, "")
    hits = await ctx.effect("search", _outside, "search", query)
    answer = await ctx.effect("llm.complete", llm, prompt=f"summarize {hits['nonce']}")
    if ctx.attempt < int(ctx.params.get("succeed_on", 1)):
        raise TaskError(f"transient failure on attempt {ctx.attempt}")
    return {"hits": hits["nonce"], "answer": answer["nonce"]}


@debugging.agent(capabilities=["buggy"])
async def buggy(ctx: TaskContext) -> int:
    """Has a bug, except in a process running the fixed app (``FIXED`` set)."""
    if not os.environ.get(FIXED):
        raise NonRetryableError("bug: the total is off by one")
    return sum(v for v in ctx.inputs.values() if isinstance(v, int)) + 1


steering = AgentApp("tests-steering")
"""Agents people steer: feedback, approvals, abort."""


@steering.agent(capabilities=["listen"])
async def listen(ctx: TaskContext) -> dict[str, Any]:
    """Wait for the next feedback sent while running (``params.timeout`` s)."""
    before = ctx.feedback.items
    got = await ctx.feedback.next(timeout=float(ctx.params.get("timeout", 120)))
    return {"before": before, "got": got}


@steering.agent(capabilities=["cancellable"])
async def cancellable(ctx: TaskContext) -> str:
    """Wait up to ``params.seconds`` for the workflow's cancellation and stop when
    it comes (``ctx.raise_if_cancelled``); else return ``"not cancelled"``."""
    try:
        await ctx.cancellation.wait(timeout=float(ctx.params.get("seconds", 120)))
    except TimeoutError:
        return "not cancelled"
    ctx.raise_if_cancelled()
    return "unreachable"


@steering.agent(capabilities=["context"])
async def context(ctx: TaskContext) -> dict[str, Any]:
    """What the context carries: the gate's decision, feedback, params."""
    approval = ctx.approval.model_dump() if ctx.approval else None
    return {"approval": approval, "feedback": ctx.feedback.items, "params": ctx.params}


@steering.agent(capabilities=["ask"])
async def ask(ctx: TaskContext) -> dict[str, Any]:
    """Ask a person ``params.asks`` times (default once); return the decisions."""
    decisions = []
    for n in range(int(ctx.params.get("asks", 1))):
        decision = await ctx.request_approval(
            f"refund #{n}?",
            {"amount": 90 + n},
            timeout_s=ctx.params.get("timeout_s"),
            on_timeout=str(ctx.params.get("on_timeout", "reject")),
        )
        decisions.append(decision.model_dump())
    return {"decisions": decisions, "attempt": ctx.attempt}


@steering.agent(capabilities=["noise"])
async def noise(ctx: TaskContext) -> str:
    """``params.bytes`` random bytes as hex: a result that does not compress well."""
    return os.urandom(int(ctx.params.get("bytes", 1000))).hex()


@steering.agent(capabilities=["remember"])
async def remember(ctx: TaskContext) -> dict[str, Any]:
    """Count the runs in agent memory and keep ``params.note``; return both."""
    assert ctx.memory is not None
    runs = await ctx.memory.update("runs", lambda n: n + 1, default=0)
    if "note" in ctx.params:
        await ctx.memory.set("note", ctx.params["note"])
    return {"runs": runs, "note": await ctx.memory.get("note"), "keys": await ctx.memory.keys()}


@steering.agent(capabilities=["narrate"])
async def narrate(ctx: TaskContext) -> dict[str, Any]:
    """Stream ``params.words`` as tokens, a progress dict and a log line; with
    ``params.wait``, stream the first word, then wait for feedback (so a
    reader sees it live) and stream the feedback's text before the rest."""
    words = [str(w) for w in ctx.params.get("words", ["Hello", " world"])]
    stored = [await ctx.stream(words[0], kind="token")]
    if ctx.params.get("wait"):
        got = await ctx.feedback.next(timeout=float(ctx.params.get("timeout", 60)))
        stored.append(await ctx.stream(got, kind="token"))
    stored.extend([await ctx.stream(word, kind="token") for word in words[1:]])
    stored.append(await ctx.stream({"done": len(words), "of": len(words)}, kind="progress"))
    stored.append(await ctx.stream(b"\x00raw", kind="artifact"))
    stored.append(await ctx.stream("finished", kind="log"))
    return {"text": "".join(words), "stored": stored}


supervised = AgentApp("tests-supervised")
"""Agents for plans made by the supervisor (``agenticflow ask``)."""


def _text(ctx: TaskContext) -> str:
    """The step's item, else its dependencies' texts, else its instruction."""
    if "item" in ctx.params:
        return str(ctx.params["item"])
    found = [str(v.get("text", v)) if isinstance(v, dict) else str(v) for v in ctx.inputs.values()]
    return " | ".join(found) or str(ctx.params.get("instruction", ""))


@supervised.agent(capabilities=["summarize"], description="Summarise a document into a brief")
async def summarizer(ctx: TaskContext) -> dict[str, Any]:
    """The first five words of the text."""
    return {"text": " ".join(_text(ctx).split()[:5]), "by": "summarize"}


@supervised.agent(capabilities=["translate"], description="Translate text into another language")
async def translator(ctx: TaskContext) -> dict[str, Any]:
    """The text in upper case (our one foreign language)."""
    return {"text": _text(ctx).upper(), "by": "translate"}


@supervised.agent(capabilities=["write"], description="Write a draft article")
async def writer(ctx: TaskContext) -> dict[str, Any]:
    """A one-line article about the text."""
    return {"text": f"article: {_text(ctx)}", "by": "write"}


bidding = AgentApp("tests-bidding")
"""An agent that bids for auctioned tasks (``allocation: auction``)."""


def _pick_bid(call: AuctionCall, load: AgentLoad) -> float | None:
    """Its load (the default), unless the task declines everyone or names another worker."""
    wanted = call.params.get("on")
    if call.params.get("decline") or (wanted and wanted != load.worker):
        return None
    return load.ratio


@bidding.agent(capabilities=["pick"], instances=2, bid=_pick_bid)
async def picker(ctx: TaskContext) -> dict[str, Any]:
    """Say who ran it; with ``params.hold``, keep the instance busy until feedback
    arrives (the test's release; at most a minute)."""
    if ctx.params.get("hold"):
        await ctx.feedback.next(timeout=60)
    return {"worker": ctx.worker}


app = AgentApp("tests-all").include(core).include(debugging).include(steering).include(supervised)
"""What the session cluster's workers serve."""
