"""Domain adaptation methods ("Domain Adaptation Techniques"): one registered entry each. A factory takes the
entry's hyperparameters and returns a ``Method``: the term it adds to the source cross-entropy each step, from
the step's source and target features (the classifier's input), the target logits, the target labels (only
the labelled reference reads them) and the training progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from techbench.registry import Info, Registry
from techbench.techniques.adaptation.losses import coral, dann_lambda, mmd2, pseudo_label_loss, reverse_gradient

NON_NEGATIVE = (0.0, None, True, True)
PROBABILITY = (0.0, 1.0, True, True)


@dataclass(frozen=True)
class AdaptationInfo(Info):
    target: bool = True  # draws a target batch every step (source_only does not)
    target_labels: bool = False  # trains on target labels: the upper reference, not an adaptation method
    stackable: bool = False  # a term computed from one model's features: no stacked form


ADAPTATION = Registry("adaptation", AdaptationInfo)


@dataclass
class Step:
    """What one training step hands a method."""

    loss: torch.Tensor  # the source cross-entropy
    source: torch.Tensor  # source features (the classifier's input)
    target: torch.Tensor  # target features
    target_logits: torch.Tensor
    target_y: torch.Tensor  # read only by methods flagged target_labels
    progress: float  # fraction of the run's updates done, in [0, 1]
    head: Callable[[int], nn.Module]  # head(width): the method's own domain classifier, made once


@dataclass(frozen=True)
class Method:
    term: Callable[[Step], torch.Tensor] | None  # added to the source cross-entropy; None: nothing
    head_hidden: int = 0  # width of the hidden layer of the method's domain classifier (0: it has none)


@ADAPTATION.register(
    "source_only", description="the source model, no adaptation (the baseline)", target=False, stackable=True
)
def source_only() -> Method:
    return Method(None)


@ADAPTATION.register(
    "target_supervised",
    description="trained on labelled target data instead (the upper reference: it uses what adaptation lacks)",
    target_labels=True,
)
def target_supervised() -> Method:
    return Method(lambda s: F.cross_entropy(s.target_logits, s.target_y) - s.loss)


@ADAPTATION.register(
    "mmd",
    description="+ λ·MMD²(source, target features), multi-kernel Gaussian",
    defaults={"lam": 1.0},
    search_space={"lam": {"low": 0.01, "high": 10.0, "log": True}},
    bounds={"lam": NON_NEGATIVE},
)
def mmd(lam: float) -> Method:
    return Method(lambda s: lam * mmd2(s.source, s.target))


@ADAPTATION.register(
    "coral",
    description="+ λ·‖C_s − C_t‖²_F/4d² (deep CORAL: match feature covariances)",
    defaults={"lam": 1.0},
    search_space={"lam": {"low": 0.1, "high": 100.0, "log": True}},
    bounds={"lam": NON_NEGATIVE},
)
def coral_method(lam: float) -> Method:
    return Method(lambda s: lam * coral(s.source, s.target))


@ADAPTATION.register(
    "dann",
    description="+ λ·domain-classifier loss through gradient reversal (features that hide the domain)",
    defaults={"lam": 1.0, "gamma": 10.0, "hidden": 64},
    search_space={"lam": {"low": 0.01, "high": 3.0, "log": True}},
    bounds={"lam": NON_NEGATIVE, "gamma": NON_NEGATIVE, "hidden": (1, None, True, True)},
)
def dann(lam: float, gamma: float, hidden: int) -> Method:
    def term(s: Step) -> torch.Tensor:
        feats = torch.cat([s.source, s.target])
        head = s.head(feats.shape[1])
        reversal = lam * dann_lambda(s.progress, gamma)
        logit = head(reverse_gradient(feats, reversal)).squeeze(1)
        domain = torch.cat([torch.zeros(len(s.source)), torch.ones(len(s.target))]).to(logit)
        # the domain head learns at full strength; the features receive −λ_p times its gradient
        return F.binary_cross_entropy_with_logits(logit, domain)

    return Method(term, head_hidden=int(hidden))


@ADAPTATION.register(
    "pseudo_label",
    description="+ λ·cross-entropy of confident target predictions (≥ τ) against their own argmax (self-training)",
    defaults={"lam": 1.0, "threshold": 0.9},
    search_space={"threshold": {"low": 0.5, "high": 0.99}},
    bounds={"lam": NON_NEGATIVE, "threshold": PROBABILITY},
)
def pseudo_label(lam: float, threshold: float) -> Method:
    return Method(lambda s: lam * pseudo_label_loss(s.target_logits, threshold)[0])
