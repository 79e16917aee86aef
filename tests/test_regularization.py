"""Weight penalties against the chapter's formulas (J + λ/2m·Σw², J + λ/m·Σ|w|, shrink by 1 − αλ/m), and
their effect on real training runs (sparsity, weight norm)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from techbench.checks import component
from techbench.techniques.regularization import (
    REGULARIZERS,
    build_regularizer,
    geometric,
    weight_params,
    weight_stats,
    weighted_layers,
)
from techbench.workloads import build_model

M = 200  # training-set size m of the formulas


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model({"name": "mlp", "hidden": [8], "activation": "tanh", "dropout": 0.0}, (1, 6), 3)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 1, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def _grads(model, reg=None):
    x, y = _batch()
    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    if reg is not None and reg.penalty is not None:
        loss = loss + reg.penalty(model)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def _spec(name, **hp):
    return component("regularizer", REGULARIZERS, {"name": name, **hp})


def test_l2_gradient_is_data_gradient_plus_lambda_over_m_w():
    lam = 3.0
    model = _model()
    plain = _grads(model)
    reg = _grads(model, build_regularizer(_spec("l2", lam=lam), model, M))
    for p, g0, g in zip(model.parameters(), plain, reg, strict=True):
        torch.testing.assert_close(g, g0 + lam / M * p.detach(), rtol=0, atol=1e-7)


def test_l2_no_bias_leaves_bias_gradients_alone():
    model = _model()
    plain = _grads(model)
    reg = _grads(model, build_regularizer(_spec("l2_no_bias", lam=3.0), model, M))
    for p, g0, g in zip(model.parameters(), plain, reg, strict=True):
        expected = g0 + 3.0 / M * p.detach() if p.dim() > 1 else g0
        torch.testing.assert_close(g, expected, rtol=0, atol=1e-7)


def test_l1_gradient_term_is_lambda_over_m_sign_w():
    lam = 2.0
    model = _model()
    plain = _grads(model)
    reg = _grads(model, build_regularizer(_spec("l1", lam=lam), model, M))
    for p, g0, g in zip(model.parameters(), plain, reg, strict=True):
        term = lam / M * torch.sign(p.detach()) if p.dim() > 1 else torch.zeros_like(p)
        torch.testing.assert_close(g - g0, term, rtol=0, atol=1e-7)


def test_elastic_net_is_the_weighted_sum_of_l1_and_l2():
    model = _model()
    en = build_regularizer(_spec("elastic_net", lam=2.0, l1_ratio=0.3), model, M).penalty(model)
    w = torch.cat([p.flatten() for p in weight_params(model, include_bias=False)])
    expected = 2.0 / M * (0.3 * w.abs().sum() + 0.7 / 2 * w.pow(2).sum())
    torch.testing.assert_close(en, expected)


def test_coupled_l2_under_sgd_shrinks_by_one_minus_alpha_lambda_over_m():
    alpha, lam = 0.1, 5.0
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    data_grads = _grads(copy.deepcopy(model))
    reg = build_regularizer(_spec("l2", lam=lam), model, M)
    opt = torch.optim.SGD(model.parameters(), lr=alpha)
    _grads(model, reg)
    opt.step()
    for p, w0, g in zip(model.parameters(), before, data_grads, strict=True):
        torch.testing.assert_close(p.detach(), (1 - alpha * lam / M) * w0 - alpha * g, rtol=0, atol=1e-7)


def test_decoupled_decay_equals_coupled_l2_under_sgd_but_not_under_adam(tmp_path):
    """Through the real training module and a Lightning Trainer: weight_decay and l2_no_bias make identical
    updates with plain SGD; with Adam the coupled penalty is rescaled by the preconditioner and they differ."""
    from techbench.config import load_params

    def final_weights(optimizer: str, regularizer: str):
        params = load_params(_params_file(tmp_path, optimizer, regularizer))
        cfg = params.study("reg").run(regularizer)
        torch.manual_seed(0)
        return _trained_weights(cfg)

    sgd_l2, sgd_wd = final_weights("sgd", "l2_no_bias"), final_weights("sgd", "weight_decay")
    for a, b in zip(sgd_l2, sgd_wd, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    adam_l2, adam_wd = final_weights("adam", "l2_no_bias"), final_weights("adam", "weight_decay")
    assert max(float((a - b).abs().max()) for a, b in zip(adam_l2, adam_wd, strict=True)) > 1e-4


def _params_file(tmp_path, optimizer: str, technique: str):
    import yaml

    path = tmp_path / f"{optimizer}_{technique}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "studies": {
                    "reg": {
                        "family": "regularizer",
                        "techniques": [technique],
                        "seeds": 1,
                        "data": {"name": "debug"},
                        "model": {"name": "mlp", "hidden": [16]},
                        "train": {"epochs": 3, "batch_size": 32},
                        "base": {"optimizer": {"name": optimizer, "lr": 0.05}},
                        "technique_params": {technique: {"lam": 50.0}},
                    }
                }
            }
        )
    )
    return path


def _trained_weights(cfg):
    from techbench.training.single import train_single

    return [p.detach().clone() for p in train_single(cfg, seed=0).model.parameters()]


def test_l1_proximal_reaches_exact_zeros_that_subgradient_l1_and_l2_do_not(tmp_path):
    from techbench.config import load_params

    stats = {}
    for technique in ("l2", "l1", "l1_proximal"):
        cfg = load_params(_params_file(tmp_path, "sgd", technique)).study("reg").run(technique)
        model = build_model(cfg.model, (1, 16), 4)
        model.load_state_dict(dict(zip(model.state_dict(), _trained_weights(cfg), strict=True)))
        stats[technique] = weight_stats(model)
    assert stats["l1_proximal"]["weights/zero_frac"] > 0.2
    assert stats["l1_proximal"]["weights/zero_frac"] > 10 * max(stats["l2"]["weights/zero_frac"], 1e-3)
    assert stats["l1"]["weights/near_zero_frac"] > stats["l2"]["weights/near_zero_frac"]


def test_layerwise_strengths_are_geometric_from_first_to_last_layer():
    model = build_model({"name": "mlp", "hidden": [8, 8], "activation": "relu", "dropout": 0.0}, (1, 6), 3)
    lams = geometric(0.01, 1.0, len(weighted_layers(model)))
    assert lams == pytest.approx([0.01, 0.1, 1.0])
    reg = build_regularizer(_spec("l2_layerwise", lam_first=0.01, lam_last=1.0), model, M)
    expected = sum(
        lam / (2 * M) * layer.weight.pow(2).sum() for lam, layer in zip(lams, weighted_layers(model), strict=True)
    )
    torch.testing.assert_close(reg.penalty(model), expected)


def test_weight_stats_counts_exact_and_near_zeros_of_weights_only():
    model = _model()
    with torch.no_grad():
        w = model[1].weight
        w.zero_()
        w[0, :3] = torch.tensor([1e-4, 0.5, -2.0])
        model[1].bias.zero_()  # biases are not counted
    total = sum(p.numel() for p in weight_params(model, include_bias=False))
    stats = weight_stats(model)
    zeros = w.numel() - 3 + int((model[3].weight == 0).sum())
    assert stats["weights/zero_frac"] == pytest.approx(zeros / total)
    assert stats["weights/near_zero_frac"] == pytest.approx((zeros + 1) / total)


@pytest.mark.parametrize("name", REGULARIZERS.names())
def test_every_regularizer_builds_and_declares_its_search_space(name):
    model = _model()
    spec = _spec(name)
    reg = build_regularizer(spec, model, M)
    hp = set(spec) - {"name"}
    assert set(REGULARIZERS.get(name).search_space) == hp
    if reg.penalty is not None:
        assert reg.penalty(model).dim() == 0


def test_layerwise_rejects_one_zero_endpoint():
    from techbench.errors import ConfigError

    with pytest.raises(ConfigError, match="lam_first"):
        _spec("l2_layerwise", lam_first=0.0, lam_last=1.0)


def test_proximal_step_soft_thresholds_by_lr_lambda_over_m():
    """The proximal step is w ← sign(w)·max(|w| − α·λ/m, 0) with the current learning rate α and no
    preconditioning: the training module applies it after any optimizer's step (AdamW's convention for terms
    outside the gradient). Biases are left alone."""
    model, lam, lr = _model(), 40.0, 0.5
    reg = build_regularizer(_spec("l1_proximal", lam=lam), model, M)
    before = [p.detach().clone() for p in weight_params(model, include_bias=False)]
    biases = [p.detach().clone() for n, p in model.named_parameters() if n.endswith("bias")]
    reg.prox_(lr)
    threshold = lr * lam / M
    for w0, w1 in zip(before, weight_params(model, include_bias=False), strict=True):
        torch.testing.assert_close(w1, torch.sign(w0) * (w0.abs() - threshold).clamp_min(0))
        assert int((w1 == 0).sum()) == int((w0.abs() <= threshold).sum())
    for b0, (n, b1) in zip(biases, [(n, p) for n, p in model.named_parameters() if n.endswith("bias")], strict=True):
        assert torch.equal(b0, b1), n
