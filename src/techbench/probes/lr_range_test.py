"""Learning-rate range test (the chapter's "learning rate finder"; Smith 2017), run by Lightning's own finder.

Starting from the study's freshly initialised model, ``Tuner.lr_find`` trains ``num_training`` mini-batches with
the study's optimizer while raising its LR from ``min_lr`` to ``max_lr`` (exponentially by default).

Lightning smooths the loss with an exponential moving average (β = 0.98) but debiases update n (0-based) by
1 − β^(n+2) instead of 1 − β^(n+1), so its first points read about half the real loss and its curve first
rises (cf. Lightning-AI/pytorch-lightning#14167). The probe therefore records each batch's loss itself
(``raw_loss``) and re-smooths it with the same β, debiased correctly (``loss``). Readings of the sweep:
  suggested_lr       Lightning's own suggestion: steepest descent of its smoothed loss against LR (skipping the
                     first 10 points and the last)
  steepest_lr        steepest descent of the debiased loss against log LR (fastai's "steep"): a slope against LR
                     itself favours the tiny LRs, where the points of an exponential sweep crowd together
  min_loss_lr        the LR at the lowest (debiased) smoothed loss
  min_loss_lr_div10  the common rule "min-loss LR / 10" (at the minimum the loss is about to blow up)
Lightning stops the sweep once the loss exceeds 4x its best; that is off here by default
(``early_stop_threshold: 0``) so every seed's curve has the same ``num_training`` points; once the loss overflows,
the rest of that curve is NaN.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.tuner import Tuner

from techbench.checks import component
from techbench.probes import PROBES, ProbeContext, ProbeResult
from techbench.techniques.optimizers import OPTIMIZERS, build_optimizer
from techbench.workloads import DATASETS, MODELS, InMemoryLoader, build_model, load_dataset


class _Classifier(L.LightningModule):
    """The smallest module the finder needs: cross-entropy on the model's logits, the study's optimizer."""

    def __init__(self, model, optimizer_spec: dict[str, Any]):
        super().__init__()
        self.model, self.optimizer_spec = model, optimizer_spec
        self.losses: list[float] = []  # one per sweep step; survives the finder's restore of the weights

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        return build_optimizer(self.optimizer_spec, self.model)


def _trainer(hardware: dict[str, Any], root: str) -> L.Trainer:
    # One device: the finder is a short sequential sweep, and each (probe, seed) is its own run.
    return L.Trainer(
        accelerator=hardware.get("accelerator", "cpu"),
        devices=1,
        precision=hardware.get("precision", "32-true"),
        deterministic=hardware.get("deterministic", True),
        max_epochs=-1,  # the finder stops after num_training steps, however many epochs they span
        default_root_dir=root,  # where the finder keeps the initial weights it restores afterwards
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def _smoothed(raw: list[float], beta: float = 0.98) -> list[float]:
    """Exponential moving average of ``raw`` divided by 1 − β^(n+1): the mean of what it has seen so far."""
    avg, out = 0.0, []
    for n, v in enumerate(raw):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (n + 1)))
    return out


def _steepest(lrs: list[float], losses: list[float], skip_begin: int = 10, skip_end: int = 1) -> float:
    """The LR where d loss / d log LR is most negative, skipping the ends as Lightning's suggestion does."""
    kept = range(skip_begin, len(lrs) - skip_end)
    pts = [(math.log(lrs[i]), losses[i]) for i in kept if math.isfinite(losses[i])]
    if len(pts) < 2:
        return math.nan
    log_lr, loss = torch.tensor(pts, dtype=torch.float64).T
    return math.exp(log_lr[int(torch.gradient(loss, spacing=[log_lr])[0].argmin())].item())


@PROBES.register(
    "lr_range_test",
    description="LR range test (Lightning's LR finder): loss while the LR grows from min_lr to max_lr",
    defaults={"min_lr": 1e-6, "max_lr": 10.0, "num_training": 100, "mode": "exponential", "early_stop_threshold": 0.0},
    topic="lr_schedules",
)
def lr_range_test(
    ctx: ProbeContext, min_lr: float, max_lr: float, num_training: int, mode: str, early_stop_threshold: float
) -> ProbeResult:

    if not 0 < min_lr < max_lr or num_training < 2:
        raise ValueError(f"need 0 < min_lr < max_lr and num_training >= 2, got {min_lr}, {max_lr}, {num_training}")
    opt_spec = component("optimizer", OPTIMIZERS, ctx.components.get("optimizer", {"name": "adam"}))
    if OPTIMIZERS.get(opt_spec["name"]).info.closure == "loss_graph":
        raise ValueError(f"{opt_spec['name']} needs manual optimization, which Lightning's LR finder cannot drive")
    L.seed_everything(ctx.seed, workers=True, verbose=False)
    data = load_dataset(component("data", DATASETS, ctx.data))
    model = build_model(component("model", MODELS, ctx.model), data.input_shape, data.num_classes)
    loader = InMemoryLoader(data.x_train, data.y_train, int(ctx.train.get("batch_size", 128)), True, seed=ctx.seed)
    module = _Classifier(model, opt_spec)
    with tempfile.TemporaryDirectory() as root:
        finder = Tuner(_trainer(ctx.hardware, root)).lr_find(
            module,
            train_dataloaders=loader,
            min_lr=min_lr,
            max_lr=max_lr,
            num_training=num_training,
            mode=mode,
            early_stop_threshold=early_stop_threshold or None,
            update_attr=False,
        )
    lrs = [float(v) for v in finder.results["lr"]]
    raw = module.losses[: len(lrs)]
    suggested = finder.suggestion()  # None when fewer than 12 points are finite
    losses = _smoothed(raw)
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    min_loss_lr = lrs[min(finite, key=losses.__getitem__)] if finite else math.nan
    row = {
        "row": "lr_range_test",
        "suggested_lr": math.nan if suggested is None else float(suggested),
        "steepest_lr": _steepest(lrs, losses),
        "min_loss_lr": min_loss_lr,
        "min_loss_lr_div10": min_loss_lr / 10,
        "min_loss": min((losses[i] for i in finite), default=math.nan),
        "configured_lr": float(opt_spec["lr"]) if "lr" in opt_spec else math.nan,
    }
    notes = [
        f"{opt_spec['name']} on {ctx.data['name']}/{ctx.model['name']}: {len(lrs)} steps of batch "
        f"{loader.batch_size}, LR {mode} from {min_lr:g} to {max_lr:g} ({ctx.hardware.get('accelerator', 'cpu')}).",
        "suggested_lr is Lightning's suggestion (steepest descent of its smoothed loss against LR); steepest_lr "
        "is the steepest descent of the correctly debiased loss against log LR; min_loss_lr_div10 is the "
        "'lowest-loss LR / 10' rule.",
    ]
    curves = {"lr_range_test": {"x": lrs, "loss": losses, "raw_loss": raw}}
    return ProbeResult(rows=[row], curves=curves, notes=notes)
