"""Retention of the events stream comes from the settings, with S2 compression."""

from __future__ import annotations

from nats.js.api import StoreCompression

from agenticflow.shared.ops.config import Settings
from tests.support.natsbus import connected


async def test_events_stream_limits_come_from_config_and_follow_changes(
    settings_for: Settings,
) -> None:
    first = settings_for.model_copy(
        update={"events_max_age_s": 3600.0, "events_max_bytes": 64 * 1024 * 1024}
    )
    async with connected(first, name="retention") as bus:
        await bus.ensure_topology()
        info = await bus.js.stream_info(bus.names.events_stream)
        assert info.config.max_age == 3600
        assert info.config.max_bytes == 64 * 1024 * 1024
        assert info.config.compression == StoreCompression.S2
    # A deployment that changes its limits gets the stream updated in place.
    second = first.model_copy(update={"events_max_age_s": 7200.0, "events_max_bytes": -1})
    async with connected(second, name="retention-2") as bus:
        await bus.ensure_topology()
        info = await bus.js.stream_info(bus.names.events_stream)
        assert info.config.max_age == 7200
        assert info.config.max_bytes == -1
        assert info.config.compression == StoreCompression.S2
