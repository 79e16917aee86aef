"""Measurements taken on a trained model after fit: calibration, Monte-Carlo dropout predictions, weight norms
and sparsity, learned dropout rates, and the test-set probabilities the capacity study decomposes into bias²
and variance over seeds."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ECE_BINS = 15


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Softmax probabilities in eval mode (dropout off), on CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([F.softmax(model(x[i : i + chunk].to(device)).float(), 1).cpu() for i in range(0, len(x), chunk)])
    model.train(was_training)
    return out


def scores(probs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy, negative log-likelihood and expected calibration error (15 equal-width bins, L1) of
    predicted probabilities."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    nll = F.nll_loss(probs.clamp_min(1e-12).log(), y)
    ece = multiclass_calibration_error(probs, y, num_classes=probs.shape[1], n_bins=ECE_BINS, norm="l1")
    return {"acc": float((probs.argmax(1) == y).float().mean()), "nll": float(nll), "ece": float(ece)}


def post_fit_metrics(model: nn.Module, config: dict[str, Any], data) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics every run records after fit, and the test probabilities they came from."""
    from techbench.techniques.dropout import DROPOUT, learned_rates, mc_predict
    from techbench.techniques.regularization import weight_stats

    probs = predict_probs(model, data.x_test)
    metrics = {f"calibration/{k}": v for k, v in scores(probs, data.y_test).items() if k != "acc"}
    metrics.update(weight_stats(model))
    metrics.update({f"dropout/p_{layer}": p for layer, p in learned_rates(model).items()})
    spec = config.get("dropout") or {"name": "none"}
    if DROPOUT.get(spec["name"]).meta.get("mc"):
        with torch.random.fork_rng(devices=[]):  # the MC masks must not shift the run's random stream
            torch.manual_seed(0)
            mc = mc_predict(model, data.x_test, int(spec["samples"]))
        metrics.update({f"mc/test_{k}": v for k, v in scores(mc, data.y_test).items()})
    return metrics, probs


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> dict[str, float]:
    """Accuracy and mean cross-entropy on a whole split in eval mode (what trainer.test would log)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss, correct = 0.0, 0
    for i in range(0, len(x), chunk):
        logits = model(x[i : i + chunk].to(device)).float().cpu()
        loss += float(F.cross_entropy(logits, y[i : i + chunk], reduction="sum"))
        correct += int((logits.argmax(1) == y[i : i + chunk]).sum())
    model.train(was_training)
    n = max(len(x), 1)
    return {"acc": correct / n, "loss": loss / n}
