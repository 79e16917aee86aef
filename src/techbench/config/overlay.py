"""Overlays: a settings file that holds only what differs from params.yaml (e.g. configs/full.yaml, the
GPU-sized setting), merged over it. Mappings merge key by key; any other value (a list, a number) replaces
the base value; ``null`` removes the key."""

from __future__ import annotations

import copy
from typing import Any

from techbench.errors import ConfigError


def merge(base: Any, overlay: Any, where: str = "overlay") -> Any:
    """``overlay`` merged over a deep copy of ``base``."""
    if overlay is None:
        return copy.deepcopy(base)
    if not isinstance(overlay, dict) or not isinstance(base, dict):
        raise ConfigError(where, "an overlay and the file it overlays must both be mappings")
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def redundant(base: Any, overlay: Any, prefix: str = "") -> list[str]:
    """Keys of ``overlay`` that set what ``base`` already has (an overlay should hold only differences)."""
    if not isinstance(overlay, dict) or not isinstance(base, dict):
        return [prefix] if overlay == base else []
    out = []
    for key, value in overlay.items():
        if key in base:
            out += redundant(base[key], value, f"{prefix}{key}.")
    return [k.rstrip(".") for k in out]
