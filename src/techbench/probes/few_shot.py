"""Few-shot learning with prototypes ("Scenario 5: very little target data"): N-way K-shot episodes on classes the
source never saw, classified by the nearest class mean (prototype) of K support examples in an embedding.

The embedding is the study's source model (a transfer study's `source`, trained on base classes only: its data
lists `classes`) with its classifier removed; the control is the same prototypes on the raw inputs. Episodes are
drawn from the test split of the novel classes (every class of the study's data the source was not trained on),
seeded by the probe's seed; accuracy is the mean over episodes (and its 95 % CI over episodes)."""

from __future__ import annotations

import math

import torch
from scipy import stats
from torch import nn

from techbench.probes import PROBES, ProbeContext, ProbeResult
from techbench.workloads import build_model, load_dataset
from techbench.workloads.pretrained import classifier_prefix, read_card


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(len(classes), D): the mean embedding of each class's examples."""
    return torch.stack([embeddings[labels == c].mean(0) for c in classes])


def nearest_prototype(queries: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Index of the nearest prototype (squared Euclidean distance) for each query."""
    return torch.cdist(queries, protos).argmin(1)


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    model.set_submodule(classifier_prefix(model), nn.Identity())
    return model(x).flatten(1)


def episodes_accuracy(z: torch.Tensor, y: torch.Tensor, ways: int, shots: int, queries: int, n: int, seed: int):
    """Accuracy of every episode: ``ways`` classes drawn from those in ``y``, ``shots`` support and ``queries``
    query examples per class, disjoint."""
    g = torch.Generator().manual_seed(seed)
    pool = y.unique()
    by_class = {int(c): (y == c).nonzero().squeeze(1) for c in pool}
    out = []
    for _ in range(n):
        chosen = pool[torch.randperm(len(pool), generator=g)[:ways]]
        support, query, query_y = [], [], []
        for i, c in enumerate(chosen.tolist()):
            idx = by_class[c][torch.randperm(len(by_class[c]), generator=g)[: shots + queries]]
            support.append(z[idx[:shots]].mean(0))
            query.append(z[idx[shots:]])
            query_y.append(torch.full((len(idx) - shots,), i))
        pred = nearest_prototype(torch.cat(query), torch.stack(support))
        out.append(float((pred == torch.cat(query_y)).float().mean()))
    return out


@PROBES.register(
    "few_shot_prototypes",
    description="N-way K-shot prototype classification on classes the source never saw, source embedding vs raw inputs",
    defaults={"ways": 5, "shots": [1, 5], "queries": 15, "episodes": 1000},
    topic="transfer",
)
def few_shot_prototypes(ctx: ProbeContext, ways, shots, queries, episodes) -> ProbeResult:
    weights = ctx.model.get("pretrained_file")
    card = read_card(weights) if weights else {}
    base = list((card.get("data") or {}).get("classes") or [])
    if not base:
        raise ValueError("few_shot_prototypes needs a source trained on base classes only (its data lists classes)")
    data = load_dataset({**ctx.data, "classes": []})
    novel = torch.tensor([c for c in range(data.num_classes) if c not in base])
    if len(novel) < ways:
        raise ValueError(f"few_shot_prototypes: {len(novel)} novel classes, fewer than ways={ways}")
    keep = torch.isin(data.y_test, novel)
    x, y = data.x_test[keep], data.y_test[keep]
    model = build_model(ctx.model, data.input_shape, len(base))
    spaces = {"source embedding": embed(model, x), "raw input": x.flatten(1)}
    rows = []
    for k in shots:
        for space, z in spaces.items():
            accs = episodes_accuracy(z, y, ways, int(k), queries, episodes, ctx.seed)
            mean, sd = float(torch.tensor(accs).mean()), float(torch.tensor(accs).std())
            half = float(stats.t.ppf(0.975, len(accs) - 1)) * sd / math.sqrt(len(accs)) if len(accs) > 1 else 0.0
            rows.append({"row": f"{ways}-way {k}-shot, {space}", "acc": mean, "episode_ci95": half})
    notes = [
        f"Base classes (the source's): {base}; novel classes (episodes): {novel.tolist()}; {episodes} episodes of "
        f"{queries} queries per class from the test split; the source embedding is the model without its classifier."
    ]
    return ProbeResult(rows=rows, notes=notes)
