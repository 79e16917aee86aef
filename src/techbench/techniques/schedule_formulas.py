"""The chapter's learning-rate formulas as pure functions of the update index t ("Learning Rate Selection"):
``lr_at(t, base_lr, total_steps, steps_per_epoch, **hp)`` is the LR that update t uses. schedules.py registers
each beside the torch scheduler that implements it, and the tests hold torch to these."""

from __future__ import annotations

import math


def cosine_between(lo: float, hi: float, frac: float) -> float:
    """lo + ½(hi − lo)(1 + cos(π·frac)): hi at frac = 0, lo at frac = 1."""
    return lo + 0.5 * (hi - lo) * (1.0 + math.cos(math.pi * frac))


def step_period(step_epochs: int, total_steps: int, steps_per_epoch: int) -> int:
    # The chapter's s = 30 epochs assumes ~90-epoch runs (two decays); runs here are 20-60 epochs, so the
    # default (0) is a third of the run rounded up to whole epochs: two decays for any run of >= 5 epochs.
    s_epochs = step_epochs if step_epochs > 0 else math.ceil(total_steps / steps_per_epoch / 3)
    return max(1, s_epochs * steps_per_epoch)


def step_lr(t, base_lr, total_steps, steps_per_epoch, gamma, step_epochs):
    return base_lr * gamma ** (t // step_period(step_epochs, total_steps, steps_per_epoch))


def exponential_lr(t, base_lr, total_steps, steps_per_epoch, k):
    return base_lr * math.exp(-k * t / steps_per_epoch)


def inverse_time_factor(t: int, k: float, steps_per_epoch: int) -> float:
    return 1.0 / (1.0 + k * t / steps_per_epoch)


def inverse_time_lr(t, base_lr, total_steps, steps_per_epoch, k):
    return base_lr / (1.0 + k * t / steps_per_epoch)


def cosine_lr(t, base_lr, total_steps, steps_per_epoch, min_lr):
    return cosine_between(min_lr, base_lr, t / total_steps)


def warmup_steps(warmup_epochs: float, total_steps: int, steps_per_epoch: int) -> int:
    # Clipped so at least one update is left for the cosine phase (a warmup longer than the run).
    return max(0, min(round(warmup_epochs * steps_per_epoch), total_steps - 1))


def warmup_cosine_lr(t, base_lr, total_steps, steps_per_epoch, warmup_epochs, min_lr):
    w = warmup_steps(warmup_epochs, total_steps, steps_per_epoch)
    if t < w:
        return base_lr * (t + 1) / (w + 1)
    return cosine_between(min_lr, base_lr, (t - w) / (total_steps - w))


def one_cycle_pct(pct_start: float, total_steps: int) -> float:
    # torch divides by pct_start·T − 1 (the last warm-up update); exactly 0 would be 0/0 at t = 0, so take the
    # limit: a warm-up that ends just after update 0.
    return (1.0 + 1e-9) / total_steps if pct_start * total_steps == 1.0 else float(pct_start)


def one_cycle_lr(t, base_lr, total_steps, steps_per_epoch, max_lr_mult, pct_start, div_factor, final_div_factor):
    # OneCycleLR.get_lr (two phases, anneal_strategy="cos"): phase 1 ends at update e = pct_start·T − 1 and goes
    # from max_lr/div_factor up to max_lr; phase 2 goes down to max_lr/div_factor/final_div_factor at update T − 1.
    peak = base_lr * max_lr_mult
    start, end = peak / div_factor, peak / div_factor / final_div_factor
    e = one_cycle_pct(pct_start, total_steps) * total_steps - 1
    if t <= e:
        return cosine_between(peak, start, t / e)
    return cosine_between(end, peak, (t - e) / (total_steps - 1 - e))


def restart_position(t: int, period: int, mult: int) -> tuple[int, int]:
    """(T_cur, T_i): updates since the last restart and the current period, as CosineAnnealingWarmRestarts."""
    t_i = period
    while t >= t_i:
        t, t_i = t - t_i, t_i * mult
    return t, t_i


def cosine_restarts_lr(t, base_lr, total_steps, steps_per_epoch, period_epochs, period_mult, min_lr):
    t_cur, t_i = restart_position(t, max(1, period_epochs * steps_per_epoch), period_mult)
    return cosine_between(min_lr, base_lr, t_cur / t_i)
