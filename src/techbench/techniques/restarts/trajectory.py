"""One run with a changed trajectory: gradients of the Gaussian-smoothed loss (graduated optimization), and
cosine warm restarts with a snapshot at the end of each cycle (SGDR, snapshot ensembles)."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from techbench.checks import require
from techbench.techniques.restarts.common import (
    CYCLES_CHECKS,
    CYCLES_SPACE,
    ensemble_scores,
    fit_epochs,
    member,
    outcome,
)
from techbench.techniques.restarts.contract import RESTARTS, RestartContext

# --- graduated optimization (Gaussian smoothing) ---------------------------------------------------------------


class GaussianSmoothing(Callback):
    """Gradients of the Gaussian-smoothed loss E_n[J(θ + σ_e·n)]: before each batch the weights are moved by
    σ_e·n (n standard Gaussian), and before the optimizer step they are put back, so the gradient taken at the
    perturbed weights is applied to the unperturbed ones. σ_e falls linearly from ``sigma`` at epoch 0 to 0 at
    epoch ``smooth_epochs`` and stays 0 after."""

    def __init__(self, sigma: float, smooth_epochs: float, seed: int):
        self.sigma, self.smooth_epochs = float(sigma), float(smooth_epochs)
        self.generator = torch.Generator().manual_seed(seed)
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def sigma_at(self, epoch: int) -> float:
        if epoch >= self.smooth_epochs:
            return 0.0
        return self.sigma * (1.0 - epoch / self.smooth_epochs)

    @torch.no_grad()
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sigma = self.sigma_at(trainer.current_epoch)
        if sigma <= 0 or self._saved is not None:
            return
        params = [p for p in pl_module.parameters() if p.requires_grad]
        self._saved = [(p, p.detach().clone()) for p in params]
        for p in params:
            p.add_(sigma * torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device))

    @torch.no_grad()
    def restore(self) -> None:
        """Put the unperturbed weights back (an exact copy: no rounding from subtracting the noise)."""
        for p, saved in self._saved or []:
            p.copy_(saved)
        self._saved = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.restore()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.restore()  # a micro-batch of gradient accumulation, or a skipped (diverged) step

    def on_train_end(self, trainer, pl_module):
        self.restore()


@RESTARTS.register(
    "graduated_optimization",
    description="one training on the Gaussian-smoothed loss: gradients at θ + σ_e·n, σ_e linear from sigma to 0",
    defaults={"sigma": 0.05, "smooth_fraction": 0.7},
    search_space={"sigma": {"low": 0.005, "high": 0.3, "log": True}, "smooth_fraction": {"low": 0.2, "high": 1.0}},
    check=require(
        ("sigma >= 0", lambda hp: hp["sigma"] >= 0),
        ("0 <= smooth_fraction <= 1", lambda hp: 0 <= hp["smooth_fraction"] <= 1),
    ),
    kind="trajectory",
)
def graduated_optimization(ctx, sigma, smooth_fraction):
    smoothing = GaussianSmoothing(sigma, smooth_fraction * ctx.epochs, ctx.member_seed(0))
    model = ctx.new_model(0)
    module = ctx.fit(model, callbacks=[smoothing])
    sigmas = [smoothing.sigma_at(e) for e in range(ctx.epochs)]
    metrics = {"final_sigma": smoothing.sigma_at(ctx.epochs)}
    return outcome(model, [member(ctx, model, fit_epochs(module))], metrics, {"sigma": sigmas})


# --- cosine warm restarts and snapshots ------------------------------------------------------------------------


class Snapshots(Callback):
    """Deep copies (on CPU) of the model at the end of the epochs ``ends``, with the learning rate the last
    update before each copy used and the number of updates made."""

    def __init__(self, ends: Sequence[int]):
        self.ends = set(ends)
        self.models: list[nn.Module] = []
        self.records: list[dict[str, float]] = []
        self._lr = float("nan")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._lr = float(optimizer.param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        if epoch in self.ends:
            snapshot = copy.deepcopy(pl_module.model).cpu()
            snapshot.zero_grad(set_to_none=True)
            self.models.append(snapshot)
            self.records.append({"epochs": float(epoch), "lr": self._lr, "step": float(trainer.global_step)})


class SnapshotEnsemble(nn.Module):
    """Averages its members' softmax and returns the log of the average: argmax and cross-entropy of its output
    are the ensemble's prediction and NLL."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


def cycle_ends(epochs: int, cycles: int, t_mult: int) -> tuple[int, list[int]]:
    """(T_0, the epochs at which each cycle ends): T_0 = epochs // Σ t_mult^k (at least 1) so that ``cycles``
    cycles of length T_0·t_mult^k fill the budget; cycles that do not fit in ``epochs`` are dropped."""
    period = max(1, epochs // sum(t_mult**k for k in range(cycles)))
    ends = itertools.accumulate(period * t_mult**k for k in range(cycles))
    return period, [e for e in ends if e <= epochs]


def _snapshot_run(ctx: RestartContext, cycles: int, t_mult: int) -> tuple[list[nn.Module], list[dict], dict]:
    """One run with the study's optimizer under SGDR (cosine_restarts) and a snapshot at each cycle's end."""
    period, ends = cycle_ends(ctx.epochs, cycles, t_mult)
    schedule = {"name": "cosine_restarts", "period_epochs": period, "period_mult": t_mult, "min_lr": 0.0}
    snapshots = Snapshots(ends)
    ctx.fit(ctx.new_model(0), ends[-1], index=0, schedule=schedule, callbacks=[snapshots])
    members = [member(ctx, m, **r) for m, r in zip(snapshots.models, snapshots.records, strict=True)]
    ens_acc, ens_nll = ensemble_scores(ctx, snapshots.models)
    metrics = {
        "snapshot_ensemble_test_acc": ens_acc[-1],
        "snapshot_ensemble_test_nll": ens_nll[-1],
        "last_snapshot_test_acc": members[-1]["test_acc"],
        "last_snapshot_test_nll": members[-1]["test_loss"],
        "cycles": float(len(ends)),
        "period_epochs": float(period),
    }
    return snapshots.models, members, metrics


@RESTARTS.register(
    "sgdr",
    description="SGDR: one run with cosine warm restarts, `cycles` cycles fill the budget; keep the last snapshot",
    defaults={"cycles": 4, "t_mult": 1},
    search_space=CYCLES_SPACE,
    check=require(*CYCLES_CHECKS),
    kind="snapshot",
)
def sgdr(ctx, cycles, t_mult):
    models, members, metrics = _snapshot_run(ctx, cycles, t_mult)
    return outcome(models[-1], members, metrics)


@RESTARTS.register(
    "snapshot_ensemble",
    description="the SGDR run's cycle-end snapshots averaged as one ensemble, against independent short restarts",
    defaults={"cycles": 4, "t_mult": 1},
    search_space=CYCLES_SPACE,
    check=require(*CYCLES_CHECKS),
    kind="snapshot",
)
def snapshot_ensemble(ctx, cycles, t_mult):
    models, members, metrics = _snapshot_run(ctx, cycles, t_mult)
    for m in members:
        m["independent"] = 0.0
    # Same total cost as the snapshot run: `cycles` fresh models of a cycle's length each.
    short = max(1, ctx.epochs // cycles)
    independent = ctx.fit_fresh(list(range(1, cycles + 1)), short)
    members += [member(ctx, m, short, independent=1.0) for m in independent]
    ind_acc, ind_nll = ensemble_scores(ctx, independent)
    metrics.update(independent_ensemble_test_acc=ind_acc[-1], independent_ensemble_test_nll=ind_nll[-1])
    return outcome(SnapshotEnsemble(models), members, metrics)
