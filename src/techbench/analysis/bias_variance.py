"""Bias-variance decomposition of classifiers trained with several seeds, from their stored test predictions.

The chapter states Error = Bias² + Variance + Irreducible error. Here the "runs" are the same model trained with
different seeds (init, data order, ...). With a dataset's ``resample: true`` each seed also draws its own training
set, so the variance is the chapter's variance over training sets (and initializations); without it, the
variance is over seeds on one training set.

Two views:

* Squared error of the probability vector against the one-hot label (the Brier score). Averaged over runs and
  examples it decomposes exactly (an algebraic identity, not an approximation): error = bias2 + variance with
  p̄_n the mean over runs, bias2 = mean_n ‖p̄_n − e_yn‖², variance = mean_n mean_s ‖p_s,n − p̄_n‖².
* The 0-1 loss view (Domingos 2000): the main prediction of an example is the mode over runs of the predicted
  class; bias01 = fraction of examples whose main prediction is wrong, variance01 = mean fraction of runs that
  disagree with the main prediction, error01 = mean 0-1 error over runs. These do not add up: under 0-1 loss
  variance increases the error where the main prediction is right and decreases it where it is wrong.

With only the observed labels the irreducible noise (the label's own randomness given x, e.g. a mislabelled test
example) cannot be separated from bias: the Bayes-optimal prediction is unknown, so "bias" here is bias plus noise.
"""

from __future__ import annotations

import numpy as np


def decompose_probs(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Decompose the test error of S runs. probs: (S runs, N examples, C classes) predicted probabilities;
    y: (N,) integer labels in [0, C). Returns floats error, bias2, variance (Brier view, error = bias2 + variance
    exactly), error01, bias01, variance01 (0-1 view; ties in the mode go to the lowest class index), and the int
    runs = S. "bias" includes the irreducible noise, which labels alone cannot separate from it."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if p.ndim != 3:
        raise ValueError(f"probs must be (runs, examples, classes), got shape {p.shape}")
    s, n, c = p.shape
    if s < 1 or n < 1 or c < 1:
        raise ValueError(f"probs must have at least one run, example and class, got shape {p.shape}")
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match probs {p.shape}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= c:
        raise ValueError(f"y must hold integer labels in [0, {c})")

    onehot = np.eye(c)[y]  # (N, C)
    p_bar = p.mean(axis=0)  # (N, C)
    error = float(((p - onehot) ** 2).sum(-1).mean())
    bias2 = float(((p_bar - onehot) ** 2).sum(-1).mean())
    variance = float(((p - p_bar) ** 2).sum(-1).mean())

    pred = p.argmax(-1)  # (S, N)
    votes = (pred[..., None] == np.arange(c)).sum(0)  # (N, C): runs predicting each class
    main = votes.argmax(-1)  # (N,) the mode; argmax takes the lowest class on ties
    return {
        "error": error,
        "bias2": bias2,
        "variance": variance,
        "error01": float((pred != y).mean()),
        "bias01": float((main != y).mean()),
        "variance01": float((pred != main).mean()),
        "runs": s,
    }


__all__ = ["decompose_probs"]
