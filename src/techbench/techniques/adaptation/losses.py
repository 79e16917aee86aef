"""The adaptation losses of "Domain Adaptation Techniques", as the chapter writes them.

MMD²(S, T) = ‖(1/n_s)Σφ(x_s) − (1/n_t)Σφ(x_t)‖²_H, computed with kernels (the biased V-statistic, so two identical
samples give exactly 0) and a sum of Gaussian kernels whose bandwidths are multiples of the median pairwise
distance (multi-kernel MMD, Long et al. 2015); CORAL = ‖C_s − C_t‖²_F / (4d²) with C the feature covariance;
DANN's gradient reversal is the identity forward and multiplies the gradient by −λ backward, with the usual ramp
λ_p = 2/(1 + exp(−γ·p)) − 1 over training progress p ∈ [0, 1] (Ganin et al. 2016).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)  # × the median squared distance


def _kernel(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    d2 = torch.cdist(a, b).pow(2)
    return sum(torch.exp(-d2 / (scale * m)) for m in BANDWIDTHS)


def mmd2(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared maximum mean discrepancy between two samples of features (rows), multi-kernel Gaussian."""
    both = torch.cat([source, target])
    with torch.no_grad():  # the bandwidth is a constant of the step, not something to move
        scale = torch.cdist(both, both).pow(2).median().clamp_min(1e-8)
    return (
        _kernel(source, source, scale).mean()
        + _kernel(target, target, scale).mean()
        - 2 * _kernel(source, target, scale).mean()
    )


def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖C_s − C_t‖²_F / (4d²), C the unbiased covariance of each sample's features (d = feature width)."""
    d = source.shape[1]
    if min(len(source), len(target)) < 2:  # an epoch's last batch of one example has no covariance
        return source.sum() * 0.0
    return (torch.cov(source.T) - torch.cov(target.T)).pow(2).sum() / (4 * d * d)


class GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lam * grad, None


def reverse_gradient(x: torch.Tensor, lam: float) -> torch.Tensor:
    return GradientReversal.apply(x, lam)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """The reversal strength at training progress p ∈ [0, 1]: 0 at the start, → 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


def pseudo_label_loss(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the target predictions whose confidence is at least τ against their own argmax
    (summed over the confident examples, divided by the batch size), and the confident mask."""
    with torch.no_grad():
        confidence, label = F.softmax(logits, dim=1).max(1)
        mask = confidence >= threshold
    if not mask.any():
        return logits.sum() * 0.0, mask
    return F.cross_entropy(logits[mask], label[mask], reduction="sum") / len(logits), mask


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean prediction entropy (nats): an unsupervised criterion, it needs no label."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1).mean()
