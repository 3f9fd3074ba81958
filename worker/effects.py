"""Recorded side effects: every call to the outside world becomes an event.

A handler wraps each tool or LLM call in :meth:`TaskContext.effect`::

    answer = await ctx.effect("llm.complete", llm.complete, prompt=prompt)

The call runs, and its result (or error) is stored as a ``task.effect_recorded``
event before the handler goes on. A re-execution of the workflow for
debugging (``agenticflow rerun``) hands each attempt the effects its
counterpart recorded, and :class:`Effects` serves the calls from them in call
order, without calling the outside world: the same code then produces the same
events. A call the recording does not have (other name, other parameters, or
one call too many) raises :class:`~agenticflow.shared.errors.ReplayDivergedError`.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from agenticflow.shared.errors import (
    MalformedMessageError,
    PayloadTooLargeError,
    RecordedEffectError,
    ReplayDivergedError,
    error_info,
)
from agenticflow.shared.ops.telemetry import tracer
from agenticflow.shared.wire.codec import pack
from agenticflow.shared.wire.events import RecordedEffect, TaskEffectRecorded

Publish = Callable[[TaskEffectRecorded, int], Awaitable[None]]
"""Stores the event of call number ``n`` (raises PayloadTooLargeError if too big)."""


def params_hash(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A stable digest of a call's parameters (msgpack, or repr when not plain data)."""
    try:
        data = pack([list(args), sorted(kwargs.items())])
    except MalformedMessageError:
        data = repr((args, sorted(kwargs.items()))).encode()
    return hashlib.sha256(data).hexdigest()[:32]


class Effects:
    """The side effects of one task attempt: recorded, or served from a recording."""

    def __init__(
        self,
        *,
        key_prefix: str,
        worker: str,
        publish: Publish,
        recorded: list[RecordedEffect] | None = None,
        replay: bool = False,
    ) -> None:
        self._key_prefix = key_prefix
        self._worker = worker
        self._publish = publish
        self._recorded = {effect.call: effect for effect in recorded or ()}
        self.replay = replay
        self.calls = 0
        """Calls made so far in this attempt."""

    def key(self, call: int, name: str) -> str:
        """Idempotency key of call ``call``: workflow, task, call index and name
        (the same in every attempt, so a tool can deduplicate on it)."""
        return f"{self._key_prefix}:{call}:{name}"

    async def call(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` (sync or async) as side effect ``name`` and
        record it; during a replay, serve it from the recording instead."""
        with tracer().start_as_current_span(f"effect {name}", attributes={"effect.name": name}):
            return await self.call_at(self.next_index(), name, fn, *args, **kwargs)

    def next_index(self) -> int:
        """Reserve the next call index (for calls that run concurrently: reserve
        in program order, then :meth:`call_at` in any order)."""
        index = self.calls
        self.calls += 1
        return index

    async def call_at(
        self, index: int, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """:meth:`call` with an index reserved by :meth:`next_index`."""
        digest = params_hash(args, kwargs)
        if self.replay:
            return await self._serve(index, name, digest)
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            effect = RecordedEffect(
                call=index, name=name, params_hash=digest, error=error_info(exc)
            )
            await self._store(effect, replayed=False)
            raise
        await self._store(
            RecordedEffect(call=index, name=name, params_hash=digest, result=result),
            replayed=False,
        )
        return result

    async def _serve(self, index: int, name: str, digest: str) -> Any:
        effect = self._recorded.get(index)
        if effect is None:
            raise ReplayDivergedError(
                f"side effect #{index} ({name}) was not made in the recorded run"
            )
        if effect.name != name or effect.params_hash != digest:
            what = "name" if effect.name != name else "parameters"
            raise ReplayDivergedError(
                f"side effect #{index} differs in {what} from the recorded run: "
                f"called {name} with parameters {digest[:12]}, the recording has "
                f"{effect.name} with parameters {effect.params_hash[:12]}"
            )
        if not effect.stored:
            raise ReplayDivergedError(
                f"side effect #{index} ({name}) ran in the recorded run but its result "
                "could not be recorded (too large, or not plain data)"
            )
        await self._store(effect, replayed=True)
        if effect.error is not None:
            raise RecordedEffectError(
                effect.error.type, effect.error.message, retryable=effect.error.retryable
            )
        return effect.result

    async def _store(self, effect: RecordedEffect, *, replayed: bool) -> None:
        data = TaskEffectRecorded(
            effect=effect,
            key=self.key(effect.call, effect.name),
            replayed=replayed,
            worker=self._worker,
        )
        try:
            await self._publish(data, effect.call)
        except (PayloadTooLargeError, MalformedMessageError):
            # Too large or not plain data: record that the call happened, not its result.
            stub = effect.model_copy(update={"result": None, "stored": False})
            await self._publish(data.model_copy(update={"effect": stub}), effect.call)


__all__ = ["Effects", "Publish", "error_info", "params_hash"]
