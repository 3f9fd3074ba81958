"""Plain-data records kept in KV (breakers, rate-limit windows)."""

from __future__ import annotations

from typing import Any, Self


class Record:
    """Mixin for frozen dataclasses stored as msgpack dicts in KV."""

    __slots__ = ()
    __dataclass_fields__: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the KV value."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Tolerates unknown fields (a newer worker) and garbage (then: the default)."""
        if not isinstance(data, dict):
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError:
            return cls()


__all__ = ["Record"]
