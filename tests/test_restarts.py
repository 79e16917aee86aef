"""Restart procedures (techniques/restarts.py): their formulas, and real Lightning fits on the debug workload."""

from __future__ import annotations

import copy
import functools
import itertools
import math
import statistics
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from techbench.config import parse_params
from techbench.errors import ConfigError
from techbench.techniques import FAMILIES, RESTARTS, SCHEDULES
from techbench.techniques.restarts import expected_best_of_n, perturb_, reinit_, run_procedure
from techbench.techniques.restarts.trajectory import GaussianSmoothing, SnapshotEnsemble, cycle_ends
from techbench.training.procedure import ProcedureContext as RestartContext
from techbench.workloads import build_model

MEMBER_KEYS = {"val_loss", "val_acc", "test_loss", "test_acc", "epochs"}


def restart_config(name: str, epochs: int = 2, base: dict | None = None, **hp):
    block = {
        "family": "restart",
        "techniques": [name],
        "seeds": 1,
        "data": {"name": "debug"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": epochs, "batch_size": 32},
        "technique_params": {name: hp} if hp else {},
    }
    if base:
        block["base"] = base
    return parse_params({"studies": {"r": block}}).studies["r"].runs[0]


def run(name: str, epochs: int = 2, base: dict | None = None, **hp):
    """(ctx, outcome) of a fresh run of the procedure."""
    cfg = restart_config(name, epochs, base, **hp)
    ctx = RestartContext(cfg, seed=0)
    return ctx, run_procedure(ctx, cfg.components["restart"])


@functools.cache
def cached(name: str, epochs: int = 2, **hp):
    """The same runs shared by several tests (each fit costs a fraction of a second)."""
    return run(name, epochs, **hp)


def smallest(name: str) -> dict:
    defaults = RESTARTS.get(name).defaults
    return {k: 2 for k in ("restarts", "cycles") if k in defaults}


# --- every entry -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RESTARTS.names())
def test_every_procedure_runs_and_returns_scored_members(name):
    ctx, out = cached(name, **smallest(name))
    assert out.members and all(set(m) >= MEMBER_KEYS for m in out.members)
    assert all(isinstance(v, float) for m in out.members for v in m.values())
    assert isinstance(out.final, nn.Module)
    final = ctx.score(out.final)
    assert 0.0 <= final["test_acc"] <= 1.0 and math.isfinite(final["val_loss"])
    assert all(isinstance(v, float) for v in out.metrics.values())
    assert all(len(c) > 0 for c in out.curves.values())
    assert 0 < ctx.spent_epochs <= sum(m["epochs"] for m in out.members)
    assert RESTARTS.get(name).description


def test_family_fills_the_restart_slot_and_defaults_to_single(raw_params):
    assert FAMILIES["restart"].name == "restart" and FAMILIES["restart"].procedure
    other = parse_params(raw_params).studies["optimizers"].runs[0]
    assert other.components["restart"] == {"name": "single", "epochs": 0}  # 0: the run's own budget
    assert restart_config("iterated_local_search").components["restart"] == {
        "name": "iterated_local_search",
        "restarts": 8,
        "eps": 0.05,
        "eps_decay": 0.7,
        "epochs_per_restart": 0,
    }


@pytest.mark.parametrize(
    "name, hp",
    [
        ("random_restarts", {"restarts": 0}),
        ("iterated_local_search", {"eps": 0.0}),
        ("iterated_local_search", {"eps_decay": 0.0}),
        ("basin_hopping", {"temperature": 0.0}),
        ("graduated_optimization", {"smooth_fraction": 1.5}),
        ("sgdr", {"cycles": 0}),
        ("snapshot_ensemble", {"t_mult": 0}),
        ("on_plateau", {"patience": 0}),
        ("early_abandon", {"keep": 0.0}),
        ("partial_reinit", {"layers": 0}),
    ],
)
def test_impossible_values_are_config_errors(name, hp):
    with pytest.raises(ConfigError):
        restart_config(name, **hp)


def test_train_restart_logs_members_procedure_and_curves(workdir):
    from techbench.tracking import Tracker
    from techbench.training.procedure import train_procedure

    tracker = Tracker()
    result = train_procedure(restart_config("random_restarts", restarts=2), 0)
    run_id = tracker.write(result.record())
    assert result.metrics["restarts"] == 2.0 and result.metrics["compute/epochs"] == 4.0
    assert len(tracker.history(run_id, "restart/val_loss")) == 2
    assert len(tracker.history(run_id, "curve/expected_best_of_n")) == 2
    assert "procedure/median_val_loss" in result.metrics


# --- independent restarts --------------------------------------------------------------------------------------


def test_expected_best_of_n_is_the_exact_subset_average():
    g = torch.Generator().manual_seed(0)
    val = torch.rand(6, generator=g).tolist()
    acc = torch.rand(6, generator=g).tolist()
    curve = expected_best_of_n(val, acc)
    for n in range(1, 7):
        picks = [acc[min(s, key=lambda i: val[i])] for s in itertools.combinations(range(6), n)]
        assert curve[n - 1] == pytest.approx(sum(picks) / len(picks), abs=1e-12)
    assert curve[0] == pytest.approx(sum(acc) / 6)
    assert curve[-1] == pytest.approx(acc[min(range(6), key=lambda i: val[i])])


def test_random_restarts_keep_the_lowest_val_loss_and_are_reproducible():
    ctx, out = cached("random_restarts", restarts=3)
    val = [m["val_loss"] for m in out.members]
    assert len(set(val)) == 3 and ctx.spent_epochs == 6
    assert ctx.score(out.final)["val_loss"] == pytest.approx(min(val))
    median = statistics.median(val)
    assert out.metrics["median_val_loss"] == pytest.approx(median)
    best_test = out.members[val.index(min(val))]["test_acc"]
    assert out.curves["expected_best_of_n"][-1] == pytest.approx(best_test)
    assert out.curves["expected_best_of_n"][0] == pytest.approx(statistics.mean(m["test_acc"] for m in out.members))
    assert out.curves["ensemble_acc"][0] == pytest.approx(out.members[0]["test_acc"])
    assert out.curves["ensemble_acc"][-1] == out.metrics["ensemble_test_acc"]
    assert out.curves["ensemble_nll"][0] == pytest.approx(out.members[0]["test_loss"], rel=1e-4)
    _, again = run("random_restarts", restarts=3)  # same seed, a fresh context: the same solutions
    assert again.members == out.members


def test_init_schemes_follow_their_formulas():
    torch.manual_seed(0)
    square = build_model({"name": "mlp", "hidden": [64], "activation": "relu", "dropout": 0.0}, (1, 64), 4)
    reinit_(square, "orthogonal", seed=1)
    w = square[1].weight
    assert torch.allclose(w.T @ w, torch.eye(64), atol=1e-5)
    assert all(torch.all(m.bias == 0) for m in square if isinstance(m, nn.Linear))

    wide = nn.Sequential(nn.Linear(400, 300), nn.Conv1d(16, 32, 5))
    reinit_(wide, "xavier", seed=1)
    assert wide[0].weight.std().item() == pytest.approx(math.sqrt(2 / (400 + 300)), rel=0.03)
    assert wide[1].weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 5 + 32 * 5)), rel=0.05)
    reinit_(wide, "he", seed=1)
    assert wide[0].weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.03)
    assert wide[1].weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 5)), rel=0.05)
    assert torch.all(wide[0].bias == 0) and torch.all(wide[1].bias == 0)
    first = wide[0].weight.clone()
    reinit_(wide, "he", seed=1)
    assert torch.equal(first, wide[0].weight)  # reproducible from the seed


# --- perturbation search ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iterated_local_search", "basin_hopping", "selective_perturbation", "partial_reinit"])
def test_local_search_keeps_its_best_and_reports_the_accept_rate(name):
    ctx, out = cached(name, **smallest(name))
    first, trials = out.members[0], out.members[1:]
    kept = ctx.score(out.final)["val_loss"]
    assert kept <= first["val_loss"] + 1e-9
    assert kept == pytest.approx(min(m["val_loss"] for m in out.members))
    assert out.metrics["best_val_loss"] == pytest.approx(kept)
    assert out.metrics["first_val_loss"] == first["val_loss"]
    assert 0.0 <= out.metrics["accept_rate"] <= 1.0
    assert out.metrics["accept_rate"] == pytest.approx(statistics.mean(m["accepted"] for m in trials))
    if name != "basin_hopping":  # accept only an improvement on the best so far
        best = first["val_loss"]
        for m in trials:
            assert m["accepted"] == float(m["val_loss"] < best)
            best = min(best, m["val_loss"])


def test_iterated_local_search_spends_a_quarter_budget_per_restart():
    ctx, out = cached("iterated_local_search", epochs=4, restarts=2)
    assert [m["epochs"] for m in out.members] == [4.0, 1.0, 1.0] and ctx.spent_epochs == 6


@pytest.mark.parametrize("temperature", [1e-12, 1e3])
def test_basin_hopping_metropolis_rule(temperature):
    _, out = run("basin_hopping", restarts=3, temperature=temperature, eps=0.5)
    current = out.members[0]["val_loss"]
    for m in out.members[1:]:
        if temperature < 1:  # T -> 0: only improvements on the current solution
            assert m["accepted"] == float(m["val_loss"] < current)
        else:  # exp(-Δ/T) ≈ 1: everything is accepted
            assert m["accepted"] == 1.0
        if m["accepted"]:
            current = m["val_loss"]
    if temperature < 1:  # ε = 0.5 knocks some candidates uphill: both outcomes occur
        assert 0.0 < out.metrics["accept_rate"] < 1.0


def test_selective_perturbation_leaves_zero_weights_at_zero():
    model = nn.Linear(8, 8)
    with torch.no_grad():
        model.weight[:, :4] = 0.0
    before = model.weight.clone()
    noise = perturb_(copy.deepcopy(model), seed=3, scale=1.0).weight - before  # the same draw n, absolute
    perturb_(model, seed=3, scale=0.3, relative=True)
    assert torch.all(model.weight[:, :4] == 0)
    assert torch.all(model.weight[:, 4:] != before[:, 4:])
    assert torch.allclose(model.weight - before, 0.3 * before.abs() * noise, atol=1e-6)


def test_perturbation_is_seeded_and_absolute_noise_has_scale_eps():
    a, b = nn.Linear(200, 100), nn.Linear(200, 100)
    b.load_state_dict(a.state_dict())
    before = a.weight.clone()
    perturb_(a, seed=5, scale=0.05)
    perturb_(b, seed=5, scale=0.05)
    assert torch.equal(a.weight, b.weight)
    assert (a.weight - before).std().item() == pytest.approx(0.05, rel=0.03)


# --- graduated optimization ------------------------------------------------------------------------------------


def test_gaussian_smoothing_takes_the_gradient_at_perturbed_weights_and_restores_them():
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hidden": [16], "activation": "relu", "dropout": 0.0}, (1, 16), 4)
    x, y = torch.randn(32, 1, 16), torch.randint(0, 4, (32,))
    F.cross_entropy(model(x), y).backward()
    clean_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    before = [p.detach().clone() for p in model.parameters()]

    smoothing = GaussianSmoothing(sigma=0.1, smooth_epochs=2.0, seed=0)
    trainer = SimpleNamespace(current_epoch=0)
    smoothing.on_train_batch_start(trainer, model, (x, y), 0)
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    F.cross_entropy(model(x), y).backward()
    smoothing.on_before_optimizer_step(trainer, model, None)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert not all(torch.allclose(p.grad, g) for p, g in zip(model.parameters(), clean_grad, strict=True))

    assert [smoothing.sigma_at(e) for e in range(4)] == pytest.approx([0.1, 0.05, 0.0, 0.0])
    trainer.current_epoch = 2  # σ = 0: the weights are left alone
    smoothing.on_train_batch_start(trainer, model, (x, y), 0)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_gaussian_smoothing_in_a_lightning_fit_steps_from_the_unperturbed_weights():
    from lightning.pytorch.callbacks import Callback

    class Before(Callback):  # runs before the smoothing callback: the weights a batch starts from
        weights = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.weights = [p.detach().clone() for p in pl_module.parameters()]

    class After(Callback):  # runs after it: what the forward pass and the optimizer step see
        perturbed = restored = 0

        def _same(self, pl_module):
            return all(torch.equal(p, b) for p, b in zip(pl_module.parameters(), before.weights, strict=True))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.perturbed += not self._same(pl_module)

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.restored += self._same(pl_module)

    ctx = RestartContext(restart_config("graduated_optimization", epochs=2), seed=0)
    before, after = Before(), After()
    smoothing = GaussianSmoothing(sigma=0.1, smooth_epochs=1.0, seed=0)
    module = ctx.fit(ctx.new_model(0), callbacks=[before, smoothing, after])
    steps = module.trainer.global_step
    assert after.restored == steps  # every update is applied to the unperturbed weights
    assert after.perturbed == steps // 2  # σ > 0 in epoch 0 only


def test_graduated_optimization_sigma_falls_linearly_to_zero():
    _, out = cached("graduated_optimization", epochs=4, smooth_fraction=1.0, sigma=0.2)
    assert out.curves["sigma"] == pytest.approx([0.2, 0.15, 0.1, 0.05])
    assert out.metrics["final_sigma"] == 0.0 and len(out.members) == 1


# --- cosine warm restarts and snapshots ------------------------------------------------------------------------


def test_cycle_ends_fill_the_budget():
    assert cycle_ends(8, 4, 1) == (2, [2, 4, 6, 8])
    assert cycle_ends(14, 3, 2) == (2, [2, 6, 14])
    assert cycle_ends(2, 4, 1) == (1, [1, 2])  # cycles that do not fit are dropped


def test_sgdr_snapshots_at_each_cycle_minimum():
    ctx, out = cached("sgdr", epochs=4, cycles=2)
    assert [m["epochs"] for m in out.members] == [2.0, 4.0] and ctx.spent_epochs == 4
    assert ctx.score(out.final) == {k: out.members[-1][k] for k in ("val_loss", "val_acc", "test_loss", "test_acc")}
    lr_at = SCHEDULES.get("cosine_restarts").info.lr_at
    base = ctx.run["optimizer"]["lr"]
    steps = int(out.members[-1]["step"])
    spe = steps // 4
    hp = {"period_epochs": 2, "period_mult": 1, "min_lr": 0.0}
    schedule = [lr_at(t, base, steps, spe, **hp) for t in range(steps + spe)]
    for k, m in enumerate(out.members):
        last = int(m["step"]) - 1  # the update that ended the cycle
        cycle = schedule[k * 2 * spe : last + 1]
        assert m["lr"] == pytest.approx(schedule[last]) and schedule[last] == min(cycle)
        assert schedule[last + 1] == pytest.approx(base) and base > schedule[last]  # the restart jumps back up


def test_snapshot_ensemble_returns_the_average_softmax_of_its_snapshots():
    ctx, out = cached("snapshot_ensemble", epochs=4, cycles=2)
    assert isinstance(out.final, SnapshotEnsemble) and len(out.final.members) == 2
    assert [m["independent"] for m in out.members] == [0.0, 0.0, 1.0, 1.0]
    assert ctx.spent_epochs == 4 + 2 * 2  # the snapshot run and the same budget of independent restarts
    x, y = ctx.data.x_test, ctx.data.y_test
    with torch.no_grad():
        out.final.eval()
        logp = out.final(x)
        by_hand = torch.stack([F.softmax(m(x), 1) for m in out.final.members]).mean(0)
    assert torch.allclose(logp.exp().sum(1), torch.ones(len(x)), atol=1e-5)
    assert torch.allclose(logp.exp(), by_hand, atol=1e-6)
    acc = float((by_hand.argmax(1) == y).float().mean())
    assert ctx.score(out.final)["test_acc"] == pytest.approx(acc) == out.metrics["snapshot_ensemble_test_acc"]
    assert ctx.score(out.final)["test_loss"] == pytest.approx(out.metrics["snapshot_ensemble_test_nll"], rel=1e-5)
    assert out.metrics["last_snapshot_test_acc"] == out.members[1]["test_acc"]
    assert 0.0 <= out.metrics["independent_ensemble_test_acc"] <= 1.0


# --- restarts within one budget --------------------------------------------------------------------------------


def test_fixed_interval_splits_the_budget():
    ctx, out = cached("fixed_interval", epochs=5, restarts=2)
    assert [m["epochs"] for m in out.members] == [3.0, 2.0] and ctx.spent_epochs == 5
    assert out.metrics["best_val_loss"] == min(m["val_loss"] for m in out.members)


def test_early_abandon_continues_only_the_best_probes():
    ctx, out = cached("early_abandon", epochs=5, restarts=4)  # probe = 5 // 5 = 1 epoch, keep half
    assert ctx.spent_epochs == 4 * 1 + 2 * 4
    assert out.metrics["compute_saved_frac"] == pytest.approx(1 - 12 / 20)
    kept = [m for m in out.members if m["accepted"]]
    dropped = [m for m in out.members if not m["accepted"]]
    assert [m["epochs"] for m in kept] == [5.0, 5.0] and [m["epochs"] for m in dropped] == [1.0, 1.0]
    assert max(m["probe_val_loss"] for m in kept) <= min(m["probe_val_loss"] for m in dropped)
    assert out.metrics["abandoned_best_probe_val_loss"] == min(m["probe_val_loss"] for m in dropped)
    assert dropped[0]["val_loss"] == dropped[0]["probe_val_loss"]


@pytest.mark.parametrize("min_epochs", [1, 3])
def test_on_plateau_restarts_when_val_loss_is_flat(min_epochs):
    # An LR of 1e-10 leaves float32 weights unchanged: the val loss is flat from the first epoch.
    flat = {"optimizer": {"name": "sgd", "lr": 1e-10}}
    ctx, out = run("on_plateau", epochs=6, base=flat, patience=1, min_epochs=min_epochs)
    assert out.metrics["restarts_made"] >= 1 and out.metrics["restarts_made"] == len(out.members) - 1
    assert ctx.spent_epochs == 6 == sum(m["epochs"] for m in out.members)
    assert [m["epochs"] for m in out.members] == ([2.0, 2.0, 2.0] if min_epochs == 1 else [3.0, 3.0])
    assert out.members[0]["plateaued"] == 1.0
