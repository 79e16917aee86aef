"""How a workload scores a model on one of its splits: accuracy and mean cross-entropy, predicted
probabilities, and the calibration of those probabilities (NLL, ECE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_calibration_error

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
    nll = F.nll_loss(probs.clamp_min(1e-12).log(), y)
    ece = multiclass_calibration_error(probs, y, num_classes=probs.shape[1], n_bins=ECE_BINS, norm="l1")
    return {"acc": float((probs.argmax(1) == y).float().mean()), "nll": float(nll), "ece": float(ece)}


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
