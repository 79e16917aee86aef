"""Knowledge distillation ("Knowledge Distillation"): the chapter's combined loss

    L = α·L_task(y, ŷ_student) + (1 − α)·L_distill(ŷ_teacher, ŷ_student),

with L_task the cross-entropy and L_distill = T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) (Hinton et al. 2015: the
T² keeps the soft targets' gradients on the scale of the hard ones as T changes). The teacher is a source
model with its own classifier, rebuilt from its model card (its architecture) and weights, in eval mode and
never trained; it must predict the student's classes.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from techbench.workloads.models import build_model
from techbench.workloads.pretrained import classifier_prefix, read_card, read_weights


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch."""
    t = float(temperature)
    log_p = F.log_softmax(student / t, dim=1)
    log_q = F.log_softmax(teacher / t, dim=1)
    return t * t * F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)


def teacher_card(file: str) -> dict:
    """The teacher's model card; ValueError unless it names the model and its class count."""
    card = read_card(file)
    if not card.get("architecture") or not card.get("num_classes"):
        raise ValueError(f"teacher {file!r} has no model card ({Path(file).with_name('card.json')}) naming its model")
    return card


def load_teacher(file: str, input_shape: tuple[int, ...]) -> nn.Module:
    """The source model of ``file`` with its own classifier, frozen and in eval mode."""
    card = teacher_card(file)
    spec = {**card["architecture"], "pretrained_file": ""}
    teacher = build_model(spec, input_shape, int(card["num_classes"]))
    teacher.load_state_dict(read_weights(file))
    teacher.requires_grad_(False)
    return teacher.eval()


def check_teacher(file: str, student: nn.Module) -> None:
    """ValueError unless the teacher's card names a model predicting as many classes as the student's classifier
    (checked before training: a study's preflight builds every objective)."""
    card = teacher_card(file)
    head = student.get_submodule(classifier_prefix(student))
    classes = getattr(head, "out_features", None)
    if classes is not None and classes != int(card["num_classes"]):
        raise ValueError(f"the teacher {file!r} predicts {card['num_classes']} classes, the student {classes}")


def distillation_term(alpha: float, temperature: float, file: str):
    """batch_terms for the Objective: (α − 1)·CE + (1 − α)·L_distill, so that the cost CE + term is the
    chapter's L. The teacher is built on the first batch (its input shape and device are the batch's)."""
    teacher: list[nn.Module] = []

    def term(x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        first = not teacher
        if first:
            teacher.append(load_teacher(file, tuple(x.shape[1:])).to(x.device))
        with torch.no_grad():
            soft = teacher[0](x)
        if first and soft.shape[1] != logits.shape[1]:  # a classifier check_teacher could not read
            raise ValueError(f"the teacher predicts {soft.shape[1]} classes, the student {logits.shape[1]}")
        return (alpha - 1.0) * loss + (1.0 - alpha) * distillation_loss(logits, soft, temperature)

    return term
