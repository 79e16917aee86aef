"""Who owns a running trial or run: ``host:pid`` of the process that started it, so that a later process can
tell an abandoned one (its owner is dead on this machine) from one another process is still working on."""

from __future__ import annotations

import os
import socket


def machine() -> str:
    """This machine's name: $TECHBENCH_HOST when set (machines that share a hostname, such as copies of one
    container image, must be told apart), else the hostname."""
    return os.environ.get("TECHBENCH_HOST") or socket.gethostname()


def this_process() -> str:
    return f"{machine()}:{os.getpid()}"


def is_dead(owner: str | None) -> bool:
    """True when ``owner`` is a process of this machine that no longer exists; an owner on another machine
    (or unknown) is never declared dead here: its heartbeat decides (Optuna) or it stays as it is (MLflow)."""
    host, _, pid = (owner or "").rpartition(":")
    if host != machine() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        return False
    return False
