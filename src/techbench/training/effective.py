"""The composition root of a run: a RunConfig and its data -> the EffectiveRun that trains (every family's
``resolve`` applied once, in registration order), and the model it trains (the workload's model, then every
family's ``build_model``)."""

from __future__ import annotations

from torch import nn

from techbench.specs import EffectiveRun, RunConfig
from techbench.techniques import FAMILIES
from techbench.workloads import DataSplits, build_model


def resolve(cfg: RunConfig, data: DataSplits) -> EffectiveRun:
    """The configuration that actually trains: batch regime, full-batch rule, widened model; n_train known."""
    n_train = len(data.x_train)
    config = cfg.as_dict()
    for family in FAMILIES:
        config = family.resolve(config[family.name], config, n_train)
    run = EffectiveRun.from_dict(cfg, config, data.input_shape, n_train, data.num_classes)
    per_rank = max(n_train // run.world_size, 1)
    if run.train["batch_size"] > per_rank:  # a batch larger than the split is the split: record what trains
        run = run.replace(train={"batch_size": per_rank})
    return run


def build_run_model(run: EffectiveRun, data: DataSplits) -> nn.Module:
    """A freshly initialized model of the run (the caller seeds the draw), rewritten by every family."""
    model = build_model(run.model, data.input_shape, data.num_classes)
    for family in FAMILIES:
        model = family.build_model(run[family.name], model, run.n_train)
    return model
