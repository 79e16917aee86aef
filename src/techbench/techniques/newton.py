"""Newton's method with the exact Hessian, θ ← θ − η (H + λI)⁻¹ ∇J (the chapter's "Second-Order Methods").

Only feasible for small models: the Hessian has P² entries and the solve costs O(P³). The target workload is
multinomial logistic regression on MNIST-1D (40·10 + 10 = 410 parameters), trained full batch.

Why the damping λ (Levenberg): the softmax cross-entropy Hessian is singular. Adding the same vector to every
class's weights and biases leaves all probabilities unchanged, so for nn.Linear(d, c) H has a null space of
dimension ≥ d + 1 and an undamped solve either fails or, through round-off, returns a huge step along those
directions. H + λI is positive definite for any convex loss and λ > 0, and it bounds the step where the curvature
is tiny (‖d‖ ≤ ‖g‖/λ). For non-convex models H can be indefinite; then the Newton step can point uphill or
towards a saddle unless λ exceeds the most negative eigenvalue, which a small λ does not guarantee.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Rows of the Hessian computed per batched backward pass: bounds the memory of the vmapped double backward.
_ROWS_PER_PASS = 256


def flat_hessian(flat_grad: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """The P × P Hessian, row i = ∂(flat_grad_i)/∂θ, from a gradient built with ``create_graph=True``."""
    n = flat_grad.numel()
    if not flat_grad.requires_grad:  # the loss is (at most) linear in θ: zero curvature
        return flat_grad.new_zeros(n, n)
    eye = torch.eye(n, dtype=flat_grad.dtype, device=flat_grad.device)
    rows = []
    for block in eye.split(_ROWS_PER_PASS):
        parts = torch.autograd.grad(
            flat_grad, params, grad_outputs=block, is_grads_batched=True, retain_graph=True, allow_unused=True
        )
        # allow_unused: a parameter the gradient does not depend on (loss linear in it) has zero curvature.
        parts = [
            torch.zeros(len(block), *p.shape, **_like(p)) if d is None else d
            for d, p in zip(parts, params, strict=True)
        ]
        rows.append(torch.cat([d.reshape(len(block), -1) for d in parts], dim=1))
    return torch.cat(rows)


def solve_damped(hessian: torch.Tensor, damping: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """d with (H + diag(damping)) d = grad; the minimum-norm least-squares d when that matrix is singular."""
    a = hessian + torch.diag(damping)
    d, info = torch.linalg.solve_ex(a, grad)
    if not (torch.isfinite(a).all() and torch.isfinite(grad).all()):
        # A diverged loss: return the non-finite step so the run records the divergence (pinv would raise).
        return d
    if int(info) != 0 or not torch.isfinite(d).all():
        # pinv rather than lstsq: on CUDA lstsq only has the 'gels' driver, which assumes full rank.
        d = torch.linalg.pinv(a, hermitian=True) @ grad
    return d


class Newton(torch.optim.Optimizer):
    """Exact-Hessian damped Newton: θ ← θ − lr · (H + damping·I)⁻¹ g over all parameters jointly.

    ``step(closure)`` needs a closure that returns the loss tensor with its autograd graph and has NOT been
    backpropagated (manual optimization: ``opt.step(closure=lambda: loss_fn(batch))``). The step differentiates
    it twice, solves for the direction over the parameters of all groups together (the Hessian couples them;
    a group's ``lr`` and ``damping`` apply to its own coordinates), leaves ``p.grad`` set to the gradient at the
    point the step started from, and returns the detached loss.
    """

    def __init__(self, params, lr: float = 1.0, damping: float = 1e-4):
        if not lr > 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not damping >= 0.0:
            raise ValueError(f"Invalid damping: {damping}")
        super().__init__(params, {"lr": lr, "damping": damping})

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise RuntimeError("Newton.step needs a closure returning the loss with its graph (not backpropagated)")
        groups = [(g, [p for p in g["params"] if p.requires_grad]) for g in self.param_groups]
        params = [p for _, ps in groups for p in ps]
        with torch.enable_grad():
            loss = closure()
            if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
                raise RuntimeError(
                    "Newton.step: the closure must return the loss tensor with its autograd graph; "
                    "do not call backward() or detach it"
                )
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]
            flat_grad = torch.cat([g.reshape(-1) for g in grads])
            hessian = flat_hessian(flat_grad, params)
        with torch.no_grad():
            hessian = (hessian + hessian.T) / 2  # exact H is symmetric; drop the round-off asymmetry
            flat_grad = flat_grad.detach()
            damping = torch.cat([torch.full((p.numel(),), g["damping"], **_like(p)) for g, ps in groups for p in ps])
            lr = torch.cat([torch.full((p.numel(),), g["lr"], **_like(p)) for g, ps in groups for p in ps])
            direction = lr * solve_damped(hessian, damping, flat_grad)
            offset = 0
            for p, g in zip(params, grads, strict=True):
                n = p.numel()
                p.grad = g.detach().clone()
                p.sub_(direction[offset : offset + n].view_as(p))
                offset += n
        return loss.detach()


def _like(p: torch.Tensor) -> dict:
    return {"dtype": p.dtype, "device": p.device}
