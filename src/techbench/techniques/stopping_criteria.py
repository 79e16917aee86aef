"""The stopping criteria: Lightning ``EarlyStopping`` subclasses that override only the decision made from one
new value of the monitored metric, plus the run-level bookkeeping ``stopped_epoch_run`` and ``reason``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from torch import Tensor

MONITOR = "val/loss"  # the metric every criterion watches (mode "min")


class StoppingCriterion(EarlyStopping):
    """Lightning's EarlyStopping plus the run-level bookkeeping ``stopped_epoch_run`` and ``reason``.

    On its own this is plain patience (with an absolute ``min_delta``): an improvement is a value below
    best − min_delta, and ``patience`` checks without one stop the run.
    """

    def __init__(self, monitor: str = MONITOR, *, patience: int, min_delta: float = 0.0, mode: str = "min"):
        super().__init__(
            monitor=monitor, min_delta=min_delta, patience=patience, mode=mode, strict=True, check_finite=True
        )
        self.stopped_epoch_run: int | None = None
        self.reason: str = f"{self.describe()}: not run yet"

    def describe(self) -> str:
        text = f"patience {self.patience}"
        return f"{text}, min_delta {abs(self.min_delta):g}" if self.min_delta else text

    def _score_name(self) -> str:
        return self.monitor  # what best_score is the best of

    def _run_early_stopping_check(self, trainer) -> None:
        already_stopping = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        if self.stopped_epoch_run is not None:
            return
        fired_here = self.stopping_reason is not EarlyStoppingReason.NOT_STOPPED
        # Only this callback ran in between: a new should_stop is its decision reduced over the DDP processes.
        fired_elsewhere = trainer.should_stop and not already_stopping
        if fired_here or fired_elsewhere:
            self._fired(trainer.current_epoch, self.stopping_reason_message)

    def on_member_epoch(self, epoch: int, values: dict[str, float], weights=None) -> bool:
        """The check a run's trainer makes after validation, made for one member of a stack (which has no trainer
        of its own): the same decision from the member's value of the monitor, the same bookkeeping."""
        should_stop, reason = self._evaluate_stopping_criteria(torch.tensor(values[self.monitor]))
        if should_stop and self.stopped_epoch_run is None:
            self.stopped_epoch, self.stopping_reason_message = epoch, reason
            self._fired(epoch, reason)
        return should_stop

    def _fired(self, epoch: int, message: str | None) -> None:
        self.stopped_epoch_run = epoch + 1
        detail = (message or "the same criterion fired in another process").replace(" Signaling Trainer to stop.", "")
        self.reason = f"{self.describe()}: stopped after epoch {self.stopped_epoch_run}: {detail}"

    def on_fit_end(self, trainer, pl_module) -> None:
        self.finish(trainer.current_epoch)

    def finish(self, epochs_run: int) -> None:
        """The reason of a criterion that never fired, once training has ended after ``epochs_run`` epochs."""
        if self.stopped_epoch_run is None:
            best = float(self.best_score)
            self.reason = (
                f"{self.describe()}: did not fire; training ended after {epochs_run} epochs"
                f" (best {self._score_name()} {best:.4g})"
            )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stopped_epoch_run": self.stopped_epoch_run, "reason": self.reason}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.stopped_epoch_run = state_dict.get("stopped_epoch_run")
        self.reason = state_dict.get("reason", self.reason)


class RelativeThresholdStopping(StoppingCriterion):
    """Patience where an improvement must beat the best by a fraction of it: x < best − rel_delta·|best|
    (= best·(1 − rel_delta) for a positive best)."""

    def __init__(self, monitor: str = MONITOR, *, rel_delta: float, patience: int, mode: str = "min"):
        self.rel_delta = rel_delta
        super().__init__(monitor, patience=patience, mode=mode)

    def describe(self) -> str:
        return f"relative threshold {self.rel_delta:g}, patience {self.patience}"

    def _evaluate_stopping_criteria(self, current: Tensor) -> tuple[bool, str | None]:
        # Lightning's test is monitor_op(current - min_delta, best) with min_delta stored negated in min mode:
        # setting the margin from the current best turns it into the relative test; the first (infinite) best
        # needs no margin.
        margin = self.rel_delta * float(self.best_score.abs()) if torch.isfinite(self.best_score) else 0.0
        self.min_delta = margin if self.monitor_op == torch.gt else -margin
        return super()._evaluate_stopping_criteria(current)


class SmoothedStopping(StoppingCriterion):
    """Patience on the exponential moving average s_t = β·s_{t−1} + (1−β)·x_t, s_1 = x_1 of the metric."""

    def __init__(self, monitor: str = MONITOR, *, beta: float, patience: int, mode: str = "min"):
        self.beta = beta
        super().__init__(monitor, patience=patience, mode=mode)
        self.values: list[float] = []  # the raw metric, one value per check
        self.smoothed: list[float] = []  # its EMA, aligned with values

    def describe(self) -> str:
        return f"smoothed (EMA beta {self.beta:g}), patience {self.patience}"

    def _score_name(self) -> str:
        return f"EMA of {self.monitor}"

    def _evaluate_stopping_criteria(self, current: Tensor) -> tuple[bool, str | None]:
        if self.check_finite and not torch.isfinite(current):
            return super()._evaluate_stopping_criteria(current)  # Lightning's non-finite stop
        x = float(current)
        s = x if not self.smoothed else self.beta * self.smoothed[-1] + (1.0 - self.beta) * x
        self.values.append(x)
        self.smoothed.append(s)
        return super()._evaluate_stopping_criteria(torch.tensor(s, dtype=torch.float64))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "values": list(self.values), "smoothed": list(self.smoothed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.values = list(state_dict.get("values", []))
        self.smoothed = list(state_dict.get("smoothed", []))


class SlopeStopping(StoppingCriterion):
    """Stop once the least-squares slope of the metric over the last ``window`` checks is ≥ −min_slope, i.e. it
    no longer falls by at least ``min_slope`` per epoch (Lightning's patience is unused)."""

    def __init__(self, monitor: str = MONITOR, *, window: int, min_slope: float, mode: str = "min"):
        self.window = int(window)
        self.min_slope = float(min_slope)
        super().__init__(monitor, patience=1, mode=mode)
        self.values: list[float] = []  # the metric, one value per check
        self.slopes: list[float | None] = []  # aligned with values; None until `window` values exist

    def describe(self) -> str:
        return f"slope over {self.window} epochs, min_slope {self.min_slope:g}"

    def _evaluate_stopping_criteria(self, current: Tensor) -> tuple[bool, str | None]:
        if self.check_finite and not torch.isfinite(current):
            return super()._evaluate_stopping_criteria(current)  # Lightning's non-finite stop
        self.values.append(float(current))
        if self.monitor_op(current, self.best_score.to(current.device)):
            self.best_score = current
        if len(self.values) < self.window:
            self.slopes.append(None)
            return False, None
        recent = np.asarray(self.values[-self.window :], dtype=np.float64)
        slope = float(np.polyfit(np.arange(self.window, dtype=np.float64), recent, 1)[0])
        self.slopes.append(slope)
        improving = -slope if self.monitor_op == torch.lt else slope  # per-epoch improvement rate
        if improving > self.min_slope:
            return False, f"{self.monitor} slope over the last {self.window} records is {slope:.4g}"
        self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
        return True, (
            f"least-squares slope of {self.monitor} over the last {self.window} records is {slope:.4g},"
            f" not an improvement of more than {self.min_slope:g} per record."
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "values": list(self.values), "slopes": list(self.slopes)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.values = list(state_dict.get("values", []))
        self.slopes = list(state_dict.get("slopes", []))
