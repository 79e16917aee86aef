"""Early-stopping criteria driven by a real Lightning Trainer: a tiny module logs a predefined val/loss sequence
(one value per epoch) and each criterion must stop at the epoch computed by hand / independently with numpy."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from torch.utils.data import DataLoader, TensorDataset

from techbench.checks import bound_of
from techbench.techniques.early_stopping import MONITOR, STOPPING, SmoothedStopping, build_stopping

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers.*")

# Decreases to its minimum at epoch 5 (1-based), then rises.
V_SHAPE = [1.0, 0.8, 0.6, 0.5, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]
# Strictly decreasing by ever smaller steps: plain patience never fires.
PLATEAU = [1.0, 0.8, 0.65, 0.55, 0.48, 0.44, 0.42, 0.41, 0.405, 0.40, 0.398, 0.397, 0.396, 0.395]
# Noisy: two bad epochs right after epoch 2 (raw patience 2 stops at 4), a real minimum of the trend later.
NOISY = [1.0, 0.80, 0.85, 0.83, 0.62, 0.60, 0.63, 0.52, 0.55, 0.53, 0.50, 0.56, 0.58, 0.57, 0.60, 0.62, 0.64, 0.66]


class SequenceModule(L.LightningModule):
    """One parameter, one training batch; logs values[epoch] as val/loss at the end of each validation epoch."""

    def __init__(self, values):
        super().__init__()
        self.values = [float(v) for v in values]
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return ((self.w * x - 1.0) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log(MONITOR, self.values[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def _loader(self):
        return DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()


def fit(values, spec):
    """Train len(values) epochs at most under the criterion ``spec``; (epochs trained, the criterion callback)."""
    callbacks = build_stopping(spec)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=len(values),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(SequenceModule(values))
    return trainer.current_epoch, (callbacks[0] if callbacks else None)


def as_logged(values) -> np.ndarray:
    """The values the callback sees: self.log stores a float32 tensor."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def patience_stop(values, patience, improves=lambda x, best: x < best):
    """1-based epoch at which `patience` checks without an improvement have passed; None if never.
    The first value is always the first best."""
    best, wait = None, 0
    for epoch, x in enumerate(values, start=1):
        if best is None or improves(x, best):
            best, wait = x, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


def ema(values, beta) -> np.ndarray:
    s = np.empty(len(values))
    s[0] = values[0]
    for t in range(1, len(values)):
        s[t] = beta * s[t - 1] + (1 - beta) * values[t]
    return s


def slope_stop(values, window, min_slope):
    for epoch in range(window, len(values) + 1):
        slope = np.polyfit(np.arange(window), values[epoch - window : epoch], 1)[0]
        if slope >= -min_slope:
            return epoch
    return None


def check_stopped(epochs, cb, expected, n):
    assert cb.stopped_epoch_run == expected
    assert epochs == (expected if expected is not None else n)
    assert isinstance(cb.reason, str) and cb.reason
    if expected is None:
        assert "did not fire" in cb.reason
    else:
        assert f"epoch {expected}" in cb.reason


@pytest.mark.parametrize("p", [1, 3, 6])
def test_patience_stops_patience_epochs_after_the_best(p):
    epochs, cb = fit(V_SHAPE, {"name": "patience", "patience": p})
    assert patience_stop(as_logged(V_SHAPE), p) == 5 + p  # best at epoch 5
    check_stopped(epochs, cb, 5 + p, len(V_SHAPE))
    assert cb.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED


def test_patience_never_fires_on_a_decreasing_loss():
    epochs, cb = fit(PLATEAU, {"name": "patience", "patience": 2})
    check_stopped(epochs, cb, None, len(PLATEAU))


def test_min_delta_ignores_improvements_smaller_than_min_delta():
    # The improvement must beat the best (not the previous value) by 0.05: 0.88 and 0.86 do not beat 0.9 by it,
    # 0.84 does (epoch 5); 0.82, 0.80 do not beat 0.84, 0.78 does (epoch 8); then 0.775, 0.77, 0.765 stop at 11.
    seq = [1.0, 0.9, 0.88, 0.86, 0.84, 0.82, 0.80, 0.78, 0.775, 0.77, 0.765, 0.76, 0.755, 0.75]
    expected = patience_stop(as_logged(seq), 3, lambda x, best: x < best - 0.05)
    assert expected == 11
    epochs, cb = fit(seq, {"name": "min_delta", "min_delta": 0.05, "patience": 3})
    check_stopped(epochs, cb, 11, len(seq))
    # Without min_delta every one of these values is an improvement.
    epochs, cb = fit(seq, {"name": "patience", "patience": 3})
    check_stopped(epochs, cb, None, len(seq))


def test_relative_threshold_needs_a_drop_of_rel_delta_times_best():
    # best 1.0 → needs < 0.99: 0.995, 0.992 miss (wait 2), 0.985 hits; best 0.985 → needs < 0.97515: 0.97 hits;
    # best 0.97 → needs < 0.9603: 0.968, 0.966, 0.964 miss → stop at epoch 8 (plain patience would never stop).
    seq = [1.0, 0.995, 0.992, 0.985, 0.97, 0.968, 0.966, 0.964, 0.962, 0.96, 0.958]
    rel = 0.01
    expected = patience_stop(as_logged(seq), 3, lambda x, best: x < best - rel * abs(best))
    assert expected == 8
    epochs, cb = fit(seq, {"name": "relative_threshold", "rel_delta": rel, "patience": 3})
    check_stopped(epochs, cb, 8, len(seq))
    assert float(cb.best_score) == pytest.approx(0.97)


def test_relative_threshold_with_a_negative_best_uses_its_magnitude():
    # best −1 → needs < −1.01: −1.005 misses, −1.02 hits; best −1.02 → needs < −1.0302: −1.025, −1.028, −1.03 miss.
    # (best·(1 − rel) would be −0.99 here, counting −1.005 as an improvement.)
    seq = [-1.0, -1.005, -1.02, -1.025, -1.028, -1.03, -1.031, -1.032]
    expected = patience_stop(as_logged(seq), 3, lambda x, best: x < best - 0.01 * abs(best))
    assert expected == 6
    epochs, cb = fit(seq, {"name": "relative_threshold", "rel_delta": 0.01, "patience": 3})
    check_stopped(epochs, cb, 6, len(seq))


@pytest.mark.parametrize(("beta", "expected"), [(0.5, 13), (0.7, 14)])
def test_smoothed_applies_patience_to_the_ema(beta, expected):
    x = as_logged(NOISY)
    s = ema(x, beta)
    assert patience_stop(s, 2) == expected
    assert patience_stop(x, 2) == 4  # the raw series would stop on the first noisy pair
    epochs, cb = fit(NOISY, {"name": "smoothed", "beta": beta, "patience": 2})
    check_stopped(epochs, cb, expected, len(NOISY))
    np.testing.assert_allclose(cb.smoothed, s[:expected], rtol=0, atol=1e-12)
    np.testing.assert_allclose(cb.values, x[:expected], rtol=0, atol=0)


def test_smoothed_with_beta_zero_is_plain_patience():
    epochs, cb = fit(NOISY, {"name": "smoothed", "beta": 0.0, "patience": 2})
    check_stopped(epochs, cb, 4, len(NOISY))


@pytest.mark.parametrize(
    ("seq", "window", "min_slope", "expected"),
    [
        (PLATEAU, 4, 0.01, 10),  # slopes ..., −0.0115 (epoch 9), −0.0065 (epoch 10)
        (PLATEAU, 4, 0.0, None),  # strictly decreasing: every slope < 0
        (V_SHAPE, 3, 0.0, 6),  # window (0.5, 0.45, 0.5): slope 0
        (V_SHAPE, 5, 0.0, 8),  # (0.6, 0.5, 0.45, 0.5, 0.55): −0.01 at 7; (0.5, 0.45, 0.5, 0.55, 0.6): +0.03
    ],
)
def test_slope_stops_at_the_first_flat_window(seq, window, min_slope, expected):
    x = as_logged(seq)
    assert slope_stop(x, window, min_slope) == expected
    epochs, cb = fit(seq, {"name": "slope", "window": window, "min_slope": min_slope})
    check_stopped(epochs, cb, expected, len(seq))
    assert cb.slopes[: window - 1] == [None] * (window - 1)
    for epoch in range(window, len(cb.values) + 1):
        ref = np.polyfit(np.arange(window), x[epoch - window : epoch], 1)[0]
        assert cb.slopes[epoch - 1] == pytest.approx(ref, abs=1e-12)


def test_fixed_budget_trains_every_epoch():
    assert build_stopping({"name": "fixed_budget", "restore_best": False}) == []
    epochs, cb = fit(V_SHAPE, {"name": "fixed_budget"})
    assert cb is None and epochs == len(V_SHAPE)


@pytest.mark.parametrize("name", [n for n in STOPPING.names() if n != "fixed_budget"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_immediately(name, bad):
    seq = [1.0, 0.9, bad, 0.8, 0.7, 0.6, 0.5]
    epochs, cb = fit(seq, {"name": name, **STOPPING.get(name).defaults})
    check_stopped(epochs, cb, 3, len(seq))
    assert cb.stopping_reason is EarlyStoppingReason.NON_FINITE_METRIC
    assert "not finite" in cb.reason


@pytest.mark.parametrize("name", STOPPING.names())
def test_every_entry_is_well_formed_and_builds_callbacks(name):
    entry = STOPPING.get(name)
    assert isinstance(entry.defaults.get("restore_best"), bool)
    assert entry.defaults["restore_best"] is (name != "fixed_budget")
    callbacks = build_stopping({"name": name, **entry.defaults})
    assert isinstance(callbacks, list)
    assert all(isinstance(cb, Callback) for cb in callbacks)
    for cb in callbacks:
        assert cb.stopped_epoch_run is None and isinstance(cb.reason, str)
        assert cb.monitor == MONITOR and cb.mode == "min"
    for hp, dim in entry.search_space.items():
        assert hp in entry.defaults and hp != "restore_best"
        assert dim["low"] < dim["high"]
        assert isinstance(dim["low"], int) == isinstance(entry.defaults[hp], int)  # tuning.suggest: int vs float
        lo, hi, _, _ = bound_of(entry, hp)
        assert (lo is None or dim["low"] >= lo) and (hi is None or dim["high"] < hi)


def test_smoothed_state_round_trips():
    cb = SmoothedStopping(beta=0.5, patience=3)
    for v in (1.0, 0.5, 0.75):
        cb._evaluate_stopping_criteria(torch.tensor(v))
    assert cb.smoothed == [1.0, 0.75, 0.75]
    fresh = SmoothedStopping(beta=0.5, patience=3)
    fresh.load_state_dict(cb.state_dict())
    assert fresh.smoothed == cb.smoothed and fresh.wait_count == 1 and float(fresh.best_score) == 0.75
