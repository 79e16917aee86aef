"""Restart procedures: train several solutions and keep one ("Random Restarts", "Perturbation Methods",
"Cyclical Learning Rates", "Restart Strategies").

An entry is a procedure ``fn(ctx, **hp) -> RestartOutcome`` over a RestartContext (training/restart_run.py):
it draws fresh models (ctx.new_model), trains them with the run's Lightning fit (ctx.fit / ctx.fit_fresh, which
count the compute spent), scores them (ctx.score) and returns the solution it keeps plus one record per trained
solution, in training order. The kept solution is always chosen by validation loss, never by test numbers.

Families of procedures:
- independent restarts (random_restarts, init_*): N initializations trained to the budget, best by val loss, with
  the expected test accuracy of best-of-n selection and of n-member ensembles for n = 1..N;
- perturbation search (iterated_local_search, basin_hopping, selective_perturbation, partial_reinit): perturb a
  trained solution, retrain briefly, accept by a rule (improvement, or Metropolis);
- one run with a changed trajectory (graduated_optimization: gradients of the Gaussian-smoothed loss; sgdr and
  snapshot_ensemble: cosine warm restarts with a snapshot at the end of each cycle);
- restarts within a fixed budget (fixed_interval, on_plateau, early_abandon).
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import nn

from techbench.checks import require
from techbench.registry import Registry

if TYPE_CHECKING:  # restart_run imports this package's siblings: import it lazily at run time
    from techbench.training.restart_run import RestartContext, RestartOutcome

RESTARTS = Registry("restarts")

RESTARTS_SPACE = {"restarts": {"low": 2, "high": 16}}
EPOCHS_PER_RESTART_SPACE = {"epochs_per_restart": {"low": 1, "high": 10}}
CYCLES_SPACE = {"cycles": {"low": 2, "high": 8}, "t_mult": {"choices": [1, 2]}}
INIT_SCHEMES = ("xavier", "he", "orthogonal")


def run_procedure(ctx: RestartContext, spec: dict[str, Any]) -> RestartOutcome:
    """Run the procedure ``{name: key, **hp}`` (missing hyperparameters take the entry's defaults)."""
    entry = RESTARTS.get(spec["name"])
    hp = {**entry.defaults, **{k: v for k, v in spec.items() if k != "name"}}
    return entry.factory(ctx, **hp)


RESTARTS_CHECK = ("restarts >= 1", lambda hp: hp["restarts"] >= 1)
EPOCHS_PER_RESTART_CHECK = ("epochs_per_restart >= 0", lambda hp: hp["epochs_per_restart"] >= 0)
CYCLES_CHECKS = (("cycles >= 1", lambda hp: hp["cycles"] >= 1), ("t_mult >= 1", lambda hp: hp["t_mult"] >= 1))


# --- shared pieces ---------------------------------------------------------------------------------------------


def _outcome(final: nn.Module, members: list[dict], metrics=None, curves=None) -> RestartOutcome:
    from techbench.training.restart_run import RestartOutcome

    return RestartOutcome(final, members, dict(metrics or {}), dict(curves or {}))


def _member(ctx: RestartContext, model: nn.Module, epochs: float, **extra: float) -> dict[str, float]:
    """One solution's record: its val/test scores, the epochs trained for it and the procedure's flags."""
    return {**ctx.score(model), "epochs": float(epochs), **{k: float(v) for k, v in extra.items()}}


def _loss_key(v: float) -> float:
    return v if math.isfinite(v) else math.inf  # a diverged solution (NaN loss) ranks last


def _best(members: Sequence[dict[str, float]]) -> int:
    """Index of the member with the lowest validation loss (the first one on ties)."""
    return min(range(len(members)), key=lambda i: (_loss_key(members[i]["val_loss"]), i))


def _acc_nll(probs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Accuracy and mean negative log-likelihood of predicted probabilities."""
    acc = float((probs.argmax(1) == y).float().mean())
    nll = float(-probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean())
    return acc, nll


def _ensemble_scores(ctx: RestartContext, models: Sequence[nn.Module]) -> tuple[list[float], list[float]]:
    """Test accuracy and NLL of the averaged softmax of the first n models, n = 1..len(models)."""
    y = ctx.data.y_test
    accs, nlls, total = [], [], None
    for n, model in enumerate(models, 1):
        probs = ctx.probs(model)
        total = probs if total is None else total + probs
        acc, nll = _acc_nll(total / n, y)
        accs.append(acc)
        nlls.append(nll)
    return accs, nlls


def _fit_epochs(module) -> int:
    return len(module.epoch_times)


def expected_best_of_n(val_losses: Sequence[float], scores: Sequence[float]) -> list[float]:
    """E[score of the member with the lowest val loss among n drawn without replacement from the N], n = 1..N.

    With members ranked by val loss (j = 1 the best), the j-th is the best of a random n-subset iff it is in the
    subset and the other n − 1 come from the N − j ranked below it: P = C(N − j, n − 1) / C(N, n)."""
    n_all = len(val_losses)
    order = sorted(range(n_all), key=lambda i: (_loss_key(val_losses[i]), i))
    ranked = [scores[i] for i in order]
    return [
        sum(math.comb(n_all - j, n - 1) * ranked[j - 1] for j in range(1, n_all - n + 2)) / math.comb(n_all, n)
        for n in range(1, n_all + 1)
    ]


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    """Linear and convolution layers, in the order the model registers them."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


@torch.no_grad()
def reinit_(model: nn.Module, scheme: str, seed: int) -> nn.Module:
    """Re-initialize every Linear/Conv weight with ``scheme`` (xavier: xavier_uniform_, he: kaiming_normal_ for
    ReLU, orthogonal: orthogonal_) and zero their biases, reproducibly from ``seed``."""
    init = {
        "xavier": nn.init.xavier_uniform_,
        "he": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "orthogonal": nn.init.orthogonal_,
    }[scheme]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in _weighted_layers(model):
            init(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model


@torch.no_grad()
def perturb_(model: nn.Module, seed: int, scale: float, relative: bool = False) -> nn.Module:
    """θ ← θ + scale·n (or θ + scale·|θ|·n when ``relative``), n standard Gaussian per parameter from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if not p.requires_grad:
            continue
        n = torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)
        p.add_(scale * (p.abs() * n if relative else n))
    return model


@torch.no_grad()
def reinit_last_(model: nn.Module, layers: int, seed: int) -> nn.Module:
    """Reset the last ``layers`` Linear/Conv layers to a fresh PyTorch default initialization from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in _weighted_layers(model)[-layers:]:
            layer.reset_parameters()
    return model


# --- independent restarts --------------------------------------------------------------------------------------


def _independent_restarts(ctx: RestartContext, restarts: int, init: str | None = None) -> RestartOutcome:
    """``restarts`` fresh initializations (re-initialized by ``init`` unless None) trained for the budget; keep
    the best by val loss. Measures the spread, best-of-n selection and n-member ensembles."""
    if init is None:
        models = ctx.fit_fresh(list(range(restarts)))
    else:  # a re-init must precede training, so these cannot take fit_fresh's vectorized path
        models = []
        for i in range(restarts):
            model = reinit_(ctx.new_model(i), init, ctx.member_seed(i))
            ctx.fit(model, index=i)
            models.append(model)
    members = [_member(ctx, m, ctx.epochs) for m in models]
    val = [m["val_loss"] for m in members]
    median = statistics.median(_loss_key(v) for v in val)  # a diverged (NaN) restart counts as the worst
    ens_acc, ens_nll = _ensemble_scores(ctx, models)
    metrics = {
        "best_val_loss": min(val, key=_loss_key),
        "median_val_loss": median,
        "beats_median_frac": sum(v < median for v in val) / len(val),
        "ensemble_test_acc": ens_acc[-1],
        "ensemble_test_nll": ens_nll[-1],
    }
    curves = {
        "expected_best_of_n": expected_best_of_n(val, [m["test_acc"] for m in members]),
        "ensemble_acc": ens_acc,
        "ensemble_nll": ens_nll,
    }
    return _outcome(models[_best(members)], members, metrics, curves)


@RESTARTS.register("single", description="one ordinary training of one initialization (the baseline)")
def single(ctx):
    model = ctx.new_model(0)
    module = ctx.fit(model)
    return _outcome(model, [_member(ctx, model, _fit_epochs(module))])


@RESTARTS.register(
    "random_restarts",
    description="N independent initializations trained to the budget; keep the best by validation loss",
    defaults={"restarts": 8},
    search_space=RESTARTS_SPACE,
    check=require(RESTARTS_CHECK),
)
def random_restarts(ctx, restarts):
    return _independent_restarts(ctx, restarts)


def _register_init(scheme: str | None, text: str) -> None:
    def procedure(ctx, restarts):
        return _independent_restarts(ctx, restarts, scheme)

    RESTARTS.register(
        f"init_{scheme or 'default'}",
        description=f"random restarts with every Linear/Conv weight initialized by {text}",
        defaults={"restarts": 8},
        search_space=RESTARTS_SPACE,
        check=require(RESTARTS_CHECK),
    )(procedure)


_register_init("xavier", "xavier_uniform_ (Glorot; biases zero)")
_register_init("he", "kaiming_normal_ for ReLU (He; biases zero)")
_register_init("orthogonal", "orthogonal_ (Saxe et al.; biases zero)")
_register_init(None, "PyTorch's default (kaiming_uniform_ with a=√5)")


# --- perturbation search ---------------------------------------------------------------------------------------


def _local_search(
    ctx: RestartContext,
    restarts: int,
    epochs_per_restart: int,
    perturb: Callable[[nn.Module, int], Any],
    temperature: float = 0.0,
) -> RestartOutcome:
    """Train one solution for the budget, then ``restarts`` times: perturb the current solution (perturb(model,
    i) under member i's seed), retrain it for epochs_per_restart (0: a quarter of the budget) and accept it by
    the Metropolis rule at ``temperature`` (0: only an improvement). The best solution seen is kept.

    With temperature 0 the current solution is always the best one, so this is iterated local search."""
    epochs = epochs_per_restart or max(1, ctx.epochs // 4)
    current = ctx.new_model(0)
    first = _member(ctx, current, _fit_epochs(ctx.fit(current, index=0)), accepted=1.0)
    members, best, best_loss = [first], current, first["val_loss"]
    current_loss = first["val_loss"]
    rng = random.Random(ctx.member_seed(0))  # the Metropolis draws: apart from every training stream
    for i in range(1, restarts + 1):
        candidate = copy.deepcopy(current)
        perturb(candidate, i)
        record = _member(ctx, candidate, _fit_epochs(ctx.fit(candidate, epochs, index=i)))
        delta = record["val_loss"] - current_loss  # NaN (diverged) compares false: rejected
        accepted = delta < 0 or (temperature > 0 and delta >= 0 and rng.random() < math.exp(-delta / temperature))
        record["accepted"] = float(accepted)
        members.append(record)
        if accepted:
            current, current_loss = candidate, record["val_loss"]
            if _loss_key(current_loss) < _loss_key(best_loss):
                best, best_loss = candidate, current_loss
    trials = [m["accepted"] for m in members[1:]]
    metrics = {
        "accept_rate": sum(trials) / len(trials) if trials else float("nan"),
        "best_val_loss": best_loss,
        "first_val_loss": first["val_loss"],
    }
    running = list(itertools.accumulate((m["val_loss"] for m in members), lambda a, b: min(a, b, key=_loss_key)))
    return _outcome(best, members, metrics, {"best_val_loss": running})


@RESTARTS.register(
    "iterated_local_search",
    description="iterated local search: θ_best + ε·n, retrain briefly, keep if val loss improves; ε ← ε·eps_decay",
    defaults={"restarts": 8, "eps": 0.05, "eps_decay": 0.7, "epochs_per_restart": 0},
    search_space={
        **RESTARTS_SPACE,
        "eps": {"low": 0.005, "high": 0.5, "log": True},
        "eps_decay": {"low": 0.3, "high": 1.0},
        **EPOCHS_PER_RESTART_SPACE,
    },
    check=require(RESTARTS_CHECK, EPOCHS_PER_RESTART_CHECK, ("eps_decay > 0", lambda hp: hp["eps_decay"] > 0)),
)
def iterated_local_search(ctx, restarts, eps, eps_decay, epochs_per_restart):
    return _local_search(
        ctx, restarts, epochs_per_restart, lambda m, i: perturb_(m, ctx.member_seed(i), eps * eps_decay ** (i - 1))
    )


@RESTARTS.register(
    "basin_hopping",
    description="basin hopping: perturb the current solution, retrain, accept by Metropolis at temperature T",
    defaults={"restarts": 8, "eps": 0.05, "temperature": 0.05, "epochs_per_restart": 0},
    search_space={
        **RESTARTS_SPACE,
        "eps": {"low": 0.005, "high": 0.5, "log": True},
        "temperature": {"low": 1e-3, "high": 1.0, "log": True},
        **EPOCHS_PER_RESTART_SPACE,
    },
    check=require(RESTARTS_CHECK, EPOCHS_PER_RESTART_CHECK),
)
def basin_hopping(ctx, restarts, eps, temperature, epochs_per_restart):
    return _local_search(
        ctx, restarts, epochs_per_restart, lambda m, i: perturb_(m, ctx.member_seed(i), eps), temperature
    )


@RESTARTS.register(
    "selective_perturbation",
    description="iterated local search with noise proportional to |w|: θ_best + scale·|θ_best|·n",
    defaults={"restarts": 8, "scale": 0.3, "epochs_per_restart": 0},
    search_space={**RESTARTS_SPACE, "scale": {"low": 0.05, "high": 1.0, "log": True}, **EPOCHS_PER_RESTART_SPACE},
    check=require(RESTARTS_CHECK, EPOCHS_PER_RESTART_CHECK, ("scale >= 0", lambda hp: hp["scale"] >= 0)),
)
def selective_perturbation(ctx, restarts, scale, epochs_per_restart):
    return _local_search(
        ctx, restarts, epochs_per_restart, lambda m, i: perturb_(m, ctx.member_seed(i), scale, relative=True)
    )


@RESTARTS.register(
    "partial_reinit",
    description="re-initialize the last `layers` Linear/Conv layers of the best solution, retrain, keep if better",
    defaults={"restarts": 4, "layers": 1, "epochs_per_restart": 0},
    search_space={**RESTARTS_SPACE, "layers": {"low": 1, "high": 3}, **EPOCHS_PER_RESTART_SPACE},
    check=require(RESTARTS_CHECK, EPOCHS_PER_RESTART_CHECK, ("layers >= 1", lambda hp: hp["layers"] >= 1)),
)
def partial_reinit(ctx, restarts, layers, epochs_per_restart):
    return _local_search(ctx, restarts, epochs_per_restart, lambda m, i: reinit_last_(m, layers, ctx.member_seed(i)))


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
)
def graduated_optimization(ctx, sigma, smooth_fraction):
    smoothing = GaussianSmoothing(sigma, smooth_fraction * ctx.epochs, ctx.member_seed(0))
    model = ctx.new_model(0)
    module = ctx.fit(model, callbacks=[smoothing])
    sigmas = [smoothing.sigma_at(e) for e in range(ctx.epochs)]
    metrics = {"final_sigma": smoothing.sigma_at(ctx.epochs)}
    return _outcome(model, [_member(ctx, model, _fit_epochs(module))], metrics, {"sigma": sigmas})


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
    members = [_member(ctx, m, **r) for m, r in zip(snapshots.models, snapshots.records, strict=True)]
    ens_acc, ens_nll = _ensemble_scores(ctx, snapshots.models)
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
)
def sgdr(ctx, cycles, t_mult):
    models, members, metrics = _snapshot_run(ctx, cycles, t_mult)
    return _outcome(models[-1], members, metrics)


@RESTARTS.register(
    "snapshot_ensemble",
    description="the SGDR run's cycle-end snapshots averaged as one ensemble, against independent short restarts",
    defaults={"cycles": 4, "t_mult": 1},
    search_space=CYCLES_SPACE,
    check=require(*CYCLES_CHECKS),
)
def snapshot_ensemble(ctx, cycles, t_mult):
    models, members, metrics = _snapshot_run(ctx, cycles, t_mult)
    for m in members:
        m["independent"] = 0.0
    # Same total cost as the snapshot run: `cycles` fresh models of a cycle's length each.
    short = max(1, ctx.epochs // cycles)
    independent = ctx.fit_fresh(list(range(1, cycles + 1)), short)
    members += [_member(ctx, m, short, independent=1.0) for m in independent]
    ind_acc, ind_nll = _ensemble_scores(ctx, independent)
    metrics.update(independent_ensemble_test_acc=ind_acc[-1], independent_ensemble_test_nll=ind_nll[-1])
    return _outcome(SnapshotEnsemble(models), members, metrics)


# --- restarts within one budget --------------------------------------------------------------------------------


@RESTARTS.register(
    "fixed_interval",
    description="the epoch budget split into `restarts` equal segments, a fresh init per segment; keep the best",
    defaults={"restarts": 4},
    search_space=RESTARTS_SPACE,
    check=require(RESTARTS_CHECK),
)
def fixed_interval(ctx, restarts):
    n = min(restarts, ctx.epochs)  # a segment is at least one epoch
    sizes = [ctx.epochs // n + (i < ctx.epochs % n) for i in range(n)]  # sum(sizes) == ctx.epochs
    models: dict[int, nn.Module] = {}
    for size in sorted(set(sizes), reverse=True):  # one fit_fresh per segment length
        indices = [i for i in range(n) if sizes[i] == size]
        models.update(zip(indices, ctx.fit_fresh(indices, size), strict=True))
    members = [_member(ctx, models[i], sizes[i]) for i in range(n)]
    best = _best(members)
    metrics = {"best_val_loss": members[best]["val_loss"], "segment_epochs": float(min(sizes))}
    return _outcome(models[best], members, metrics)


class _PlateauStop(EarlyStopping):
    """Lightning's EarlyStopping on val/loss that does not stop before ``min_epochs`` epochs (as the Trainer's
    min_epochs would: the patience count goes on, the stop waits)."""

    def __init__(self, patience: int, min_epochs: int):
        super().__init__(monitor="val/loss", patience=patience, mode="min", strict=True, check_finite=True)
        self.min_epochs = min_epochs
        self.fired = False

    def _run_early_stopping_check(self, trainer) -> None:
        already = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        if trainer.should_stop and not already:
            if trainer.current_epoch + 1 < self.min_epochs:
                trainer.should_stop = False
            else:
                self.fired = True


@RESTARTS.register(
    "on_plateau",
    description="train a fresh init until val loss plateaus (patience), restart with the remaining epochs; keep best",
    defaults={"patience": 3, "min_epochs": 2},
    search_space={"patience": {"low": 1, "high": 10}, "min_epochs": {"low": 1, "high": 10}},
    check=require(("min_epochs >= 1", lambda hp: hp["min_epochs"] >= 1)),
)
def on_plateau(ctx, patience, min_epochs):
    members, models, left = [], [], ctx.epochs
    while left > 0:
        i = len(models)
        model, stop = ctx.new_model(i), _PlateauStop(patience, min_epochs)
        run = max(_fit_epochs(ctx.fit(model, left, index=i, callbacks=[stop])), 1)  # at least 1: always ends
        left -= run
        models.append(model)
        members.append(_member(ctx, model, run, plateaued=stop.fired))
    best = _best(members)
    metrics = {"restarts_made": float(len(models) - 1), "best_val_loss": members[best]["val_loss"]}
    return _outcome(models[best], members, metrics)


@RESTARTS.register(
    "early_abandon",
    description="probe N fresh inits for a few epochs, continue only the top `keep` fraction to the full budget",
    defaults={"restarts": 8, "probe_epochs": 0, "keep": 0.5},
    search_space={**RESTARTS_SPACE, "probe_epochs": {"low": 1, "high": 10}, "keep": {"low": 0.1, "high": 0.9}},
    check=require(
        RESTARTS_CHECK,
        ("probe_epochs >= 0", lambda hp: hp["probe_epochs"] >= 0),
        ("0 < keep <= 1", lambda hp: 0 < hp["keep"] <= 1),
    ),
)
def early_abandon(ctx, restarts, probe_epochs, keep):
    spent_before = ctx.spent_epochs
    probe = min(probe_epochs or max(1, ctx.epochs // 5), ctx.epochs)
    models = ctx.fit_fresh(list(range(restarts)), probe)
    probes = [ctx.score(m)["val_loss"] for m in models]
    ranked = sorted(range(restarts), key=lambda i: (_loss_key(probes[i]), i))
    kept = set(ranked[: max(1, math.ceil(keep * restarts))])
    members = []
    for i, model in enumerate(models):
        epochs = probe
        if i in kept and ctx.epochs > probe:  # continue: a new fit (fresh optimizer state) of the epochs left
            epochs += _fit_epochs(ctx.fit(model, ctx.epochs - probe, index=i))
        members.append(_member(ctx, model, epochs, accepted=i in kept, probe_val_loss=probes[i]))
    best = _best(members)
    abandoned = [probes[i] for i in range(restarts) if i not in kept]
    metrics = {
        "compute_saved_frac": 1.0 - (ctx.spent_epochs - spent_before) / (restarts * ctx.epochs),
        "best_val_loss": members[best]["val_loss"],
        "abandoned_best_probe_val_loss": min(abandoned, key=_loss_key) if abandoned else float("nan"),
        "kept_worst_probe_val_loss": max((probes[i] for i in kept), key=_loss_key),
    }
    return _outcome(models[best], members, metrics)
