"""Task-independent behaviour metrics: mode histogram, normalised entropy, KL to the data, selection score,
and their per-context forms (D3IL averages the entropy over initial states).

Entropy and KL are computed over *successful* episodes with a mode label; episodes without
one (label -1, e.g. Avoiding's invalid codes) are counted by the task, never merged into a mode.
"""

from __future__ import annotations

import math

import numpy as np

KL_EPSILON = 1e-6  # added to every bin of both distributions so empty bins give a finite KL


def mode_histogram(modes: np.ndarray, num_modes: int) -> np.ndarray:
    """Counts per mode label (num_modes,); labels outside [0, num_modes), e.g. -1, are ignored."""
    modes = np.asarray(modes, dtype=np.int64).ravel()
    modes = modes[(modes >= 0) & (modes < num_modes)]
    return np.bincount(modes, minlength=num_modes)


def behaviour_entropy(counts: np.ndarray) -> float:
    """H = -sum p log p / log(#modes) in [0, 1]: 1 when all modes are equally frequent.

    0 for a single observed mode, no successes, or a task with only one mode.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0 or len(counts) < 2:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(len(counts)))


def mode_kl(counts: np.ndarray, reference: np.ndarray | None = None, eps: float = KL_EPSILON) -> float:
    """KL(pi || p) in nats between the policy's mode frequencies and the data's (uniform when None).

    Both distributions get ``eps`` per bin and are renormalised, so modes missing from the
    data do not make the KL infinite. NaN when there are no successes (pi is undefined).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        return math.nan
    ref = np.full(len(counts), 1.0 / len(counts)) if reference is None else np.asarray(reference, dtype=np.float64)
    if ref.shape != counts.shape or np.any(ref < 0) or ref.sum() <= 0:
        raise ValueError("mode_kl: reference must be a non-negative vector with one entry per mode")
    pi = counts / counts.sum() + eps
    pi /= pi.sum()
    p = ref / ref.sum() + eps
    p /= p.sum()
    return float(np.sum(pi * np.log(pi / p)))


def selection_score(success_rate: float, entropy: float) -> float:
    """D3IL's model-selection score: 0.8 * success + 0.2 * entropy."""
    return 0.8 * success_rate + 0.2 * entropy


def context_mode_counts(contexts: np.ndarray, modes: np.ndarray, num_modes: int) -> tuple[np.ndarray, np.ndarray]:
    """Episodes grouped by identical context rows (n, d): (distinct contexts (C, d), mode counts (C, num_modes)).

    ``modes`` (n,) holds each episode's label; -1 (no success, no mode) counts in no bin.
    """
    contexts = np.asarray(contexts).reshape(len(modes), -1)
    modes = np.asarray(modes, dtype=np.int64).ravel()
    keys, group = np.unique(contexts, axis=0, return_inverse=True)
    counts = np.zeros((len(keys), num_modes), dtype=np.int64)
    valid = (modes >= 0) & (modes < num_modes)
    np.add.at(counts, (group.ravel()[valid], modes[valid]), 1)
    return keys, counts


def context_entropy(counts: np.ndarray) -> float:
    """D3IL's diversity figure: ``behaviour_entropy`` per context (row), averaged; a context without success adds 0."""
    counts = np.asarray(counts)
    return float(np.mean([behaviour_entropy(row) for row in counts])) if len(counts) else 0.0


def context_preference_gap(counts: np.ndarray, expected: np.ndarray) -> float:
    """Mean total-variation distance between each context's mode proportions and the expected ones (C, num_modes).

    0 when the policy chooses modes exactly as often as the demonstrator would in every context;
    contexts without a labelled success are left out (NaN if that is all of them).
    """
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1)
    seen = totals > 0
    if not seen.any():
        return math.nan
    proportions = counts[seen] / totals[seen, None]
    return float(np.mean(0.5 * np.abs(proportions - np.asarray(expected, dtype=np.float64)[seen]).sum(axis=1)))


def context_preference_gap_floor(counts: np.ndarray, expected: np.ndarray, draws: int = 2000, seed: int = 0) -> float:
    """The ``context_preference_gap`` an exact sampler of ``expected`` would score with the same successes per context.

    A context with n labelled successes has a TV gap of order 1/sqrt(n) from sampling alone, so
    a policy's gap is only meaningful next to this floor (Monte Carlo over ``draws`` multinomial
    draws; NaN when no context has a success).
    """
    totals = np.asarray(counts, dtype=np.int64).sum(axis=1)
    seen = totals > 0
    if not seen.any():
        return math.nan
    rng = np.random.default_rng(seed)
    probs = np.asarray(expected, dtype=np.float64)[seen]
    probs = probs / probs.sum(axis=1, keepdims=True)
    gaps = [
        np.mean(0.5 * np.abs(rng.multinomial(n, p, size=draws) / n - p).sum(axis=1))
        for n, p in zip(totals[seen], probs, strict=True)
    ]
    return float(np.mean(gaps))
