"""Independent restarts: N initializations trained to the budget, the best kept by validation loss, with the
expected test accuracy of best-of-n selection and of n-member ensembles for n = 1..N."""

from __future__ import annotations

import statistics

from techbench.checks import require
from techbench.techniques.restarts.common import (
    RESTARTS_CHECK,
    RESTARTS_SPACE,
    best_index,
    ensemble_scores,
    expected_best_of_n,
    fit_epochs,
    loss_key,
    member,
    outcome,
    reinit_,
)
from techbench.techniques.restarts.contract import RESTARTS, RestartContext, RestartOutcome

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
    members = [member(ctx, m, ctx.epochs) for m in models]
    val = [m["val_loss"] for m in members]
    median = statistics.median(loss_key(v) for v in val)  # a diverged (NaN) restart counts as the worst
    ens_acc, ens_nll = ensemble_scores(ctx, models)
    metrics = {
        "best_val_loss": min(val, key=loss_key),
        "median_val_loss": median,
        "ensemble_test_acc": ens_acc[-1],
        "ensemble_test_nll": ens_nll[-1],
    }
    curves = {
        "expected_best_of_n": expected_best_of_n(val, [m["test_acc"] for m in members]),
        "ensemble_acc": ens_acc,
        "ensemble_nll": ens_nll,
    }
    return outcome(models[best_index(members)], members, metrics, curves)


@RESTARTS.register(
    "single",
    description="one ordinary training of one initialization (the baseline); `epochs` > 0 trains it that long "
    "instead of the run's budget: the single run at a procedure's total compute",
    defaults={"epochs": 0},
    bounds={"epochs": (0, None, True, True)},
    kind="baseline",
)
def single(ctx, epochs):
    model = ctx.new_model(0)
    module = ctx.fit(model, epochs=epochs or None)
    return outcome(model, [member(ctx, model, fit_epochs(module))])


@RESTARTS.register(
    "random_restarts",
    description="N independent initializations trained to the budget; keep the best by validation loss",
    defaults={"restarts": 8},
    search_space=RESTARTS_SPACE,
    check=require(RESTARTS_CHECK),
    kind="independent",
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
        kind="independent",
        init=scheme or "default",
    )(procedure)


_register_init("xavier", "xavier_uniform_ (Glorot; biases zero)")
_register_init("he", "kaiming_normal_ for ReLU (He; biases zero)")
_register_init("orthogonal", "orthogonal_ (Saxe et al.; biases zero)")
# PyTorch's own default scheme is `random_restarts` itself: the schemes above are compared with it.
