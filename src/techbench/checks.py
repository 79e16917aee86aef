"""Value checks shared by every part of params.yaml: a typo is an unknown key, an impossible value names
its key and the allowed range, and a component ``{name: <registry key>, ...}`` is resolved against its registry."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from techbench.errors import ConfigError
from techbench.registry import Bound, Entry, Registry

# Bounds of hyperparameters that mean the same thing in every registry entry that declares them; an entry
# whose hyperparameter has a range of its own declares it in its ``bounds`` (see ``bound_of``).
SHARED_BOUNDS: dict[str, Bound] = {
    "lr": (0.0, None, False, True),
    "momentum": (0.0, 1.0, True, False),
    "beta": (0.0, 1.0, True, False),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
    "alpha": (0.0, 1.0, True, True),
    "eps": (0.0, None, False, True),
    "weight_decay": (0.0, None, True, True),
    "dropout": (0.0, 1.0, True, False),
    "epochs": (1, None, True, True),
    "micro_batch": (1, None, True, True),
    "k": (0.0, None, True, True),
    "batch_size": (1, None, True, True),
    "grad_clip": (0.0, None, True, True),
    "divergence_loss": (0.0, None, False, True),
    "target_val_acc": (0.0, 1.0, True, True),
    "num_samples": (10, None, True, True),
    "val_fraction": (0.0, 1.0, False, False),
    "gamma": (0.0, 1.0, False, True),
    "damping": (0.0, None, True, True),
    "min_lr": (0.0, None, True, True),
    "warmup_epochs": (0.0, None, True, True),
    "accumulate_grad_batches": (1, None, True, True),
    "lr_scale": (0.0, None, False, True),
    # generalization techniques
    "lam": (0.0, None, True, True),  # regularization strength λ (penalty λ/2m·Σw², λ/m·Σ|w|)
    "lam_first": (0.0, None, True, True),
    "lam_last": (0.0, None, True, True),
    "l1_ratio": (0.0, 1.0, True, True),
    "p": (0.0, 1.0, True, False),  # dropout rate: the probability of dropping a unit
    "p_input": (0.0, 1.0, True, False),
    "init_p": (0.0, 1.0, False, False),
    "temperature": (0.0, None, False, True),
    "weight_reg": (0.0, None, True, True),
    "dropout_reg": (0.0, None, True, True),
    "samples": (1, None, True, True),
    "patience": (1, None, True, True),
    "min_delta": (0.0, None, True, True),
    "rel_delta": (0.0, 1.0, True, False),
    "window": (2, None, True, True),
    "min_slope": (0.0, None, True, True),
    "train_size": (0, None, True, True),  # 0 = the whole training split
    "label_noise": (0.0, 1.0, True, False),
}


def bound_of(entry: Entry, hp: str) -> Bound | None:
    """The range of an entry's hyperparameter: its own bound, else the shared one (None: unbounded)."""
    return entry.bounds.get(hp, SHARED_BOUNDS.get(hp))


def _check_value(key: str, value: Any, default: Any, bound: Bound | None) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)) and default is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and not float(value).is_integer():
            raise ConfigError(key, f"expected an integer, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        if bound is not None:
            lo, hi, lo_inc, hi_inc = bound
            if lo is not None and (value < lo or (value == lo and not lo_inc)):
                raise ConfigError(key, f"{value!r} is out of range: must be {'>=' if lo_inc else '>'} {lo}")
            if hi is not None and (value > hi or (value == hi and not hi_inc)):
                raise ConfigError(key, f"{value!r} is out of range: must be {'<=' if hi_inc else '<'} {hi}")
        return int(value) if isinstance(default, int) else float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    if isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
        raise ConfigError(key, f"expected a list, got {value!r}")
    return value


def require(*conditions: tuple[str, Callable[[dict], bool]]) -> Callable[[dict], None]:
    """A registry ``check`` (run by ``component`` on the resolved hyperparameters): ValueError naming the
    first condition they break."""

    def check(hp: dict) -> None:
        for text, test in conditions:
            if not test(hp):
                raise ValueError(f"requires {text}")

    return check


def merge_checked(
    key: str, defaults: dict[str, Any], given: dict[str, Any] | None, bounds: dict[str, Bound] | None = None
) -> dict[str, Any]:
    """defaults updated with ``given``; unknown keys and out-of-range values (``bounds``, else the shared
    ones) raise ConfigError."""
    given = given or {}
    if not isinstance(given, dict):
        raise ConfigError(key, f"expected a mapping, got {given!r}")
    out = dict(defaults)
    for name, value in given.items():
        if name not in defaults:
            raise ConfigError(f"{key}.{name}", "unknown key", sorted(defaults))
        bound = (bounds or {}).get(name, SHARED_BOUNDS.get(name))
        out[name] = _check_value(f"{key}.{name}", value, defaults[name], bound)
    return out


def component(key: str, registry: Registry, given: Any) -> dict[str, Any]:
    """Resolve ``{name: k, **hp}`` (or just ``k``) against a registry into a full, checked dict."""
    if isinstance(given, str):
        given = {"name": given}
    if not isinstance(given, dict) or "name" not in given:
        raise ConfigError(key, f"expected {{name: <{registry.family} key>, ...}}", registry.names())
    name = given["name"]
    if name not in registry:
        raise ConfigError(f"{key}.name", f"unknown {registry.family} {name!r}", registry.names())
    hp = {k: v for k, v in given.items() if k != "name"}
    entry = registry.get(name)
    resolved = merge_checked(key, entry.defaults, hp, entry.bounds)
    if entry.check is not None:
        try:
            entry.check(resolved)
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
    return {"name": name, **resolved}
