"""NatsBus behind the seam: retries and errors as the callers expect them."""

from __future__ import annotations

import pytest

from agenticflow.shared.bus.base import Bus
from agenticflow.shared.bus.nats_backend import NatsBus, _TransientError
from agenticflow.shared.errors import PublishTimeoutError, StateConflictError


async def test_call_retries_a_wrapped_buckets_transient_failures(bus: Bus) -> None:
    assert isinstance(bus, NatsBus)
    failures = [_TransientError("no responders"), PublishTimeoutError("no answer")]

    async def flaky() -> int:
        if failures:
            raise failures.pop(0)
        return 7

    assert await bus.call(flaky, what="a flaky put") == 7
    assert failures == []


async def test_call_does_not_retry_a_conflict(bus: Bus) -> None:
    calls = 0

    async def conflicting() -> None:
        nonlocal calls
        calls += 1
        raise StateConflictError("changed by another writer")

    with pytest.raises(StateConflictError):
        await bus.call(conflicting, what="a compare-and-set")
    assert calls == 1


async def test_an_empty_bucket_has_no_keys_and_a_missing_key_is_not_found(bus: Bus) -> None:
    from agenticflow.shared.errors import NotFoundError

    store = await bus.kv(f"{bus.names.prefix}_empty_test")
    assert await store.keys() == []
    with pytest.raises(NotFoundError):
        await store.get("nothing")
    revision = await store.create("k", b"v")
    with pytest.raises(StateConflictError):
        await store.create("k", b"again")
    with pytest.raises(StateConflictError):
        await store.update("k", b"stale", last=revision + 5)
