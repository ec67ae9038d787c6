"""NumPy re-creation of the D3IL Avoiding task (spec: docs/avoiding_task.md in the shared docs).

A point "rod" tracks a commanded (desired) position through three rows of obstacles to a
finish line. N rollouts run in lock-step so evaluation costs one vectorised step per tick.
The 9-bit D3IL mode read-out labels which of the 24 paths an episode took.
"""

from __future__ import annotations

import dataclasses

import numpy as np

TASK_NAME = "avoiding"
OBS_NAMES = ("desired_x", "desired_y", "actual_x", "actual_y")
ACT_NAMES = ("delta_x", "delta_y")
CONTROL_PERIOD_S = 0.035
MAX_STEPS = 250
NUM_PATHS = 24

START = np.array([0.525, -0.28])
ROD_RADIUS = 0.01
ROW_Y = (-0.10, 0.08, 0.26)
OBSTACLES = np.array([[0.500, -0.10], [0.425, 0.08], [0.575, 0.08], [0.350, 0.26], [0.500, 0.26], [0.650, 0.26]])
OBSTACLE_RADII = np.array([0.030, 0.025, 0.025, 0.025, 0.025, 0.025])
COLLISION_DIST = OBSTACLE_RADII + ROD_RADIUS
FINISH_Y = 0.35
TRACKING_TAU_S = 0.05
MAX_ACTION = 0.03  # per axis; keeps the y step below the 0.06 read-out band width
WORKSPACE = (0.15, 0.85, -0.40, 0.50)  # x_min, x_max, y_min, y_max (optional failure)

_ROW_BITS = (slice(0, 2), slice(2, 5), slice(5, 9))
_BAND_HALF_WIDTH = 0.03


@dataclasses.dataclass
class StepResult:
    """State of all N rollouts after one step; finished rollouts keep their final values."""

    obs: np.ndarray  # (n, 4) float32
    done: np.ndarray  # (n,) bool
    success: np.ndarray  # (n,) bool
    collided: np.ndarray  # (n,) bool
    left_workspace: np.ndarray  # (n,) bool
    path: np.ndarray  # (n,) int64, canonical path index or -1
    invalid_code: np.ndarray  # (n,) bool, some row set more than one bit
    steps: np.ndarray  # (n,) int64


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


def update_mode_bits(bits: np.ndarray, xy: np.ndarray) -> None:
    """OR this tick's D3IL read-out of positions xy (n, 2) into bits (n, 9), in place.

    Row 3 reproduces D3IL's quirk: bit 8 is an ``elif x > 0.35`` after the middle bins,
    so it fires for x >= 0.65 (and exactly on bin edges), not for x > 0.65 only.
    """
    x, y = xy[:, 0], xy[:, 1]
    row1 = np.abs(y - ROW_Y[0]) <= _BAND_HALF_WIDTH
    bits[:, 0] |= row1 & (x < 0.5)
    bits[:, 1] |= row1 & ~(x < 0.5)
    row2 = np.abs(y - ROW_Y[1]) <= _BAND_HALF_WIDTH
    bits[:, 2] |= row2 & (x < 0.425)
    bits[:, 3] |= row2 & (x > 0.425) & (x < 0.575)
    bits[:, 4] |= row2 & (x > 0.575)
    row3 = y >= ROW_Y[2]
    b5 = x < 0.35
    b6 = (x > 0.35) & (x < 0.5)
    b7 = (x > 0.5) & (x < 0.65)
    bits[:, 5] |= row3 & b5
    bits[:, 6] |= row3 & b6
    bits[:, 7] |= row3 & b7
    bits[:, 8] |= row3 & ~(b5 | b6 | b7) & (x > 0.35)


def decode_path(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(path, invalid) from bits (n, 9): path = 12*i1 + 4*i2 + i3 when every row set exactly one bit, else -1.

    ``invalid`` flags rows with more than one bit (a lateral move inside a band); those codes
    are outside the 24 paths and are reported, never merged into a path.
    """
    counts = np.stack([bits[:, s].sum(axis=1) for s in _ROW_BITS], axis=1)
    index = np.stack([np.argmax(bits[:, s], axis=1) for s in _ROW_BITS], axis=1)
    path = 12 * index[:, 0] + 4 * index[:, 1] + index[:, 2]
    complete = np.all(counts == 1, axis=1)
    return np.where(complete, path, -1).astype(np.int64), np.any(counts > 1, axis=1)


def path_from_trajectory(xy: np.ndarray) -> int:
    """Path index (or -1) read out from one trajectory of actual positions (L, 2)."""
    bits = np.zeros((len(xy), 9), dtype=bool)
    update_mode_bits(bits, np.asarray(xy, dtype=np.float64))
    path, _ = decode_path(np.any(bits, axis=0, keepdims=True))
    return int(path[0])


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
        self.bits = np.zeros((self.n, 9), dtype=bool)
        self.done = np.zeros(self.n, dtype=bool)
        self.success = np.zeros(self.n, dtype=bool)
        self.collided = np.zeros(self.n, dtype=bool)
        self.left_workspace = np.zeros(self.n, dtype=bool)
        self.steps = np.zeros(self.n, dtype=np.int64)
        self.min_clearance = np.full(self.n, np.inf)
        return self._obs()

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.desired, self.actual], axis=1).astype(np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
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
        return StepResult(
            obs=self._obs(),
            done=self.done.copy(),
            success=self.success.copy(),
            collided=self.collided.copy(),
            left_workspace=self.left_workspace.copy(),
            path=path,
            invalid_code=invalid,
            steps=self.steps.copy(),
        )
