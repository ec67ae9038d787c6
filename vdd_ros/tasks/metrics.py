"""D3IL Avoiding metrics: behaviour entropy, KL to the data's path distribution, selection score.

Entropy and KL are computed over *successful* rollouts with a valid path id; rollouts whose
9-bit code is outside the 24 paths are counted separately by the caller, never merged.
"""

from __future__ import annotations

import math

import numpy as np

from vdd_ros.tasks.avoiding import NUM_PATHS

KL_EPSILON = 1e-6  # added to every bin of both distributions so empty bins give a finite KL


def path_histogram(paths: np.ndarray, num_modes: int = NUM_PATHS) -> np.ndarray:
    """Counts per path id (num_modes,); ids outside [0, num_modes), e.g. -1, are ignored."""
    paths = np.asarray(paths, dtype=np.int64).ravel()
    paths = paths[(paths >= 0) & (paths < num_modes)]
    return np.bincount(paths, minlength=num_modes)


def behaviour_entropy(counts: np.ndarray) -> float:
    """H = -sum p log p / log(#modes): 1 when all modes are equally frequent, 0 for one mode or no successes."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(len(counts)))


def path_kl(counts: np.ndarray, reference: np.ndarray | None = None, eps: float = KL_EPSILON) -> float:
    """KL(pi || p) in nats between the policy's path frequencies and the data's (uniform when None).

    Both distributions get ``eps`` per bin and are renormalised, so modes missing from the
    data do not make the KL infinite. NaN when there are no successes (pi is undefined).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        return math.nan
    ref = np.full(len(counts), 1.0 / len(counts)) if reference is None else np.asarray(reference, dtype=np.float64)
    if ref.shape != counts.shape or np.any(ref < 0) or ref.sum() <= 0:
        raise ValueError("path_kl: reference must be a non-negative vector with one entry per mode")
    pi = counts / counts.sum() + eps
    pi /= pi.sum()
    p = ref / ref.sum() + eps
    p /= p.sum()
    return float(np.sum(pi * np.log(pi / p)))


def selection_score(success_rate: float, entropy: float) -> float:
    """D3IL's model-selection score for Avoiding: 0.8 * success + 0.2 * entropy."""
    return 0.8 * success_rate + 0.2 * entropy
