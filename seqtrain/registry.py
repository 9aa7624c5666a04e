"""A small name → class registry; each entry carries the dataclass schema of its options."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqtrain.config import check_ranges
from seqtrain.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a short name (`linear`, `hdf`) to a class and its options schema (a dataclass)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[type[T], type]] = {}

    def register(self, name: str, schema: type) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = (cls, schema)
            cls.registered_name = name
            return cls

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str, where: str) -> tuple[type[T], type]:
        if name not in self._entries:
            raise ConfigError(f"{where}: unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]


def parse_options(schema: type, options: Mapping[str, Any], where: str) -> Any:
    """Validate `options` against the dataclass `schema`: unknown keys, wrong types and numbers out of
    their declared range name `where.key`."""
    known = {f.name for f in dataclasses.fields(schema)}
    for key in options:
        if key not in known:
            raise ConfigError(f"{where}: unknown option {key!r}; known: {', '.join(sorted(known))}")
    for key, value in options.items():
        if value is None and _required(schema, key):
            raise ConfigError(
                f"{where}.{key}: must be set, got null (an unset interpolation like ${{dataset.root}}?)"
            )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), dict(options))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        msg = str(exc.msg).splitlines()[0]
        raise ConfigError(f"{where}.{key}: {msg}" if key else f"{where}: {msg}") from None
    try:
        parsed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:  # e.g. a MISSING required option
        key = getattr(exc, "full_key", None) or ""
        raise ConfigError(
            f"{where}.{key}: required option not set" if key else f"{where}: {exc.msg}"
        ) from None
    check_ranges(parsed, f"{where}.")
    return parsed


def _required(schema: type, key: str) -> bool:
    field = next(f for f in dataclasses.fields(schema) if f.name == key)
    return field.default is MISSING or (
        field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    )
