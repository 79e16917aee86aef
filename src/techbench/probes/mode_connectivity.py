"""Linear mode connectivity: is the loss along the straight line between two trained solutions free of a barrier?

Solutions are trained by the restart runs' own path (training/restart_run.RestartContext: a Lightning fit of the
same TechniqueModule every run uses, with the study's optimizer, schedule and batch regime). Two pairs per seed:

  different_init  θ_a = new_model(0) fitted with batch order 0, θ_b = new_model(1) fitted with batch order 1
  same_init       θ_a as above, θ_b = a copy of the same initialization new_model(0) fitted with batch order 1
                  (θ_a is that initialization fitted with batch order 0, so the two pairs share the anchor θ_a
                  and the probe trains three solutions, not four: refitting new_model(0) with order 0 would
                  repeat θ_a's fit number for number)

Along θ(α) = (1 − α)θ_a + αθ_b, at ``points`` evenly spaced α in [0, 1], every floating-point tensor of the
state_dict is interpolated (torch.lerp: exactly θ_a at α = 0 and θ_b at α = 1); integer buffers are taken from
θ_a. The project's models (mlp, cnn1d, gru, logreg) have no buffers; for a model with BatchNorm the interpolated
running statistics are not the statistics of the interpolated network, which the notes flag. At each α the
mean cross-entropy and accuracy on the train and the test split (training.evaluation.evaluate, eval mode).

  barrier_train / barrier_test   max over α of L(θ_α) − [(1 − α)L(θ_a) + αL(θ_b)]: the height of the path above
                                 the straight line between the endpoint losses (≥ 0: the endpoints give 0; for
                                 a convex loss, such as logreg's, it is 0 up to float error)
  rel_barrier_train              barrier_train / mean(L_train(θ_a), L_train(θ_b))
  connected                      1 when barrier_train ≤ tolerance × mean(L_train(θ_a), L_train(θ_b)), else 0:
                                 a barrier is measured relative to the endpoints' own loss, so the rule reads the
                                 same for a workload whose solutions reach loss 2.0 or 0.02
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from techbench.checks import component
from techbench.probes import PROBES, ProbeContext, ProbeResult
from techbench.specs import HARDWARE_DEFAULTS, TRAIN_DEFAULTS, RunConfig
from techbench.techniques import FAMILIES
from techbench.training.procedure import ProcedureContext
from techbench.workloads import DATASETS, MODELS
from techbench.workloads.evaluation import evaluate


def _check(hp: dict[str, Any]) -> None:
    if isinstance(hp["points"], bool) or not isinstance(hp["points"], int) or hp["points"] < 2:
        raise ValueError(f"points must be an integer >= 2 (α = 0 and α = 1 at least), got {hp['points']!r}")
    if isinstance(hp["epochs"], bool) or not isinstance(hp["epochs"], int) or hp["epochs"] < 0:
        raise ValueError(f"epochs must be an integer >= 0 (0 = the study's train.epochs), got {hp['epochs']!r}")
    if not isinstance(hp["tolerance"], (int, float)) or hp["tolerance"] < 0:
        raise ValueError(f"tolerance must be >= 0, got {hp['tolerance']!r}")


def restart_context(ctx: ProbeContext):
    """A procedure context for the probe's workload: a `restart` run config of the procedure `single`, with
    the study's fixed components (slots the study leaves out get their family's default)."""
    components = {
        f.name: component(f.name, f.registry, f.default)
        for f in FAMILIES
        if f.name not in ctx.components and f.name != "restart"
    }
    cfg = RunConfig(
        study="probe",
        family="restart",
        technique="single",
        data=component("data", DATASETS, ctx.data),
        model=component("model", MODELS, ctx.model),
        train={**TRAIN_DEFAULTS, **ctx.train},
        components={**components, **ctx.components, "restart": {"name": "single"}},
        hardware={**HARDWARE_DEFAULTS, **ctx.hardware},
    )
    return ProcedureContext(cfg, ctx.seed)


def train_pairs(rctx, epochs: int = 0) -> dict[str, tuple[nn.Module, nn.Module]]:
    """The two pairs of trained solutions (see the module docstring); 0 epochs = the study's train.epochs."""
    a = rctx.new_model(0)
    rctx.fit(a, epochs or None, index=0)
    b = rctx.new_model(1)
    rctx.fit(b, epochs or None, index=1)
    c = copy.deepcopy(rctx.new_model(0))  # the initialization of a, trained with another batch order
    rctx.fit(c, epochs or None, index=1)
    return {"different_init": (a, b), "same_init": (a, c)}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def interpolate(sa: dict[str, torch.Tensor], sb: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 − α)·sa + α·sb for every floating tensor (exact at α = 0 and 1); other tensors from sa."""
    return {k: torch.lerp(v, sb[k], float(alpha)) if v.is_floating_point() else v.clone() for k, v in sa.items()}


def path_metrics(model_a: nn.Module, model_b: nn.Module, data, alphas: list[float]) -> dict[str, list[float]]:
    """Train/test loss and accuracy of the interpolated model at each α."""
    sa, sb = _state(model_a), _state(model_b)
    probe = copy.deepcopy(model_a).cpu()
    out: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
    for alpha in alphas:
        probe.load_state_dict(interpolate(sa, sb, alpha))
        for split in ("train", "test"):
            m = evaluate(probe, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))
            out[f"{split}_loss"].append(m["loss"])
            out[f"{split}_acc"].append(m["acc"])
    return out


def barrier(alphas: list[float], losses: list[float]) -> float:
    """max over α of L(α) − [(1 − α)L(0) + αL(1)]; ≥ 0 since the endpoints contribute 0."""
    lo, hi = losses[0], losses[-1]
    return float(max(v - ((1 - a) * lo + a * hi) for a, v in zip(alphas, losses, strict=True)))


def _distance(model_a: nn.Module, model_b: nn.Module) -> float:
    sa, sb = _state(model_a), _state(model_b)
    return float(math.sqrt(sum(float(((sa[k] - sb[k]) ** 2).sum()) for k in sa if sa[k].is_floating_point())))


@PROBES.register(
    "mode_connectivity",
    description="loss along the straight line between two trained solutions: different vs same initialization",
    defaults={"points": 11, "epochs": 0, "tolerance": 0.05},
    check=_check,
    topic="restarts",
)
def mode_connectivity(ctx: ProbeContext, *, points, epochs, tolerance):
    _check({"points": points, "epochs": epochs, "tolerance": tolerance})
    start = time.perf_counter()
    rctx = restart_context(ctx)
    pairs = train_pairs(rctx, int(epochs))
    alphas = [float(a) for a in np.linspace(0.0, 1.0, int(points))]
    mid = int(np.argmin([abs(a - 0.5) for a in alphas]))
    rows, curves = [], {}
    for pair, (model_a, model_b) in pairs.items():
        path = path_metrics(model_a, model_b, rctx.data, alphas)
        b_train, b_test = barrier(alphas, path["train_loss"]), barrier(alphas, path["test_loss"])
        scale = (path["train_loss"][0] + path["train_loss"][-1]) / 2
        rows.append(
            {
                "row": pair,
                "barrier_train": b_train,
                "barrier_test": b_test,
                "rel_barrier_train": b_train / scale if scale > 0 else float("nan"),
                "connected": int(b_train <= tolerance * scale),
                "tolerance": float(tolerance),
                "train_loss_a": path["train_loss"][0],
                "train_loss_b": path["train_loss"][-1],
                "test_loss_a": path["test_loss"][0],
                "test_loss_b": path["test_loss"][-1],
                "test_acc_a": path["test_acc"][0],
                "test_acc_b": path["test_acc"][-1],
                "test_acc_mid": path["test_acc"][mid],
                "max_train_loss_alpha": alphas[int(np.argmax(path["train_loss"]))],
                "distance": _distance(model_a, model_b),
            }
        )
        curves[pair] = {"x": alphas, **{k: path[k] for k in ("train_loss", "test_loss", "test_acc", "train_acc")}}
    secs = time.perf_counter() - start
    buffers = [n for n, _ in next(iter(pairs.values()))[0].named_buffers()]
    notes = [
        f"Three solutions per seed trained by Lightning fits of the run path ({epochs or rctx.epochs} "
        f"epochs each, model `{rctx.cfg.model['name']}`, optimizer `{rctx.run['optimizer']['name']}`); the loss "
        f"evaluated at {points} evenly spaced α on the straight line between two of them ({secs:.1f} s per seed).",
        "different_init: initializations 0 and 1, batch orders 0 and 1; same_init: initialization 0 with batch "
        f"orders 0 and 1 (θ_a is shared). Barrier: max over α of the loss above the chord between the endpoint "
        f"losses; connected: train barrier at most {tolerance:g} × the endpoints' mean train loss.",
    ]
    if buffers:
        notes.append(
            f"The model has buffers ({', '.join(buffers[:4])}): they were interpolated like parameters, which for "
            "normalization statistics is not the interpolated network's own statistics."
        )
    return ProbeResult(rows=rows, curves=curves, notes=notes)
