"""Registered models. A factory takes (input_shape, num_classes, **hyperparameters) and returns an nn.Module
that maps a batch of examples to class logits.

Flags (ModelInfo): ``stackable`` — seeds of the model can train as one vmap'd stack (no recurrent loop, no
BatchNorm statistics); ``width`` — the hyperparameter that sets its hidden width (widened by dropout's
width_scaled).

Every model can start from a weights file (``pretrained_file``): timm's through timm's pretrained mechanism,
the 1-D models through workloads/pretrained.py with the same rule for the classifier (it starts fresh). The
1-D models declare timm's ``group_matcher`` and ``pretrained_cfg['classifier']``, so layer groups mean the same
for them as for timm models (workloads/pretrained.blocks)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from techbench.registry import Info, Registry
from techbench.workloads.pretrained import check_weights, load_into


@dataclass(frozen=True)
class ModelInfo(Info):
    stackable: bool = False
    width: str | None = None


MODELS = Registry("model", ModelInfo)

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def build_model(spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    hp = {k: v for k, v in spec.items() if k != "name"}
    own_file = hp.pop("pretrained_file", "") if spec["name"] != "timm" else ""  # timm loads its own
    model = MODELS.get(spec["name"]).factory(tuple(input_shape), num_classes, **hp)
    return load_into(model, own_file) if own_file else model


def _check_file(hp: dict[str, Any]) -> None:
    # A file named in params.yaml must be there when the config is read. (A pretrain stage's output does not
    # exist before the stage ran: a transfer study names its `source` and checks the file when it starts.)
    if hp.get("pretrained_file"):
        check_weights(hp["pretrained_file"])


class MLP(nn.Sequential):
    """Flatten, then (Linear, activation[, Dropout]) per hidden layer, then the linear classifier."""

    def __init__(self, *layers: nn.Module):
        super().__init__(*layers)
        self.pretrained_cfg = {"classifier": str(len(layers) - 1)}

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"blocks": r"^(\d+)\."}  # one group per Linear layer (by its index)


def _check_activation(hp: dict[str, Any]) -> None:
    _check_file(hp)
    if "hidden" in hp and not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hp["hidden"]):
        raise ValueError(f"hidden {hp['hidden']!r}: every layer width must be an integer >= 1")
    if hp["activation"] not in ACTIVATIONS:
        raise ValueError(f"activation {hp['activation']!r} unknown; allowed: {', '.join(ACTIVATIONS)}")


@MODELS.register(
    "mlp",
    description="multilayer perceptron on the flattened input",
    defaults={"hidden": [100, 100], "activation": "relu", "dropout": 0.0, "pretrained_file": ""},
    check=_check_activation,
    stackable=True,
    width="hidden",
)
def mlp(input_shape, num_classes, hidden, activation, dropout) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return MLP(*layers)


@MODELS.register(
    "logreg",
    description="multinomial logistic regression (one linear layer): convex, small enough for exact Hessians",
    stackable=True,
)
def logreg(input_shape, num_classes) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


class CNN1D(nn.Module):
    """The MNIST-1D paper's CNN: three strided 1-D convolutions, then a linear head."""

    pretrained_cfg = {"classifier": "head"}

    def __init__(self, in_channels: int, length: int, num_classes: int, channels: int, kernel: int):
        super().__init__()
        pad = kernel // 2
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, channels, kernel, stride=2, padding=pad),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel, stride=2, padding=pad),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel, stride=2, padding=pad),
            nn.ReLU(),
        )
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, in_channels, length)).numel()
        self.head = nn.Linear(n_flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"blocks": r"^features\.(\d+)"}  # one group per convolution

    def layers(self) -> list[tuple[str, nn.Module]]:
        """The layers in the order forward applies them (qualified names): what a stack of CNNs batches."""
        convs = [(f"features.{n}", m) for n, m in self.features.named_children()]
        return [*convs, ("flatten", nn.Flatten()), ("head", self.head)]


@MODELS.register(
    "cnn1d",
    description="1-D CNN for sequences (channels, length)",
    defaults={"channels": 25, "kernel": 5, "pretrained_file": ""},
    bounds={"channels": (1, None, True, True), "kernel": (1, None, True, True)},
    check=_check_file,
    stackable=True,
    width="channels",
)
def cnn1d(input_shape, num_classes, channels, kernel) -> nn.Module:
    return CNN1D(input_shape[0], input_shape[-1], num_classes, int(channels), int(kernel))


class GRUClassifier(nn.Module):
    pretrained_cfg = {"classifier": "head"}

    def __init__(self, in_channels: int, num_classes: int, hidden: int):
        super().__init__()
        self.gru = nn.GRU(in_channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x.transpose(1, 2))  # (B, C, L) -> (B, L, C): one time step per position
        return self.head(h[-1])

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"blocks": r"^gru"}


@MODELS.register(
    "gru",
    description="GRU over the sequence, last hidden state -> linear head",
    defaults={"hidden": 64, "pretrained_file": ""},
    bounds={"hidden": (1, None, True, True)},
    check=_check_file,
    width="hidden",
)
def gru(input_shape, num_classes, hidden) -> nn.Module:
    return GRUClassifier(input_shape[0], num_classes, int(hidden))


def _check_timm(hp: dict[str, Any]) -> None:
    import timm

    if not timm.is_model(hp["arch"]):
        raise ValueError(f"unknown timm architecture {hp['arch']!r} (see timm.list_models())")
    if not isinstance(hp["options"], dict):
        raise ValueError(f"options {hp['options']!r}: expected a mapping of timm.create_model keyword arguments")
    _check_file(hp)


@MODELS.register(
    "timm",
    description="any timm image model; pretrained weights come from a local file (never a hub download)",
    # options: further timm.create_model arguments, e.g. {img_size: 16, patch_size: 4} for a ViT on small images
    defaults={"arch": "test_resnet", "pretrained_file": "", "drop_rate": 0.0, "options": {}},
    check=_check_timm,
)
def timm_model(input_shape, num_classes, arch, pretrained_file, drop_rate, options=None) -> nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from files only: never wait for the hub
    import timm

    kwargs: dict[str, Any] = {
        **(options or {}),
        "num_classes": num_classes,
        "in_chans": input_shape[0],
        "drop_rate": drop_rate,
    }
    if pretrained_file:
        # timm's own pretrained path, pointed at a local file: the classifier is dropped when shapes differ.
        overlay = {"file": str(Path(pretrained_file).resolve()), "input_size": tuple(input_shape)}
        kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
    return timm.create_model(arch, **kwargs)
