"""Multi-task learning ("Multi-task Learning": a shared trunk, one head per task, the weighted loss Σ wᵢ·Lᵢ)
against one single-task model per task, trained the same way.

Each task is the study's dataset with its own overrides (a generator shift, a smaller training set, a class
subset); the trunk is the study's model without its classifier, each head a linear layer on its features.
Every training step takes one batch of every task (Lightning's CombinedLoader, cycling the smaller training
sets: ``max_size_cycle``), so the multi-task model makes as many updates as the largest single-task model. All
models train for ``epochs`` with Adam at ``lr``; each keeps its last weights and is scored on every task's own
test split. The question the rows answer: does sharing the trunk help a task compared with training it alone?
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from techbench.checks import component
from techbench.probes import PROBES, ProbeContext, ProbeResult
from techbench.workloads import build_model, load_dataset
from techbench.workloads.datasets import DATASETS
from techbench.workloads.evaluation import evaluate
from techbench.workloads.pretrained import classifier_prefix


class MultiTask(L.LightningModule):
    """A shared trunk with one linear head per task; the training loss is Σ wᵢ·CE(headᵢ(trunk(xᵢ)), yᵢ)."""

    def __init__(self, trunk: nn.Module, width: int, classes: dict[str, int], weights: dict[str, float], lr: float):
        super().__init__()
        self.trunk, self.weights, self.lr = trunk, weights, lr
        self.heads = nn.ModuleDict({t: nn.Linear(width, k) for t, k in classes.items()})

    def task_model(self, task: str) -> nn.Module:
        return nn.Sequential(self.trunk, nn.Flatten(), self.heads[task])

    def training_step(self, batch, batch_idx):
        batch, _, _ = batch if isinstance(batch, tuple) else (batch, None, None)
        return sum(self.weights[t] * F.cross_entropy(self.task_model(t)(x), y) for t, (x, y) in batch.items())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def trunk_of(model_spec: dict, input_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """The study's model with its classifier replaced by the identity, and the width of its features."""
    model = build_model(model_spec, input_shape, 2)
    prefix = classifier_prefix(model)
    head = model.get_submodule(prefix)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"multi_task needs a model whose classifier {prefix!r} is a linear layer")
    model.set_submodule(prefix, nn.Identity())
    return model, head.in_features


def train_tasks(ctx: ProbeContext, datas: dict, weights: dict[str, float], **fit) -> dict[str, float]:
    """Each task's test accuracy of one model trained on ``datas`` (task -> data) by ``fit_tasks``."""
    module = fit_tasks(ctx, datas, weights, **fit)
    return {t: evaluate(module.task_model(t), d.x_test, d.y_test)["acc"] for t, d in datas.items()}


def fit_tasks(
    ctx: ProbeContext,
    datas: dict,
    weights: dict[str, float],
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    orders: dict[str, int],
) -> MultiTask:
    """Train one model on ``datas`` (task -> data); it is returned on CPU in eval mode. The initialization comes
    from ``seed`` (the trunk, then the heads in task order), each task's batch order from its own
    ``orders[task]``: a task trained alone sees the same batches as in the multi-task model."""
    L.seed_everything(seed, workers=True, verbose=False)
    trunk, width = trunk_of(ctx.model, next(iter(datas.values())).input_shape)
    module = MultiTask(trunk, width, {t: d.num_classes for t, d in datas.items()}, weights, lr)
    loaders = {
        t: DataLoader(
            TensorDataset(d.x_train, d.y_train),
            batch_size=batch,
            shuffle=True,
            generator=torch.Generator().manual_seed(orders[t]),
        )
        for t, d in datas.items()
    }
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=ctx.hardware.get("accelerator", "cpu"),
        devices=1,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=CombinedLoader(loaders, mode="max_size_cycle"))
    return module.cpu().eval()


def _check(hp: dict) -> None:
    if not isinstance(hp["tasks"], dict) or len(hp["tasks"]) < 2:
        raise ValueError("multi_task needs two or more tasks (name -> data overrides of the study's data)")
    unknown = sorted(set(hp["weights"]) - set(hp["tasks"]))
    if unknown:
        raise ValueError(f"multi_task weights name unknown tasks {unknown}; tasks: {sorted(hp['tasks'])}")
    bad = {t: v for t, v in hp["weights"].items() if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0}
    if bad:
        raise ValueError(f"multi_task weights {bad}: each must be a number >= 0")


@PROBES.register(
    "multi_task",
    description="a shared trunk with one head per task (loss Σ wᵢ·Lᵢ) vs one single-task model per task",
    # tasks: name -> data overrides of the study's dataset; weights: name -> wᵢ (default 1 each)
    defaults={"tasks": {}, "weights": {}, "epochs": 20, "batch_size": 100, "lr": 0.003},
    check=_check,
    topic="transfer",
)
def multi_task(ctx: ProbeContext, tasks, weights, epochs, batch_size, lr) -> ProbeResult:
    w = {t: float(weights.get(t, 1.0)) for t in tasks}
    datas = {
        t: load_dataset(component(f"multi_task.tasks.{t}", DATASETS, {**ctx.data, **(o or {})}), ctx.seed)
        for t, o in tasks.items()
    }
    shapes = {d.input_shape for d in datas.values()}
    if len(shapes) > 1:
        raise ValueError(f"multi_task tasks must share an input shape (a shared trunk); got {sorted(shapes)}")
    orders = {t: 1000 * ctx.seed + i for i, t in enumerate(datas)}
    fit = {"epochs": int(epochs), "batch": int(batch_size), "lr": float(lr), "seed": ctx.seed, "orders": orders}
    joint = train_tasks(ctx, datas, w, **fit)
    rows = []
    for t, d in datas.items():
        alone = train_tasks(ctx, {t: d}, {t: 1.0}, **fit)[t]
        rows.append({"row": f"{t}: single-task", "acc": alone, "n_train": float(len(d.x_train))})
        rows.append({"row": f"{t}: multi-task", "acc": joint[t], "n_train": float(len(d.x_train))})
    notes = [
        f"Tasks {', '.join(f'`{t}` ({len(d.x_train)} training examples, weight {w[t]:g})' for t, d in datas.items())}; "
        f"{epochs} epochs of Adam (lr {lr:g}), batch {batch_size} per task and step, last weights; the trunk is "
        f"the study's `{ctx.model['name']}` without its classifier."
    ]
    return ProbeResult(rows=rows, notes=notes)
