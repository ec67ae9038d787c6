"""Mode labels for expert demonstrations, whatever the task: checked distributions, sampled or balanced labels."""

from __future__ import annotations

import numpy as np


def check_distribution(probs: np.ndarray, num_modes: int) -> np.ndarray:
    """``probs`` as a normalised float64 vector, after checking it has one non-negative entry per mode summing to 1."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (num_modes,) or np.any(p < 0) or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"a mode distribution must be {num_modes} non-negative numbers summing to 1")
    return p / p.sum()


def sample_labels(num: int, probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``num`` i.i.d. mode labels from ``probs``: a stochastic expert's choices."""
    return rng.choice(len(probs), size=num, p=check_distribution(probs, len(probs)))


def balanced_labels(num: int, probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``num`` shuffled mode labels whose counts match ``num * probs`` as closely as integers allow.

    Datasets use this so their empirical mode distribution is the declared one (entropy
    exactly 1.0 for uniform when ``num`` is a multiple of the number of modes), not a noisy
    sample of it.
    """
    expected = num * check_distribution(probs, len(probs))
    counts = np.floor(expected).astype(np.int64)
    remainder_order = np.argsort(-(expected - counts), kind="stable")
    counts[remainder_order[: num - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.arange(len(probs)), counts))
