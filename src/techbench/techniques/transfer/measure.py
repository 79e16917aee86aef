"""What every transfer run measures after fit: trainable and total parameters (a PEFT method's added ones
included), the drift of each source block from its source weights (L2 distance; LoRA merged into its layers),
and forgetting — the source task's test accuracy of the fine-tuned
backbone under the source's own classifier (read from the weights file), next to the source accuracy the model
card recorded before fine-tuning."""

from __future__ import annotations

import copy

import torch
from torch import nn

from techbench.techniques.transfer.distillation import load_teacher
from techbench.techniques.transfer.peft import merged
from techbench.workloads.datasets import load_dataset
from techbench.workloads.evaluation import evaluate
from techbench.workloads.pretrained import (
    blocks,
    classifier_prefix,
    is_classifier,
    read_card,
    read_weights,
    source_file,
)


def parameter_counts(model: nn.Module) -> dict[str, float]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "transfer/params_total": float(total),
        "transfer/params_trainable": float(trainable),
        "transfer/trainable_frac": trainable / max(total, 1),
    }


@torch.no_grad()
def drift(model: nn.Module, source: dict[str, torch.Tensor]) -> dict[str, float]:
    """‖w − w_source‖₂ per block of the source (classifier excluded: it is new) and over all of them."""
    params = dict(model.named_parameters())
    out, total = {}, 0.0
    for name, names in blocks(model)[:-1]:
        sq = sum(float((params[n].detach().cpu() - source[n]).pow(2).sum()) for n in names if n in source)
        out[f"transfer/drift/{name}"] = sq**0.5
        total += sq
    out["transfer/drift_l2"] = total**0.5
    return out


@torch.no_grad()
def with_source_head(model: nn.Module, source: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of the fine-tuned model with the source's classifier put back (any class count)."""
    prefix = classifier_prefix(model)
    head = {k[len(prefix) + 1 :]: v for k, v in source.items() if is_classifier(k, prefix)}
    out = copy.deepcopy(model)
    old = out.get_submodule(prefix)
    if not isinstance(old, nn.Linear) or "weight" not in head:
        raise ValueError(f"the classifier {prefix!r} is not a linear layer with source weights")
    new = nn.Linear(head["weight"].shape[1], head["weight"].shape[0], bias="bias" in head)
    new.load_state_dict(head)
    out.set_submodule(prefix, new.to(old.weight.device))
    return out


def forgetting(model: nn.Module, source: dict[str, torch.Tensor], card: dict) -> dict[str, float]:
    if not card.get("data"):
        return {}  # a user's own weights without a model card: no source task to score
    data = load_dataset(card["data"])
    acc = evaluate(with_source_head(model, source), data.x_test, data.y_test)["acc"]
    out = {"transfer/source_acc": acc}
    if "test_acc" in card:
        out["transfer/forgetting"] = float(card["test_acc"]) - acc
    return out


def transfer_metrics(model: nn.Module) -> dict[str, float]:
    metrics = parameter_counts(model)
    file = source_file(model)
    if file is None:
        return metrics
    model = merged(model)  # LoRA's updates folded into the source layers they adapt
    source = read_weights(file)
    metrics.update(drift(model, source))
    metrics.update(forgetting(model, source, read_card(file)))
    return metrics


def teacher_metrics(file: str, data) -> dict[str, float]:
    """The teacher's size and its test accuracy on the student's test split: what a student is compared with."""
    teacher = load_teacher(file, tuple(data.x_test.shape[1:]))
    return {
        "transfer/teacher_params": float(sum(p.numel() for p in teacher.parameters())),
        "transfer/teacher_acc": evaluate(teacher, data.x_test, data.y_test)["acc"],
    }
