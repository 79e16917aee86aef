"""Fine-tuning strategies ("Transfer Learning Approaches", "Fine-tuning Strategies").

A factory takes the model's blocks (workloads/pretrained.blocks: (name, parameter names) from input to the
classifier, the classifier last) and the entry's hyperparameters, and returns a ``Strategy``: which parameters
train from the first epoch, a per-block learning-rate scale, the L2-SP coefficients, when frozen blocks thaw,
and the modules a parameter-efficient method adds (transfer/peft.py; their parameters all train). The family
(transfer/__init__.py) applies it to the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from techbench.registry import Info, Registry
from techbench.techniques.transfer import peft
from techbench.workloads.pretrained import check_weights

AT_LEAST_ONE = (1, None, True, True)
NON_NEGATIVE = (0.0, None, True, True)


@dataclass(frozen=True)
class TransferInfo(Info):
    source: bool = True  # starts from the source weights (scratch: a fresh initialization of the same model)
    # Seeds train as one stack (frozen parameters are columns the stacked optimizer puts back); per-block LRs,
    # the L2-SP term and thawing during training have no stacked form.
    stackable: bool = False
    thaws: bool = False  # frozen blocks start training during the fit (a Thaw callback)
    teacher: bool = False  # learns from the source as a teacher (the study's model is a student of its own)


TRANSFER = Registry("transfer", TransferInfo)

Blocks = list[tuple[str, list[str]]]


@dataclass(frozen=True)
class Strategy:
    trainable: frozenset[str]  # parameter names that train from the first epoch
    lr_scale: dict[str, float] = field(default_factory=dict)  # block name -> factor on the optimizer's LR
    l2_sp: tuple[float, float] | None = None  # (α towards the source weights, β on the new classifier)
    # (epoch, parameter names that start training at that epoch, 0-based), in epoch order
    thaw: tuple[tuple[int, frozenset[str]], ...] = ()
    insert: Callable[[nn.Module], nn.Module] | None = None  # adds the trainable modules of a PEFT method
    distill: tuple[float, float, str] | None = None  # (α, T, the teacher's weights file): see distillation.py


def _names(blocks: Blocks) -> frozenset[str]:
    return frozenset(n for _, ps in blocks for n in ps)


def _head(blocks: Blocks) -> frozenset[str]:
    return frozenset(blocks[-1][1])


@TRANSFER.register(
    "scratch", description="the same model from a fresh initialization (no source)", source=False, stackable=True
)
def scratch(blocks):
    return Strategy(_names(blocks))


@TRANSFER.register(
    "feature_extraction",
    description="frozen source backbone (BatchNorm statistics included), a new linear classifier trains",
    stackable=True,
)
def feature_extraction(blocks):
    return Strategy(_head(blocks))


@TRANSFER.register(
    "shallow_ft",
    description="the top `top_blocks` blocks of the source and the new classifier train; the rest is frozen",
    defaults={"top_blocks": 1},
    search_space={"top_blocks": {"low": 1, "high": 3}},
    bounds={"top_blocks": AT_LEAST_ONE},
    stackable=True,
)
def shallow_ft(blocks, top_blocks):
    return Strategy(_names(blocks[-1 - int(top_blocks) :]))


@TRANSFER.register("deep_ft", description="every layer trains, starting from the source weights", stackable=True)
def deep_ft(blocks):
    return Strategy(_names(blocks))


@TRANSFER.register(
    "gradual_unfreeze",
    description="the classifier trains first; every `every` epochs the next block from the top thaws (ULMFiT)",
    defaults={"every": 2},
    search_space={"every": {"low": 1, "high": 10}},
    bounds={"every": AT_LEAST_ONE},
    thaws=True,
)
def gradual_unfreeze(blocks, every):
    body = blocks[:-1]
    thaw = tuple((int(every) * (i + 1), frozenset(ps)) for i, (_, ps) in enumerate(reversed(body)))
    return Strategy(_head(blocks), thaw=thaw)


@TRANSFER.register(
    "lp_ft",
    description="linear probe then fine-tune: the classifier alone for `probe_epochs`, then every layer",
    defaults={"probe_epochs": 5},
    search_space={"probe_epochs": {"low": 1, "high": 20}},
    bounds={"probe_epochs": AT_LEAST_ONE},
    thaws=True,
)
def lp_ft(blocks, probe_epochs):
    return Strategy(_head(blocks), thaw=((int(probe_epochs), _names(blocks[:-1])),))


@TRANSFER.register(
    "discriminative_lr",
    description="every layer trains; block l below the classifier at LR η/α^l (layer-wise LR decay)",
    defaults={"alpha": 2.6},
    search_space={"alpha": {"low": 1.0, "high": 10.0, "log": True}},
    bounds={"alpha": (1.0, None, True, True)},
)
def discriminative_lr(blocks, alpha):
    depth = len(blocks) - 1
    scale = {name: float(alpha) ** -(depth - i) for i, (name, _) in enumerate(blocks)}
    return Strategy(_names(blocks), lr_scale=scale)


@TRANSFER.register(
    "l2_sp",
    description="every layer trains with α/2·‖w − w_source‖² on the source layers and β/2·‖w‖² on the new "
    "classifier (Li et al. 2018)",
    defaults={"alpha": 0.01, "beta": 0.01},
    search_space={"alpha": {"low": 1e-4, "high": 1.0, "log": True}, "beta": {"low": 1e-4, "high": 1.0, "log": True}},
    bounds={"alpha": NON_NEGATIVE, "beta": NON_NEGATIVE},
)
def l2_sp(blocks, alpha, beta):
    return Strategy(_names(blocks), l2_sp=(float(alpha), float(beta)))


@TRANSFER.register(
    "bitfit",
    description="only the biases of the source (BatchNorm shifts included) and the new classifier train",
    stackable=True,
)
def bitfit(blocks):
    biases = frozenset(n for _, ps in blocks[:-1] for n in ps if n.endswith("bias"))
    return Strategy(biases | _head(blocks))


@TRANSFER.register(
    "lora",
    description="frozen source + trainable low-rank updates (α/r)·BA on a ViT's attention projections or a "
    "CNN's convolutions (LoRA, through peft), and the new classifier",
    defaults={"rank": 4, "lora_alpha": 8.0},
    search_space={"rank": {"low": 1, "high": 16, "log": True}, "lora_alpha": {"low": 1.0, "high": 32.0, "log": True}},
    bounds={"rank": AT_LEAST_ONE, "lora_alpha": (0.0, None, False, True)},
)
def lora(blocks, rank, lora_alpha):
    return Strategy(_head(blocks), insert=lambda model: peft.add_lora(model, rank, lora_alpha))


@TRANSFER.register(
    "adapters",
    description="frozen source + a trainable bottleneck adapter h + up(act(down(h))) after each block "
    "(Houlsby et al. 2019), and the new classifier",
    defaults={"bottleneck": 8},
    search_space={"bottleneck": {"low": 2, "high": 64, "log": True}},
    bounds={"bottleneck": AT_LEAST_ONE},
)
def adapters(blocks, bottleneck):
    return Strategy(_head(blocks), insert=lambda model: peft.add_adapters(model, bottleneck))


@TRANSFER.register(
    "prompt_tuning",
    description="frozen ViT + `tokens` learned prompt tokens in its input sequence (VPT-shallow), and the new "
    "classifier",
    defaults={"tokens": 8},
    search_space={"tokens": {"low": 1, "high": 32, "log": True}},
    bounds={"tokens": AT_LEAST_ONE},
)
def prompt_tuning(blocks, tokens):
    return Strategy(_head(blocks), insert=lambda model: peft.add_prompts(model, tokens))


def _check_teacher(hp: dict) -> None:
    if hp["teacher_file"]:
        check_weights(hp["teacher_file"])


@TRANSFER.register(
    "knowledge_distillation",
    description="a fresh student trained on α·CE(y, student) + (1−α)·T²·KL(teacher_T ‖ student_T), the "
    "teacher being the source model with its own classifier (Hinton et al. 2015)",
    defaults={"alpha": 0.5, "temperature": 4.0, "teacher_file": ""},
    search_space={"alpha": {"low": 0.0, "high": 1.0}, "temperature": {"low": 1.0, "high": 10.0, "log": True}},
    check=_check_teacher,
    source=False,
    teacher=True,
)
def knowledge_distillation(blocks, alpha, temperature, teacher_file):
    return Strategy(_names(blocks), distill=(float(alpha), float(temperature), str(teacher_file)))
