"""Early stopping ("Early Stopping"): when to stop training because the validation loss has stopped improving.

Every criterion watches ``val/loss`` (``MONITOR``, logged once per epoch, lower is better) and is a Lightning
``EarlyStopping`` subclass, so the rank reduction under DDP, the non-finite check (a NaN/inf loss stops at once),
``state_dict`` and the hook timing are Lightning's; a criterion overrides only ``_evaluate_stopping_criteria``,
the decision made from one new metric value.

After fit each criterion callback tells what happened: ``stopped_epoch_run`` is the number of epochs trained when
it stopped the run (1-based; ``None`` if it never fired) and ``reason`` says why, in words.

Every entry has ``restore_best``: whether the best-validation weights are restored after fit (the factories
ignore it; the family's ``select_weights`` hook does it). ``fixed_budget`` is the baseline that trains the whole
epoch budget. The best weights are kept by Lightning's ModelCheckpoint (``BestWeights``); a run of a study that
varies the stopping rule measures both its last and its best-validation weights, the fixed budget included.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from techbench.registry import Registry, hyperparameters
from techbench.techniques.family import Column, Family, Fit
from techbench.techniques.stopping_criteria import (
    MONITOR,
    RelativeThresholdStopping,
    SlopeStopping,
    SmoothedStopping,
    StoppingCriterion,
)
from techbench.workloads.evaluation import evaluate

STOPPING = Registry("stopping")

PATIENCE_SPACE = {"patience": {"low": 1, "high": 20}}


def build_stopping(spec: dict) -> list[Callback]:
    """The callbacks of the criterion ``{name: key, **hp}`` ([] for fixed_budget); ``restore_best`` is the caller's."""
    entry = STOPPING.get(spec["name"])
    hp = hyperparameters(entry, spec)
    hp.pop("restore_best", None)
    return list(entry.factory(**hp))


class BestWeights(ModelCheckpoint):
    """The best-validation weights of a run: ModelCheckpoint (top 1 by val/loss, weights only) writing into a
    temporary folder that lives as long as the run needs it."""

    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="techbench-best-")
        super().__init__(dirpath=self._tmp.name, monitor=MONITOR, mode="min", save_top_k=1, save_weights_only=True)
        self.best_epoch = 0  # 1-based: the number of epochs trained when the best weights were saved

    def state(self) -> dict[str, torch.Tensor] | None:
        """The best checkpoint's state dict (read once; the folder is removed afterwards); None if none was saved."""
        if not self.best_model_path:
            self._tmp.cleanup()
            return None
        ckpt = torch.load(self.best_model_path, map_location="cpu", weights_only=True)
        self.best_epoch = int(ckpt["epoch"]) + 1
        self._tmp.cleanup()
        return ckpt["state_dict"]


class HeldBestWeights:
    """BestWeights for one member of a stack: ModelCheckpoint's choice (top 1 by val/loss: the first check, then
    only a strictly lower value; NaN counts as +inf), the weights held in memory."""

    def __init__(self):
        self.best_score, self.best_epoch, self._state = float("inf"), 0, None

    def on_member_epoch(self, epoch: int, values: dict[str, float], weights) -> bool:
        current = float("inf") if math.isnan(values[MONITOR]) else values[MONITOR]
        if self._state is None or current < self.best_score:
            self.best_score, self.best_epoch, self._state = current, epoch + 1, weights()
        return False

    def state(self) -> dict[str, torch.Tensor] | None:
        return self._state


class StoppingFamily(Family):
    def callbacks(self, spec: dict[str, Any], config: dict[str, Any]) -> list:
        criteria = build_stopping(spec)
        return [*criteria, BestWeights()] if self._keeps_best(spec, config, criteria) else criteria

    def member_callbacks(self, spec: dict[str, Any], config: dict[str, Any]) -> list:
        # The criteria themselves decide for a stack member (on_member_epoch); its best weights are held in memory.
        criteria = build_stopping(spec)
        return [*criteria, HeldBestWeights()] if self._keeps_best(spec, config, criteria) else criteria

    def _keeps_best(self, spec: dict[str, Any], config: dict[str, Any], criteria: list) -> bool:
        # The stopping study records best-vs-last for every rule, the fixed budget included.
        return bool(criteria or self.hp(spec)["restore_best"] or config.get("family") == self.name)

    def unstackable(self, spec: dict[str, Any], config: dict[str, Any]) -> str | None:
        return None  # every criterion has its stack-member form (member_callbacks)

    def select_weights(self, spec: dict[str, Any], fit: Fit) -> dict[str, float]:
        """Epoch the criterion stopped at, the best-validation epoch, and test accuracy of the last and of the
        best weights; with ``restore_best`` the best weights are loaded so the run's test metrics are theirs."""
        best = next((c for c in fit.callbacks if isinstance(c, (BestWeights, HeldBestWeights))), None)
        if best is None:
            return {}
        data, module = fit.data, fit.module
        last = evaluate(module.model, data.x_test, data.y_test)
        kept = {k: v.clone() for k, v in module.state_dict().items()}
        # No best weights: the run diverged before its first validation; the last weights are all there is.
        module.load_state_dict(best.state() or kept)
        best_eval = evaluate(module.model, data.x_test, data.y_test)
        if not self.hp(spec)["restore_best"]:
            module.load_state_dict(kept)
        fired = next((c.stopped_epoch_run for c in fit.callbacks if getattr(c, "stopped_epoch_run", None)), None)
        return {
            "stop/epoch": float(fired or fit.epochs_run),
            "stop/fired": float(fired is not None),
            "stop/best_epoch": float(best.best_epoch),
            "stop/epochs_saved": float(fit.config["train"]["epochs"] - fit.epochs_run),
            "stop/test_acc_last": last["acc"],
            "stop/test_acc_best": best_eval["acc"],
            "stop/test_loss_last": last["loss"],
            "stop/test_loss_best": best_eval["loss"],
        }


FAMILY = StoppingFamily(
    "stopping",
    STOPPING,
    default={"name": "fixed_budget"},
    description="when to stop training because validation loss stopped improving (Early Stopping)",
    columns=(
        Column("stop/epoch", "stopped at epoch", 1, 1),
        Column("stop/epochs_saved", "epochs saved", 1, 1),
        Column("stop/test_acc_last", "test acc, last weights %", 100, 2),
        Column("stop/test_acc_best", "test acc, best-val weights %", 100, 2),
    ),
    summary=(
        "stop/epoch",
        "stop/fired",
        "stop/best_epoch",
        "stop/epochs_saved",
        "stop/test_acc_last",
        "stop/test_acc_best",
    ),
    findings="techbench.report.families.stopping:findings",
)


@STOPPING.register(
    "fixed_budget",
    description="no early stopping: train the whole epoch budget (the baseline)",
    defaults={"restore_best": False},
)
def fixed_budget():
    return []


@STOPPING.register(
    "patience",
    description="stop after `patience` epochs without a new best val/loss (Lightning's EarlyStopping)",
    defaults={"patience": 10, "restore_best": True},
    search_space={"patience": {"low": 1, "high": 30}},
)
def patience(patience):
    return [StoppingCriterion(MONITOR, patience=patience, min_delta=0.0)]


@STOPPING.register(
    "min_delta",
    description="patience where an improvement must beat the best val/loss by an absolute min_delta",
    defaults={"min_delta": 0.01, "patience": 5, "restore_best": True},
    search_space={"min_delta": {"low": 1e-4, "high": 0.1, "log": True}, **PATIENCE_SPACE},
)
def min_delta(min_delta, patience):
    return [StoppingCriterion(MONITOR, patience=patience, min_delta=min_delta)]


@STOPPING.register(
    "relative_threshold",
    description="patience where an improvement must beat the best val/loss by the fraction rel_delta of it",
    defaults={"rel_delta": 0.01, "patience": 5, "restore_best": True},
    search_space={"rel_delta": {"low": 1e-4, "high": 0.1, "log": True}, **PATIENCE_SPACE},
)
def relative_threshold(rel_delta, patience):
    return [RelativeThresholdStopping(MONITOR, rel_delta=rel_delta, patience=patience)]


@STOPPING.register(
    "smoothed",
    description="patience on an exponential moving average (beta) of val/loss",
    defaults={"beta": 0.7, "patience": 5, "restore_best": True},
    search_space={"beta": {"low": 0.0, "high": 0.95}, **PATIENCE_SPACE},
)
def smoothed(beta, patience):
    return [SmoothedStopping(MONITOR, beta=beta, patience=patience)]


@STOPPING.register(
    "slope",
    description="stop once the least-squares slope of val/loss over the last `window` epochs is >= -min_slope",
    defaults={"window": 5, "min_slope": 0.0, "restore_best": True},
    search_space={"window": {"low": 2, "high": 20}, "min_slope": {"low": 0.0, "high": 0.01}},
)
def slope(window, min_slope):
    return [SlopeStopping(MONITOR, window=window, min_slope=min_slope)]
