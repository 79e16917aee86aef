"""Parameter-efficient fine-tuning (LoRA through peft, bottleneck adapters, ViT prompt tuning), knowledge
distillation, memory at several batch sizes and the shifted digits: on a real timm ViT pretrained in the test
and loaded through timm's pretrained-file mechanism, and a real 1-D CNN teacher."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import write_params

from techbench.checks import component
from techbench.cli import main
from techbench.config import parse_params
from techbench.errors import ConfigError
from techbench.pretrain import run_pretrain
from techbench.techniques.transfer.distillation import distillation_term, load_teacher
from techbench.techniques.transfer.peft import merged
from techbench.training.effective import build_run_model, resolve
from techbench.training.single import train_single
from techbench.workloads import load_dataset
from techbench.workloads.datasets import DATASETS
from techbench.workloads.pretrained import read_weights

VIT = {"name": "timm", "arch": "test_vit", "options": {"img_size": 16, "patch_size": 4, "depth": 2}}
VIT_SOURCE = {
    "data": {"name": "digits", "image_size": 16, "part": "first_half"},
    "model": VIT,
    "train": {"epochs": 1, "batch_size": 64},
    "optimizer": {"name": "adam", "lr": 0.003},
}
TARGET = {"name": "digits", "image_size": 16, "part": "second_half", "rotate": 30.0, "noise": 0.3}
CNN_TEACHER = {
    "data": {"name": "debug", "num_samples": 256},
    "model": {"name": "cnn1d", "channels": 4},
    "train": {"epochs": 3, "batch_size": 32},
    "optimizer": {"name": "adam", "lr": 0.01},
}
STRATEGIES = ["deep_ft", "feature_extraction", "lora", "adapters", "prompt_tuning"]


def _plain(source: dict) -> dict:
    return {"family": "optimizer", "techniques": ["adam"], "seeds": 1, "data": source["data"], "model": source["model"]}


def _raw(source: dict, study: dict) -> dict:
    return {
        "studies": {"plain": {**_plain(source), "train": {"epochs": 1}}},
        "pretrain": {"src": copy.deepcopy(source)},
        "transfer": {"ft": {"source": "src", "seeds": 1, "train": {"epochs": 1, "batch_size": 32}, **study}},
    }


VIT_STUDY = _raw(
    VIT_SOURCE,
    {"techniques": STRATEGIES, "data": TARGET, "train": {"epochs": 1, "batch_size": 32, "memory_batches": [1, 16]}},
)
KD_STUDY = _raw(
    CNN_TEACHER,
    {
        "techniques": ["scratch", "knowledge_distillation"],
        "data": CNN_TEACHER["data"],
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 2, "batch_size": 32},
    },
)


def _enter(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Work in ``root`` with its own MLflow store."""
    mp.chdir(root)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")


def _pretrained(tmp_path_factory, raw: dict):
    root = tmp_path_factory.mktemp("source")
    with pytest.MonkeyPatch.context() as mp:
        _enter(mp, root)
        run_pretrain(parse_params(raw), "src")
    return root


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    return _pretrained(tmp_path_factory, VIT_STUDY)


@pytest.fixture
def vit(vit_dir, monkeypatch):
    _enter(monkeypatch, vit_dir)
    return parse_params(VIT_STUDY)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return _pretrained(tmp_path_factory, KD_STUDY)


@pytest.fixture
def kd(teacher_dir, monkeypatch):
    _enter(monkeypatch, teacher_dir)
    return parse_params(KD_STUDY)


def _model(params, technique: str):
    cfg = params.study("ft").run(technique)
    data = load_dataset(cfg.data)
    return build_run_model(resolve(cfg, data), data), data


def _frozen_source_is_untouched(model, source: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    for k, v in source.items():
        if k.startswith("head."):
            continue
        key = k if k in state else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(state[key], v), k


def test_lora_trains_r_times_in_plus_out_per_attention_projection_and_merges_exactly(vit):
    result = train_single(vit.study("ft").run("lora"), seed=0)
    model, source = result.model, read_weights(vit.pretrain["src"].weights)
    rank = vit.study("ft").run("lora").components["transfer"]["rank"]
    width, depth = 64, 2
    per_block = rank * (width + 3 * width) + rank * (width + width)  # qkv: 64 -> 192, proj: 64 -> 64
    head = width * 10 + 10
    assert result.metrics["transfer/params_trainable"] == depth * per_block + head
    _frozen_source_is_untouched(model, source)  # the base weights of every adapted layer included
    folded = merged(model)
    x = load_dataset(vit.study("ft").run("lora").data).x_test[:16]
    model.eval()
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert set(folded.state_dict()) == set(source)  # LoRA folded away: the source's own layer names
    assert result.metrics["transfer/drift_l2"] > 0  # the merged update moved the adapted layers


def test_adapters_start_as_the_identity_and_only_they_and_the_head_train(vit):
    model, data = _model(vit, "adapters")
    plain, _ = _model(vit, "feature_extraction")
    model.head.load_state_dict(plain.head.state_dict())
    x = data.x_test[:8]
    torch.testing.assert_close(model.eval()(x), plain.eval()(x))  # up-projections start at zero
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if ".adapter." in n or n.startswith("head.")}
    bottleneck = vit.study("ft").run("adapters").components["transfer"]["bottleneck"]
    sites = 2  # after each transformer block
    per_site = 64 * bottleneck + bottleneck + bottleneck * 64 + 64
    result = train_single(vit.study("ft").run("adapters"), seed=0)
    assert result.metrics["transfer/params_trainable"] == sites * per_site + 64 * 10 + 10
    _frozen_source_is_untouched(result.model, read_weights(vit.pretrain["src"].weights))
    assert result.metrics["transfer/drift_l2"] == 0.0


def test_prompt_tokens_join_the_sequence_in_every_block_and_leave_before_the_head(vit):
    model, data = _model(vit, "prompt_tuning")
    tokens = vit.study("ft").run("prompt_tuning").components["transfer"]["tokens"]
    seen = []
    model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    model.norm.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    out = model(data.x_test[:4])
    assert seen == [1 + tokens + 16, 1 + 16] and out.shape == (4, 10)  # class token + prompts + 16 patches
    result = train_single(vit.study("ft").run("prompt_tuning"), seed=0)
    assert result.metrics["transfer/params_trainable"] == tokens * 64 + 64 * 10 + 10
    _frozen_source_is_untouched(result.model, read_weights(vit.pretrain["src"].weights))


def test_prompt_tuning_on_a_model_without_tokens_is_a_config_error(teacher_dir, monkeypatch, capsys):
    monkeypatch.chdir(teacher_dir)
    raw = _raw(CNN_TEACHER, {"techniques": ["prompt_tuning"], "data": CNN_TEACHER["data"]})
    write_params(teacher_dir / "params.yaml", raw)
    assert main(["run", "ft"]) == 2
    err = capsys.readouterr().err
    assert "transfer.ft" in err and "VisionTransformer" in err and not (teacher_dir / "results").exists()


def test_lora_adapts_a_1d_cnns_convolutions_and_adapters_follow_its_blocks(kd):
    raw = _raw(CNN_TEACHER, {"techniques": ["lora", "adapters"], "data": {**CNN_TEACHER["data"], "noise": 0.7}})
    params = parse_params(raw)
    source = read_weights(params.pretrain["src"].weights)
    lora = train_single(params.study("ft").run("lora"), seed=0).model
    trained = {n.split(".lora_")[0] for n, p in lora.named_parameters() if p.requires_grad and ".lora_" in n}
    assert trained == {"features.0", "features.2", "features.4"}  # every convolution, not the classifier
    _frozen_source_is_untouched(lora, source)
    adapters = train_single(params.study("ft").run("adapters"), seed=0).model
    sites = {n.split(".adapter.")[0] for n, _ in adapters.named_parameters() if ".adapter." in n}
    assert sites == {"features.2", "features.4"}  # after each convolution block above the stem
    _frozen_source_is_untouched(adapters, source)


def test_memory_grows_with_the_batch_and_frozen_weights_cost_no_gradients_or_optimizer_state(vit):
    full = train_single(vit.study("ft").run("deep_ft"), seed=0).metrics
    lora = train_single(vit.study("ft").run("lora"), seed=0).metrics
    assert full["memory/step_mb/b1"] < full["memory/step_mb/b16"]
    # Adam keeps two moments and a gradient per trained weight: full fine-tuning's batch-1 step holds ~3x the
    # parameter bytes more than LoRA's, whose trained share is small.
    params_mb = full["transfer/params_total"] * 4 / 2**20
    assert full["memory/step_mb/b1"] - lora["memory/step_mb/b1"] > 2.5 * params_mb * (
        1 - lora["transfer/trainable_frac"]
    )


def test_memory_batches_must_be_batch_sizes():
    raw = copy.deepcopy(VIT_STUDY)
    raw["transfer"]["ft"]["train"]["memory_batches"] = [0, 16]
    with pytest.raises(ConfigError, match=r"transfer\.ft\.train\.memory_batches"):
        parse_params(raw)


def test_distillation_at_alpha_one_is_cross_entropy_and_otherwise_the_chapters_combined_loss(kd):
    file = kd.pretrain["src"].weights
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 1, 16, generator=g), torch.randint(0, 4, (6,), generator=g)
    logits = torch.randn(6, 4, generator=g)
    ce = F.cross_entropy(logits, y)
    assert distillation_term(1.0, 3.0, file)(x, y, logits, ce).item() == pytest.approx(0.0)
    teacher = load_teacher(file, (1, 16))
    with torch.no_grad():
        t = teacher(x)
    alpha, temp = 0.3, 3.0
    q, log_p = F.softmax(t / temp, 1), F.log_softmax(logits / temp, 1)
    kl = (q * (q.log() - log_p)).sum(1).mean()
    want = alpha * ce + (1 - alpha) * temp**2 * kl
    got = ce + distillation_term(alpha, temp, file)(x, y, logits, ce)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_a_student_study_learns_from_its_source_as_teacher(kd):
    study = kd.study("ft")
    cfg = study.run("knowledge_distillation")
    assert cfg.components["transfer"]["teacher_file"] == kd.pretrain["src"].weights
    assert cfg.model["name"] == "mlp" and not cfg.model["pretrained_file"]
    result = train_single(cfg, seed=0)
    teacher_acc = result.metrics["transfer/teacher_acc"]
    assert result.metrics["transfer/teacher_params"] > result.metrics["transfer/params_total"] and teacher_acc > 0.25
    scratch = train_single(study.run("scratch"), seed=0)
    assert scratch.metrics["test/acc"] != result.metrics["test/acc"]  # the soft targets changed the training


def test_a_retrained_teacher_changes_the_identity_of_its_students_runs(kd):
    cfg = kd.study("ft").run("knowledge_distillation")
    before = cfg.config_hash()
    weights = Path(kd.pretrain["src"].weights)
    original = weights.read_bytes()
    state = read_weights(weights)
    state["head.bias"] += 1.0
    from safetensors.torch import save_file

    try:
        save_file(state, str(weights))
        assert cfg.config_hash() != before
    finally:
        weights.write_bytes(original)


def test_a_student_study_refuses_strategies_that_start_from_the_source():
    raw = copy.deepcopy(KD_STUDY)
    raw["transfer"]["ft"]["techniques"] = ["scratch", "deep_ft"]
    with pytest.raises(ConfigError, match=r"transfer\.ft\.techniques\[1\].*allowed: knowledge_distillation"):
        parse_params(raw)


def test_distillation_without_a_teacher_is_a_config_error(workdir, capsys):
    raw = {"studies": {"kd": {**_plain(CNN_TEACHER), "family": "transfer", "techniques": ["knowledge_distillation"]}}}
    write_params(workdir / "params.yaml", raw)
    assert main(["run", "kd"]) == 2
    err = capsys.readouterr().err
    assert "studies.kd" in err and "teacher_file" in err and not (workdir / "mlflow.db").exists()


def _digits(**hp):
    return load_dataset(component("data", DATASETS, {"name": "digits", **hp}))


def test_shifted_digits_invert_add_noise_rotate_and_split_the_images_in_halves():
    base = _digits()
    inverted = _digits(invert=True)
    torch.testing.assert_close(inverted.x_train, -base.x_train, atol=1e-5, rtol=0)  # standardized 1 − x
    noisy = _digits(noise=0.5)
    assert 0.4 < float((noisy.x_train - base.x_train).std()) < 0.6
    rotated = _digits(rotate=30.0)
    assert not torch.allclose(rotated.x_train, base.x_train)
    halves = [_digits(part=p) for p in ("first_half", "second_half")]
    sizes = [len(d.x_train) + len(d.x_val) + len(d.x_test) for d in halves]
    assert sizes == [898, 899]
    with pytest.raises(ConfigError, match=r"part"):
        parse_params({"studies": {"s": {**_plain(CNN_TEACHER), "data": {"name": "digits", "part": "third"}}}})


def test_a_peft_study_logs_memory_per_batch_size_to_mlflow(vit, vit_dir):
    from mlflow.tracking import MlflowClient

    raw = copy.deepcopy(VIT_STUDY)
    raw["transfer"]["ft"]["techniques"] = ["deep_ft", "lora"]
    write_params(vit_dir / "params.yaml", raw)
    assert main(["run", "ft"]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{vit_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ft")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'run'")
    assert sorted(r.data.tags["technique"] for r in runs) == ["deep_ft", "lora"]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.metrics["memory/step_mb/b1"] < r.data.metrics["memory/step_mb/b16"]


def test_peft_and_distillation_findings_state_the_chapters_margins_with_their_numbers(tmp_path):
    from techbench.report.families import FindingsContext
    from techbench.report.families.transfer_peft import distillation_lines, peft_lines

    def rows(acc, mem1, mem64, trainable, total=1000.0, **extra):
        return [
            {
                "seed": s,
                "test_acc": acc + 0.001 * s * (acc > 0.8),
                "metrics": {
                    "memory/step_mb/b1": mem1,
                    "memory/step_mb/b64": mem64,
                    "transfer/params_trainable": trainable,
                    "transfer/params_total": total,
                    "transfer/trainable_frac": trainable / total,
                    **extra,
                },
            }
            for s in range(5)
        ]

    groups = {
        "deep_ft": rows(0.90, 4.0, 40.0, 1000.0),
        "feature_extraction": rows(0.60, 1.0, 4.0, 10.0),
        "bitfit": rows(0.895, 2.0, 20.0, 15.0),
        "lora": rows(0.8995, 2.0, 8.0, 50.0),
    }
    flags = {t: {"source": True} for t in groups}
    ctx = FindingsContext(tmp_path / "s_w", "s / w", flags)
    lines, figures = peft_lines(groups, ctx)
    text = " ".join(lines)
    assert "`lora` trains 5.00 %, needs 2.0×/5.0× less step memory than `deep_ft` at batch 1/64" in text
    assert "Memory ratio 5.0× at batch 64 (inside 3-10×)" in text and "within ±1 pp" in text
    assert "trains 0.51 % of the source's parameters" in text and "(within 2 pp)" in text  # (15−10)/(1000−10)
    assert figures and figures[0].stat().st_size > 5_000
    assert [(v.claim, v.outcome) for v in lines if hasattr(v, "claim")] == [("C57", "confirmed"), ("C58", "confirmed")]

    taught = {"scratch": rows(0.50, 1, 1, 300.0, 300.0), "knowledge_distillation": rows(0.52, 1, 1, 300.0, 300.0)}
    for r in taught["knowledge_distillation"]:
        r["metrics"].update({"transfer/teacher_acc": 0.8, "transfer/teacher_params": 600.0})
    ctx = FindingsContext(tmp_path / "d_w", "d / w", {"scratch": {}, "knowledge_distillation": {"teacher": True}})
    said = distillation_lines(taught, ctx)
    text = " ".join(said)
    assert "the student has 300 (0.50× the teacher)" in text and "2.0 ± 0.0 pp" in text and "(higher" in text
    assert [(v.claim, v.outcome) for v in said if hasattr(v, "claim")] == [("C59", "confirmed")]


def test_a_teacher_of_other_classes_is_a_config_error_before_anything_is_written(teacher_dir, monkeypatch, capsys):
    monkeypatch.chdir(teacher_dir)
    raw = copy.deepcopy(KD_STUDY)
    raw["transfer"]["ft"]["data"] = {**CNN_TEACHER["data"], "num_classes": 3}  # the teacher knows 4 classes
    raw["transfer"]["ft"]["techniques"] = ["knowledge_distillation"]
    write_params(teacher_dir / "params.yaml", raw)
    assert main(["run", "ft"]) == 2
    err = capsys.readouterr().err
    assert "transfer.ft" in err and "predicts 4 classes, the student 3" in err
    assert not (teacher_dir / "results" / "ft").exists()
