"""Pushing dynamics: a disc pusher tracks a commanded (desired) position and pushes two square blocks.

Top-down rigid-body simulation with pymunk, one Space per episode (each is a few bodies, so
the per-episode Python loop is cheap and episodes cannot interact). Table friction is
modelled the usual planar way: a pivot and a gear joint to the static body with bounded force
and torque, i.e. Coulomb friction on the block's translation and rotation. The pusher is a
kinematic body (a stiff position-controlled arm): it follows a first-order lag of the desired
position and pushes the blocks without being pushed back.

Episodes are grouped into contexts (initial block poses): episodes k*R .. k*R+R-1 share
context k, R = ``rollouts_per_context`` (D3IL evaluates 30 contexts x 16 rollouts).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pymunk

from vdd_ros.tasks.base import ROLLOUTS_PER_CONTEXT, StepResult
from vdd_ros.tasks.pushing.readout import NOT_YET, assignment, decode_mode, in_zones, update_first_entry

CONTROL_PERIOD_S = 0.035
SUBSTEPS = 7  # 5 ms physics steps per control period
MAX_STEPS = 450  # 15.75 s
MAX_ACTION = 0.015  # per axis and step (0.43 m/s)
TRACKING_TAU_S = 0.05

PUSHER_START = np.array([0.5, -0.2])
PUSHER_RADIUS = 0.015
BLOCK_SIZE = 0.05  # side of the square blocks
BLOCK_MASS = 0.1
TABLE_FRICTION = 0.5  # Coulomb coefficient block/table
PUSHER_FRICTION = 2.0  # pymunk multiplies: pusher/block 1.0 (a rubber tip), block/block 0.25
BLOCK_FRICTION = 0.5
WORKSPACE = (0.15, 0.85, -0.3, 0.5)  # x_min, x_max, y_min, y_max of the desired position (arm limits)
TABLE = (0.1, 0.9, -0.35, 0.55)  # a block centre outside this box fell off the table: failure

# Contexts: both blocks on one row, far enough apart that the straight push of either block to
# either zone clears the other block (checked by the expert's success rate, docs/results.md).
START_X = (0.3, 0.7)
START_Y = (-0.03, 0.03)
MIN_SEPARATION = 0.2

OBS_NAMES = (
    "desired_x", "desired_y", "actual_x", "actual_y",
    "red_x", "red_y", "red_sin4yaw", "red_cos4yaw",
    "green_x", "green_y", "green_sin4yaw", "green_cos4yaw",
)  # fmt: skip
BLOCK_XY = (slice(4, 6), slice(8, 10))  # observation columns of the red and green block centres


def sample_contexts(num: int, rng: np.random.Generator) -> np.ndarray:
    """(num, 2, 3) initial (x, y, yaw) of the red and green block; which colour is left is random."""
    x = np.empty((num, 2))
    todo = np.arange(num)
    while len(todo):  # rejection keeps (left, right) uniform over the allowed pairs
        x[todo] = rng.uniform(*START_X, (len(todo), 2))
        todo = todo[np.abs(x[todo, 0] - x[todo, 1]) < MIN_SEPARATION]
    y = rng.uniform(*START_Y, (num, 2))
    yaw = rng.uniform(0.0, math.pi / 2, (num, 2))
    return np.stack([x, y, yaw], axis=-1)


def yaw_features(yaw: np.ndarray) -> np.ndarray:
    """(..., 2) = (sin 4 yaw, cos 4 yaw): continuous, and equal for poses a square cannot tell apart."""
    return np.stack([np.sin(4 * yaw), np.cos(4 * yaw)], axis=-1)


@dataclasses.dataclass
class PushingStep(StepResult):
    """StepResult plus Pushing's diagnostics."""

    context: np.ndarray  # (n, 6) initial red x, y, yaw, green x, y, yaw: groups episodes per context
    blocks_in_zone: np.ndarray  # (n,) int64: blocks inside some zone now (IBC's p1/p2 use >= 1 / 2)


class _Episode:
    """One pymunk Space: the kinematic pusher and the two blocks with table friction."""

    def __init__(self, pusher_xy: np.ndarray, blocks: np.ndarray) -> None:
        self.space = pymunk.Space()
        self.space.gravity = (0.0, 0.0)
        self.space.iterations = 20
        self.space.collision_slop = 1e-4  # defaults assume pixel units
        self.pusher = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self.pusher.position = tuple(pusher_xy)
        disc = pymunk.Circle(self.pusher, PUSHER_RADIUS)
        disc.friction = PUSHER_FRICTION
        self.space.add(self.pusher, disc)
        self.blocks = [self._add_block(x, y, yaw) for x, y, yaw in blocks]

    def _add_block(self, x: float, y: float, yaw: float) -> pymunk.Body:
        body = pymunk.Body(BLOCK_MASS, pymunk.moment_for_box(BLOCK_MASS, (BLOCK_SIZE, BLOCK_SIZE)))
        body.position = (float(x), float(y))
        body.angle = float(yaw)
        box = pymunk.Poly.create_box(body, (BLOCK_SIZE, BLOCK_SIZE), radius=0.0)
        box.friction = BLOCK_FRICTION
        normal_force = BLOCK_MASS * 9.81 * TABLE_FRICTION
        slide = pymunk.PivotJoint(self.space.static_body, body, (0.0, 0.0), (0.0, 0.0))
        turn = pymunk.GearJoint(self.space.static_body, body, 0.0, 1.0)
        for joint, limit in ((slide, normal_force), (turn, normal_force * BLOCK_SIZE / 3)):
            joint.max_bias = 0.0  # no position correction: pure velocity friction
            joint.max_force = limit
        self.space.add(body, box, slide, turn)
        return body

    def advance(self, target_xy: np.ndarray) -> None:
        """Move the pusher to ``target_xy`` at constant velocity over one control period."""
        start = self.pusher.position
        x, y = float(target_xy[0]), float(target_xy[1])
        self.pusher.velocity = ((x - start.x) / CONTROL_PERIOD_S, (y - start.y) / CONTROL_PERIOD_S)
        dt = CONTROL_PERIOD_S / SUBSTEPS
        for _ in range(SUBSTEPS):
            self.space.step(dt)
        self.pusher.position = (x, y)

    def block_poses(self) -> np.ndarray:
        """(2, 3) x, y, yaw of the red and green block."""
        return np.array([[b.position.x, b.position.y, b.angle] for b in self.blocks])


class PushingEnv:
    """N parallel Pushing episodes; finished episodes ignore further actions until ``reset``.

    Every ``reset`` draws fresh contexts from the env's seeded generator, so the sequence of
    episodes (and, with ``tracking_noise``, their noise) is a function of ``seed`` alone.
    """

    obs_dim = len(OBS_NAMES)
    act_dim = 2

    def __init__(
        self, n: int, seed: int = 0, tracking_noise: float = 0.0, rollouts_per_context: int = ROLLOUTS_PER_CONTEXT
    ) -> None:
        if n < 1 or rollouts_per_context < 1:
            raise ValueError("PushingEnv: n and rollouts_per_context must be >= 1")
        if tracking_noise < 0:
            raise ValueError("PushingEnv: tracking_noise must be >= 0")
        self.n = n
        self.tracking_noise = tracking_noise
        self.rollouts_per_context = rollouts_per_context
        self._rng = np.random.default_rng(seed)
        self._alpha = math.exp(-CONTROL_PERIOD_S / TRACKING_TAU_S)

    def reset(self, contexts: np.ndarray | None = None) -> np.ndarray:
        """Start all episodes; ``contexts`` (n, 2, 3) block poses overrides the drawn ones (scripted tests)."""
        if contexts is None:
            per = self.rollouts_per_context
            contexts = np.repeat(sample_contexts(-(-self.n // per), self._rng), per, axis=0)[: self.n]
        self.context = np.asarray(contexts, dtype=np.float64).reshape(self.n, 2, 3).copy()
        self._episodes = [_Episode(PUSHER_START, c) for c in self.context]
        self.desired = np.tile(PUSHER_START, (self.n, 1))
        self.actual = self.desired.copy()
        self.blocks = self.context.copy()
        self.first_entry = np.full((self.n, 2, 2), NOT_YET, dtype=np.int64)
        self.done = np.zeros(self.n, dtype=bool)
        self.success = np.zeros(self.n, dtype=bool)
        self.fell_off = np.zeros(self.n, dtype=bool)
        self.steps = np.zeros(self.n, dtype=np.int64)
        return self._obs()

    def _obs(self) -> np.ndarray:
        b = self.blocks
        parts = [self.desired, self.actual]
        for k in range(2):
            parts += [b[:, k, :2], yaw_features(b[:, k, 2])]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def step(self, actions: np.ndarray) -> PushingStep:
        """Apply clipped desired-position deltas (n, 2) to the running episodes."""
        actions = np.asarray(actions, dtype=np.float64).reshape(self.n, self.act_dim)
        live = ~self.done
        if not np.all(np.isfinite(actions[live])):
            raise ValueError("PushingEnv.step: non-finite action for a running episode")
        delta = np.clip(actions, -MAX_ACTION, MAX_ACTION)
        desired = self.desired + delta
        desired[:, 0] = np.clip(desired[:, 0], WORKSPACE[0], WORKSPACE[1])
        desired[:, 1] = np.clip(desired[:, 1], WORKSPACE[2], WORKSPACE[3])
        actual = desired + (self.actual - desired) * self._alpha
        if self.tracking_noise > 0:
            actual = actual + self._rng.normal(0.0, self.tracking_noise, actual.shape)
        for i in np.flatnonzero(live):
            self._episodes[i].advance(actual[i])
            self.blocks[i] = self._episodes[i].block_poses()
        self.desired[live] = desired[live]
        self.actual[live] = actual[live]
        self.steps[live] += 1

        inside = in_zones(self.blocks[:, :, :2])
        live_entry = self.first_entry[live]
        update_first_entry(live_entry, inside[live], self.steps[live])
        self.first_entry[live] = live_entry
        success, _ = assignment(inside)
        x, y = self.blocks[:, :, 0], self.blocks[:, :, 1]
        off = np.any((x < TABLE[0]) | (x > TABLE[1]) | (y < TABLE[2]) | (y > TABLE[3]), axis=1)
        self.success |= live & success
        self.fell_off |= live & ~success & off
        self.done |= self.success | self.fell_off | (live & (self.steps >= MAX_STEPS))
        return PushingStep(
            obs=self._obs(),
            done=self.done.copy(),
            success=self.success.copy(),
            failed=self.fell_off.copy(),
            mode=decode_mode(self.first_entry, inside),
            steps=self.steps.copy(),
            context=self.context.reshape(self.n, 6).copy(),
            blocks_in_zone=inside.any(axis=2).sum(axis=1).astype(np.int64),
        )
