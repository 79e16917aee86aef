"""Each optimizer's first updates equal the chapter's update rule, computed here by hand.

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
