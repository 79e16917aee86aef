"""Source weights: how a model starts from a pretrained file, and what every model tells about its layers.

timm models load a local file through timm's own pretrained mechanism (``pretrained=True,
pretrained_cfg_overlay={"file": ...}``, models.timm_model), the path hub weights take. The 1-D models load the
same kind of file (safetensors, a state dict) here, with timm's rule for the classifier: it starts fresh, as a
hub checkpoint's head does when the class count differs. Either way the model then carries
``pretrained_cfg["file"]``, which the transfer family reads (source weights, the source head, the model card).

``blocks(model)`` names every model's layer groups from input to classifier, through timm's group matcher
(the grouping timm's layer-wise LR decay uses) — the 1-D models declare their own ``group_matcher``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

CARD = "card.json"  # the model card next to a pretrain stage's model.safetensors


def classifier_prefix(model: nn.Module) -> str:
    """The qualified name of the classifier module (timm's ``pretrained_cfg['classifier']`` or ours)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("classifier", "head"))


def is_classifier(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a .safetensors file (or a torch .pth/.pt with an optional {'state_dict': ...})."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def check_weights(path: str | Path) -> None:
    """ValueError unless ``path`` is a readable weights file (checked before anything trains or is written)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {str(path)!r}")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                list(f.keys())
        else:
            read_weights(path)
    except Exception as e:  # safetensors and torch raise their own types for a corrupt header
        raise ValueError(f"weights file {str(path)!r} is not readable: {str(e).splitlines()[0]}") from None


def load_into(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a 1-D model's source weights from ``path``; the classifier keeps its fresh initialization."""
    prefix = classifier_prefix(model)
    state = {k: v for k, v in read_weights(path).items() if not is_classifier(k, prefix)}
    own = {k for k in model.state_dict() if not is_classifier(k, prefix)}
    missing, unexpected = own - set(state), set(state) - own
    if missing or unexpected:
        raise ValueError(
            f"weights file {str(path)!r} does not fit the model: missing {sorted(missing)[:4]}, "
            f"unexpected {sorted(unexpected)[:4]} (does model: match the source's architecture?)"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise ValueError(f"weights file {str(path)!r} does not fit the model: {str(e).splitlines()[-1]}") from None
    model.pretrained_cfg = {**(getattr(model, "pretrained_cfg", None) or {}), "file": str(Path(path).resolve())}
    return model


def source_file(model: nn.Module) -> str | None:
    """The weights file the model started from (timm's overlay or load_into), or None."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("file") or None


def read_card(weights: str | Path) -> dict[str, Any]:
    """The model card written next to a pretrain stage's weights ({} for a user's own file without one)."""
    card = Path(weights).with_name(CARD)
    return json.loads(card.read_text()) if card.is_file() else {}


def blocks(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(block name, its parameter names) from input to output; the classifier is the last block.

    Uses timm's ``group_parameters`` over the model's coarse ``group_matcher`` (timm models have one; the 1-D
    models here declare theirs), so "the top k blocks" means the same in every study."""
    from timm.models import group_parameters

    matcher = model.group_matcher(coarse=True) if hasattr(model, "group_matcher") else None
    prefix = classifier_prefix(model)
    names = [n for n, _ in model.named_parameters()]
    if matcher is None:  # no declared grouping: one block per top-level child, in registration order
        groups: dict[str, list[str]] = {}
        for n in names:
            groups.setdefault(n.split(".")[0], []).append(n)
        ordered = list(groups.items())
    else:
        grouped = group_parameters(model, matcher, reverse=False)
        ordered = [(f"block{i}", list(ps)) for i, ps in sorted(grouped.items())]
    body = [(b, [n for n in ps if not is_classifier(n, prefix)]) for b, ps in ordered]
    body = [(b, ps) for b, ps in body if ps]
    head = [n for n in names if is_classifier(n, prefix)]
    return [*body, ("head", head)] if head else body
