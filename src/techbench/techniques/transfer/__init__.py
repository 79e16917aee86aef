"""Transfer learning: how a run uses the source model it starts from (the `transfer` slot).

The source is the model's ``pretrained_file`` (a pretrain stage's output, a user's own file or a hub cache):
timm loads it through its pretrained mechanism, the 1-D models through workloads/pretrained.py; the classifier
starts fresh either way. A strategy (transfer/strategies.py) then says which parameters train, at which LR
scale, under which penalty, and when frozen blocks thaw; the default, ``scratch``, drops the file (so every
study that does not vary this family trains from a fresh initialization, as before).

Frozen parameters keep requires_grad False and frozen BatchNorm layers stay in eval mode (their statistics are
source statistics too), so a frozen block is bit-identical after training. Every run with a source measures
(transfer/measure.py) its trainable share, its drift from the source per block, and the source's test accuracy
with the source classifier on the fine-tuned backbone (forgetting).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from techbench.registry import hyperparameters
from techbench.techniques.family import Column, Family, Objective
from techbench.techniques.transfer.distillation import check_teacher, distillation_term
from techbench.techniques.transfer.measure import teacher_metrics, transfer_metrics
from techbench.techniques.transfer.strategies import TRANSFER, Strategy
from techbench.workloads.pretrained import blocks, read_weights, source_file


def strategy(spec: dict[str, Any], model: nn.Module) -> Strategy:
    entry = TRANSFER.get(spec["name"])
    return entry.factory(blocks(model), **hyperparameters(entry, spec))


def uses_source(spec: dict[str, Any]) -> bool:
    return TRANSFER.get(spec["name"]).info.source


def set_trainable(model: nn.Module, names: frozenset[str]) -> None:
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)


def _frozen_norm_stays_eval(module: nn.Module, inputs: Any) -> None:
    # A BatchNorm whose parameters are all frozen normalizes with (and keeps) its source statistics.
    if not any(p.requires_grad for p in module.parameters(recurse=False)):
        module.training = False


class Thaw(Callback):
    """Unfreezes the strategy's blocks at their epochs (gradual unfreezing, LP-FT), from the top block down.
    The plan is read from the model when fit starts (callbacks are made before the model)."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.plan: tuple[tuple[int, frozenset[str]], ...] = ()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.plan = strategy(self.spec, pl_module.model).thaw

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        params = dict(pl_module.model.named_parameters())
        for at, names in self.plan:
            if at == trainer.current_epoch:
                for n in names:
                    params[n].requires_grad_(True)


class TransferFamily(Family):
    def resolve(self, spec: dict[str, Any], config: dict[str, Any], n_train: int) -> dict[str, Any]:
        file = config["model"].get("pretrained_file", "")
        if TRANSFER.get(spec["name"]).info.teacher and not spec.get("teacher_file"):
            raise ValueError(
                f"transfer {spec['name']} learns from a teacher: set its teacher_file (or give the transfer study "
                "a `model:`, the student, and its `source:` is the teacher)"
            )
        if not uses_source(spec):
            return {**config, "model": {**config["model"], "pretrained_file": ""}} if file else config
        if not file:
            raise ValueError(
                f"transfer {spec['name']} starts from source weights: set model.pretrained_file (or the study's "
                "`source:`, a pretrain stage)"
            )
        return config

    def build_model(self, spec: dict[str, Any], model: nn.Module, n_train: int) -> nn.Module:
        if not uses_source(spec):
            return model
        plan = strategy(spec, model)
        set_trainable(model, plan.trainable)
        if plan.insert is not None:  # a PEFT method: what it adds trains, the rest keeps its flags
            before = {id(p): p.requires_grad for p in model.parameters()}
            model = plan.insert(model)
            for p in model.parameters():
                p.requires_grad_(before.get(id(p), True))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(_frozen_norm_stays_eval)
        return model

    def objective(self, spec: dict[str, Any], model: nn.Module, n_train: int) -> Objective | None:
        entry = TRANSFER.get(spec["name"])
        if entry.info.teacher:
            alpha, temperature, file = strategy(spec, model).distill
            check_teacher(file, model)
            return Objective(batch_terms=distillation_term(alpha, temperature, file))
        plan = strategy(spec, model) if uses_source(spec) else None
        if plan is None or plan.l2_sp is None:
            return None
        alpha, beta = plan.l2_sp
        named = dict(model.named_parameters())
        head = set(blocks(model)[-1][1])
        source = {k: v for k, v in read_weights(source_file(model)).items() if k in named and k not in head}

        def l2_sp(m: nn.Module) -> torch.Tensor:
            params = dict(m.named_parameters())
            drift = sum((params[k] - w0.to(params[k].device)).pow(2).sum() for k, w0 in source.items())
            return 0.5 * alpha * drift + 0.5 * beta * sum(params[k].pow(2).sum() for k in head)

        return Objective(terms=l2_sp)

    def callbacks(self, spec: dict[str, Any], config: dict[str, Any]) -> list:
        return [Thaw(spec)] if TRANSFER.get(spec["name"]).info.thaws else []

    def shape_optimizer(self, spec: dict[str, Any], optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Discriminative LRs: one parameter group per block, at the block's share of the optimizer's LR."""
        if not uses_source(spec):
            return
        scale = strategy(spec, model).lr_scale
        if not scale:
            return
        options = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
        params = dict(model.named_parameters())
        optimizer.param_groups.clear()
        for name, names in blocks(model):
            group = {**options, "params": [params[n] for n in names], "lr": options["lr"] * scale[name]}
            optimizer.add_param_group(group)

    def measure(self, spec: dict[str, Any], model: nn.Module, data: Any) -> dict[str, float]:
        metrics = transfer_metrics(model)
        if TRANSFER.get(spec["name"]).info.teacher:
            metrics.update(teacher_metrics(spec["teacher_file"], data))
        return metrics


FAMILY = TransferFamily(
    "transfer",
    TRANSFER,
    default={"name": "scratch"},
    description="how a run uses its source model (Transfer Learning Approaches, Fine-tuning Strategies)",
    columns=(
        Column("transfer/trainable_frac", "trainable %", 100, 1),
        Column("transfer/source_acc", "source test acc after (%)", 100, 1),
        Column("transfer/drift_l2", "‖w − w_source‖₂", 1, 2),
    ),
    summary=("transfer/trainable_frac", "transfer/source_acc", "transfer/forgetting", "transfer/drift_l2"),
    findings="techbench.report.families.transfer:findings",
    across="techbench.report.families.transfer_sizes:size_section",
)

__all__ = ["FAMILY", "TRANSFER", "Strategy", "Thaw", "set_trainable", "strategy"]
