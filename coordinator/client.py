"""The client API: submit workflows, read their state and events, list agents.

Used by the CLI and re-exported by :mod:`agenticflow`. A submission is a
``workflow.submitted`` event whose ``Nats-Msg-Id`` is the workflow id, so
submitting twice with the same id starts one workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import os
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from opentelemetry.trace import SpanKind

from agenticflow.coordinator.admission import used_capabilities
from agenticflow.coordinator.definitions import (
    VERSION_RE,
    RegisteredDefinition,
    check_name,
    key_of,
    latest,
    next_version,
    open_definition,
    parse_ref,
)
from agenticflow.coordinator.forks import recorded_effects
from agenticflow.coordinator.index import (
    States,
    WorkflowSummary,
    open_summary,
    parse_state,
    select,
)
from agenticflow.coordinator.replay import UNREADABLE, reading_problems, state_until
from agenticflow.coordinator.schedules import ScheduleSpec, ScheduleState, open_spec, open_state
from agenticflow.coordinator.state import (
    TaskStatus,
    WorkflowState,
    open_snapshot,
)
from agenticflow.coordinator.streams import StreamChunk, read_output
from agenticflow.shared.bus.base import Bus, Message, watched_ns
from agenticflow.shared.bus.registry import open_entry, open_update
from agenticflow.shared.errors import (
    ConfigError,
    InterventionRefusedError,
    MalformedMessageError,
    NotFoundError,
    StateConflictError,
    TransportError,
    WorkflowDefinitionError,
)
from agenticflow.shared.graph.dag import validate_graph
from agenticflow.shared.graph.workflow import WorkflowDefinition
from agenticflow.shared.ops.telemetry import traceparent, tracer
from agenticflow.shared.wire.codec import pack
from agenticflow.shared.wire.events import (
    INTERVENTIONS,
    Event,
    EventType,
    InterventionApplied,
    InterventionRefused,
    InterventionRequested,
    MessageRejected,
    Modification,
    Origin,
    WorkflowResumeRequested,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import ID_RE, new_workflow_id, workflow_key
from agenticflow.shared.wire.names import (
    SCHEDULE_SPEC_PREFIX,
    SCHEDULE_STATE_PREFIX,
    VERSION_SEPARATOR,
    queue_of,
    version_key,
)
from agenticflow.shared.wire.vclock import ClockBook, VectorClock

log = structlog.get_logger("agenticflow.client")

_VERSIONS_TTL_S = 2.0
"""How long a client pins new workflows from one read of the agent registry."""


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as :meth:`Client.schedules` lists it."""

    spec: ScheduleSpec
    state: ScheduleState
    next_tick_ns: int | None
    """When it fires next (None: paused)."""


class Client:
    """Talks to a cluster through the bus; never to a coordinator directly."""

    def __init__(self, *, bus: Bus, node_id: str) -> None:
        self.bus = bus
        self.node_id = node_id
        self.names = bus.names
        self._ready = False
        self._changed: dict[str, set[asyncio.Event]] = {}
        """Per workflow id, the waiters to wake when its snapshot changes."""
        self._notifier: Any = None
        self._notifier_lock = asyncio.Lock()
        self._clocks = ClockBook(node_id)
        """The last clock this client sent or saw, per workflow (our counter advances)."""
        self._versions: dict[str, set[str]] = {}
        self._versions_read = float("-inf")  # never read

    async def _topology(self) -> None:
        if not self._ready:
            await self.bus.ensure_topology()
            self._ready = True

    async def submit_workflow(
        self,
        definition: WorkflowDefinition,
        *,
        input: dict[str, Any] | None = None,
        workflow_id: str | None = None,
        validate: bool = True,
        route: str | None = None,
        versions: dict[str, str] | None = None,
        **rerun: Any,
    ) -> str:
        """Submit a workflow; returns its id.

        ``route`` sends its tasks only to the workers started with that route;
        ``versions`` pins capabilities to agent versions (default: each to the
        latest version live workers serve, if its agents declare versions;
        ``{}`` pins none), so a rolling deploy never hands its later tasks to
        another version;
        ``rerun`` holds the :class:`WorkflowSubmitted` fields of a fork or a
        re-execution (``origin``, ``reuse``, ``recorded``, ``replay``), see
        :meth:`fork` and :meth:`rerun`.

        Raises WorkflowGraphError when ``validate`` and the graph is invalid
        (the coordinator would reject it), WorkflowDefinitionError for a bad
        id, ConfigError for a bad route, TransportError when the bus fails.
        """
        if route is not None:
            queue_of("any", route)  # raises ConfigError for a bad route
        if validate:
            validate_graph(definition)
        workflow_id = workflow_id or new_workflow_id()
        if not ID_RE.match(workflow_id):
            raise WorkflowDefinitionError(
                f"workflow id {workflow_id!r} must be 1-64 letters, digits, '_' or '-'"
            )
        await self._topology()
        if route is None:
            pins = await self._pins(definition) if versions is None else dict(versions)
            if pins:
                rerun = {**rerun, "versions": pins}
        with tracer().start_as_current_span(
            f"workflow {definition.name}",
            kind=SpanKind.PRODUCER,
            attributes={"workflow.id": workflow_id, "workflow.tasks": len(definition.tasks)},
        ):
            await self._publish_submission(
                workflow_id=workflow_id,
                definition=definition,
                input=input,
                route=route,
                rerun=rerun,
                trace=traceparent(),
            )
        return workflow_id

    submit = submit_workflow
    """Submit a workflow; returns its id (the same as :meth:`submit_workflow`)."""

    async def _pins(self, definition: WorkflowDefinition) -> dict[str, str]:
        """The latest live agent version of each capability ``definition`` uses
        (those whose agents declare one), from the registry read at most every
        :data:`_VERSIONS_TTL_S`."""
        now = time.monotonic()
        if now - self._versions_read > _VERSIONS_TTL_S:
            self._versions_read = now
            try:
                self._versions = await self.live_versions()
            except TransportError as exc:  # unpinned rather than not started
                log.warning("agent versions not read; workflows start unpinned", error=str(exc))
                self._versions = {}
        if not self._versions:
            return {}
        used = used_capabilities(definition)
        return {c: max(v, key=version_key) for c, v in self._versions.items() if c in used}

    async def live_versions(self) -> dict[str, set[str]]:
        """The agent versions live workers serve, by capability (capabilities
        whose agents declare none are left out)."""
        horizon = time.time_ns() - int(self.bus.settings.agent_ttl_s * 1e9)
        found: dict[str, set[str]] = {}
        for entry in await self.agents():
            version = entry.get("version")
            if entry.get("role", "worker") != "worker" or not isinstance(version, str):
                continue
            if int(entry.get("heartbeat") or 0) < horizon or entry.get("route"):
                continue
            for queue in entry.get("capabilities") or ():
                if isinstance(queue, str) and VERSION_SEPARATOR not in queue:
                    found.setdefault(queue, set()).add(version)
        return found

    async def _publish_submission(
        self,
        *,
        workflow_id: str,
        definition: WorkflowDefinition,
        input: dict[str, Any] | None,
        route: str | None,
        rerun: dict[str, Any],
        trace: str | None,
    ) -> None:
        await self.bus.publish_event(
            Event(
                id=workflow_key(workflow_id, "submitted"),
                type=EventType.WORKFLOW_SUBMITTED,
                workflow_id=workflow_id,
                source=self.node_id,
                timestamp=time.time_ns(),
                vclock=self._clocks.tick(workflow_id),
                data=WorkflowSubmitted(
                    definition=definition,
                    input=input or {},
                    submitted_by=self.node_id,
                    route=route,
                    traceparent=trace,
                    **rerun,
                ),
            )
        )

    async def status(self, workflow_id: str) -> WorkflowState:
        """The workflow's latest snapshot; raises NotFoundError before the
        coordinator has recorded it."""
        state = await self._snapshot(workflow_id)
        if state is None:
            raise NotFoundError(f"no workflow {workflow_id!r} has been recorded")
        return state

    async def _snapshot(self, workflow_id: str) -> WorkflowState | None:
        await self._topology()
        bucket = self.names.workflows_bucket
        stored = await self.bus.kv_read(await self.bus.kv(bucket), workflow_id)
        if stored is None or not stored.value:
            return None
        return open_snapshot(
            self.bus.seal, bucket, workflow_id, stored.value, stored_ns=stored.stored_ns
        )

    async def _readable(self, workflow_id: str) -> WorkflowState | None:
        """The snapshot, or None when there is none or it is refused (forged,
        altered, undecryptable: logged). The coordinator, which rebuilds such a
        workflow from its events, writes the next one."""
        try:
            return await self._snapshot(workflow_id)
        except MalformedMessageError as exc:
            log.warning("workflow snapshot refused", workflow_id=workflow_id, error=str(exc))
            return None

    async def _until(
        self, workflow_id: str, done: Callable[[WorkflowState], bool], timeout: float | None
    ) -> WorkflowState:
        """The first snapshot of the workflow for which ``done`` holds.

        One watch per client, on every snapshot's headers only, wakes the
        waiters of the workflow that changed; they then read its snapshot. So
        thousands of concurrent waits cost one consumer, not one each.
        """
        await self._notify_changes()
        changed = asyncio.Event()
        waiters = self._changed.setdefault(workflow_id, set())
        waiters.add(changed)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed.clear()
                    state = await self._readable(workflow_id)
                    if state is not None and done(state):
                        return state
                    # The deadline is checked here too, not left to the timeout's
                    # cancellation alone: on Python 3.11 an asyncio.wait_for
                    # inside the read (nats-py has them) swallows a cancellation
                    # that lands as its inner future completes, and the wait
                    # would then go on past the deadline.
                    left = None if deadline is None else deadline - loop.time()
                    if left is not None and left <= 0:
                        raise TimeoutError
                    woken = asyncio.ensure_future(changed.wait())
                    try:
                        finished, _ = await asyncio.wait({woken}, timeout=left)
                    finally:
                        woken.cancel()
                    if not finished:
                        raise TimeoutError
        finally:
            waiters.discard(changed)
            if not waiters:
                self._changed.pop(workflow_id, None)

    async def _notify_changes(self) -> None:
        async with self._notifier_lock:
            if self._notifier is not None:
                return
            await self._topology()
            prefix = f"$KV.{self.names.workflows_bucket}."

            async def on_change(msg: Message) -> None:
                for waiter in self._changed.get(msg.subject[len(prefix) :], ()):
                    waiter.set()

            self._notifier = await self.bus.follow(f"{prefix}>", on_change, headers_only=True)

    async def states(
        self, workflow_id: str, *, until: Callable[[WorkflowState], bool] | None = None
    ) -> AsyncIterator[WorkflowState]:
        """Every new snapshot of the workflow, until ``until(state)`` (default: terminal)."""
        done = until or (lambda state: state.is_terminal)
        await self._topology()
        store = await self.bus.kv(self.names.workflows_bucket)
        # A short inactivity threshold: the server deletes the watch consumer soon
        # after we stop (nats-py's default keeps it for 5 minutes).
        watcher = await self.bus.call(
            lambda: store.watch(workflow_id, inactive_threshold=5.0), what="watch state"
        )
        try:
            async for entry in watcher:
                if entry is None or entry.value is None:
                    continue
                state = open_snapshot(
                    self.bus.seal,
                    self.names.workflows_bucket,
                    workflow_id,
                    entry.value,
                    stored_ns=watched_ns(entry),
                )
                yield state
                if done(state):
                    return
        finally:
            await watcher.stop()

    async def wait_for(
        self,
        workflow_id: str,
        predicate: Callable[[WorkflowState], bool],
        *,
        timeout: float | None = None,
    ) -> WorkflowState:
        """The first snapshot of the workflow for which ``predicate`` holds;
        raises TimeoutError."""
        return await self._until(workflow_id, predicate, timeout)

    async def wait(self, workflow_id: str, *, timeout: float | None = None) -> WorkflowState:
        """Wait until the workflow is terminal; raises TimeoutError."""
        return await self._until(workflow_id, lambda state: state.is_terminal, timeout)

    async def events(self, workflow_id: str) -> list[Event]:
        """The workflow's events in stream order (malformed ones as ``message.rejected``)."""
        return await self._read(self.names.workflow_events(workflow_id))

    async def stream(
        self,
        workflow_id: str,
        *,
        task: str | None = None,
        kinds: Collection[str] | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """What the workflow's tasks stream (``ctx.stream``), from the start and
        then live, until the workflow ends (with ``task``: that task's chunks,
        until it completes). ``kinds`` keeps only those kinds (``token``,
        ``progress``, ``log``, ``artifact``, ``dropped``). Raises ValueError
        for an unknown kind."""
        await self._topology()
        async for chunk in read_output(self.bus, workflow_id, task=task, kinds=kinds):
            yield chunk

    async def fork(
        self,
        source_id: str,
        *,
        at_seq: int | None = None,
        route: str | None = None,
        workflow_id: str | None = None,
    ) -> str:
        """Start a new workflow that takes every result the source had completed
        up to stream sequence ``at_seq`` (default: its end) and runs the rest;
        returns the new id. Raises NotFoundError when the source has no
        submission up to there."""
        events = await self.events(source_id)
        state = state_until(events, seq=at_seq)
        if state is None or state.definition is None:
            where = f" up to seq {at_seq}" if at_seq is not None else ""
            raise NotFoundError(f"workflow {source_id!r} has no readable submission{where}")
        specs = {spec.id: spec for spec in state.definition.tasks}
        kept = {tid for tid, task in state.tasks.items() if task.status == TaskStatus.COMPLETED}
        while dropped := {t for t in kept if any(d not in kept for d in specs[t].depends_on)}:
            kept -= dropped  # a result is reused only with its dependencies' results
        reuse = {task_id: state.tasks[task_id].result for task_id in sorted(kept)}
        return await self.submit_workflow(
            state.definition,
            input=state.input,
            workflow_id=workflow_id,
            route=route,
            origin=Origin(kind="fork", workflow_id=source_id, at_seq=state.last_seq),
            reuse=reuse,
        )

    async def rerun(
        self, source_id: str, *, route: str | None = None, workflow_id: str | None = None
    ) -> str:
        """Re-execute a workflow with every side effect served from its recording
        (``task.effect_recorded`` events) instead of the outside world; returns
        the new id. A call the recording lacks fails its task with
        ReplayDivergedError. Raises NotFoundError for an unknown source."""
        events = await self.events(source_id)
        submitted = next((e.data for e in events if isinstance(e.data, WorkflowSubmitted)), None)
        if submitted is None:
            raise NotFoundError(f"workflow {source_id!r} has no readable submission")
        return await self.submit_workflow(
            submitted.definition,
            input=submitted.input,
            workflow_id=workflow_id,
            route=route,
            origin=Origin(kind="rerun", workflow_id=source_id),
            reuse=submitted.reuse,
            recorded=recorded_effects(events),
            replay=True,
        )

    async def events_since(
        self,
        since: datetime,
        *,
        until_ns: int | None = None,
        types: str | None = None,
        limit: int = 10_000,
    ) -> list[Event]:
        """Every workflow's events stored from ``since`` on (up to ``until_ns``),
        in stream order, at most ``limit``; ``types`` is a glob on the event
        type (``task.failed``, ``task.*``, ``workflow.*ed``)."""
        await self._topology()
        tokens = (types or "").split(".")
        exact = types is not None and all(t == "*" or not set(t) & set("*?[]") for t in tokens)
        subject = (
            self.names.stored_events_of_type(types)
            if exact and types
            else self.names.event_subjects
        )
        msgs = await self.bus.read_stored(
            self.names.events_stream, subject, start_time=since, limit=limit
        )
        found = [self._decode(msg) for msg in msgs]
        return [
            e
            for e in found
            if (until_ns is None or e.timestamp <= until_ns)
            and (types is None or fnmatch.fnmatchcase(e.type.value, types))
        ]

    async def reading_problems(self, events: list[Event]) -> list[str]:
        """What could not be read of these events (see
        :func:`agenticflow.coordinator.replay.reading_problems`)."""
        first_seq, deleted = await self.bus.stream_holes(self.names.events_stream)
        return reading_problems(events, first_seq=first_seq, deleted=deleted)

    async def dead_letters(self) -> list[Event]:
        """Every ``task.dead_lettered`` event, oldest first."""
        return await self._read(
            self.names.stored_events_of_type(EventType.TASK_DEAD_LETTERED.value)
        )

    async def resume(self, workflow_id: str, *, from_task: str | None = None) -> None:
        """Resume a paused workflow; or re-run a failed workflow, keeping completed
        results; with ``from_task`` also re-run that task and everything
        downstream (a finished workflow too).

        Raises NotFoundError for an unknown workflow or task, ConfigError when
        the workflow cannot be resumed (running and not paused, or rejected).
        """
        state = await self.status(workflow_id)
        if from_task is None and state.status.value == "running" and state.paused:
            await self.intervene(workflow_id, "resume")
            return
        if from_task is not None and from_task not in state.tasks:
            raise NotFoundError(f"workflow {workflow_id!r} has no task {from_task!r}")
        resumable = state.status.value == "failed" or (
            state.status.value == "completed" and from_task is not None
        )
        if not resumable:
            raise ConfigError(
                f"workflow {workflow_id!r} is {state.status.value}: only a failed workflow "
                "can be resumed (or a completed one with --from TASK)"
            )
        await self.bus.publish_event(
            Event(
                id=workflow_key(workflow_id, f"resume:{state.resumes + 1}"),
                type=EventType.WORKFLOW_RESUME_REQUESTED,
                workflow_id=workflow_id,
                source=self.node_id,
                timestamp=time.time_ns(),
                vclock=self._clocks.tick(workflow_id, state.vclock),
                data=WorkflowResumeRequested(from_task=from_task, requested_by=self.node_id),
            )
        )

    # Interventions --------------------------------------------------------
    async def intervene(
        self,
        workflow_id: str,
        action: str,
        *,
        reason: str = "",
        text: str = "",
        task_id: str | None = None,
        changes: Modification | None = None,
        signal: str | None = None,
        data: Any = None,
        by: str | None = None,
        timeout: float = 15.0,
    ) -> InterventionApplied:
        """Steer a running workflow and wait for the coordinator's verdict.

        ``action`` is one of pause, resume, cancel or terminate (``reason``;
        abort is terminate's older name), modify
        (``changes``), feedback (``text``), approve or reject (``task_id``,
        ``reason`` as the comment), signal (``signal``, ``data``). The request
        is an event on the workflow's stream, so it is ordered with everything
        else and replayable.

        Raises InterventionRefusedError (``code`` says why; nothing changed),
        ConfigError for an unknown action, TimeoutError when no coordinator
        answered in time (the request stays stored and applies when one runs).
        """
        if action not in INTERVENTIONS:
            raise ConfigError(
                f"unknown intervention {action!r} (one of {', '.join(INTERVENTIONS)})"
            )
        if not ID_RE.match(workflow_id):
            raise InterventionRefusedError(
                f"{workflow_id!r} is not a workflow id", code="unknown_workflow"
            )
        await self._topology()
        state = await self._readable(workflow_id)
        clock = self._clocks.tick(workflow_id, state.vclock if state else None)
        request_id = os.urandom(8).hex()
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[Event] = loop.create_future()

        async def on_verdict(msg: Message) -> None:
            try:
                event = self.bus.decode_event(msg)
            except MalformedMessageError:
                return
            if getattr(event.data, "request_id", None) == request_id and not verdict.done():
                verdict.set_result(event)

        subs = [
            await self.bus.subscribe(self.names.event_subject(workflow_id, kind.value), on_verdict)
            for kind in (EventType.INTERVENTION_APPLIED, EventType.INTERVENTION_REFUSED)
        ]
        try:
            await self.bus.publish_event(
                Event(
                    id=workflow_key(workflow_id, f"intervention:{request_id}"),
                    type=EventType.INTERVENTION_REQUESTED,
                    workflow_id=workflow_id,
                    source=self.node_id,
                    timestamp=time.time_ns(),
                    vclock=clock,
                    data=InterventionRequested(
                        request_id=request_id,
                        action=action,
                        by=by or self.node_id,
                        reason=reason,
                        text=text,
                        task_id=task_id,
                        changes=changes,
                        signal=signal,
                        data=data,
                    ),
                )
            )
            try:
                async with asyncio.timeout(timeout):
                    answer = await verdict
            except TimeoutError:
                raise TimeoutError(
                    f"no coordinator answered the {action} request within {timeout:g}s; "
                    "it is stored and applies when a coordinator runs"
                ) from None
        finally:
            for sub in subs:
                await sub.unsubscribe()
        self._clocks.observe(workflow_id, answer.vclock)
        if isinstance(answer.data, InterventionRefused):
            raise InterventionRefusedError(answer.data.reason, code=answer.data.code)
        assert isinstance(answer.data, InterventionApplied)
        return answer.data

    async def pause(self, workflow_id: str, **kwargs: Any) -> InterventionApplied:
        """No new task is dispatched until :meth:`resume`; running tasks finish."""
        return await self.intervene(workflow_id, "pause", **kwargs)

    async def abort(self, workflow_id: str, reason: str = "", **kwargs: Any) -> InterventionApplied:
        """The same as :meth:`terminate` (its older name)."""
        return await self.intervene(workflow_id, "abort", reason=reason, **kwargs)

    async def terminate(
        self, workflow_id: str, reason: str = "", **kwargs: Any
    ) -> InterventionApplied:
        """End the workflow now, as aborted: running handlers are cancelled on
        their workers, every unfinished task ends as cancelled and late outcomes
        are ignored."""
        return await self.intervene(workflow_id, "terminate", reason=reason, **kwargs)

    async def cancel(
        self, workflow_id: str, reason: str = "", **kwargs: Any
    ) -> InterventionApplied:
        """Cancel cooperatively: no new task is dispatched and tasks not started
        are cancelled; running tasks finish (their results are recorded) or see
        ``ctx.cancelled`` and stop. The workflow ends ``cancelled`` once none runs."""
        return await self.intervene(workflow_id, "cancel", reason=reason, **kwargs)

    async def modify(
        self, workflow_id: str, changes: Modification | dict[str, Any], **kwargs: Any
    ) -> InterventionApplied:
        """Add, remove or replace tasks not yet started, or change their params;
        refused (with the reason) when the result is not a valid DAG."""
        if isinstance(changes, dict):
            try:
                changes = Modification.model_validate(changes)
            except ValueError as exc:
                raise WorkflowDefinitionError(f"invalid modification: {exc}") from exc
        return await self.intervene(workflow_id, "modify", changes=changes, **kwargs)

    async def signal(
        self,
        workflow_id: str,
        name: str,
        data: Any = None,
        *,
        task: str | None = None,
        **kwargs: Any,
    ) -> InterventionApplied:
        """Send signal ``name`` with ``data`` (plain data, 64 KiB at most: the
        result of the ``wait: {signal: name}`` node it completes). A node not
        ready yet gets it when it is; ``task`` names the one node it is for
        (when several wait for one name). Refused (``no_waiting_task``) when no
        unfinished node of the workflow waits for it."""
        return await self.intervene(
            workflow_id, "signal", signal=name, data=data, task_id=task, **kwargs
        )

    async def feedback(self, workflow_id: str, text: str, **kwargs: Any) -> InterventionApplied:
        """Send feedback to running handlers (``ctx.feedback``) and every later task."""
        return await self.intervene(workflow_id, "feedback", text=text, **kwargs)

    async def approve(
        self, workflow_id: str, task_id: str, comment: str = "", **kwargs: Any
    ) -> InterventionApplied:
        """Approve the task waiting for approval; it runs with the decision."""
        return await self.intervene(
            workflow_id, "approve", task_id=task_id, reason=comment, **kwargs
        )

    async def reject(
        self, workflow_id: str, task_id: str, comment: str = "", **kwargs: Any
    ) -> InterventionApplied:
        """Reject the task waiting for approval (a rejected gate fails the task;
        a handler's request returns the rejection to the handler)."""
        return await self.intervene(
            workflow_id, "reject", task_id=task_id, reason=comment, **kwargs
        )

    async def waiting_for_approval(
        self, workflow_id: str, *, timeout: float | None = None
    ) -> WorkflowState:
        """Wait until some task of the workflow waits for approval (or it ends)."""

        def waiting(state: WorkflowState) -> bool:
            return state.is_terminal or any(
                t.status == TaskStatus.WAITING_APPROVAL for t in state.tasks.values()
            )

        return await self._until(workflow_id, waiting, timeout)

    # Registered workflow definitions -------------------------------------
    async def register_workflow(
        self, definition: WorkflowDefinition, *, version: str | None = None, by: str | None = None
    ) -> RegisteredDefinition:
        """Register ``definition`` under its name and ``version`` (else the
        definition's own ``version``, else the next number). Raises
        WorkflowGraphError (invalid), WorkflowDefinitionError (a name or
        version that cannot be a key), StateConflictError (that version exists:
        versions never change)."""
        validate_graph(definition)
        name = check_name(definition)
        existing = await self.registered_workflows(name)
        chosen = version or definition.version or next_version([d.version for d in existing])
        if not VERSION_RE.match(chosen):
            raise WorkflowDefinitionError(
                f"version {chosen!r} must be 1-32 letters, digits, '_' or '-'"
            )
        record = RegisteredDefinition(
            name=name,
            version=chosen,
            definition=definition.model_copy(update={"version": chosen}),
            registered_by=by or self.node_id,
        )
        bucket = self.names.definitions_bucket
        store = await self.bus.kv(bucket)
        key = key_of(name, chosen)
        body = self.bus.seal.seal_record(bucket, key, pack(record.model_dump(mode="json")))
        try:
            await self.bus.kv_put_cas(store, key, body, 0)
        except StateConflictError:
            raise StateConflictError(
                f"{record.ref} is registered already: register a new version"
            ) from None
        return record

    async def registered_workflows(self, name: str | None = None) -> list[RegisteredDefinition]:
        """Registered definitions (of ``name`` only, if given), by name then
        registration time. A record that does not verify is left out (logged)."""
        await self._topology()
        found: list[RegisteredDefinition] = []
        for key, blob, stored_ns in await self.bus.kv_entries(self.names.definitions_bucket):
            if name is not None and not key.startswith(f"{name}."):
                continue
            try:
                found.append(open_definition(self.bus, key, blob, stored_ns))
            except (MalformedMessageError, ValueError) as exc:
                log.warning("registered definition refused", key=key, error=str(exc)[:300])
        return sorted(found, key=lambda d: (d.name, d.registered_at))

    async def registered_workflow(self, ref: str) -> RegisteredDefinition:
        """``NAME@VERSION``, or ``NAME``'s latest version; raises NotFoundError,
        WorkflowDefinitionError (not a reference)."""
        name, version = parse_ref(ref)
        versions = await self.registered_workflows(name)
        found = (
            next((d for d in versions if d.version == version), None)
            if version is not None
            else latest(versions)
        )
        if found is None:
            known = ", ".join(d.version for d in versions)
            raise NotFoundError(
                f"no registered workflow {ref!r}"
                + (f" (versions of {name!r}: {known})" if known else "")
            )
        return found

    # Schedules ----------------------------------------------------------
    async def put_schedule(self, spec: ScheduleSpec, *, replace: bool = False) -> ScheduleSpec:
        """Store a schedule; the coordinator owning it fires it from its next tick.

        Raises StateConflictError when one of that name exists (unless
        ``replace``: its firing state is kept, so no tick fires twice),
        WorkflowGraphError for an invalid workflow, TransportError.
        """
        validate_graph(spec.definition)
        await self._topology()
        bucket = self.names.schedules_bucket
        store = await self.bus.kv(bucket)
        key = SCHEDULE_SPEC_PREFIX + spec.name
        body = self.bus.seal.seal_record(bucket, key, pack(spec.model_dump(mode="json")))
        if replace:
            await self.bus.call(lambda: store.put(key, body), what="store schedule")
            return spec
        existing = await self.bus.kv_read(store, key)
        if existing is not None:
            raise StateConflictError(f"schedule {spec.name!r} exists (delete it, or replace it)")
        await self.bus.kv_put_cas(store, key, body, 0)
        return spec

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name, with its firing state and next tick."""
        await self._topology()
        bucket = self.names.schedules_bucket
        specs: dict[str, ScheduleSpec] = {}
        states: dict[str, ScheduleState] = {}
        state_bucket = self.names.schedule_state_bucket
        records = [
            *await self.bus.kv_entries(bucket),
            *await self.bus.kv_entries(state_bucket),
        ]
        for key, blob, stored_ns in records:
            try:
                if key.startswith(SCHEDULE_SPEC_PREFIX):
                    spec, signer = open_spec(self.bus, key, blob, stored_ns)
                    if signer is not None:  # who wrote it last, verified
                        spec = spec.model_copy(update={"created_by": signer.principal})
                    specs[spec.name] = spec
                elif key.startswith(SCHEDULE_STATE_PREFIX):
                    name = key.removeprefix(SCHEDULE_STATE_PREFIX)
                    states[name] = open_state(self.bus, key, blob, stored_ns)
            except (MalformedMessageError, ValueError) as exc:
                log.warning("schedule record refused", key=key, error=str(exc)[:300])
        now = time.time_ns()
        found: list[ScheduleInfo] = []
        for name, spec in sorted(specs.items()):
            try:
                next_tick = None if spec.paused else spec.next_tick(max(now, spec.created_at))
            except Exception as exc:  # (a spec stored before its checks were)
                log.warning("schedule has no next tick", schedule=name, error=repr(exc)[:300])
                next_tick = None
            found.append(
                ScheduleInfo(
                    spec=spec, state=states.get(name, ScheduleState()), next_tick_ns=next_tick
                )
            )
        return found

    async def schedule(self, name: str) -> ScheduleInfo:
        """One schedule; raises NotFoundError."""
        for info in await self.schedules():
            if info.spec.name == name:
                return info
        raise NotFoundError(f"no schedule {name!r} (see `agenticflow schedule list`)")

    async def wait_for_schedule(
        self, name: str, done: Callable[[ScheduleInfo], bool], *, timeout: float = 30.0
    ) -> ScheduleInfo:
        """The schedule once ``done`` holds for it (woken by each change of its
        firing state); raises TimeoutError, NotFoundError."""
        store = await self.bus.kv(self.names.schedule_state_bucket)
        watcher = await store.watch(SCHEDULE_STATE_PREFIX + name, inactive_threshold=5.0)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    info = await self.schedule(name)
                    if done(info):
                        return info
                    await watcher.updates(timeout=timeout)
        except TimeoutError:
            raise TimeoutError(
                f"schedule {name!r} did not reach the state waited for within {timeout:g}s"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def pause_schedule(self, name: str, *, paused: bool = True) -> ScheduleSpec:
        """Pause (no tick fires) or resume a schedule; ticks missed while paused
        never fire. Raises NotFoundError."""
        spec = (await self.schedule(name)).spec
        changes: dict[str, Any] = {"paused": paused}
        if not paused:
            changes["resumed_at"] = time.time_ns()
        return await self.put_schedule(spec.model_copy(update=changes), replace=True)

    async def delete_schedule(self, name: str) -> None:
        """Delete a schedule (its firing state goes with it: its coordinator
        removes it), even one that does not read; raises NotFoundError."""
        await self._topology()
        store = await self.bus.kv(self.names.schedules_bucket)
        key = SCHEDULE_SPEC_PREFIX + name
        if await self.bus.kv_read(store, key) is None:
            raise NotFoundError(f"no schedule {name!r} (see `agenticflow schedule list`)")
        await self.bus.call(functools.partial(store.delete, key), what="delete schedule")

    async def trigger_schedule(self, name: str) -> str:
        """Start the schedule's workflow now, as its author would (with this
        client's rights), outside its ticks; returns the workflow id."""
        spec = (await self.schedule(name)).spec
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        return await self.submit_workflow(
            spec.definition,
            input=spec.input,
            workflow_id=f"{name}-man-{stamp}{os.urandom(2).hex()}",  # <= 63 characters
        )

    # Agent instances ----------------------------------------------------
    async def set_suspended(
        self, instance: str, *, suspended: bool, by: str | None = None, timeout: float = 15.0
    ) -> dict[str, Any]:
        """Suspend (it pulls no new task; a busy one finishes its task first) or
        resume one agent instance on whatever worker hosts it; waits until the
        worker reports it and returns the instance's registry info.

        Raises NotFoundError for an instance no live worker hosts, TimeoutError
        when its worker did not report the change in time.
        """
        await self._topology()
        registry_bucket = self.names.agents_bucket
        registry = await self.bus.kv(registry_bucket)
        key = instance.rpartition(".")[0]

        def shows(info: Any) -> dict[str, Any] | None:
            if not isinstance(info, dict):
                return None
            for entry in info.get("agents", []):
                if entry.get("id") == instance:
                    return dict(entry)
            return None

        stored = await self.bus.kv_read(registry, key)
        current = (
            shows(
                open_entry(
                    self.bus.seal, registry_bucket, key, stored.value, stored_ns=stored.stored_ns
                )
            )
            if stored is not None
            else None
        )
        if current is None:
            raise NotFoundError(
                f"no live worker hosts agent instance {instance!r} (see `agenticflow agents`)"
            )
        control_bucket = self.names.control_bucket
        control = await self.bus.kv(control_bucket)
        record = {"suspended": suspended, "by": by or self.node_id, "at": time.time_ns()}
        body = self.bus.seal.seal_record(control_bucket, instance, pack(record))
        await self.bus.call(lambda: control.put(instance, body), what="control agent")

        def done(entry: dict[str, Any]) -> bool:
            if suspended:
                return entry.get("state") == "suspended" or bool(entry.get("suspending"))
            return entry.get("state") != "suspended" and not entry.get("suspending")

        if done(current):
            return current
        watcher = await registry.watch(key, inactive_threshold=5.0)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    update = await watcher.updates(timeout=timeout)
                    if update is None or update.value is None:
                        continue
                    found = shows(open_update(self.bus.seal, update))
                    if found is not None and done(found):
                        return found
        except TimeoutError:
            raise TimeoutError(
                f"the worker hosting {instance!r} did not report it "
                f"{'suspended' if suspended else 'resumed'} within {timeout:g}s"
            ) from None
        finally:
            await watcher.stop()

    async def wait_for_resume(
        self, workflow_id: str, resumes: int, *, timeout: float | None = None
    ) -> WorkflowState:
        """Wait until the workflow has been resumed ``resumes`` times and finished again."""

        def resumed(state: WorkflowState) -> bool:
            return state.resumes >= resumes and state.is_terminal

        return await self._until(workflow_id, resumed, timeout)

    async def _read(self, subject: str) -> list[Event]:
        await self._topology()
        msgs = await self.bus.read_stored(self.names.events_stream, subject)
        return [self._decode(msg) for msg in msgs]

    def _decode(self, msg: Any) -> Event:
        seq = msg.metadata.sequence.stream
        try:
            return self.bus.decode_event(msg, seq=seq)
        except MalformedMessageError as exc:
            parsed = self.names.parse_event_subject(msg.subject)
            return Event(
                id=f"{UNREADABLE}{seq}",
                type=EventType.MESSAGE_REJECTED,
                workflow_id=parsed[0] if parsed else "?",
                source="?",
                timestamp=int(msg.metadata.timestamp.timestamp() * 1e9),
                vclock=VectorClock(),
                data=MessageRejected(
                    reason=str(exc),
                    code=exc.code,
                    subject=self.names.published_subject(msg.subject),
                    stream_seq=seq,
                ),
                seq=seq,
            )

    async def workflows(
        self,
        *,
        state: States = None,
        name: str | None = None,
        since: datetime | timedelta | None = None,
        until: datetime | timedelta | None = None,
        text: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[WorkflowSummary]:
        """Workflows from the index (:mod:`agenticflow.coordinator.index`), newest
        first: filtered by ``state`` (one or several), ``name`` (a glob), ``since`` and
        ``until`` (created at or after, before; a timedelta is an age), ``text`` (in
        the id or the input's preview), the first ``offset`` skipped, at most
        ``limit`` (None: all). A state
        change shows at once, a running workflow's count of done tasks at most
        :data:`~agenticflow.coordinator.index.PROGRESS_EVERY_S` late. A record
        that is not a coordinator's is left out (logged). Raises ConfigError for
        an unknown state or a negative limit."""
        parse_state(state)  # fail before reading
        await self._topology()
        bucket = self.names.workflow_index_bucket
        await self.bus.kv(bucket)  # created if missing
        summaries = []
        for key, value, stored in await self.bus.kv_entries(bucket):
            try:
                summaries.append(open_summary(self.bus.seal, bucket, key, value, stored_ns=stored))
            except MalformedMessageError as exc:
                log.warning("workflow summary refused", workflow_id=key, error=str(exc))
        return select(
            summaries,
            state=state,
            name=name,
            since=since,
            until=until,
            text=text,
            limit=limit,
            offset=offset,
        )

    async def agents(self) -> list[dict[str, Any]]:
        """Registered agent instances with their capabilities and last heartbeat."""
        await self._topology()
        await self.bus.kv(self.names.agents_bucket)  # created if missing
        bucket = self.names.agents_bucket
        entries = await self.bus.kv_entries(bucket)
        infos = (open_entry(self.bus.seal, bucket, k, v, stored_ns=ns) for k, v, ns in entries)
        # The registry key is the entry's "instance".
        return sorted(
            (info for info in infos if info is not None),
            key=lambda info: str(info.get("instance", "")),
        )


__all__ = ["Client"]
