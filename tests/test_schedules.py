"""Each learning-rate schedule: torch's scheduler, stepped as Lightning steps it, follows the entry's lr_at, and
lr_at follows the chapter's formula written out here by hand."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from techbench.checks import component
from techbench.errors import ConfigError
from techbench.techniques.schedules import SCHEDULES, build_schedule
from techbench.workloads import InMemoryLoader

BASE_LR, EPOCHS, SPE = 0.1, 7, 5
T = EPOCHS * SPE
WITH_LR_AT = [e.name for e in SCHEDULES if e.info.lr_at is not None]


def _optimizer(lr: float = BASE_LR) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=lr)


def torch_lrs(name: str, epochs: int = EPOCHS, spe: int = SPE, **hp) -> list[float]:
    """The LR of each update t = 0..T-1, stepping as Lightning's interval="step": after every optimizer.step()."""
    opt = _optimizer()
    cfg = build_schedule({"name": name, **hp}, opt, epochs=epochs, steps_per_epoch=spe)
    lrs = []
    for _ in range(epochs * spe):
        lrs.append(opt.param_groups[0]["lr"])
        opt.param_groups[0]["params"][0].grad = torch.ones(1)
        opt.step()
        if cfg is not None:
            cfg["scheduler"].step()
    return lrs


def lr_at(name: str, t: int, total: int = T, spe: int = SPE, base_lr: float = BASE_LR, **hp) -> float:
    entry = SCHEDULES.get(name)
    return entry.info.lr_at(t, base_lr, total, spe, **{**entry.defaults, **hp})


def assert_close_seq(got, expected):
    assert len(got) == len(expected)
    for t, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert math.isclose(g, e, rel_tol=1e-6, abs_tol=1e-12), f"t={t}: torch {g} != lr_at {e}"


@pytest.mark.parametrize("name", WITH_LR_AT)
def test_torch_scheduler_follows_lr_at(name):
    assert_close_seq(torch_lrs(name), [lr_at(name, t) for t in range(T)])


@pytest.mark.parametrize("name", WITH_LR_AT)
@pytest.mark.parametrize("epochs,spe", [(1, 1), (1, 3), (2, 1), (4, 1), (3, 7)])
def test_any_run_length_is_valid(name, epochs, spe):
    total = epochs * spe
    got = torch_lrs(name, epochs, spe)
    assert all(math.isfinite(v) and v >= 0 for v in got)
    assert_close_seq(got, [lr_at(name, t, total, spe) for t in range(total)])


@pytest.mark.parametrize(
    "name,hp",
    [
        ("warmup_cosine", {"warmup_epochs": 100.0}),  # warmup longer than the run: clipped
        ("warmup_cosine", {"warmup_epochs": 0.0, "min_lr": 0.01}),
        ("one_cycle", {"pct_start": 1 / T}),  # a one-update warm-up: torch's 0/0 case
        ("one_cycle", {"max_lr_mult": 3.0, "pct_start": 0.5}),
        ("cosine_restarts", {"period_epochs": 1, "period_mult": 2, "min_lr": 0.001}),
        ("step", {"step_epochs": 2, "gamma": 0.5}),
    ],
)
def test_non_default_hyperparameters_follow_lr_at(name, hp):
    assert_close_seq(torch_lrs(name, **hp), [lr_at(name, t, **hp) for t in range(T)])


def test_step_decay_is_gamma_to_the_floor_of_t_over_s():
    # α_t = α₀·γ^⌊t/s⌋; default s = ⌈7/3⌉ = 3 epochs = 15 updates
    for t, expected in [(0, 0.1), (14, 0.1), (15, 0.01), (29, 0.01), (30, 0.001), (34, 0.001)]:
        assert math.isclose(lr_at("step", t), expected)
    assert math.isclose(lr_at("step", 7, step_epochs=1, gamma=0.5), 0.1 * 0.5**1)  # ⌊7/5⌋ = 1


def test_exponential_is_alpha0_e_to_the_minus_kt():
    # α_t = α₀·e^{−k t} with t in epochs (t_updates / steps_per_epoch)
    assert math.isclose(lr_at("exponential", 0, k=0.2), 0.1)
    assert math.isclose(lr_at("exponential", 10, k=0.2), 0.1 * math.exp(-0.2 * 2))
    assert math.isclose(lr_at("exponential", 35, k=1.0), 0.1 * math.exp(-7))


def test_inverse_time_is_alpha0_over_one_plus_kt():
    assert math.isclose(lr_at("inverse_time", 0, k=0.5), 0.1)
    assert math.isclose(lr_at("inverse_time", 10, k=0.5), 0.1 / (1 + 0.5 * 2))  # 2 epochs: 0.05
    assert math.isclose(lr_at("inverse_time", 5, k=3.0), 0.1 / 4)


def test_cosine_is_the_chapters_half_cosine():
    # α_t = α_min + ½(α₀ − α_min)(1 + cos(tπ/T)), T = 35
    assert math.isclose(lr_at("cosine", 0, min_lr=0.0), 0.1)
    assert math.isclose(lr_at("cosine", 35, min_lr=0.0), 0.0, abs_tol=1e-15)
    assert math.isclose(lr_at("cosine", 17.5, min_lr=0.02), 0.02 + 0.5 * 0.08)
    assert math.isclose(lr_at("cosine", 7, min_lr=0.0), 0.05 * (1 + math.cos(math.pi / 5)))


def test_warmup_cosine_rises_then_ends_at_min_lr():
    lrs = torch_lrs("warmup_cosine", min_lr=0.001)
    w = round(SCHEDULES.get("warmup_cosine").defaults["warmup_epochs"] * SPE)
    assert all(a < b for a, b in zip(lrs[:w], lrs[1 : w + 1], strict=True))
    assert math.isclose(lrs[w], BASE_LR)
    assert all(a >= b for a, b in zip(lrs[w:], lrs[w + 1 :], strict=False))
    assert math.isclose(lr_at("warmup_cosine", T, min_lr=0.001), 0.001)


def test_one_cycle_peaks_inside_the_run():
    lrs = torch_lrs("one_cycle")
    peak = max(range(T), key=lrs.__getitem__)
    assert 0 < peak < T - 1 and math.isclose(peak / T, 0.3, abs_tol=0.05)
    assert lrs[peak] > 0.99 * BASE_LR  # max_lr_mult = 1: the optimizer's lr is the peak
    assert math.isclose(lrs[0], BASE_LR / 25)
    assert math.isclose(lrs[-1], BASE_LR / 25 / 1e4)


def test_cosine_restarts_return_to_base_lr_at_each_restart():
    lrs = torch_lrs("cosine_restarts", period_epochs=2, period_mult=1)
    assert [t for t in range(1, T) if lrs[t] > lrs[t - 1]] == [10, 20, 30]
    assert all(math.isclose(lrs[t], BASE_LR) for t in (0, 10, 20, 30))
    grown = torch_lrs("cosine_restarts", period_epochs=1, period_mult=2)  # T_i = 5, 10, 20
    assert [t for t in range(1, T) if grown[t] > grown[t - 1]] == [5, 15]


def test_plateau_cuts_the_lr_by_gamma_after_patience_epochs():
    opt = _optimizer()
    cfg = build_schedule({"name": "plateau", "gamma": 0.5, "patience": 2}, opt, epochs=EPOCHS, steps_per_epoch=SPE)
    assert cfg["interval"] == "epoch" and cfg["monitor"] == "val/loss"
    lrs = []
    for val_loss in [1.0, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]:
        cfg["scheduler"].step(val_loss)
        lrs.append(opt.param_groups[0]["lr"])
    # improvement at epoch 1; epochs 2, 3 are within patience; the 3rd bad epoch (4) cuts, and again 3 later
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])


def test_configs_are_lightning_scheduler_configs():
    assert build_schedule({"name": "constant"}, _optimizer(), epochs=3, steps_per_epoch=2) is None
    for name in SCHEDULES.names():
        cfg = build_schedule({"name": name}, _optimizer(), epochs=3, steps_per_epoch=2)
        if cfg is not None:
            assert cfg["interval"] == ("epoch" if name == "plateau" else "step") and cfg["frequency"] == 1


@pytest.mark.parametrize(
    "spec",
    [{"name": "one_cycle", "pct_start": 1.0}, {"name": "plateau", "gamma": 1.0}, {"name": "inverse_time", "k": -1.0}],
)
def test_impossible_hyperparameters_are_config_errors(spec):
    with pytest.raises(ConfigError):
        component("schedule", SCHEDULES, spec)


class _Recorder(L.LightningModule):
    def __init__(self, name: str):
        super().__init__()
        self.layer, self.name, self.lrs = torch.nn.Linear(4, 2), name, []

    def training_step(self, batch, batch_idx):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        x, y = batch
        return F.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.layer.parameters(), lr=BASE_LR)
        cfg = build_schedule({"name": self.name}, opt, epochs=3, steps_per_epoch=4)
        return opt if cfg is None else {"optimizer": opt, "lr_scheduler": cfg}


def test_lightning_steps_every_schedule_as_lr_at_says():
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    for name in WITH_LR_AT:
        module = _Recorder(name)
        trainer = L.Trainer(
            max_epochs=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, train_dataloaders=InMemoryLoader(x, y, 4, shuffle=True, seed=0))
        assert_close_seq(module.lrs, [lr_at(name, t, 12, 4) for t in range(12)])
