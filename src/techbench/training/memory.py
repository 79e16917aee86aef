"""Peak memory of one training step, on CUDA and on CPU.

On CUDA the caching allocator keeps statistics: the peak is ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``, i.e. every tensor live on the device at the worst moment of the step (parameters,
gradients, optimizer state, the batch, saved activations, backward temporaries). Reserved-but-unused cache
blocks are not counted.

On CPU torch keeps no allocator statistics, and process RSS is dominated by the interpreter, the libraries
and memory the allocator has not returned to the OS, so it cannot resolve a few megabytes of activations. The
CPU number is therefore counted from the tensors themselves: a dispatch mode sees every tensor an operator
returns during the step (forward, backward, checkpoint recomputation and optimizer update alike), each storage
is counted once while it is alive (a weak reference tells when it is freed), and the ``resident`` tensors the
step starts with (parameters, gradients, optimizer state, the batch) form the baseline. The result is the
activation + state memory of the step, comparable to CUDA's allocated bytes, not the process RSS.
Memory allocated outside torch operators (BLAS scratch buffers, the allocator's rounding) is not seen.

The same count on any device also gives the activation peak (``tracked_step_memory(...).activations``): the
peak without parameters, buffers, gradients and optimizer state. Techniques such as gradient checkpointing
change only this part, which the whole-step peak hides when the weights are as large as the activations.
``saved_tensor_bytes`` is the simpler static number: what autograd holds for backward at the end of a forward.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def resident_tensors(objs: Iterable[Any]) -> list[torch.Tensor]:
    """The tensors a step starts with: a module's parameters, their gradients and buffers; an optimizer's
    state; plain tensors as given."""
    out: list[torch.Tensor] = []
    for obj in objs:
        if isinstance(obj, nn.Module):
            for p in obj.parameters():
                out.append(p)
                if p.grad is not None:
                    out.append(p.grad)
            out.extend(obj.buffers())
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                out.extend(v for v in state.values() if isinstance(v, torch.Tensor))
        elif isinstance(obj, torch.Tensor):
            out.append(obj)
        else:
            raise TypeError(f"cannot find tensors in {type(obj).__name__}")
    return out


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[(str(t.device), st.data_ptr())] = st.nbytes()
    return sum(seen.values())


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensor storages alive while the mode is active, as an event log, and their peak."""

    def __init__(self, resident: Iterable[torch.Tensor] = ()):
        super().__init__()
        self.current = 0
        self.peak = 0
        self.events: list[tuple[int, int]] = []  # (storage token, +bytes on birth / -bytes on death)
        self._live: dict[int, tuple[int, weakref.ref]] = {}  # id(storage) -> (token, weak reference)
        for t in resident:
            self._add(t)
        self.peak = self.current

    def token(self, t: torch.Tensor) -> int | None:
        """The token of the live storage behind ``t`` (None if it was never seen)."""
        entry = self._live.get(id(t.untyped_storage()))
        return entry[0] if entry else None

    def _add(self, t: torch.Tensor) -> None:
        if t.is_meta or getattr(t, "is_nested", False):
            return
        st = t.untyped_storage()
        key = id(st)
        if key in self._live:
            return
        token, nbytes = len(self.events), st.nbytes()
        self.current += nbytes
        self.events.append((token, nbytes))
        # id() of a dead object can be reused, so the entry leaves the table when the storage dies.
        self._live[key] = (token, weakref.ref(st, lambda _r, k=key, tk=token, n=nbytes: self._freed(k, tk, n)))

    def _freed(self, key: int, token: int, nbytes: int) -> None:
        self._live.pop(key, None)
        self.current -= nbytes
        self.events.append((token, -nbytes))

    def peak_without(self, tokens: set[int]) -> int:
        """The peak recomputed from the log as if the storages with these tokens did not exist."""
        cur = peak = 0
        for token, delta in self.events:
            if token not in tokens:
                cur += delta
                peak = max(peak, cur)
        return peak

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self._add(leaf)
        self.peak = max(self.peak, self.current)
        return out


@dataclass(frozen=True)
class StepMemory:
    peak: int  # every tracked byte: parameters, gradients, optimizer state, batch, activations, temporaries
    activations: int  # the same peak without parameters, buffers, gradients and optimizer state


def tracked_step_memory(step_fn: Callable[[], Any], resident: Iterable[Any] = ()) -> StepMemory:
    """Peak live tensor bytes during ``step_fn()`` counted by LiveTensorBytes (any device).

    ``resident``: modules, optimizers or tensors alive before the step, counted from the start. Storages that
    are model/optimizer state before or after the step (gradients appear during it) are what the activation
    peak leaves out; plain tensors in ``resident`` (the batch) stay in both numbers.
    """
    resident = list(resident)
    stateful = [r for r in resident if not isinstance(r, torch.Tensor)]
    tracker = LiveTensorBytes(resident_tensors(resident))
    state_tokens = {tracker.token(t) for t in resident_tensors(stateful)}
    with tracker:
        step_fn()
    state_tokens |= {tracker.token(t) for t in resident_tensors(stateful)}
    state_tokens.discard(None)
    return StepMemory(peak=tracker.peak, activations=tracker.peak_without(state_tokens))


def peak_step_memory(step_fn: Callable[[], Any], device: torch.device | str, resident: Iterable[Any] = ()) -> int:
    """Peak memory in bytes that one call of ``step_fn`` (forward + backward [+ optimizer step]) needs.

    ``resident``: modules, optimizers or tensors that exist before the step; on CPU they are the baseline of
    the count (on CUDA the allocator already sees them). Call ``step_fn`` once beforehand if the first step
    allocates lazily (optimizer state), so the measured step is a steady-state one.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step_fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    return tracked_step_memory(step_fn, resident).peak


def saved_tensor_bytes(fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages that autograd saves for backward while ``fn()`` runs (the activation
    memory the graph holds at the end of the forward pass), leaving out the storages of ``exclude``
    (typically the parameters, which are counted as state, not activations)."""
    skip = {(str(t.device), t.untyped_storage().data_ptr()) for t in exclude}
    saved: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        key = (str(t.device), st.data_ptr())
        if key not in skip:
            saved[key] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(saved.values())


def activation_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Saved-for-backward bytes of one forward pass plus cross-entropy loss of ``model`` on (x, y)."""
    return saved_tensor_bytes(lambda: nn.functional.cross_entropy(model(x), y), exclude=[p for p in model.parameters()])
