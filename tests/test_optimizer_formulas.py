"""Each optimizer's first updates equal the chapter's (or the method paper's) update rule, computed here by hand.

f(θ) = ½ Σ a_i θ_i² has gradient g = a ⊙ θ, so every step can be written out exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from techbench.techniques import OPTIMIZERS
from techbench.techniques.optimizers import build_optimizer

A = torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64)
THETA0 = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)


def grad(theta):
    return A * theta


def run(name: str, steps: int, **hp) -> list[torch.Tensor]:
    p = nn.Parameter(THETA0.clone())
    model = nn.Module()
    model.p = p
    opt = build_optimizer({"name": name, **{**OPTIMIZERS.get(name).defaults, **hp}}, model)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (A * p * p).sum()).backward()
        opt.step()
        out.append(p.detach().clone())
    return out


def test_sgd_is_theta_minus_lr_grad():
    lr = 0.05
    t1, t2 = run("sgd", 2, lr=lr)
    e1 = THETA0 - lr * grad(THETA0)
    torch.testing.assert_close(t1, e1)
    torch.testing.assert_close(t2, e1 - lr * grad(e1))


def test_momentum_matches_velocity_form():
    lr, gamma = 0.05, 0.9
    t1, t2 = run("momentum", 2, lr=lr, momentum=gamma)
    v1 = lr * grad(THETA0)  # v_1 = γ·0 + η g_1
    e1 = THETA0 - v1
    v2 = gamma * v1 + lr * grad(e1)
    torch.testing.assert_close(t1, e1)
    torch.testing.assert_close(t2, e1 - v2)


def test_nesterov_evaluates_the_gradient_at_the_look_ahead_point():
    # The chapter's form: v_t = γ v_{t-1} + η ∇J(θ_{t-1} − γ v_{t-1}); θ_t = θ_{t-1} − v_t.
    # torch uses the equivalent reparametrization in terms of the look-ahead point; for a quadratic
    # both give the same iterates of φ_t = θ_t − γ v_t, so compare torch's θ with the chapter's φ.
    lr, gamma = 0.05, 0.9
    t1, t2, t3 = run("nesterov", 3, lr=lr, momentum=gamma)
    theta, v = THETA0.clone(), torch.zeros(3, dtype=torch.float64)
    phis = []
    for _ in range(3):
        v = gamma * v + lr * grad(theta - gamma * v)
        theta = theta - v
        phis.append(theta - gamma * v)
    for got, want in zip((t1, t2, t3), phis, strict=True):
        torch.testing.assert_close(got, want)


def test_adagrad_accumulates_squared_gradients():
    lr, eps = 0.1, 1e-8
    t1, t2 = run("adagrad", 2, lr=lr, eps=eps)
    g1 = grad(THETA0)
    G1 = g1**2
    e1 = THETA0 - lr * g1 / torch.sqrt(G1 + eps)
    g2 = grad(e1)
    e2 = e1 - lr * g2 / torch.sqrt(G1 + g2**2 + eps)
    torch.testing.assert_close(t1, e1)
    torch.testing.assert_close(t2, e2)


def test_rmsprop_uses_a_moving_average():
    lr, beta, eps = 0.01, 0.9, 1e-8
    t1, t2 = run("rmsprop", 2, lr=lr, beta=beta, eps=eps)
    g1 = grad(THETA0)
    G1 = (1 - beta) * g1**2
    e1 = THETA0 - lr * g1 / torch.sqrt(G1 + eps)
    g2 = grad(e1)
    G2 = beta * G1 + (1 - beta) * g2**2
    torch.testing.assert_close(t1, e1)
    torch.testing.assert_close(t2, e1 - lr * g2 / torch.sqrt(G2 + eps))


def _adam_steps(lr, b1, b2, eps, wd, steps):
    theta, m, v, out = THETA0.clone(), 0.0, 0.0, []
    for t in range(1, steps + 1):
        g = grad(theta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        theta = theta - lr * m_hat / (torch.sqrt(v_hat) + eps) - lr * wd * theta
        out.append(theta)
    return out


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_and_adamw_bias_corrected_moments(name):
    d = OPTIMIZERS.get(name).defaults
    wd = d.get("weight_decay", 0.0)
    got = run(name, 3, lr=0.01)
    want = _adam_steps(0.01, d["beta1"], d["beta2"], d["eps"], wd, 3)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    # The first Adam step moves every coordinate by ≈ lr whatever its gradient's scale.
    if name == "adam":
        assert torch.allclose((THETA0 - got[0]).abs(), torch.full((3,), 0.01, dtype=torch.float64), rtol=1e-6)


def test_chapter_defaults():
    assert OPTIMIZERS.get("momentum").defaults["momentum"] == 0.9
    adam = OPTIMIZERS.get("adam").defaults
    assert (adam["beta1"], adam["beta2"], adam["eps"]) == (0.9, 0.999, 1e-8)
    assert math.isclose(OPTIMIZERS.get("adam").defaults["lr"], 1e-3)


def _radam_steps(lr, b1, b2, eps, steps, threshold):
    rho_inf = 2 / (1 - b2) - 1
    theta, m, v, out = THETA0.clone(), 0.0, 0.0, []
    for t in range(1, steps + 1):
        g = grad(theta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t > threshold:
            r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            # torch adds ε to √v before the bias correction: l_t = √(1 − β2^t) / (√v_t + ε).
            theta = theta - lr * r_t * m_hat * math.sqrt(1 - b2**t) / (torch.sqrt(v) + eps)
        else:
            theta = theta - lr * m_hat
        out.append(theta)
    return out


def test_radam_is_unadapted_momentum_until_rho_exceeds_5_then_rectified():
    """Liu et al. 2020, Alg. 2: ρ_∞ = 2/(1−β2) − 1, ρ_t = ρ_∞ − 2tβ2^t/(1−β2^t); if the variance of the adaptive
    rate is tractable, θ ← θ − η r_t m̂_t l_t with r_t = √((ρ_t−4)(ρ_t−2)ρ_∞ / ((ρ_∞−4)(ρ_∞−2)ρ_t)), otherwise
    θ ← θ − η m̂_t. The paper's test is ρ_t > 4, torch's (and the authors' code's) ρ_t > 5: at β2 = 0.999 the
    first 5 steps are un-adapted (ρ_5 = 4.996, which the paper would already rectify), steps 6+ rectified."""
    d = OPTIMIZERS.get("radam").defaults
    got = run("radam", 7, lr=0.01)
    want = _radam_steps(0.01, d["beta1"], d["beta2"], d["eps"], 7, threshold=5.0)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    # Step 1 is θ − η m̂_1 = θ − η g: plain gradient descent, not Adam's sign-like step.
    torch.testing.assert_close(got[0], THETA0 - 0.01 * grad(THETA0))


def test_lookahead_pulls_slow_weights_every_k_steps_and_resets_fast_weights():
    """Zhang et al. 2019: k fast Adam steps θ_1..θ_k from φ, then φ ← φ + α(θ_k − φ) and θ ← φ; Adam's
    moments carry on across the reset."""
    lr, k, alpha = 0.01, 3, 0.5
    d = OPTIMIZERS.get("lookahead").defaults
    b1, b2, eps = d["beta1"], d["beta2"], d["eps"]
    got = run("lookahead", 2 * k, lr=lr, k=k, alpha=alpha)
    theta, slow, m, v, want = THETA0.clone(), THETA0.clone(), 0.0, 0.0, []
    for t in range(1, 2 * k + 1):
        g = grad(theta)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        theta = theta - lr * (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps)
        if t % k == 0:
            slow = slow + alpha * (theta - slow)
            theta = slow.clone()
        want.append(theta)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_lookahead_behaves_as_a_torch_optimizer():
    """Step hooks fire, an lr scheduler drives it, zero_grad clears, state is the inner optimizer's, and a
    state_dict round trip restores moments and the lookahead counter."""
    model = nn.Linear(3, 2)
    opt = build_optimizer({"name": "lookahead", **OPTIMIZERS.get("lookahead").defaults}, model)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append("pre"))
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
        sched.step()
    assert calls == ["pre"] * 5
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**5)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert {"exp_avg", "lookahead_slow_buff"} <= set(opt.state[model.weight])
    fresh = build_optimizer({"name": "lookahead", **OPTIMIZERS.get("lookahead").defaults}, model)
    fresh.load_state_dict(opt.state_dict())
    torch.testing.assert_close(fresh.state[model.weight]["exp_avg"], opt.state[model.weight]["exp_avg"])
    assert fresh.param_groups[0]["lookahead_step"] == 5


def _two_tensor_step(name, **hp):
    """One step on f = ½Σ a θ² + ½‖W‖² for a vector θ and a matrix W: two tensors, two trust ratios."""
    model = nn.Module()
    model.p = nn.Parameter(THETA0.clone())
    model.w = nn.Parameter(torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64))
    opt = build_optimizer({"name": name, **{**OPTIMIZERS.get(name).defaults, **hp}}, model)
    opt.zero_grad()
    (0.5 * (A * model.p**2).sum() + 0.5 * (model.w**2).sum()).backward()
    w0, gw = model.w.detach().clone(), model.w.grad.clone()
    opt.step()
    return (model.p.detach(), THETA0, grad(THETA0)), (model.w.detach(), w0, gw)


@pytest.mark.parametrize("weight_decay", [0.01, 0.0])
def test_lamb_first_step_is_the_layerwise_trust_ratio_update(weight_decay):
    """You et al. 2020 (LAMB), Alg. 2 with φ = identity: r = m̂/(√v̂ + ε), u = r + λθ,
    θ ← θ − η ‖θ‖/‖u‖ · u, per tensor. At t = 1, m̂ = g and v̂ = g². timm deviates only where configured off
    (global grad-norm clipping) and skips the ratio at weight_decay = 0 unless always_adapt, which we set."""
    lr, eps = 0.01, OPTIMIZERS.get("lamb").defaults["eps"]
    for got, theta0, g in _two_tensor_step("lamb", lr=lr, weight_decay=weight_decay):
        u = g / (g.abs() + eps) + weight_decay * theta0
        torch.testing.assert_close(got, theta0 - lr * theta0.norm() / u.norm() * u)


@pytest.mark.parametrize("weight_decay", [5e-4, 0.0])
def test_lars_steps_are_the_local_lr_momentum_update(weight_decay):
    """You et al. 2017 (LARS), Alg. 1: λ = η_tc ‖θ‖/(‖g‖ + β‖θ‖), v ← μv + γλ(g + βθ), θ ← θ − v. timm keeps γ
    outside the buffer (v ← μv + λ(g + βθ), θ ← θ − γv: the same iterates for constant γ), adds ε = 1e-8 to the
    denominator and only adapts at weight_decay = 0 with always_adapt, which we set."""
    lr, mu, tc = 0.5, 0.9, 0.001

    def ratio(theta, g):
        return tc * theta.norm() / (g.norm() + weight_decay * theta.norm() + 1e-8)

    p = nn.Parameter(THETA0.clone())
    model = nn.Module()
    model.p = p
    opt = build_optimizer(
        {"name": "lars", "lr": lr, "momentum": mu, "trust_coeff": tc, "weight_decay": weight_decay}, model
    )
    got = []
    for _ in range(2):
        opt.zero_grad()
        (0.5 * (A * p * p).sum()).backward()
        opt.step()
        got.append(p.detach().clone())
    g1 = grad(THETA0)
    v1 = ratio(THETA0, g1) * (g1 + weight_decay * THETA0)
    e1 = THETA0 - lr * v1
    g2 = grad(e1)
    v2 = mu * v1 + ratio(e1, g2) * (g2 + weight_decay * e1)
    torch.testing.assert_close(got[0], e1)
    torch.testing.assert_close(got[1], e1 - lr * v2)
    # Per tensor: a second tensor gets its own ratio (first step, no momentum history yet).
    for got_t, theta0, g in _two_tensor_step("lars", lr=lr, weight_decay=weight_decay):
        torch.testing.assert_close(got_t, theta0 - lr * ratio(theta0, g) * (g + weight_decay * theta0))


def test_lbfgs_reaches_the_least_squares_minimum():
    torch.manual_seed(0)
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randn(30, dtype=torch.float64)
    model = nn.Linear(5, 1, bias=False).double()
    opt = build_optimizer({"name": "lbfgs", **OPTIMIZERS.get("lbfgs").defaults}, model)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (model(x).squeeze(1) - y).pow(2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    exact = torch.linalg.solve(x.T @ x, x.T @ y)  # normal equations
    torch.testing.assert_close(model.weight.detach().squeeze(0), exact, atol=1e-6, rtol=0)


def _gc_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)).double()


def _gc_loss(model):
    torch.manual_seed(1)
    x, y = torch.randn(5, 1, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    return nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("how", ["no_closure", "closure_kw", "closure_positional"])
def test_sgd_gc_subtracts_the_per_output_mean_of_weight_gradients(how):
    """Yong et al. 2020: for W with dim > 1, g ← g − mean(g over dims ≠ 0); 1-D parameters (biases) untouched.
    With a closure the backward pass happens inside step (Lightning's automatic optimization), so the
    gradients must be centralized after the closure, not before step."""
    lr = 0.1
    model = _gc_model()
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = dict(zip(theta0, torch.autograd.grad(_gc_loss(model), list(model.parameters())), strict=True))
    opt = build_optimizer({"name": "sgd+gc", "lr": lr}, model)

    def closure():
        opt.zero_grad()
        loss = _gc_loss(model)
        loss.backward()
        return loss

    if how == "no_closure":
        closure()
        opt.step()
    elif how == "closure_kw":
        opt.step(closure=closure)
    else:
        opt.step(closure)
    for n, p in model.named_parameters():
        g = grads[n]
        if g.dim() > 1:
            g = g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
        torch.testing.assert_close(p.detach(), theta0[n] - lr * g)


def test_gc_variants_exist_for_first_order_optimizers_only():
    bases = [n for n in OPTIMIZERS.names() if "+" not in n]
    gc = {n for n in OPTIMIZERS.names() if n.endswith("+gc")}
    assert gc == {f"{b}+gc" for b in bases if b not in ("lbfgs", "newton")}
    for name in gc:
        entry, base = OPTIMIZERS.get(name), OPTIMIZERS.get(name.removesuffix("+gc"))
        assert entry.info.modifier == "gc" and entry.info.base == base.name
        assert entry.defaults == base.defaults and entry.search_space == base.search_space
        assert entry.description == f"{base.description} + gradient centralization"


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS.names() if n.endswith("+gc")])
def test_every_gc_variant_centralizes_weight_gradients_and_leaves_biases(name):
    model = _gc_model()
    opt = build_optimizer({"name": name, **OPTIMIZERS.get(name).defaults}, model)
    opt.zero_grad()
    _gc_loss(model).backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():
        if p.dim() > 1:
            assert p.grad.mean(dim=tuple(range(1, p.dim()))).abs().max() < 1e-12, n
        else:
            assert torch.equal(p.grad, raw[n]), n


def _newton_step(model, loss_fn, **hp):
    opt = build_optimizer({"name": "newton", **{**OPTIMIZERS.get("newton").defaults, **hp}}, model)
    opt.zero_grad()
    return opt, opt.step(closure=loss_fn)


def test_newton_lands_on_the_minimum_of_a_quadratic_in_one_step():
    """f(θ) = ½θᵀAθ − bᵀθ has ∇f = Aθ − b and H = A, so θ − H⁻¹∇f = A⁻¹b from anywhere."""
    torch.manual_seed(0)
    m = torch.randn(6, 6, dtype=torch.float64)
    a, b = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    model = nn.Module()
    model.p = nn.Parameter(torch.randn(6, dtype=torch.float64))
    _newton_step(model, lambda: 0.5 * model.p @ a @ model.p - b @ model.p, lr=1.0, damping=0.0)
    torch.testing.assert_close(model.p.detach(), torch.linalg.solve(a, b), atol=1e-6, rtol=0)


def test_newton_on_singular_curvature_takes_the_minimum_norm_step():
    """A = diag(1, 0), damping 0: singular, so the least-squares (pseudo-inverse) direction is used, which
    leaves the flat coordinate where it is and solves the curved one."""
    a, b = torch.diag(torch.tensor([1.0, 0.0], dtype=torch.float64)), torch.tensor([2.0, 0.0], dtype=torch.float64)
    model = nn.Module()
    model.p = nn.Parameter(torch.tensor([-1.0, 3.0], dtype=torch.float64))
    _newton_step(model, lambda: 0.5 * model.p @ a @ model.p - b @ model.p, lr=1.0, damping=0.0)
    torch.testing.assert_close(model.p.detach(), torch.tensor([2.0, 3.0], dtype=torch.float64))


def test_newton_step_on_logistic_regression_is_the_damped_newton_step():
    """θ₁ = θ₀ − lr·(H + λI)⁻¹g for softmax regression nn.Linear(40, 10) (410 parameters, the MNIST-1D
    workload), with H from torch.autograd.functional.hessian of the flattened-parameter loss."""
    torch.manual_seed(0)
    x, y = torch.randn(200, 40, dtype=torch.float64), torch.randint(0, 10, (200,))
    model = nn.Linear(40, 10).double()
    theta0 = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])

    def loss_of(theta):
        return nn.functional.cross_entropy(x @ theta[:400].view(10, 40).T + theta[400:], y)

    h = torch.autograd.functional.hessian(loss_of, theta0)
    t = theta0.clone().requires_grad_()
    g = torch.autograd.grad(loss_of(t), t)[0]
    lr, damping = 0.8, OPTIMIZERS.get("newton").defaults["damping"]
    _, loss = _newton_step(model, lambda: nn.functional.cross_entropy(model(x), y), lr=lr)
    want = theta0 - lr * torch.linalg.solve(h + damping * torch.eye(410, dtype=torch.float64), g)
    got = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])
    torch.testing.assert_close(got, want)
    # p.grad holds the gradient at θ₀ and the returned loss is the detached loss at θ₀.
    torch.testing.assert_close(torch.cat([model.weight.grad.reshape(-1), model.bias.grad]), g)
    assert not loss.requires_grad and loss.item() == pytest.approx(loss_of(theta0).item())
    assert nn.functional.cross_entropy(model(x), y) < loss


def test_newton_rejects_models_over_max_params():
    limit = OPTIMIZERS.get("newton").info.max_params
    assert limit == 5000
    with pytest.raises(ValueError, match=r"6060.*5000"):
        build_optimizer({"name": "newton", **OPTIMIZERS.get("newton").defaults}, nn.Linear(100, 60))
    build_optimizer({"name": "newton", **OPTIMIZERS.get("newton").defaults}, nn.Linear(40, 10))


def test_newton_needs_the_loss_graph():
    model = nn.Linear(2, 1)
    opt = build_optimizer({"name": "newton", **OPTIMIZERS.get("newton").defaults}, model)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="graph"):
        opt.step(closure=lambda: model(torch.ones(1, 2)).sum().detach())


def test_newton_on_a_non_finite_loss_steps_to_nan_instead_of_raising():
    model = nn.Linear(2, 1)
    _newton_step(model, lambda: model(torch.ones(1, 2)).sum() * float("nan"))
    assert torch.isnan(model.weight).all()
