"""Parameter-efficient fine-tuning ("Fine-tuning Strategies": adapters, LoRA, prompt tuning): modules added to
a frozen source model, of which only the new parameters (and the new classifier) train.

- LoRA through peft (``inject_adapter_in_model``): W x + (α/r)·B A x on the attention projections of a ViT
  (qkv, proj) or on every convolution and linear layer of other models; B starts at zero, so the model starts
  as the source. ``merged`` folds B A into W (peft's merge) for measurements that compare with the source.
- Bottleneck adapters (Houlsby et al. 2019): after each block, h + up(act(down(h))) over the block's feature
  dimension (channels of a convolution, the width of a token), ``up`` zero-initialized. peft has none for
  plain torch models. The adapter is a child of its block (so it is grouped with it) applied by a forward hook
  bound to the adapter (so deep copies keep it).
- Prompt tuning for ViTs (VPT-shallow, Jia et al. 2022): ``tokens`` learned embeddings inserted after the class
  token before the first block and removed before the final norm, so the pooled features keep their meaning.
  peft's prompt tuning needs a transformers embedding layer.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from techbench.workloads.pretrained import blocks, classifier_prefix, is_classifier

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def lora_targets(model: nn.Module) -> list[str]:
    """The modules LoRA adapts: a ViT's attention projections, else every Conv/Linear outside the classifier."""
    prefix = classifier_prefix(model)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    names = [n for n in names if not is_classifier(n, prefix)]
    attention = [n for n in names if n.endswith((".attn.qkv", ".attn.proj"))]
    return attention or names


def add_lora(model: nn.Module, rank: int, lora_alpha: float) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_targets(model)
    if not targets:
        raise ValueError("lora: the model has no Linear or Conv layer outside its classifier")
    pattern = "^(" + "|".join(t.replace(".", r"\.") for t in targets) + ")$"
    config = LoraConfig(r=int(rank), lora_alpha=float(lora_alpha), lora_dropout=0.0, target_modules=pattern)
    return inject_adapter_in_model(config, model)


@torch.no_grad()
def merged(model: nn.Module) -> nn.Module:
    """A copy with every LoRA update folded into its base layer and the base layer back in its place: the
    parameter names (and values) a source-weights comparison expects. The model itself if it has no LoRA."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return model
    if not any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        return model
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            out.set_submodule(name, module.get_base_layer())
    return out


class Adapter(nn.Module):
    """h + up(act(down(h))) over dimension ``dim`` of a block's output; ``up`` starts at zero (identity)."""

    def __init__(self, width: int, bottleneck: int, dim: int):
        super().__init__()
        self.down, self.up, self.dim = nn.Linear(width, bottleneck), nn.Linear(bottleneck, width), dim
        self.act = nn.GELU()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def after(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        h = output.movedim(self.dim, -1)
        return (h + self.up(self.act(self.down(h)))).movedim(-1, self.dim)


def _common(names: list[str]) -> str:
    parts = [n.split(".")[:-1] for n in names]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common) if all(len(p) >= len(common) for p in parts) else ""


def adapter_sites(model: nn.Module) -> list[tuple[str, int, int]]:
    """(module name, feature width, feature dimension) after which an adapter goes: in each block of the
    source after the stem (workloads/pretrained.blocks), the module that holds its parameters (a final norm
    grouped with the last block is left out); the width is the output size of its last layer with parameters."""
    sites = []
    for _, names in blocks(model)[1:-1]:
        by_top: dict[str, list[str]] = {}
        for n in names:
            by_top.setdefault(n.split(".")[0], []).append(n)
        for part in by_top.values():
            name = _common(part)
            module = model.get_submodule(name) if name else None
            if module is None or isinstance(module, (*NORMS, nn.RNNBase)):
                continue
            last = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, *NORMS))][-1]
            if isinstance(last, nn.Linear):
                sites.append((name, last.out_features, -1))
            elif isinstance(last, nn.LayerNorm):
                sites.append((name, last.normalized_shape[-1], -1))
            elif isinstance(last, nn.GroupNorm):
                sites.append((name, last.num_channels, 1))
            else:
                sites.append((name, getattr(last, "out_channels", None) or last.num_features, 1))
    return sites


def add_adapters(model: nn.Module, bottleneck: int) -> nn.Module:
    sites = adapter_sites(model)
    if not sites:
        raise ValueError("adapters: the model has no block with a single output to adapt")
    device = next(model.parameters()).device
    for name, width, dim in sites:
        module = model.get_submodule(name)
        adapter = Adapter(width, int(bottleneck), dim).to(device)
        module.add_module("adapter", adapter)
        module.register_forward_hook(adapter.after)
    return model


class Prompts(nn.Module):
    """Learned tokens inserted after a ViT's prefix tokens (class/register) and removed before its final norm."""

    def __init__(self, tokens: int, width: int, prefix: int):
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(1, tokens, width))
        nn.init.trunc_normal_(self.tokens, std=0.02)
        self.prefix = prefix

    def insert(self, module: nn.Module, inputs, x: torch.Tensor) -> torch.Tensor:
        p = self.prefix
        return torch.cat([x[:, :p], self.tokens.expand(len(x), -1, -1), x[:, p:]], dim=1)

    def remove(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x, p, n = inputs[0], self.prefix, self.tokens.shape[1]
        return (torch.cat([x[:, :p], x[:, p + n :]], dim=1), *inputs[1:])


def add_prompts(model: nn.Module, tokens: int) -> nn.Module:
    if not all(hasattr(model, a) for a in ("blocks", "norm_pre", "norm", "num_prefix_tokens", "embed_dim")):
        raise ValueError(f"prompt_tuning needs a timm VisionTransformer, not {type(model).__name__}")
    device = next(model.parameters()).device
    prompts = Prompts(int(tokens), int(model.embed_dim), int(model.num_prefix_tokens)).to(device)
    model.add_module("prompts", prompts)
    model.norm_pre.register_forward_hook(prompts.insert)
    model.norm.register_forward_pre_hook(prompts.remove)
    return model
