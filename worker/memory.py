"""Agent memory: what an agent keeps between tasks, in KV ``<prefix>_memory``.

``ctx.memory`` is the handling agent's own space (key ``<agent>.<name>``), so any
worker can take any task and find what an earlier task remembered::

    seen = await ctx.memory.get("seen", [])
    await ctx.memory.set("seen", [*seen, ctx.params["url"]])

Values are plain data serialised with msgpack (never pickle: reading memory
cannot run code), stored as records (:meth:`agenticflow.shared.security.seal.Seal.seal_record`):
with data keys, encrypted with AES-GCM bound to their bucket and key; with
signing keys, signed by the writing worker over bucket, key, time and value.
A value altered, copied to another key, written by anyone but a worker of the
reader's own group (its key directory's principal: ``worker``, or one per
group), or put back after the replay window is refused when read. Writes are
last-writer-wins; :meth:`AgentMemory.update` is a compare-and-set loop for
read-modify-write.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from agenticflow.shared.bus.base import Bus, KeyValue
from agenticflow.shared.errors import ConfigError, ForgedMessageError, StateConflictError
from agenticflow.shared.wire.codec import MAX_DEPTH, pack, unpack

_NAME = re.compile(r"^[A-Za-z0-9_\-=]{1,128}\Z")
MAX_VALUE_BYTES = 256 * 1024
_WRITERS = ("worker",)
"""The role whose signature memory values must carry when keys are configured."""
_MISSING = object()


class AgentMemory:
    """One agent's durable key-value memory."""

    def __init__(self, bus: Bus, agent: str) -> None:
        if not _NAME.match(agent):
            raise ConfigError(f"agent name {agent!r} cannot name a memory space")
        self.bus = bus
        self.agent = agent
        self.bucket = bus.names.memory_bucket
        self._store: KeyValue | None = None

    def _key(self, name: str) -> str:
        if not _NAME.match(name):
            raise ConfigError(f"memory key {name!r} must be 1-128 letters, digits, '_', '-' or '='")
        return f"{self.agent}.{name}"

    async def _kv(self) -> KeyValue:
        if self._store is None:
            self._store = await self.bus.kv(self.bucket)
        return self._store

    def _encode(self, key: str, value: Any) -> bytes:
        blob = self.bus.seal.seal_record(self.bucket, key, pack(value))
        if len(blob) > MAX_VALUE_BYTES:
            raise ConfigError(
                f"memory value {key!r} is {len(blob)} bytes, over {MAX_VALUE_BYTES}: "
                "keep large data elsewhere and remember a reference"
            )
        return blob

    def _decode(self, key: str, blob: bytes, stored_ns: int | None) -> Any:
        plain, signer = self.bus.seal.open_record(
            self.bucket, key, blob, roles=_WRITERS, stored_ns=stored_ns
        )
        owner = self.bus.seal.record_identity
        if signer is not None and owner is not None and signer.principal != owner.principal:
            raise ForgedMessageError(
                f"{self.bucket}/{key} was written by {signer.principal}, not by this "
                f"worker group ({owner.principal}): an agent's memory is its group's"
            )
        return unpack(plain, max_depth=MAX_DEPTH)

    async def _read(self, key: str) -> tuple[Any, int]:
        stored = await self.bus.kv_read(await self._kv(), key)
        if stored is None:
            return _MISSING, 0
        return self._decode(key, stored.value, stored.stored_ns), stored.revision

    async def get(self, name: str, default: Any = None) -> Any:
        """The remembered value, or ``default``. Raises ForgedMessageError (or
        its ReplayedMessageError) and UndecryptableMessageError for a value that
        is not what a worker of this cluster wrote there: unsigned, signed by a
        key that is not a worker's, moved from another key, or an old value put
        back after the replay window."""
        value, _ = await self._read(self._key(name))
        return default if value is _MISSING else value

    async def set(self, name: str, value: Any) -> None:
        """Remember ``value`` (plain data: msgpack-able)."""
        key = self._key(name)
        blob = self._encode(key, value)
        store = await self._kv()
        await self.bus.call(lambda: store.put(key, blob), what=f"remember {key}")

    async def update(
        self, name: str, change: Callable[[Any], Any], *, default: Any = None, attempts: int = 10
    ) -> Any:
        """Read, ``change``, write back unless someone wrote in between (then
        again); returns the new value. Raises StateConflictError after ``attempts``."""
        key = self._key(name)
        store = await self._kv()
        for _ in range(attempts):
            current, revision = await self._read(key)
            new = change(default if current is _MISSING else current)
            try:
                await self.bus.kv_put_cas(store, key, self._encode(key, new), revision)
            except StateConflictError:
                continue
            return new
        raise StateConflictError(f"memory {key!r} changed under {attempts} updates in a row")

    async def delete(self, name: str) -> None:
        """Forget a value (no error if it is not there)."""
        key = self._key(name)
        store = await self._kv()
        await self.bus.call(lambda: store.delete(key), what=f"forget {key}")

    async def keys(self) -> list[str]:
        """The names this agent remembers."""
        store = await self._kv()
        watcher = await self.bus.call(
            lambda: store.watch(f"{self.agent}.>", ignore_deletes=True, meta_only=True),
            what="list memory",
        )
        found: list[str] = []
        try:
            async for entry in watcher:
                if entry is None:
                    break  # the end of what is stored
                found.append(entry.key.removeprefix(f"{self.agent}."))
        finally:
            await watcher.stop()
        return sorted(found)


__all__ = ["MAX_VALUE_BYTES", "AgentMemory"]
