"""Behaviour entropy, KL to the data's path distribution and the D3IL selection score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vdd_ros.tasks.metrics import behaviour_entropy, path_histogram, path_kl, selection_score


def test_entropy_known_distributions() -> None:
    assert behaviour_entropy(np.full(24, 5)) == pytest.approx(1.0)
    one = np.zeros(24, dtype=int)
    one[3] = 17
    assert behaviour_entropy(one) == 0.0
    assert behaviour_entropy(np.zeros(24, dtype=int)) == 0.0
    two = np.zeros(24, dtype=int)
    two[[0, 9]] = 4
    assert behaviour_entropy(two) == pytest.approx(math.log(2) / math.log(24))


def test_histogram_ignores_invalid_ids() -> None:
    counts = path_histogram(np.array([0, 0, 23, -1, 5]))
    assert counts.shape == (24,) and counts.sum() == 4 and counts[0] == 2


def test_kl() -> None:
    assert path_kl(np.full(24, 3)) == pytest.approx(0.0, abs=1e-9)
    one = np.zeros(24)
    one[0] = 10
    assert path_kl(one) == pytest.approx(math.log(24), rel=1e-3)
    assert math.isnan(path_kl(np.zeros(24)))
    ref = np.zeros(24)
    ref[1] = 1.0
    assert math.isfinite(path_kl(one, ref))  # epsilon keeps modes missing from the data finite


def test_selection_score() -> None:
    assert selection_score(1.0, 0.5) == pytest.approx(0.9)
