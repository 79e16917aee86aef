"""A registry of named entries that carry their own metadata (timm-style).

Each technique family (optimizers, schedules, ...) and the workloads/models are one ``Registry``.
Adding an entry is one decorated function; tests and ``techbench list`` pick it up from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    description: str = ""
    # Default hyperparameters: the values a run uses unless params.yaml overrides them.
    defaults: dict[str, Any] = field(default_factory=dict)
    # Optuna search space as plain data: {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}.
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Free-form capability flags (e.g. {"full_batch": True}).
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        *,
        description: str = "",
        defaults: dict[str, Any] | None = None,
        search_space: dict[str, dict[str, Any]] | None = None,
        **meta: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.family}: '{name}' is registered twice")
            self._entries[name] = Entry(
                name=name,
                factory=fn,
                description=description or (fn.__doc__ or "").strip().split("\n")[0],
                defaults=dict(defaults or {}),
                search_space=dict(search_space or {}),
                meta=meta,
            )
            return fn

        return decorator

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.family} '{name}'; allowed: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
