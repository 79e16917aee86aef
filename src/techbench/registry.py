"""A registry of named entries that carry typed metadata (timm-style).

Each technique family, the datasets, the models and the probes are one ``Registry``. Its entries hold the
factory, the defaults (which also define which hyperparameters exist), an Optuna search space as plain data,
per-entry bounds for hyperparameters whose range is their own, an optional check, and the family's typed
capability flags (a frozen dataclass given as ``info=``): an unknown flag is an error at registration, so a
misspelled flag cannot pass silently. Adding an entry is one decorated function; tests and ``techbench list``
pick it up from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

# (low, high, low_inclusive, high_inclusive); None = unbounded on that side.
Bound = tuple[float | None, float | None, bool, bool]


@dataclass(frozen=True)
class Info:
    """Capability flags shared by no family: the info of registries that declare none."""


InfoT = TypeVar("InfoT", bound=Info)


@dataclass(frozen=True)
class Entry(Generic[InfoT]):
    name: str
    factory: Callable[..., Any]
    description: str = ""
    # Default hyperparameters: the values a run uses unless params.yaml overrides them.
    defaults: dict[str, Any] = field(default_factory=dict)
    # Optuna search space as plain data: {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}.
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Bounds of hyperparameters whose range is this entry's own (checks.SHARED_BOUNDS hold the common ones).
    bounds: dict[str, Bound] = field(default_factory=dict)
    # check(resolved hyperparameters) raises ValueError naming what is wrong with a combination of values.
    check: Callable[[dict[str, Any]], None] | None = None
    info: InfoT = field(default_factory=Info)  # type: ignore[assignment]


class Registry(Generic[InfoT]):
    def __init__(self, family: str, info: type[InfoT] = Info):  # type: ignore[assignment]
        self.family = family
        self.info_type = info
        self._entries: dict[str, Entry[InfoT]] = {}
        # Called with every new entry: a registry that derives entries (e.g. `<optimizer>+gc`) adds them here.
        self.on_register: list[Callable[[Entry[InfoT]], None]] = []

    def register(
        self,
        name: str,
        *,
        description: str = "",
        defaults: dict[str, Any] | None = None,
        search_space: dict[str, dict[str, Any]] | None = None,
        bounds: dict[str, Bound] | None = None,
        check: Callable[[dict[str, Any]], None] | None = None,
        **flags: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        info = self._info(name, flags)
        defaults = dict(defaults or {})
        for what, keys in (("search_space", search_space or {}), ("bounds", bounds or {})):
            unknown = sorted(set(keys) - set(defaults))
            if unknown:
                raise ValueError(f"{self.family} {name!r}: {what} names {unknown}, which have no default")

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.family}: {name!r} is registered twice")
            entry = Entry(
                name=name,
                factory=fn,
                description=description or (fn.__doc__ or "").strip().split("\n")[0],
                defaults=defaults,
                search_space=dict(search_space or {}),
                bounds=dict(bounds or {}),
                check=check,
                info=info,
            )
            self._entries[name] = entry
            for hook in self.on_register:
                hook(entry)
            return fn

        return decorator

    def _info(self, name: str, flags: dict[str, Any]) -> InfoT:
        allowed = [f.name for f in dataclasses.fields(self.info_type)]
        unknown = sorted(set(flags) - set(allowed))
        if unknown:
            raise ValueError(f"{self.family} {name!r}: unknown flag(s) {unknown}; allowed: {', '.join(allowed)}")
        return self.info_type(**flags)

    def get(self, name: str) -> Entry[InfoT]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.family} '{name}'; allowed: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[InfoT]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.contextmanager
    def temporary(self) -> Iterator[Registry[InfoT]]:
        """Entries registered inside the block are removed at its end (tests register their own)."""
        before = dict(self._entries)
        try:
            yield self
        finally:
            self._entries = before


def hyperparameters(entry: Entry, spec: dict[str, Any]) -> dict[str, Any]:
    """The entry's defaults updated with the component ``spec`` ({name: key, **hp}), without the name."""
    return {**entry.defaults, **{k: v for k, v in spec.items() if k != "name"}}


def build(registry: Registry, spec: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    """Call the factory of ``spec["name"]`` with ``args`` first and the spec's hyperparameters as keywords."""
    entry = registry.get(spec["name"])
    return entry.factory(*args, **kwargs, **hyperparameters(entry, spec))
