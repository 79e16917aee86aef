"""Who owns a running trial or run: ``host:pid`` of the process that started it, so that a later process can
tell an abandoned one (its owner is dead on this machine) from one another process is still working on; and
which process of a multi-process (DDP) launch may write at all."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
from collections.abc import Callable
from typing import Any


def machine() -> str:
    """This machine's name: $TECHBENCH_HOST when set (machines that share a hostname, such as copies of one
    container image, must be told apart), else the hostname."""
    return os.environ.get("TECHBENCH_HOST") or socket.gethostname()


def this_process() -> str:
    return f"{machine()}:{os.getpid()}"


def git_commit() -> str:
    """The commit of the code this process runs (recorded with each run it writes)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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


# Set by Lightning's script launcher (strategy ddp) and torchrun for the processes it starts, by SLURM for each
# task; unset (or 0) in the process a user started. The first that is set gives the global rank.
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def global_rank() -> int:
    """This process's rank in a multi-process launch (0 when there is none). Under ``strategy: ddp`` every rank
    runs the whole command (Lightning re-executes it per device; each node runs it under multi-node), so the
    ranks must make the same decisions (which runs to train) and only rank 0 writes."""
    for name in RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    node, local = os.environ.get("NODE_RANK", "0"), os.environ.get("LOCAL_RANK", "0")
    if node.isdigit() and local.isdigit() and (int(node) or int(local)):
        per_node = os.environ.get("LOCAL_WORLD_SIZE", "")
        return int(node) * (int(per_node) if per_node.isdigit() else 1) + int(local)
    return 0


def is_primary() -> bool:
    return global_rank() == 0


def primary_only(default: Any = None) -> Callable:
    """A writer that does its work on rank 0 only; the other ranks get ``default`` back (they read the same
    stores, so they skip the runs rank 0 skips and train the ones it trains, in step with its collectives)."""

    def wrap(write: Callable) -> Callable:
        @functools.wraps(write)
        def on_rank_zero(*args: Any, **kwargs: Any) -> Any:
            return write(*args, **kwargs) if is_primary() else default

        return on_rank_zero

    return wrap
