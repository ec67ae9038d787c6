"""Avoiding dynamics: a point "rod" tracks a commanded (desired) position through three obstacle rows.

N rollouts run in lock-step so evaluation costs one vectorised step per tick. Reaching the
finish line is success; touching an obstacle (checked along the swept segment) is failure.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vdd_ros.tasks.avoiding.readout import NUM_BITS, decode_path, update_mode_bits
from vdd_ros.tasks.base import StepResult

CONTROL_PERIOD_S = 0.035
MAX_STEPS = 250

START = np.array([0.525, -0.28])
ROD_RADIUS = 0.01
OBSTACLES = np.array([[0.500, -0.10], [0.425, 0.08], [0.575, 0.08], [0.350, 0.26], [0.500, 0.26], [0.650, 0.26]])
OBSTACLE_RADII = np.array([0.030, 0.025, 0.025, 0.025, 0.025, 0.025])
COLLISION_DIST = OBSTACLE_RADII + ROD_RADIUS
FINISH_Y = 0.35
TRACKING_TAU_S = 0.05
MAX_ACTION = 0.03  # per axis; keeps the y step below the 0.06 read-out band width
WORKSPACE = (0.15, 0.85, -0.40, 0.50)  # x_min, x_max, y_min, y_max (optional failure)


@dataclasses.dataclass
class AvoidingStep(StepResult):
    """StepResult plus Avoiding's diagnostics; ``mode`` is the canonical path index or -1."""

    collided: np.ndarray  # (n,) bool
    left_workspace: np.ndarray  # (n,) bool
    invalid_code: np.ndarray  # (n,) bool, some row set more than one bit


def segment_clearance(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Smallest (distance - collision distance) of segments p0->p1 (n, 2) to any obstacle, shape (n,).

    Negative means a collision somewhere along the segment, so a fast move cannot tunnel.
    """
    d = (p1 - p0)[:, None, :]
    rel = OBSTACLES[None, :, :] - p0[:, None, :]
    seg_len2 = np.sum(d * d, axis=-1)
    t = np.clip(np.sum(rel * d, axis=-1) / np.maximum(seg_len2, 1e-18), 0.0, 1.0)
    closest = p0[:, None, :] + t[..., None] * d
    dist = np.linalg.norm(OBSTACLES[None, :, :] - closest, axis=-1)
    return np.min(dist - COLLISION_DIST[None, :], axis=1)


class AvoidingEnv:
    """N parallel Avoiding rollouts with a first-order position tracker.

    Finished rollouts ignore further actions until ``reset``. ``min_clearance`` holds each
    rollout's smallest swept distance beyond collision distance (used to validate demos).
    """

    obs_dim = 4
    act_dim = 2

    def __init__(self, n: int, tracking_noise: float = 0.0, seed: int = 0, workspace_failure: bool = False) -> None:
        if n < 1:
            raise ValueError("AvoidingEnv: n must be >= 1")
        if tracking_noise < 0:
            raise ValueError("AvoidingEnv: tracking_noise must be >= 0")
        self.n = n
        self.tracking_noise = tracking_noise
        self.workspace_failure = workspace_failure
        self._rng = np.random.default_rng(seed)
        self._alpha = float(np.exp(-CONTROL_PERIOD_S / TRACKING_TAU_S))
        self.reset()

    def reset(self) -> np.ndarray:
        """Restart every rollout at the start point (desired = actual = START)."""
        self.desired = np.tile(START, (self.n, 1))
        self.actual = self.desired.copy()
        self.bits = np.zeros((self.n, NUM_BITS), dtype=bool)
        self.done = np.zeros(self.n, dtype=bool)
        self.success = np.zeros(self.n, dtype=bool)
        self.collided = np.zeros(self.n, dtype=bool)
        self.left_workspace = np.zeros(self.n, dtype=bool)
        self.steps = np.zeros(self.n, dtype=np.int64)
        self.min_clearance = np.full(self.n, np.inf)
        return self._obs()

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.desired, self.actual], axis=1).astype(np.float32)

    def step(self, actions: np.ndarray) -> AvoidingStep:
        """Apply clipped desired-position deltas (n, 2) to the running rollouts."""
        actions = np.asarray(actions, dtype=np.float64).reshape(self.n, self.act_dim)
        live = ~self.done
        if not np.all(np.isfinite(actions[live])):
            raise ValueError("AvoidingEnv.step: non-finite action for a running rollout")
        delta = np.clip(np.where(live[:, None], actions, 0.0), -MAX_ACTION, MAX_ACTION)
        desired = self.desired + delta
        actual = desired + (self.actual - desired) * self._alpha
        if self.tracking_noise > 0:
            actual = actual + self._rng.normal(0.0, self.tracking_noise, actual.shape)
        clearance = segment_clearance(self.actual, actual)
        self.desired[live] = desired[live]
        self.actual[live] = actual[live]
        self.steps[live] += 1
        self.min_clearance[live] = np.minimum(self.min_clearance[live], clearance[live])
        live_bits = self.bits[live]
        update_mode_bits(live_bits, actual[live])
        self.bits[live] = live_bits

        collided = live & (clearance < 0)
        x, y = actual[:, 0], actual[:, 1]
        outside = (x < WORKSPACE[0]) | (x > WORKSPACE[1]) | (y < WORKSPACE[2]) | (y > WORKSPACE[3])
        left = live & ~collided & outside & self.workspace_failure
        success = live & ~collided & ~left & (y > FINISH_Y)
        self.collided |= collided
        self.left_workspace |= left
        self.success |= success
        self.done |= collided | left | success | (live & (self.steps >= MAX_STEPS))
        path, invalid = decode_path(self.bits)
        return AvoidingStep(
            obs=self._obs(),
            done=self.done.copy(),
            success=self.success.copy(),
            failed=self.collided | self.left_workspace,
            mode=path,
            steps=self.steps.copy(),
            collided=self.collided.copy(),
            left_workspace=self.left_workspace.copy(),
            invalid_code=invalid,
        )
