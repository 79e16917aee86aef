"""Dropout techniques: the expectations, rates and placements the chapter states, checked numerically."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from techbench.checks import bound_of, component
from techbench.techniques import FAMILIES
from techbench.techniques.dropout import (
    DROPOUT,
    ConcreteDropout,
    ScaledDropout,
    ZoneoutGRU,
    apply_dropout,
    learned_rates,
    mc_predict,
    module_penalties,
    stochastic_modules,
    widen_model_spec,
)
from techbench.workloads import build_model

SHAPE = (1, 40)
MLP = {"name": "mlp", "hidden": [32, 32], "activation": "relu", "dropout": 0.0}
CNN = {"name": "cnn1d", "channels": 25, "kernel": 5}
GRU = {"name": "gru", "hidden": 16}
N_TRAIN = 1000


def _model(spec: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(spec, SHAPE, 10)


def _apply(name: str, model: nn.Module, **hp) -> nn.Module:
    return apply_dropout({"name": name, **DROPOUT.get(name).defaults, **hp}, model, N_TRAIN)


def _modules(model: nn.Module, kind) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


# --- 1. expectations: inverted vs test-time scaling vs the chapter's literal formula ----------------------------


@pytest.mark.parametrize("p", [0.2, 0.6])
def test_inverted_and_test_time_scaling_keep_the_expected_activation(p):
    torch.manual_seed(0)
    n = 1_000_000
    x = torch.tensor([0.5, 1.0, 2.0, 3.0])
    batch = x.expand(n, -1)
    inv, tts = ScaledDropout(p, "inverted").train(), ScaledDropout(p, "test_time_scaling").train()
    assert torch.allclose(inv(batch).mean(0), x, rtol=5e-3)
    assert torch.allclose(tts(batch).mean(0), tts.eval()(x), rtol=5e-3)
    assert torch.allclose(tts(x), x * (1 - p))  # eval mode: scaled at test time
    # The chapter's formula read literally (keep with probability p, scale by 1/(1-p)) is biased by p/(1-p):
    literal = batch * torch.bernoulli(torch.full_like(batch, p)) / (1 - p)
    ratio = literal.mean(0) / x
    assert torch.allclose(ratio, torch.full_like(x, p / (1 - p)), rtol=1e-2)
    assert abs(p / (1 - p) - 1) > 0.3  # ... a real bias at these rates, not a rounding effect


# --- 2. rates and eval-mode determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["standard", "inverted", "test_time_scaling"])
def test_hidden_dropout_sits_after_each_activation_and_drops_p(name):
    p = 0.3
    model = _apply(name, _model(MLP), p=p)
    kinds = [type(m) for m in model]
    drop = nn.Dropout if name == "standard" else ScaledDropout
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, drop, nn.Linear, nn.ReLU, drop, nn.Linear]
    torch.manual_seed(1)
    out = model[3].train()(torch.ones(1000, 1000))
    assert abs((out == 0).float().mean().item() - p) < 5e-3


@pytest.mark.parametrize("name", ["standard", "inverted", "mc_dropout"])
def test_nothing_is_dropped_in_eval_mode(name):
    base = _model(MLP).eval()
    model = _apply(name, copy.deepcopy(base), p=0.5).eval()
    x = torch.randn(64, *SHAPE)
    with torch.no_grad():
        a, b = model(x), model(x)
        assert torch.equal(a, b)
        torch.testing.assert_close(a, base(x), rtol=0, atol=0)  # inverted scaling: eval is the plain network
        assert not torch.equal(model.train()(x), a)


def test_test_time_scaling_eval_scales_hidden_activations_by_keep_probability():
    p = 0.4
    model = _apply("test_time_scaling", _model(MLP), p=p).eval()
    x = torch.randn(8, *SHAPE)
    h = model[2](model[1](model[0](x)))
    torch.testing.assert_close(model[3](h), h * (1 - p))


def test_standard_input_dropout_wraps_and_zero_rates_insert_nothing():
    model = _apply("standard", _model(MLP), p=0.5, p_input=0.2)
    assert isinstance(model[0], nn.Dropout) and model[0].p == 0.2
    assert [type(m) for m in model[1]].count(nn.Dropout) == 2
    untouched = _apply("standard", _model(MLP), p=0.0, p_input=0.0)
    assert not _modules(untouched, nn.Dropout)
    gru = _apply("standard", _model(GRU), p=0.0, p_input=0.1)  # input dropout fits a model with no activations
    assert gru(torch.randn(4, *SHAPE)).shape == (4, 10)
    with pytest.raises(ValueError, match="standard"):
        _apply("standard", _model(GRU), p=0.5)


# --- 3. spatial, DropConnect, zoneout ------------------------------------------------------------------------------


def test_spatial_drops_whole_channels_after_each_convolution():
    p = 0.5
    model = _apply("spatial", _model(CNN), p=p).train()
    drops = _modules(model, nn.Dropout1d)
    assert len(drops) == 3 and all(isinstance(m, nn.Dropout1d) for m in model.features[2::3])
    seen = {}
    drops[0].register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0], out=out))
    torch.manual_seed(0)
    model(torch.randn(64, *SHAPE))
    dropped = (seen["out"] == 0).all(dim=-1)  # (B, C): the whole length is zero
    kept = torch.isclose(seen["out"], seen["inp"] / (1 - p)).all(dim=-1)
    assert (dropped | kept).all()
    assert abs(dropped.float().mean().item() - p) < 0.05
    with pytest.raises(ValueError, match="spatial"):
        _apply("spatial", _model(MLP))


def test_dropconnect_masks_weights_not_activations_and_spares_the_classifier():
    p = 0.3
    base = _model({**MLP, "hidden": [256, 256]})
    model = _apply("dropconnect", copy.deepcopy(base), p=p)
    linears = _modules(model, nn.Linear)
    assert [parametrize.is_parametrized(m, "weight") for m in linears] == [True, True, False]
    stored = [m.parametrizations.weight.original.detach().clone() for m in linears[:2]]
    model.train()
    torch.manual_seed(0)
    masked = [m.weight for m in linears[:2]]
    zeros = sum((w == 0).sum().item() for w in masked) / sum(w.numel() for w in masked)
    assert abs(zeros - p) < 0.01
    for w, orig, m in zip(masked, stored, linears[:2], strict=True):
        kept = w != 0
        torch.testing.assert_close(w[kept], orig[kept] / (1 - p))
        assert torch.equal(m.parametrizations.weight.original, orig)  # the stored weight is untouched
    # One mask per forward pass: identical examples get identical outputs within a batch.
    out = model(torch.randn(1, *SHAPE).expand(8, -1, -1))
    assert torch.allclose(out, out[:1].expand_as(out))
    model.eval()
    x = torch.randn(16, *SHAPE)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        torch.testing.assert_close(model(x), base(x))
    with pytest.raises(ValueError, match="dropconnect"):
        _apply("dropconnect", _model({"name": "logreg"}))


def _gru_reference(gru: nn.GRU, x: torch.Tensor, p: float) -> torch.Tensor:
    """Zoneout's eval recursion h_t = p·h_{t-1} + (1-p)·GRUCell(x_t, h_{t-1}), written out from the GRU's weights."""
    cell = nn.GRUCell(gru.input_size, gru.hidden_size)
    cell.load_state_dict({k[:-3]: v for k, v in gru.state_dict().items()})  # weight_ih_l0 -> weight_ih
    h = torch.zeros(x.shape[0], gru.hidden_size)
    for t in range(x.shape[1]):
        h = p * h + (1 - p) * cell(x[:, t], h)
    return h


def test_zoneout_eval_follows_the_formula_and_p0_is_the_plain_gru():
    base = _model(GRU)
    x = torch.randn(8, *SHAPE)
    seq = x.transpose(1, 2)
    with torch.no_grad():
        p = 0.3
        model = _apply("zoneout", copy.deepcopy(base), p=p).eval()
        assert isinstance(model.gru, ZoneoutGRU)
        _, h = model.gru(seq)
        assert h.shape == (1, 8, 16)
        torch.testing.assert_close(h[0], _gru_reference(base.gru, seq, p), rtol=0, atol=1e-5)
        plain = _apply("zoneout", copy.deepcopy(base), p=0.0)
        for mode in (True, False):
            out, h0 = plain.gru.train(mode)(seq)
            ref_out, ref_h = base.gru(seq)
            torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
            torch.testing.assert_close(h0, ref_h, rtol=0, atol=1e-5)
            torch.testing.assert_close(plain(x), base(x), rtol=0, atol=1e-5)


def test_zoneout_keeps_about_p_of_the_hidden_units_in_training():
    p = 0.3
    torch.manual_seed(0)
    gru = ZoneoutGRU(nn.GRU(1, 16, batch_first=True), p).train()
    with torch.no_grad():
        out, _ = gru(torch.randn(64, 40, 1))
    kept = (out[:, 1:] == out[:, :-1]).float().mean().item()
    assert abs(kept - p) < 0.02
    with pytest.raises(ValueError, match="zoneout"):
        _apply("zoneout", _model(MLP))


# --- 4. width ------------------------------------------------------------------------------------------------------


def test_widen_model_spec_scales_width_by_one_over_keep_probability():
    mlp = {"name": "mlp", "hidden": [100, 50], "activation": "relu", "dropout": 0.0}
    assert widen_model_spec(mlp, 0.5)["hidden"] == [200, 100]
    assert mlp["hidden"] == [100, 50]  # a copy
    assert widen_model_spec(mlp, 0.3)["hidden"] == [143, 71]  # 100/0.7 = 142.9, 50/0.7 = 71.4
    assert widen_model_spec(CNN, 0.5)["channels"] == 50
    assert widen_model_spec(GRU, 0.2)["hidden"] == 20
    with pytest.raises(ValueError, match="logreg"):
        widen_model_spec({"name": "logreg"}, 0.5)
    config = {"model": mlp, "dropout": {"name": "width_scaled", "p": 0.5}}
    assert model_spec_for(config)["hidden"] == [200, 100]
    assert model_spec_for({"model": mlp, "dropout": {"name": "standard", "p": 0.5, "p_input": 0.0}}) == mlp
    assert DROPOUT.get("width_scaled").info.widen and DROPOUT.get("mc_dropout").info.mc


# --- 5. concrete dropout -----------------------------------------------------------------------------------------


def test_concrete_dropout_starts_at_init_p_and_its_penalty_is_the_papers():
    model = _apply("concrete", _model(MLP), init_p=0.1, weight_reg=1e-3, dropout_reg=0.0)
    layers = _modules(model, ConcreteDropout)
    assert [type(m) for m in model][3] is ConcreteDropout and len(layers) == 2
    assert learned_rates(model) == pytest.approx({"layer0": 0.1, "layer1": 0.1})
    assert learned_rates(_model(MLP)) == {}
    layer = layers[0]
    assert layer.dropout_reg == pytest.approx(2 / N_TRAIN)  # 0.0 resolves to 2/N
    pen = layer.penalty()
    assert pen.dim() == 0
    p, k, w2 = 0.1, 32, layer.layer.weight.detach().pow(2).sum().item()
    expected = 1e-3 * w2 / (1 - p) + 2 / N_TRAIN * k * (
        p * torch.log(torch.tensor(p)) + (1 - p) * torch.log(torch.tensor(1 - p))
    )
    assert pen.item() == pytest.approx(expected.item(), rel=1e-5)
    pen.backward()
    assert layer.p_logit.grad is not None and layer.p_logit.grad.abs().item() > 0
    total = module_penalties(model)
    assert total.item() == pytest.approx(sum(m.penalty().item() for m in layers), rel=1e-6)
    assert module_penalties(_model(MLP)) is None
    with pytest.raises(ValueError, match="concrete"):
        _apply("concrete", _model(GRU))


def test_concrete_rate_moves_to_one_half_under_the_entropy_term_alone():
    model = _apply("concrete", _model(MLP), init_p=0.1, weight_reg=0.0)
    opt = torch.optim.Adam([m.p_logit for m in _modules(model, ConcreteDropout)], lr=0.05)
    distances = [abs(0.1 - 0.5)]
    for _ in range(150):
        opt.zero_grad()
        module_penalties(model).backward()
        opt.step()
        distances.append(max(abs(p - 0.5) for p in learned_rates(model).values()))
    assert distances[50] < distances[0]  # moving towards ½ ...
    assert distances[-1] < 0.05  # ... and reaching it


def test_concrete_is_plain_in_eval_and_stochastic_in_training():
    base = _model(MLP)
    model = _apply("concrete", copy.deepcopy(base), init_p=0.3)
    x = torch.randn(16, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), base(x))
        assert not torch.equal(model.train()(x), model(x))


# --- 6. MC dropout -----------------------------------------------------------------------------------------------


def test_mc_predict_averages_stochastic_passes_and_restores_modes():
    torch.manual_seed(0)
    model = _apply("mc_dropout", _model(MLP), p=0.5)
    x = torch.randn(50, *SHAPE)
    model.eval()
    probs = mc_predict(model, x, samples=20, chunk=16)
    assert probs.shape == (50, 10) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(50))
    assert not torch.equal(mc_predict(model, x, samples=1), mc_predict(model, x, samples=1))
    assert not any(m.training for m in model.modules())
    model.train()
    mc_predict(model, x, samples=2)
    assert all(m.training for m in model.modules())
    plain = _model(MLP).eval()
    torch.testing.assert_close(mc_predict(plain, x, samples=3, chunk=7), F.softmax(plain(x), -1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", [e.name for e in DROPOUT if e.info.modules and e.info.needs is None])
def test_mc_predict_turns_on_every_dropout_kind(name):
    """Every module type an entry declares is kept stochastic by MC prediction."""
    torch.manual_seed(0)
    model = _apply(name, _model(MLP)).eval()
    x = torch.randn(20, *SHAPE)
    stochastic = stochastic_modules()
    assert not torch.equal(mc_predict(model, x, 1, stochastic), mc_predict(model, x, 1, stochastic))
    assert not any(m.training for m in model.modules())


# --- 7. every entry ------------------------------------------------------------------------------------------------


def _model_for(name: str) -> dict:
    """A model the variant fits, from what its entry says it needs."""
    return {None: MLP, "conv": CNN, "gru": GRU}[DROPOUT.get(name).info.needs]


def model_spec_for(config: dict) -> dict:
    """The model spec a run with this dropout component builds (the dropout family's resolve hook)."""
    return FAMILIES["dropout"].resolve(config["dropout"], config, N_TRAIN)["model"]


@pytest.mark.parametrize("name", DROPOUT.names())
def test_every_entry_trains_a_step_with_finite_gradients(name):
    spec = {"name": name, **DROPOUT.get(name).defaults}
    model = _apply(name, _model(model_spec_for({"model": _model_for(name), "dropout": spec}))).train()
    torch.manual_seed(1)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    out = model(x)
    assert out.shape == (8, 10)
    loss = F.cross_entropy(out, y)
    penalty = module_penalties(model)
    (loss if penalty is None else loss + penalty).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", DROPOUT.names())
def test_every_entry_has_checked_defaults_and_a_well_formed_search_space(name):
    entry = DROPOUT.get(name)
    assert entry.description
    assert component("dropout", DROPOUT, {"name": name, **entry.defaults})["name"] == name  # defaults in bounds
    if entry.defaults:
        assert entry.search_space
    for hp, dim in entry.search_space.items():
        assert hp in entry.defaults and dim["low"] < dim["high"]
        bound = bound_of(entry, hp)
        assert bound is not None, f"{name}.{hp}: tunable without a range (give the entry `bounds=`)"
        assert bound[0] is None or dim["low"] >= bound[0]


def test_inverted_is_the_same_computation_as_standard_bit_for_bit(raw_params):
    """`inverted` writes out x·m/(1−p) by hand; torch's nn.Dropout (`standard`) computes the same, drawing the
    same mask: the two are one technique, so the default dropout study runs only `standard`."""
    from techbench.config import parse_params
    from techbench.training.single import train_single

    block = {**raw_params["studies"]["optimizers"], "family": "dropout", "techniques": ["standard", "inverted"]}
    block.update(
        base={"optimizer": {"name": "adam"}}, technique_params={"standard": {"p": 0.3}, "inverted": {"p": 0.3}}
    )
    spec = parse_params({"studies": {"d": block}}).studies["d"]
    a, b = (train_single(spec.run(t), 0) for t in ("standard", "inverted"))
    assert a.histories["train/loss"] == b.histories["train/loss"]
    assert a.metrics["test/loss"] == b.metrics["test/loss"] and a.metrics["test/acc"] == b.metrics["test/acc"]
