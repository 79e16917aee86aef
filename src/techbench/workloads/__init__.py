"""Workloads: the data a run trains on, the model it trains, the loss it minimizes and how a model is scored
(the workload side of the contract; specs.Workload names them for a study)."""

import torch.nn.functional as F

from techbench.workloads.data import DataSplits, InMemoryLoader
from techbench.workloads.datasets import DATASETS, load_dataset
from techbench.workloads.models import MODELS, build_model

# The loss every workload of this suite minimizes (class logits, integer labels); evaluation.py scores with it.
LOSSES = {"cross_entropy": F.cross_entropy}
loss_fn = LOSSES["cross_entropy"]

__all__ = ["DATASETS", "LOSSES", "MODELS", "DataSplits", "InMemoryLoader", "build_model", "load_dataset", "loss_fn"]
