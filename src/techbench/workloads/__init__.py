"""Workloads: the data a run trains on and the model it trains."""

from techbench.workloads.data import DataSplits, InMemoryLoader
from techbench.workloads.datasets import DATASETS, load_dataset
from techbench.workloads.models import MODELS, build_model

__all__ = ["DATASETS", "MODELS", "DataSplits", "InMemoryLoader", "build_model", "load_dataset"]
