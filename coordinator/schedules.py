"""Schedules: a workflow started on a cron expression or every N seconds.

A schedule is two KV records in ``<prefix>_schedules``:

- ``spec.<name>``, written (and sealed: signed in secure mode) by whoever
  creates, pauses or resumes it: what to run and when (:class:`ScheduleSpec`);
- ``state.<name>``, written by the coordinator that fires it, compare-and-set:
  the last tick handled, the last workflow started, counts
  (:class:`ScheduleState`).

The coordinator of partition ``partition_of(name)`` fires it (one owner at a
time, as for workflows). A tick's workflow id is derived from the schedule
and the tick time (:func:`tick_workflow_id`), so a tick fired twice, by an
owner that died before recording it and by its successor, starts one
workflow: the second submission is deduplicated by its message id and
ignored by admission (the workflow exists already). Exactly once per tick.

Missed ticks (no coordinator ran, or the schedule was paused): the latest due
tick fires, plus up to ``catch_up`` earlier missed ones, oldest first.
Overlap with the previous run still running: ``skip`` the tick (counted),
``allow`` it, or ``cancel-previous`` (a cooperative cancel of the previous
run, then the new one). Time zones are explicit: a cron expression is read
in ``timezone`` (an IANA name, default UTC).

In secure mode the coordinator checks, at each tick, that the principal who
signed the spec may submit every capability of its workflow (RBAC
``workflow:submit:<capability>``): a schedule cannot run what its author
could not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agenticflow.coordinator.admission import used_capabilities
from agenticflow.coordinator.state import WorkflowState, WorkflowStatus, open_snapshot
from agenticflow.shared.bus.base import Bus, KeyValue
from agenticflow.shared.errors import MalformedMessageError, StateConflictError, TransportError
from agenticflow.shared.graph.workflow import MAX_WAIT_S, WorkflowDefinition, parse_duration
from agenticflow.shared.security.rbac import Policy
from agenticflow.shared.security.seal import TrustedKey
from agenticflow.shared.wire.codec import pack, unpack
from agenticflow.shared.wire.events import (
    Event,
    EventType,
    InterventionRequested,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import workflow_key
from agenticflow.shared.wire.names import (
    SCHEDULE_SPEC_PREFIX,
    SCHEDULE_STATE_PREFIX,
    partition_of,
)
from agenticflow.shared.wire.vclock import VectorClock

log = structlog.get_logger("agenticflow.schedules")

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
"""A schedule's name: 1-40 letters, digits, '_' or '-' (it heads its runs' ids)."""

SPEC_PREFIX = SCHEDULE_SPEC_PREFIX
STATE_PREFIX = SCHEDULE_STATE_PREFIX
MAX_CATCH_UP = 100
_TICK_FORMAT = "%Y%m%dT%H%M%SZ"
_LATEST_NS = 7_258_118_400 * 1_000_000_000
"""2200-01-01: no schedule time is later (a year the calendar functions reach)."""


class ScheduleSpec(BaseModel):
    """What a schedule runs and when (written by people, read by coordinators)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    cron: str | None = None
    """A cron expression (5 fields; 6 with seconds), read in :attr:`timezone`."""
    every_s: float | None = Field(default=None, ge=1, le=MAX_WAIT_S)
    """Or a fixed interval, from :attr:`created_at`."""
    timezone: str = "UTC"
    definition: WorkflowDefinition
    input: dict[str, Any] = Field(default_factory=dict)
    overlap: Literal["skip", "allow", "cancel-previous"] = "skip"
    catch_up: int = Field(default=0, ge=0, le=MAX_CATCH_UP)
    """Missed ticks run besides the latest one after a time nothing fired."""
    paused: bool = False
    created_by: str = ""
    created_at: int = Field(default_factory=time.time_ns, ge=0, le=_LATEST_NS)
    """When it was created (ns): the first tick is after it."""
    resumed_at: int = Field(default=0, ge=0, le=_LATEST_NS)
    """When it was last resumed (ns): ticks missed while paused never run."""

    @model_validator(mode="before")
    @classmethod
    def _every_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and "every" in data:
            data = dict(data)
            data["every_s"] = parse_duration(data.pop("every"))
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("schedule name must be 1-40 letters, digits, '_' or '-'")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"timezone {value!r} is not an IANA time zone (e.g. UTC, Europe/Paris)"
            ) from None
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> ScheduleSpec:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("a schedule needs exactly one of 'cron' or 'every'")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ValueError(
                f"cron {self.cron!r} is not a cron expression (5 fields: minute hour "
                "day-of-month month day-of-week, e.g. '*/15 * * * *')"
            )
        if self.cron is not None:
            # A valid expression may match no date at all ('0 0 30 2 *').
            try:
                self.next_tick(self.created_at)
                self.latest_tick(_LATEST_NS // 2)
            except (CroniterBadDateError, ValueError, OverflowError):
                raise ValueError(f"cron {self.cron!r} never matches a date") from None
        return self

    @property
    def rule(self) -> str:
        """When it fires, in words."""
        if self.cron is not None:
            return f"cron {self.cron} ({self.timezone})"
        return f"every {self.every_s:g}s"

    def latest_tick(self, at_ns: int) -> int | None:
        """The last tick at or before ``at_ns`` (None: none since it was created)."""
        if self.every_s is not None:
            step = int(self.every_s * 1e9)
            count = (at_ns - self.created_at) // step
            return self.created_at + count * step if count >= 1 else None
        assert self.cron is not None
        # croniter's get_prev is strictly before its start: start just after at_ns.
        start = datetime.fromtimestamp(at_ns // 1000 / 1e6 + 1e-6, ZoneInfo(self.timezone))
        previous = croniter(self.cron, start).get_prev(datetime)
        tick = int(previous.timestamp()) * 1_000_000_000
        return tick if tick > self.created_at else None

    def next_tick(self, after_ns: int) -> int:
        """The first tick strictly after ``after_ns``."""
        if self.every_s is not None:
            step = int(self.every_s * 1e9)
            count = max((after_ns - self.created_at) // step, 0)
            return self.created_at + (count + 1) * step
        assert self.cron is not None
        start = datetime.fromtimestamp(after_ns / 1e9, ZoneInfo(self.timezone))
        following = croniter(self.cron, start).get_next(datetime)
        return int(following.timestamp()) * 1_000_000_000

    def due(self, last_ns: int, now_ns: int) -> list[int]:
        """The ticks to fire now, oldest first: the latest tick in
        ``(last_ns, now_ns]`` and up to :attr:`catch_up` missed ones before it
        (never one before the schedule was created or last resumed)."""
        after = max(last_ns, self.created_at, self.resumed_at)
        ticks: list[int] = []
        tick = self.latest_tick(now_ns)
        while tick is not None and tick > after and len(ticks) <= self.catch_up:
            ticks.append(tick)
            tick = self.latest_tick(tick - 1)
        return ticks[::-1]


class ScheduleState(BaseModel):
    """What the firing coordinator records (compare-and-set)."""

    model_config = ConfigDict(extra="ignore")

    last_tick_ns: int = 0
    last_workflow_id: str | None = None
    last_fired_ns: int = 0
    """When the coordinator started the last run (its clock)."""
    fired: int = 0
    skipped: int = 0
    last_error: str | None = None


def tick_workflow_id(name: str, tick_ns: int) -> str:
    """The id of the workflow a schedule starts for one tick (the same for
    every coordinator that fires that tick)."""
    return f"{name}-{datetime.fromtimestamp(tick_ns // 1_000_000_000, UTC):{_TICK_FORMAT}}"


def tick_time(tick_ns: int) -> str:
    """A tick as an ISO time (UTC)."""
    return datetime.fromtimestamp(tick_ns / 1e9, UTC).isoformat()


WRITERS = ("client", "admin", "coordinator")
"""Roles whose signed spec a coordinator fires (secure mode)."""
_RECENT_NS = 30_000_000_000
"""A previous run with no snapshot yet counts as running this long after it was fired."""
_REFUSALS_KEPT = 1024


def open_spec(
    bus: Bus, key: str, blob: bytes, stored_ns: int | None
) -> tuple[ScheduleSpec, TrustedKey | None]:
    """A stored spec and who signed it; raises MalformedMessageError (and its
    forged/replayed kinds) or ValidationError."""
    plain, signer = bus.seal.open_record(
        bus.names.schedules_bucket, key, blob, roles=WRITERS, stored_ns=stored_ns
    )
    return ScheduleSpec.model_validate(unpack(plain)), signer


def open_state(bus: Bus, key: str, blob: bytes, stored_ns: int | None) -> ScheduleState:
    """A stored firing state (written by coordinators only)."""
    plain, _ = bus.seal.open_record(
        bus.names.schedule_state_bucket, key, blob, roles=("coordinator",), stored_ns=stored_ns
    )
    return ScheduleState.model_validate(unpack(plain))


class Scheduler:
    """Fires the schedules of one coordinator's partition (see the module)."""

    def __init__(
        self,
        *,
        bus: Bus,
        node_id: str,
        partition: int = 0,
        partitions: int = 1,
        policy: Policy | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.node_id = node_id
        self.partition = partition
        self.partitions = partitions
        self.policy = policy
        self.poll_s = poll_s
        self._store: KeyValue | None = None
        self._refused: set[tuple[str, int | None]] = set()

    def mine(self, name: str) -> bool:
        """Whether this coordinator fires schedule ``name``."""
        return self.partitions == 1 or partition_of(name, self.partitions) == self.partition

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due ticks every ``poll_s`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.fire_due(time.time_ns())
            except (TransportError, MalformedMessageError) as exc:
                log.warning("schedules not read; trying again", error=str(exc))
            except Exception:
                log.exception("firing schedules failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_s)

    async def fire_due(self, now_ns: int) -> list[str]:
        """Fire every due tick of this partition's schedules; returns the ids of
        the workflows started."""
        bucket = self.bus.names.schedules_bucket
        if self._store is None:
            self._store = await self.bus.kv(self.bus.names.schedule_state_bucket)
        started: list[str] = []
        entries = await self.bus.kv_entries(bucket)
        await self._forget_deleted(entries)
        for key, blob, stored_ns in entries:
            name = key.removeprefix(SPEC_PREFIX)
            if not key.startswith(SPEC_PREFIX) or not self.mine(name):
                continue
            try:
                spec, signer = open_spec(self.bus, key, blob, stored_ns)
            except (MalformedMessageError, ValidationError) as exc:
                if (key, stored_ns) not in self._refused:  # said once per stored value
                    self._refused.add((key, stored_ns))
                    log.warning("schedule refused", schedule=name, error=str(exc)[:300])
                continue
            if spec.paused or spec.name != name:
                continue
            try:
                started += await self._fire_schedule(spec, signer, now_ns)
            except (TransportError, StateConflictError):
                raise
            except Exception as exc:  # one schedule's problem stops no other
                if (key, stored_ns) not in self._refused:
                    self._refused.add((key, stored_ns))
                    log.warning("schedule not fired", schedule=name, error=repr(exc)[:300])
        if len(self._refused) > _REFUSALS_KEPT:
            self._refused.clear()  # (said once per stored value; a bound, not a log)
        return started

    async def _forget_deleted(self, entries: list[tuple[str, bytes, int | None]]) -> None:
        """Remove the firing state of this partition's deleted schedules."""
        assert self._store is not None
        specs = {
            key.removeprefix(SPEC_PREFIX) for key, _, _ in entries if key.startswith(SPEC_PREFIX)
        }
        for key, _, _ in await self.bus.kv_entries(self.bus.names.schedule_state_bucket):
            name = key.removeprefix(STATE_PREFIX)
            if key.startswith(STATE_PREFIX) and name not in specs and self.mine(name):
                with contextlib.suppress(Exception):
                    await self._store.delete(key)

    async def _fire_schedule(
        self, spec: ScheduleSpec, signer: TrustedKey | None, now_ns: int
    ) -> list[str]:
        assert self._store is not None
        key = STATE_PREFIX + spec.name
        stored = await self.bus.kv_read(self._store, key)
        state = ScheduleState()
        if stored is not None and stored.value:
            try:
                state = open_state(self.bus, key, stored.value, stored.stored_ns)
            except (MalformedMessageError, ValidationError) as exc:
                log.warning(
                    "schedule state refused; starting over", schedule=spec.name, error=str(exc)
                )
        ticks = spec.due(state.last_tick_ns, now_ns)
        if not ticks:
            return []
        started: list[str] = []
        for tick in ticks:
            workflow_id = await self._fire(spec, signer, tick, state)
            if workflow_id is not None:
                started.append(workflow_id)
        body = self.bus.seal.seal_record(
            self.bus.names.schedule_state_bucket, key, pack(state.model_dump(mode="json"))
        )
        try:
            await self.bus.kv_put_cas(self._store, key, body, stored.revision if stored else 0)
        except StateConflictError:
            # Another coordinator recorded it (a hand-over): the tick's workflow
            # id is the same, so nothing ran twice.
            log.info("schedule state written by another coordinator", schedule=spec.name)
        return started

    async def _fire(
        self, spec: ScheduleSpec, signer: TrustedKey | None, tick: int, state: ScheduleState
    ) -> str | None:
        """Start the tick's workflow (or skip it); updates ``state``."""
        state.last_tick_ns = tick
        denial = self._denial(spec, signer)
        if denial is not None:
            state.skipped += 1
            state.last_error = denial
            log.warning("schedule tick refused by policy", schedule=spec.name, reason=denial)
            return None
        previous = state.last_workflow_id
        if previous is not None and spec.overlap != "allow":
            running = await self._running(previous, state.last_fired_ns)
            if running is not None and spec.overlap == "skip":
                state.skipped += 1
                state.last_error = f"skipped the run at {tick_time(tick)}: {previous} still runs"
                log.info("schedule tick skipped", schedule=spec.name, running=previous)
                return None
            if running is not None:
                await self._cancel(spec, previous, running, tick)
        workflow_id = tick_workflow_id(spec.name, tick)
        await self.bus.publish_event(
            Event(
                id=workflow_key(workflow_id, "submitted"),
                type=EventType.WORKFLOW_SUBMITTED,
                workflow_id=workflow_id,
                source=self.node_id,
                timestamp=time.time_ns(),
                vclock=VectorClock({self.node_id: 1}),
                data=WorkflowSubmitted(
                    definition=spec.definition,
                    input=spec.input,
                    submitted_by=f"schedule:{spec.name}",
                ),
            )
        )
        state.fired += 1
        state.last_workflow_id = workflow_id
        state.last_fired_ns = time.time_ns()
        state.last_error = None
        log.info(
            "schedule fired", schedule=spec.name, workflow_id=workflow_id, tick=tick_time(tick)
        )
        return workflow_id

    def _denial(self, spec: ScheduleSpec, signer: TrustedKey | None) -> str | None:
        """Why the spec's author may not run its workflow (None: they may)."""
        if self.policy is None or (signer is not None and signer.role == "coordinator"):
            return None
        principal = signer.principal if signer is not None else spec.created_by or "anonymous"
        denial = self.policy.context(principal).submit_denial(used_capabilities(spec.definition))
        return None if denial is None else f"{principal}: {denial}"

    async def _running(self, workflow_id: str, fired_ns: int) -> WorkflowState | None:
        """The previous run's state while it runs (None: it ended, or never started)."""
        bucket = self.bus.names.workflows_bucket
        stored = await self.bus.kv_read(await self.bus.kv(bucket), workflow_id)
        if stored is None or not stored.value:
            # Not folded yet, or refused: running only if it was fired lately.
            recent = time.time_ns() - fired_ns < _RECENT_NS
            return WorkflowState(workflow_id=workflow_id) if recent else None
        try:
            state = open_snapshot(
                self.bus.seal, bucket, workflow_id, stored.value, stored_ns=stored.stored_ns
            )
        except MalformedMessageError:
            return None
        return state if state.status == WorkflowStatus.RUNNING else None

    async def _cancel(
        self, spec: ScheduleSpec, workflow_id: str, state: WorkflowState, tick: int
    ) -> None:
        digest = hashlib.sha256(f"{spec.name}:{tick}".encode()).hexdigest()[:16]
        request_id = f"schedule-{digest}"
        await self.bus.publish_event(
            Event(
                id=workflow_key(workflow_id, f"intervention:{request_id}"),
                type=EventType.INTERVENTION_REQUESTED,
                workflow_id=workflow_id,
                source=self.node_id,
                timestamp=time.time_ns(),
                vclock=state.vclock.increment(self.node_id),
                data=InterventionRequested(
                    request_id=request_id,
                    action="cancel",
                    by=f"schedule:{spec.name}",
                    reason=f"the run at {tick_time(tick)} starts (overlap: cancel-previous)",
                ),
            )
        )


__all__ = [
    "MAX_CATCH_UP",
    "NAME_RE",
    "SPEC_PREFIX",
    "STATE_PREFIX",
    "WRITERS",
    "ScheduleSpec",
    "ScheduleState",
    "Scheduler",
    "open_spec",
    "open_state",
    "tick_time",
    "tick_workflow_id",
]
