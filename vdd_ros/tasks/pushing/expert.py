"""Scripted multi-modal expert for Pushing: a closed-loop push controller with state-dependent preferences.

Preferences (unequal and depending on the start, so a context-conditional policy has a real
target): the block nearer to the pusher goes first with probability 0.75, and the assignment
with the shorter total push distance is chosen with probability 0.65, independently.
Each push is approach -> push -> back off: the pusher goes around the blocks to a point behind
the block on the line to its zone, pushes along that line while steering back onto it, and
backs off once the block is placed. The commanded velocity is acceleration-limited and then
low-pass filtered, so velocity and acceleration are continuous and every motion starts and
stops smoothly (an S-shaped speed profile, like minimum-jerk); a per-episode speed factor and
smooth Ornstein-Uhlenbeck velocity noise vary the demonstrations.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from vdd_ros.tasks.base import NO_MODE, Demo
from vdd_ros.tasks.pushing.env import (
    BLOCK_SIZE,
    BLOCK_XY,
    CONTROL_PERIOD_S,
    MAX_ACTION,
    MAX_STEPS,
    PUSHER_RADIUS,
    PushingEnv,
)
from vdd_ros.tasks.pushing.readout import GREEN, NUM_MODES, RED, ZONES, mode_choices, mode_index
from vdd_ros.util.config import knob

NEARER_FIRST_PROB = 0.75
SHORTER_ASSIGNMENT_PROB = 0.65
ACTUAL_XY = slice(2, 4)

_CLEARANCE = BLOCK_SIZE / math.sqrt(2) + PUSHER_RADIUS + 0.008  # pusher centre to block centre, going around
_PRE_PUSH = _CLEARANCE + 0.012  # start of a push, behind the block
_REACHED = 0.008
_GOOD_ENOUGH = 0.04  # a block this close to its zone centre is in the zone with margin: no re-approach
_APPROACH, _PUSH, _BACK_OFF = 0, 1, 2
_MAX_ROUNDS = 10
_SMOOTHING = math.exp(-CONTROL_PERIOD_S / 0.05)  # first-order filter, 0.05 s
_BACK_OFF_M = 0.04  # how far the pusher backs off after a push [m]


@dataclasses.dataclass(frozen=True)
class PushingExpertConfig:
    """Variation knobs of the scripted Pushing expert."""

    push_speed: float = knob(0.15, "block pushing speed [m/s]")
    approach_speed: float = knob(0.3, "free-motion speed of the pusher [m/s]")
    speed_range: tuple[float, float] = knob((0.85, 1.15), "uniform per-episode speed factor range")
    max_accel: float = knob(1.0, "acceleration limit of the commanded velocity [m/s^2]")
    velocity_noise: float = knob(0.01, "std of the smooth (0.3 s correlated) velocity noise [m/s]")
    place_tolerance: float = knob(0.025, "a push ends when the block is this close to the zone centre [m]")
    max_steps: int = knob(MAX_STEPS - 40, "longest accepted demo; keeps demos inside the episode limit")
    execution_noise: float = knob(
        0.002,
        "std of white noise added to each executed step of a demo but not recorded (DART, Laskey et al. 2017): "
        "demos then visit, and correct, states a learned policy drifts into [m]",
    )


def preferred_choices(pusher_xy: np.ndarray, blocks_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(green_first, swapped) bool (n,): the choices the expert prefers given the pusher (n, 2) and blocks (n, 2, 2).

    Green first where the green block is nearer to the pusher; swapped where the swapped
    assignment needs the shorter total push.
    """
    pusher_xy = np.asarray(pusher_xy, dtype=np.float64).reshape(-1, 2)
    blocks_xy = np.asarray(blocks_xy, dtype=np.float64).reshape(-1, 2, 2)
    reach = np.linalg.norm(blocks_xy - pusher_xy[:, None, :], axis=-1)
    direct = np.linalg.norm(blocks_xy - ZONES[None], axis=-1).sum(axis=1)
    swapped = np.linalg.norm(blocks_xy - ZONES[None, ::-1], axis=-1).sum(axis=1)
    return reach[:, GREEN] < reach[:, RED], swapped < direct


def mode_probabilities(pusher_xy: np.ndarray, blocks_xy: np.ndarray) -> np.ndarray:
    """(n, 4) the expert's mode probabilities given the pusher (n, 2) and red/green block centres (n, 2, 2)."""
    green_first_preferred, swapped_preferred = preferred_choices(pusher_xy, blocks_xy)
    p_green_first = np.where(green_first_preferred, NEARER_FIRST_PROB, 1 - NEARER_FIRST_PROB)
    p_swapped = np.where(swapped_preferred, SHORTER_ASSIGNMENT_PROB, 1 - SHORTER_ASSIGNMENT_PROB)
    probs = np.empty((len(p_green_first), NUM_MODES))
    for green_first in (0, 1):
        for swap in (0, 1):
            pg = p_green_first if green_first else 1 - p_green_first
            ps = p_swapped if swap else 1 - p_swapped
            probs[:, mode_index(green_first, swap)] = pg * ps
    return probs


def preferences_followed(modes: np.ndarray, pusher_xy: np.ndarray, blocks_xy: np.ndarray) -> tuple[float, float]:
    """Shares of labelled episodes that took the nearer block first and the shorter assignment.

    ``modes`` (n,) are the episodes' labels (NO_MODE left out), ``pusher_xy`` (n, 2) and
    ``blocks_xy`` (n, 2, 2) each episode's start. The expert scores NEARER_FIRST_PROB and
    SHORTER_ASSIGNMENT_PROB; a policy's per-context preference gap splits into these two
    decisions, so they say which of them a student gets wrong. NaN when no episode is labelled.
    """
    modes = np.asarray(modes, dtype=np.int64)
    labelled = modes != NO_MODE
    if not labelled.any():
        return math.nan, math.nan
    green_first_preferred, swapped_preferred = preferred_choices(pusher_xy, blocks_xy)
    green_first, swapped = mode_choices(modes[labelled])
    return (
        float(np.mean(green_first == green_first_preferred[labelled])),
        float(np.mean(swapped == swapped_preferred[labelled])),
    )


def mode_probabilities_from_obs(obs: np.ndarray) -> np.ndarray:
    """``mode_probabilities`` of initial observations (n, obs_dim)."""
    obs = np.asarray(obs, dtype=np.float64)
    return mode_probabilities(obs[:, ACTUAL_XY], np.stack([obs[:, BLOCK_XY[RED]], obs[:, BLOCK_XY[GREEN]]], axis=1))


def push_order(mode: int) -> list[tuple[int, int]]:
    """The (block, zone) pushes of a mode, in order."""
    swapped, green_first = divmod(int(mode), 2)
    pushes = [(RED, GREEN if swapped else RED), (GREEN, RED if swapped else GREEN)]
    return pushes[::-1] if green_first else pushes


def _unit(x: float, y: float) -> tuple[float, float, float]:
    norm = math.hypot(x, y)
    return (x / norm, y / norm, norm) if norm > 1e-12 else (0.0, 0.0, 0.0)


Point = tuple[float, float]


def _waypoint(p: Point, goal: Point, obstacles: list[Point]) -> Point:
    """Where to head for ``goal`` without touching any block: the goal, or a point beside the first block in the way."""
    for cx, cy in obstacles:  # inside a block's clearance (just after a push): back straight out first
        ox, oy, dist = _unit(p[0] - cx, p[1] - cy)
        if dist < _CLEARANCE:
            return cx + ox * (_CLEARANCE + 0.015), cy + oy * (_CLEARANCE + 0.015)
    dx, dy = goal[0] - p[0], goal[1] - p[1]
    length2 = dx * dx + dy * dy
    best = None
    for cx, cy in obstacles:
        t = ((cx - p[0]) * dx + (cy - p[1]) * dy) / max(length2, 1e-12)
        if t <= 0:
            continue
        t = min(t, 1.0)
        qx, qy = p[0] + t * dx, p[1] + t * dy
        if math.hypot(qx - cx, qy - cy) < _CLEARANCE and (best is None or t < best[0]):
            best = (t, cx, cy, qx, qy)
    if best is None:
        return goal
    _, cx, cy, qx, qy = best
    nx, ny, norm = _unit(qx - cx, qy - cy)
    if norm == 0.0:  # heading straight at the centre: pass on the left of the motion
        nx, ny, _ = _unit(-dy, dx)
    return cx + nx * (_CLEARANCE + 0.02), cy + ny * (_CLEARANCE + 0.02)


class _Pusher:
    """One episode's controller state: which push, which phase, the smoothed velocity and its noise."""

    def __init__(self, mode: int, rng: np.random.Generator, config: PushingExpertConfig) -> None:
        self.pushes = push_order(mode)
        self.stage = 0
        self.phase = _APPROACH
        self.back_off_goal = (0.0, 0.0)
        self.speed = float(rng.uniform(*config.speed_range))
        self.velocity = np.zeros(2)  # acceleration-limited
        self.smooth = np.zeros(2)  # low-pass filtered: what is commanded
        self.noise = np.zeros(2)
        self.rng = rng
        self.config = config

    def target_velocity(self, p: Point, blocks: list[Point]) -> Point:
        """The velocity this step's phase asks for (updating the phase)."""
        cfg = self.config
        if self.stage >= len(self.pushes):
            return 0.0, 0.0
        block, zone = self.pushes[self.stage]
        b, g = blocks[block], ZONES[zone]
        ux, uy, to_zone = _unit(g[0] - b[0], g[1] - b[1])
        if self.phase == _PUSH:
            rx, ry = p[0] - b[0], p[1] - b[1]
            behind = -(rx * ux + ry * uy)
            ex, ey = rx + behind * ux, ry + behind * uy  # offset of the pusher from the push line
            lost = behind < 0.02 or math.hypot(ex, ey) > 0.03
            if to_zone < cfg.place_tolerance or (lost and to_zone < _GOOD_ENOUGH):
                self.phase = _BACK_OFF
                self.back_off_goal = (p[0] - _BACK_OFF_M * ux, p[1] - _BACK_OFF_M * uy)
            elif lost:
                self.phase = _APPROACH
            else:
                speed = self.speed * min(cfg.push_speed, max(2.0 * to_zone, 0.02))
                return speed * ux, speed * uy
        if self.phase == _BACK_OFF:
            gx, gy, dist = _unit(self.back_off_goal[0] - p[0], self.back_off_goal[1] - p[1])
            if dist < _REACHED:
                self.stage += 1
                self.phase = _APPROACH
                return self.target_velocity(p, blocks)
            speed = self.speed * min(cfg.approach_speed, max(3.0 * dist, 0.02))
            return speed * gx, speed * gy
        pre = (b[0] - _PRE_PUSH * ux, b[1] - _PRE_PUSH * uy)
        if math.hypot(pre[0] - p[0], pre[1] - p[1]) < _REACHED:
            self.phase = _PUSH
            return self.target_velocity(p, blocks)
        w = _waypoint(p, pre, blocks)
        wx, wy, _ = _unit(w[0] - p[0], w[1] - p[1])
        dist = math.hypot(pre[0] - p[0], pre[1] - p[1])
        speed = self.speed * min(cfg.approach_speed, max(3.0 * dist, 0.02))
        return speed * wx, speed * wy

    def action(self, p: Point, blocks: list[Point]) -> np.ndarray:
        """Desired-position delta for this step: smoothed target velocity plus noise, times the period."""
        cfg, dt = self.config, CONTROL_PERIOD_S
        target = np.array(self.target_velocity(p, blocks))
        change = target - self.velocity
        limit = cfg.max_accel * dt
        norm = float(np.hypot(*change))
        self.velocity = self.velocity + (change if norm <= limit else change * (limit / norm))
        self.smooth = self.smooth + (1.0 - _SMOOTHING) * (self.velocity - self.smooth)
        rho = math.exp(-dt / 0.3)
        self.noise = rho * self.noise + cfg.velocity_noise * math.sqrt(1 - rho * rho) * self.rng.normal(size=2)
        moving = 0.0 if self.stage >= len(self.pushes) else 1.0
        return np.clip((self.smooth + moving * self.noise) * dt, -MAX_ACTION, MAX_ACTION)


class PushingExpertPolicy:
    """Policy-protocol expert: picks each episode's mode from its first observation, then pushes closed loop.

    ``modes`` forces the mode per stream (NO_MODE entries, or None for all: the expert's own
    preferences, ``mode_probabilities``). ``chosen`` holds the modes of the current episodes.
    """

    name = "scripted_expert"

    def __init__(self, config: PushingExpertConfig = PushingExpertConfig(), modes: np.ndarray | None = None) -> None:
        self.config = config
        self.modes = modes
        self.chosen = np.zeros(0, dtype=np.int64)
        self._pushers: list[_Pusher] = []
        self._rng = np.random.default_rng(0)

    def reset(self, n: int, seed: int) -> None:
        if self.modes is not None and len(self.modes) != n:
            raise ValueError(f"PushingExpertPolicy: {len(self.modes)} forced modes for {n} streams")
        self._rng = np.random.default_rng(seed)
        self._pushers = []
        self.chosen = np.zeros(0, dtype=np.int64)
        self._n = n

    def _choose(self, obs: np.ndarray) -> None:
        probs = mode_probabilities_from_obs(obs)
        drawn = np.array([self._rng.choice(NUM_MODES, p=p) for p in probs], dtype=np.int64)
        forced = np.full(self._n, NO_MODE) if self.modes is None else np.asarray(self.modes, dtype=np.int64)
        self.chosen = np.where(forced == NO_MODE, drawn, forced)
        seeds = self._rng.integers(2**63, size=self._n)
        self._pushers = [
            _Pusher(int(m), np.random.default_rng(s), self.config) for m, s in zip(self.chosen, seeds, strict=True)
        ]

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if obs.shape[0] != self._n:
            raise ValueError(f"PushingExpertPolicy: expected {self._n} streams, got {obs.shape[0]}")
        if not self._pushers:
            self._choose(obs)
        out = np.empty((self._n, 2), dtype=np.float32)
        for i, pusher in enumerate(self._pushers):
            blocks = [(obs[i, s.start], obs[i, s.start + 1]) for s in BLOCK_XY]
            out[i] = pusher.action((obs[i, 2], obs[i, 3]), blocks)
        return out


def generate_demos(
    labels: np.ndarray, rng: np.random.Generator, config: PushingExpertConfig = PushingExpertConfig()
) -> list[Demo]:
    """One validated demonstration per label, in order, each from a fresh context.

    A NO_MODE label lets the expert choose by its preferences (``Demo.mode`` says which).
    A candidate is kept only if it succeeds within ``max_steps`` and reads out as the chosen
    mode; otherwise that slot is re-run from a new context.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    demos: list[Demo | None] = [None] * len(labels)
    for _ in range(_MAX_ROUNDS):
        todo = [i for i, d in enumerate(demos) if d is None]
        if not todo:
            return [d for d in demos if d is not None]
        env = PushingEnv(len(todo), seed=int(rng.integers(2**63)), rollouts_per_context=1)
        policy = PushingExpertPolicy(config, labels[todo])
        policy.reset(len(todo), int(rng.integers(2**63)))
        obs = env.reset()
        obs_log, act_log = [], []
        for _ in range(config.max_steps):
            action = policy.act(obs)
            obs_log.append(obs)
            act_log.append(action)
            if config.execution_noise > 0:  # only then: with 0 the demos are those drawn before the knob existed
                action = action + (config.execution_noise * rng.normal(size=action.shape)).astype(np.float32)
            res = env.step(action)
            obs = res.obs
            if res.done.all():
                break
        ok = res.success & (res.mode == policy.chosen)
        obs_all, act_all = np.stack(obs_log), np.stack(act_log)
        for j, i in enumerate(todo):
            if ok[j]:
                length = int(res.steps[j])
                demos[i] = Demo(obs_all[:length, j].copy(), act_all[:length, j].copy(), int(res.mode[j]))
    raise RuntimeError(f"pushing expert: no valid demos after {_MAX_ROUNDS} rounds; check PushingExpertConfig")
