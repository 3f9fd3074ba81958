"""The Python client: connect to a cluster, start workflows, wait for their
results, list them and steer them.

::

    import agenticflow

    async with agenticflow.connect("nats://127.0.0.1:4222") as client:
        handle = await client.start("workflow.yaml", input={"topic": "rust"})
        print(await handle.result(timeout=60))

``connect()`` can be awaited too (``client = await agenticflow.connect()``;
then ``await client.close()``). Settings come from
:func:`agenticflow.profiles.resolve`: the URL given, else a profile named by
``profile=`` or ``AGENTICFLOW_PROFILE``, else the ``AGENTICFLOW_*``
environment, else ``NATS_URL``, else the current profile.

The client closes the NATS connection it opened. The old way
(``connected(Settings(...))`` then ``Client(bus=..., node_id=...)``, and
``Client.submit`` returning an id) still works for this release and warns
(DeprecationWarning).

Errors defined here (the rest of the tree is in :mod:`agenticflow.shared.errors`)::

    AgenticFlowError
    ├── WorkflowFailedError              result(): the workflow failed or was rejected
    │   └── WorkflowCancelledError       result(): it was cancelled or terminated
    └── ResultValidationError            result(type=...): the output does not fit the type
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import warnings
from collections.abc import AsyncIterator, Collection, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import TypeAdapter, ValidationError

from agenticflow.coordinator.client import Client as _CoreClient
from agenticflow.coordinator.definitions import NAME_RE
from agenticflow.coordinator.index import States, WorkflowSummary
from agenticflow.coordinator.schedules import ScheduleSpec
from agenticflow.coordinator.state import WorkflowState, WorkflowStatus
from agenticflow.coordinator.streams import StreamChunk
from agenticflow.shared.bus import transport
from agenticflow.shared.bus.transport import Bus, Message
from agenticflow.shared.errors import (
    ConfigError,
    MalformedMessageError,
    ResultValidationError,
    WorkflowCancelledError,
    WorkflowFailedError,
)
from agenticflow.shared.graph.workflow import (
    WorkflowDefinition,
    load_workflow_file,
    parse_workflow,
)
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.events import (
    Event,
    EventType,
    InterventionApplied,
    Modification,
    WorkflowCompleted,
)
from agenticflow.shared.wire.usage import LLM_EVENT, WorkflowUsage, llm_usage

T = TypeVar("T")

_WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")


WorkflowLike = WorkflowDefinition | Mapping[str, Any] | str | os.PathLike[str]
"""What :meth:`Client.start` takes: a definition, its dict, a file or a template name."""


class Client(_CoreClient):
    """A connection to a cluster: start, list, wait for and steer workflows.

    Made by :func:`connect`. Constructing it directly
    (``Client(bus=..., node_id=...)``) is deprecated.
    """

    def __init__(self, *, bus: Bus, node_id: str, _owns_bus: bool = False) -> None:
        if not _owns_bus:
            warnings.warn(
                "Client(bus=..., node_id=...) is deprecated: use "
                "`client = await agenticflow.connect(url)` (or `async with "
                "agenticflow.connect(url) as client`)",
                DeprecationWarning,
                stacklevel=2,
            )
        super().__init__(bus=bus, node_id=node_id)
        self._owns_bus = _owns_bus
        self._closed = False

    # Lifecycle ----------------------------------------------------------
    async def close(self) -> None:
        """Close the NATS connection this client opened (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._notifier is not None:
            with contextlib.suppress(Exception):
                await self._notifier.unsubscribe()
            self._notifier = None
        if self._owns_bus:
            await self.bus.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # Workflows ----------------------------------------------------------
    async def start(
        self,
        workflow: WorkflowLike,
        *,
        input: dict[str, Any] | None = None,
        id: str | None = None,
        route: str | None = None,
        versions: dict[str, str] | None = None,
    ) -> WorkflowHandle:
        """Start a workflow; returns its handle without waiting.

        ``workflow`` is a definition (or its dict, as in a workflow file), a
        path to a YAML or JSON workflow file, a registered workflow
        (``"NAME@VERSION"``, or ``"NAME"`` for its latest version: see
        :meth:`register_workflow`), or the name of a template (see
        ``agenticflow templates``; ``input`` fills its parameters). ``id``
        makes the start idempotent: starting again with the same id starts
        nothing new. ``versions`` pins capabilities to agent versions (default:
        the latest each live agent declares; ``{}``: none).

        Raises WorkflowDefinitionError (WorkflowGraphError) for an invalid
        workflow or id, NotFoundError for an unknown file or template,
        TransportError when the bus fails.
        """
        definition = await self._resolve(workflow, input)
        workflow_id = await self.submit_workflow(
            definition, input=input, workflow_id=id, route=route, versions=versions
        )
        return WorkflowHandle(workflow_id, self)

    async def run(
        self,
        workflow: WorkflowLike,
        *,
        input: dict[str, Any] | None = None,
        id: str | None = None,
        type: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """Start the workflow and wait for its result (see :meth:`WorkflowHandle.result`)."""
        handle = await self.start(workflow, input=input, id=id)
        return await handle.result(timeout=timeout, type=type)

    async def create_schedule(
        self,
        name: str,
        workflow: WorkflowLike,
        *,
        cron: str | None = None,
        every: str | float | None = None,
        input: dict[str, Any] | None = None,
        timezone: str = "UTC",
        overlap: str = "skip",
        catch_up: int = 0,
        replace: bool = False,
    ) -> ScheduleSpec:
        """Start ``workflow`` (a definition, a file or a template, as for
        :meth:`start`) on a cron expression (``cron="*/15 * * * *"``, read in
        ``timezone``) or ``every`` interval (``"10m"``, or seconds).

        The coordinator owning the schedule fires each tick once, fail-overs
        included; its run's id is ``NAME-YYYYMMDDTHHMMSSZ``. ``overlap``: what a
        tick does while the previous run still runs (``skip``, ``allow``,
        ``cancel-previous``); ``catch_up``: how many missed ticks run besides
        the latest after a time nothing fired. Raises ValueError (invalid
        schedule), StateConflictError (the name exists, unless ``replace``).
        """
        spec = ScheduleSpec.model_validate(
            {
                "name": name,
                "cron": cron,
                "every": every,
                "timezone": timezone,
                "definition": await self._resolve(workflow, input),
                "input": input or {},
                "overlap": overlap,
                "catch_up": catch_up,
                "created_by": self.node_id,
            }
        )
        return await self.put_schedule(spec, replace=replace)

    async def _resolve(
        self, workflow: WorkflowLike, input: dict[str, Any] | None
    ) -> WorkflowDefinition:
        """The definition ``workflow`` stands for: a registered one for
        ``NAME@VERSION`` (or a registered ``NAME``), else :func:`_definition`."""
        if isinstance(workflow, str) and not _is_file(workflow):
            name, at, _ = workflow.partition("@")
            if at or (NAME_RE.match(name) and await self.registered_workflows(name)):
                return (await self.registered_workflow(workflow)).definition
        return _definition(workflow, input)

    def handle(self, workflow_id: str) -> WorkflowHandle:
        """The handle of a workflow started earlier (by anyone)."""
        return WorkflowHandle(workflow_id, self)

    async def list(
        self,
        *,
        state: States = None,
        name: str | None = None,
        since: datetime | timedelta | None = None,
        until: datetime | timedelta | None = None,
        text: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> builtins.list[WorkflowSummary]:
        """Workflows, newest first: ``state`` (``running``, ``completed``,
        ``failed``, ``cancelled``, ``aborted``, ``rejected``, or a list of
        them), ``name`` (a glob:
        ``report-*``), ``since`` and ``until`` (created at or after, before; a
        timedelta means that long ago), ``text`` (a case-insensitive part of
        the id or of the input's first 200 characters as JSON), the first
        ``offset`` skipped, at most ``limit`` (None: all).

        Reads the workflow index the coordinators keep (one small record per
        workflow), not the event stream, so it sees every workflow whatever
        their number; a running workflow's count of done tasks may be up to
        two seconds late. Raises ConfigError for an unknown state."""
        return await self.workflows(
            state=state,
            name=name,
            since=since,
            until=until,
            text=text,
            limit=limit,
            offset=offset,
        )

    async def usage(self, workflow_id: str) -> WorkflowUsage:
        """The model usage (``ctx.llm`` calls: tokens and cost by
        ``Settings.llm_prices``) the workflow's tasks recorded, in all and by
        task; computed from its recorded effects when asked (each paid call
        once, however many attempts served it; a rerun's served calls cost 0)."""
        subject = self.names.stored_events_of_type(LLM_EVENT, workflow_id)
        return llm_usage(await self._read(subject))

    async def submit(self, *args: Any, **kwargs: Any) -> str:
        """Deprecated: use :meth:`start` (returns a handle) or :meth:`run`."""
        warnings.warn(
            "Client.submit() is deprecated: use `handle = await client.start(workflow, "
            "input=..., id=...)` (handle.id is the workflow id) or `await client.run(...)`",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.submit_workflow(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class WorkflowHandle:
    """One workflow, by id: wait for its result, read it, steer it."""

    id: str
    client: Client

    @overload
    async def result(self, *, timeout: float | None = ..., type: None = ...) -> Any: ...

    @overload
    async def result(self, *, timeout: float | None = ..., type: builtins.type[T]) -> T: ...

    @overload
    async def result(self, *, timeout: float | None = ..., type: Any) -> Any: ...

    async def result(self, *, timeout: float | None = None, type: Any = None) -> Any:
        """Wait until the workflow ends; returns its output: the result of its
        sink task (the one no other task depends on), or a dict of results by
        task id when it has several sinks. With ``type`` the output is
        validated (and converted) by pydantic (``type=MyModel``,
        ``type=list[int]``...).

        Raises WorkflowFailedError (failed or rejected), WorkflowCancelledError
        (cancelled or terminated), ResultValidationError (``type`` does not
        fit), TimeoutError after ``timeout`` seconds (None: wait for ever).
        """
        output = await self._output(timeout)
        if type is None:
            return output
        try:
            return TypeAdapter(type).validate_python(output)
        except ValidationError as exc:
            raise ResultValidationError(
                f"the output of workflow {self.id!r} is not a valid {_type_name(type)}: {exc}"
            ) from exc

    async def _output(self, timeout: float | None) -> Any:
        """The output once the workflow ends. It comes from whichever arrives
        first: the coordinator's ``workflow.completed`` event (published a
        write before the snapshot: one round trip sooner), or the terminal
        snapshot (the only way to learn a failure's reason, and the way once
        it has ended already). With keys, the event counts only when a
        coordinator signed it."""
        bus = self.client.bus
        heard: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

        async def on_event(msg: Message) -> None:
            try:
                event = bus.decode_event(msg)
            except MalformedMessageError:
                return
            trusted = not bus.seal.active or event.signer_role == "coordinator"
            if trusted and event.workflow_id == self.id and not heard.done():
                heard.set_result(event)

        subject = bus.names.event_subject(self.id, EventType.WORKFLOW_COMPLETED.value)
        sub = await bus.subscribe(subject, on_event)
        waiting = asyncio.ensure_future(self.wait(timeout=timeout))
        try:
            either: set[asyncio.Future[Any]] = {waiting, heard}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            completed = heard.result().data if heard.done() else None
            if isinstance(completed, WorkflowCompleted):
                return _sinks(completed.output)
            state = await waiting
        finally:
            waiting.cancel()
            heard.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if state.status == WorkflowStatus.COMPLETED and not state.output and state.problems:
            state = await self._untrimmed(state)
        return _output_of(state)

    async def _untrimmed(self, state: WorkflowState) -> WorkflowState:
        """A snapshot too large for NATS leaves the output out (see
        :meth:`WorkflowState.snapshot_within`): take it from the stream."""
        for event in reversed(await self.events()):
            if isinstance(event.data, WorkflowCompleted):
                return state.model_copy(update={"output": event.data.output})
        return state

    async def wait(self, *, timeout: float | None = None) -> WorkflowState:
        """Wait until the workflow ends (whatever the outcome); returns its state.
        Raises TimeoutError."""
        try:
            return await self.client.wait(self.id, timeout=timeout)
        except TimeoutError:
            raise TimeoutError(
                f"workflow {self.id!r} did not finish within {timeout:g}s"
                if timeout is not None
                else f"workflow {self.id!r} did not finish"
            ) from None

    async def status(self) -> WorkflowState:
        """Its latest state; raises NotFoundError before a coordinator recorded it."""
        return await self.client.status(self.id)

    async def events(self) -> builtins.list[Event]:
        """Its events so far, in stream order."""
        return await self.client.events(self.id)

    async def usage(self) -> WorkflowUsage:
        """Its model usage so far (see :meth:`Client.usage`)."""
        return await self.client.usage(self.id)

    async def stream(
        self, *, task: str | None = None, kinds: Collection[str] | None = None
    ) -> AsyncIterator[StreamChunk]:
        """What its tasks stream (``await ctx.stream(...)`` in a handler), in
        order, from the start and then live, until the workflow ends::

            async for chunk in handle.stream(kinds=["token"]):
                print(chunk.text, end="", flush=True)

        ``task``: only that task's chunks, until it completes. ``kinds``: only
        those (``token``, ``progress``, ``log``, ``artifact``; ``dropped``
        chunks say how many the handler made that could not be stored)."""
        async for chunk in self.client.stream(self.id, task=task, kinds=kinds):
            yield chunk

    async def states(self) -> AsyncIterator[WorkflowState]:
        """Every new state of the workflow, until it ends (for live progress)."""
        async for state in self.client.states(self.id):
            yield state

    async def cancel(self, reason: str = "") -> InterventionApplied:
        """Cooperative cancel: no new task is dispatched, tasks that have not
        started are cancelled, running ones finish (their results are kept) or
        see ``ctx.cancelled`` and stop; the workflow then ends ``cancelled``.
        Raises InterventionRefusedError (``code`` says why)."""
        return await self.client.cancel(self.id, reason)

    async def terminate(self, reason: str = "") -> InterventionApplied:
        """End the workflow now (``aborted``): running handlers are cancelled and
        late outcomes ignored. Raises InterventionRefusedError."""
        return await self.client.terminate(self.id, reason)

    async def pause(self) -> InterventionApplied:
        """Dispatch no new task until :meth:`resume`; running tasks finish."""
        return await self.client.pause(self.id)

    async def resume(self) -> InterventionApplied:
        """Resume a paused workflow."""
        return await self.client.intervene(self.id, "resume")

    async def feedback(self, text: str) -> InterventionApplied:
        """Send feedback to running handlers (``ctx.feedback``) and every later task."""
        return await self.client.feedback(self.id, text)

    async def signal(
        self, name: str, data: Any = None, *, task: str | None = None
    ) -> InterventionApplied:
        """Send signal ``name`` with ``data`` to the workflow's ``wait: {signal:
        name}`` nodes (kept for one not ready yet; ``task``: for that node
        only). Raises InterventionRefusedError (``code`` ``no_waiting_task``
        when none waits for it, ``too_large`` over 64 KiB)."""
        return await self.client.signal(self.id, name, data, task=task)

    async def approve(self, task: str, comment: str = "") -> InterventionApplied:
        """Approve the task waiting for approval."""
        return await self.client.approve(self.id, task, comment)

    async def reject(self, task: str, comment: str = "") -> InterventionApplied:
        """Reject the task waiting for approval."""
        return await self.client.reject(self.id, task, comment)

    async def modify(self, changes: Modification | dict[str, Any]) -> InterventionApplied:
        """Change tasks that have not started (see :class:`Modification`)."""
        return await self.client.modify(self.id, changes)


def _sinks(output: dict[str, Any]) -> Any:
    """A workflow's output: its sink task's result, or the results by task id."""
    return next(iter(output.values())) if len(output) == 1 else dict(output)


def _output_of(state: WorkflowState) -> Any:
    if state.status == WorkflowStatus.COMPLETED:
        return _sinks(state.output)
    what = f"workflow {state.workflow_id!r} {state.status.value}"
    message = f"{what}: {state.reason}" if state.reason else what
    if state.status in (WorkflowStatus.CANCELLED, WorkflowStatus.ABORTED):
        raise WorkflowCancelledError(message, status=state)
    raise WorkflowFailedError(message, status=state)


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or repr(kind)


def _is_file(workflow: str) -> bool:
    path = Path(workflow)
    return path.suffix in _WORKFLOW_SUFFIXES or path.is_file()


def _definition(workflow: WorkflowLike, input: dict[str, Any] | None) -> WorkflowDefinition:
    if isinstance(workflow, WorkflowDefinition):
        return workflow
    if isinstance(workflow, Mapping):
        return parse_workflow(dict(workflow))
    path = Path(workflow)
    if isinstance(workflow, os.PathLike) or path.suffix in _WORKFLOW_SUFFIXES or path.is_file():
        return load_workflow_file(path)
    from agenticflow.coordinator.supervisor.templates import Templates

    return Templates.load().get(str(workflow)).render(input or {})


class _Connecting:
    """What :func:`connect` returns: await it, or use it with ``async with``."""

    def __init__(self, settings: Settings, name: str, node_id: str | None) -> None:
        self._settings = settings
        self._name = name
        self._node_id = node_id
        self._client: Client | None = None

    async def _open(self) -> Client:
        bus = await Bus.connect(self._settings, name=self._name, role="client")
        node_id = self._node_id or f"client-{os.urandom(4).hex()}"
        return Client(bus=bus, node_id=node_id, _owns_bus=True)

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._open()
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()


def connect(
    url: str | None = None,
    *,
    profile: str | None = None,
    settings: Settings | None = None,
    prefix: str | None = None,
    backend: str | None = None,
    name: str = "agenticflow-client",
    node_id: str | None = None,
) -> _Connecting:
    """Connect to a cluster: ``client = await connect(url)`` or
    ``async with connect(url) as client``.

    ``settings`` is used as given (then give no ``url``, ``profile`` or
    ``prefix``); otherwise they are resolved from ``url``, ``prefix`` (the
    deployment's subject prefix), then ``profile`` (or ``AGENTICFLOW_PROFILE``),
    then the ``AGENTICFLOW_*`` environment, then ``NATS_URL``, then the current
    profile (:func:`agenticflow.profiles.resolve`). ``url``'s scheme picks the
    backend (``nats://``, ``memory://<name>``; or say ``backend``). ``node_id``
    names this client in vector clocks and audit records (default: a random
    ``client-...``).

    Raises ConfigError for an unknown profile or invalid settings (when
    called), ConnectionLostError (a TransportError) when NATS is unreachable
    (when awaited or entered).
    """
    if settings is None:
        from agenticflow.profiles import resolve

        settings = resolve(url, profile, prefix=prefix, backend=backend)
    elif url is not None or profile is not None or prefix is not None or backend is not None:
        raise ConfigError("connect() takes settings, or url, profile, prefix and backend, not both")
    return _Connecting(settings, name, node_id)


def connected(settings: Settings, *, name: str, role: str = "client") -> Any:
    """Deprecated: use :func:`connect` (``async with agenticflow.connect(url) as client``)."""
    warnings.warn(
        "agenticflow.connected(Settings(...)) is deprecated: use "
        "`async with agenticflow.connect(url) as client` (or connect(settings=...))",
        DeprecationWarning,
        stacklevel=2,
    )
    return transport.connected(settings, name=name, role=role)


__all__ = [
    "Client",
    "ResultValidationError",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowSummary",
    "connect",
    "connected",
]
