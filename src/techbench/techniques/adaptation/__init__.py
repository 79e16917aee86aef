"""Domain adaptation: how a run trained on a labelled source domain uses unlabelled target data (the
`adaptation` slot). The data is a ``domain_shift`` dataset: source train/validation, target test, and the whole
target domain beside them. Every step of a method draws a target batch of the source batch's size (its own
seeded stream), runs the model on it and adds the method's term (adaptation/methods.py) to the source
cross-entropy; features are the classifier's input, read by a forward pre-hook.

Every epoch, every run with a target records target validation accuracy (the oracle's criterion), the target
validation prediction entropy (an unsupervised one) and the target test accuracy of that epoch's weights; after
the fit the selection rules (adaptation/selection.py) pick an epoch each from the validation curves only, so the
report shows each method under every rule side by side. The run's own test accuracy is the target's, with the
weights its stopping rule keeps (by default the last: a fixed training budget).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from techbench.registry import hyperparameters
from techbench.techniques.adaptation.losses import entropy, mmd2
from techbench.techniques.adaptation.methods import ADAPTATION, Method, Step
from techbench.techniques.adaptation.selection import selected
from techbench.techniques.family import Column, Family, Fit, Objective
from techbench.workloads import load_dataset
from techbench.workloads.pretrained import classifier_prefix

SHIFT = "domain_shift"  # the dataset that carries a target domain
HEAD = "_domain_head"  # where a method's domain classifier lives on the model (not a submodule: no state dict)


def method(spec: dict[str, Any]) -> Method:
    entry = ADAPTATION.get(spec["name"])
    return entry.factory(**{k: v for k, v in hyperparameters(entry, spec).items() if k in entry.defaults})


def target_domain(spec: dict[str, Any]):
    """The run's target domain: load_dataset is cached, so this is the very object the run's data carries."""
    return load_dataset(spec["data"]).target


def _features(model: nn.Module) -> list[torch.Tensor]:
    """The classifier's input of the model's last forward pass, kept by a pre-hook (registered once)."""
    kept = getattr(model, "_adaptation_features", None)
    if kept is None:
        kept = []
        head = model.get_submodule(classifier_prefix(model))
        head.register_forward_pre_hook(lambda m, args: kept.__setitem__(slice(None), [args[0].flatten(1)]))
        object.__setattr__(model, "_adaptation_features", kept)
    return kept


def domain_head(model: nn.Module, width: int, hidden: int) -> nn.Module:
    head = getattr(model, HEAD, None)
    if head is None:
        head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        object.__setattr__(model, HEAD, head)
    return head


def adaptation_term(spec: dict[str, Any], model: nn.Module):
    """batch_terms for the Objective: the method's term on this step's source batch and a drawn target batch."""
    chosen = method(spec)
    target = target_domain(spec)
    generator = torch.Generator().manual_seed(torch.initial_seed() + 104_729)  # the run seed's own stream
    feats = _features(model)
    total = max(int(spec["total_steps"]), 1)
    done = [0]

    def term(x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        source = feats[0]
        idx = torch.randint(len(target.x_train), (len(x),), generator=generator)
        x_t = target.x_train[idx].to(x.device)
        logits_t = model(x_t)
        step = Step(
            loss=loss,
            source=source,
            target=feats[0],
            target_logits=logits_t,
            target_y=target.y_train[idx].to(x.device),
            progress=done[0] / total,
            head=lambda width: domain_head(model, width, chosen.head_hidden).to(x.device),
        )
        done[0] += 1
        return chosen.term(step)

    return term


class TargetCurves(Callback):
    """Per epoch, on the weights of that epoch: target validation accuracy and entropy, target test accuracy."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        target = target_domain(self.spec)
        model = pl_module.model
        logits_val = model(target.x_val.to(pl_module.device))
        logits_test = model(target.x_test.to(pl_module.device))
        pl_module.log_.put(
            pl_module.current_epoch,
            {
                "target/val_acc": float((logits_val.argmax(1).cpu() == target.y_val).float().mean()),
                "target/val_entropy": float(entropy(logits_val)),
                "target/test_acc": float((logits_test.argmax(1).cpu() == target.y_test).float().mean()),
            },
        )


class AdaptationFamily(Family):
    def resolve(self, spec: dict[str, Any], config: dict[str, Any], n_train: int) -> dict[str, Any]:
        info = ADAPTATION.get(spec["name"]).info
        shifted = config["data"]["name"] == SHIFT
        if info.target and not shifted:
            raise ValueError(
                f"adaptation {spec['name']} needs a target domain: data `{{name: {SHIFT}, source: ..., target: ...}}`"
            )
        if not shifted:
            return config
        train = config["train"]
        steps = -(-n_train // max(int(train["batch_size"]), 1)) * int(train["epochs"])
        return {**config, self.name: {**spec, "data": config["data"], "total_steps": steps}}

    def objective(self, spec: dict[str, Any], model: nn.Module, n_train: int) -> Objective | None:
        if not ADAPTATION.get(spec["name"]).info.target:
            return None
        return Objective(batch_terms=adaptation_term(spec, model))

    def shape_optimizer(self, spec: dict[str, Any], optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """A method with a domain classifier trains it with the model's optimizer, in a group of its own."""
        hidden = method(spec).head_hidden if ADAPTATION.get(spec["name"]).info.target else 0
        if not hidden:
            return
        with torch.no_grad():
            _features(model)
            model(torch.zeros(1, *target_domain(spec).x_train.shape[1:]))
            width = _features(model)[0].shape[1]
        options = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
        optimizer.add_param_group({**options, "params": list(domain_head(model, width, hidden).parameters())})

    def callbacks(self, spec: dict[str, Any], config: dict[str, Any]) -> list:
        return [TargetCurves(spec)] if "data" in spec else []

    def select_weights(self, spec: dict[str, Any], fit: Fit) -> dict[str, float]:
        return selected(fit.module.log_.histories()) if "data" in spec else {}

    @torch.no_grad()
    def measure(self, spec: dict[str, Any], model: nn.Module, data: Any) -> dict[str, float]:
        """Source validation vs target validation features of the kept weights: MMD² and the proxy A-distance."""
        if data.target is None:
            return {}
        feats = _features(model)
        model(data.x_val)
        source = feats[0]
        model(data.target.x_val)
        target = feats[0]
        return {"adapt/mmd2": float(mmd2(source, target)), "adapt/a_distance": proxy_a_distance(source, target)}


def proxy_a_distance(source: torch.Tensor, target: torch.Tensor) -> float:
    """2(1 − 2ε), ε the held-out error of a linear domain classifier on the features (Ben-David et al. 2007)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    x = torch.cat([source, target]).cpu().numpy()
    d = [0] * len(source) + [1] * len(target)
    accuracy = cross_val_score(LogisticRegression(max_iter=500), x, d, cv=2).mean()
    return float(2 * (1 - 2 * (1 - accuracy)))


FAMILY = AdaptationFamily(
    "adaptation",
    ADAPTATION,
    default={"name": "source_only"},
    description="how a run trained on a labelled source uses unlabelled target data (Domain Adaptation Techniques)",
    columns=(
        Column("select/source_val/test_acc", "target acc, source-val choice %", 100, 1),
        Column("select/target_val/test_acc", "target acc, ORACLE choice %", 100, 1),
        Column("adapt/a_distance", "proxy A-distance", 1, 2),
    ),
    summary=(
        "select/source_val/test_acc",
        "select/target_val/test_acc",
        "select/last/test_acc",
        "select/entropy/test_acc",
        "adapt/mmd2",
        "adapt/a_distance",
    ),
    findings="techbench.report.families.adaptation:findings",
)

__all__ = ["ADAPTATION", "FAMILY"]
