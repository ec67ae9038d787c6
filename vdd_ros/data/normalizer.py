"""Affine normalisation shared by teacher, student and exported graph.

Observations and actions are z-scored with dataset statistics; the teacher is trained
and the student distilled in that space, and the ONNX export folds it back in so the
robot only ever sees raw units.
"""

from __future__ import annotations

import dataclasses

import numpy as np

_MIN_STD = 1e-6


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """x_norm = (x - mean) / std, per feature."""

    mean: np.ndarray
    std: np.ndarray

    @staticmethod
    def fit(x: np.ndarray) -> Normalizer:
        x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
        return Normalizer(x.mean(0).astype(np.float32), np.maximum(x.std(0), _MIN_STD).astype(np.float32))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @staticmethod
    def from_dict(d: dict[str, list[float]]) -> Normalizer:
        mean = np.asarray(d["mean"], dtype=np.float32)
        std = np.asarray(d["std"], dtype=np.float32)
        finite = np.all(np.isfinite(mean)) and np.all(np.isfinite(std))
        if mean.shape != std.shape or mean.ndim != 1 or not (finite and np.all(std > 0)):
            raise ValueError("normalizer: mean/std must be finite 1-D vectors of equal size with std > 0")
        return Normalizer(mean, std)
