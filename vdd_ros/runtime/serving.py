"""The controller's decisions without ROS: which observations count and what each tick publishes.

The controller node keeps subscriptions, publishers, parameters and status messages;
everything that decides an action lives here, so unit tests drive it without DDS:

* admission of observations: size and finiteness against the contract, then stamps
  (future beyond a tolerance, older than the last accepted one, or duplicated: counted
  and dropped; an episode start restarts the ordering, for a simulator whose clock resets);
* episodes: the observation an ``episode_start`` announces by its stamp -- or, for
  unstamped observations, the first one admitted after it -- starts a fresh window, noise
  and rate limiter, whichever of the two messages arrives first;
* staleness: no admitted observation younger than ``stale_timeout_s`` -> safe action;
* chunks: an inference plans a chunk of ``act_chunk`` actions with one expert; each new
  observation advances to the chunk's next action until ``act_exec`` have been executed,
  then the next inference re-plans; a new episode, a swap, a sampling-mode change or a gap
  between observations longer than ``replan_gap_s`` re-plans early. Ticks between two
  observations repeat the current action; one sampling draw per inference;
* contained ticks: an exception or invalid output in inference or post-processing
  latches state ERROR, the tick and every later one publish the safe action, and only
  a successful swap (of any vetted policy, the same file included) recovers;
* the safety filter on every published command, safe ones included.

Threads: observations arrive on executor threads (``offer``, ``episode_start``); ``tick``
runs on the control thread; ``update`` (swap and/or sampling mode) replaces one reference that the
tick reads once, so no tick mixes two policies.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import math
import threading
import time

import numpy as np

from vdd_ros.data.window import ObservationWindow
from vdd_ros.runtime.latency import LatencyWindow
from vdd_ros.runtime.onnx_policy import DEFAULT_NOISE_CORRELATION, LoadedPolicy, NoiseSource
from vdd_ros.runtime.safety import ActionFilter
from vdd_ros.runtime.vetting import output_problem

STALE_BEHAVIOURS = ("hold", "zero", "stop")


class Source(enum.IntEnum):
    """Where a published command came from (the values of PolicyAction.SOURCE_*)."""

    POLICY = 0
    HOLD = 1
    ZERO = 2


class State(enum.IntEnum):
    """Health of the serving loop (the values of PolicyStatus.STATE_*)."""

    RUNNING = 0
    STALE = 1
    ERROR = 3


class Rejection(enum.Enum):
    """Why an observation was not admitted; each has its own counter."""

    INVALID = "invalid"  # wrong size, non-finite, names and values not matching
    OVERSIZED = "oversized"  # serialized message above the size limit (checked by the node)
    FUTURE_STAMP = "future_stamp"
    OLD_STAMP = "old_stamp"
    DUPLICATE_STAMP = "duplicate_stamp"


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """The safety-relevant settings; ``check`` refuses any that would make the robot unsafe.

    ``sampling_mode`` and ``noise_correlation`` are checked where they are used, by ``NoiseSource``.
    """

    stale_timeout_s: float = 0.2
    stale_behavior: str = "zero"
    action_min: tuple[float, ...] = ()
    action_max: tuple[float, ...] = ()
    max_action_step: float = 0.0
    max_future_stamp_s: float = 0.5
    sampling_mode: str = "mean"
    seed: int = 0
    noise_correlation: float = DEFAULT_NOISE_CORRELATION
    replan_gap_s: float = 0.0  # 0 = twice the policy's control period

    def check(self, action_dim: int) -> ActionFilter:
        """Validate against the policy's action size; the filter it implies. Raises ValueError naming the setting."""
        for name in ("stale_timeout_s", "max_future_stamp_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not (math.isfinite(self.replan_gap_s) and self.replan_gap_s >= 0):
            raise ValueError(f"replan_gap_s must be a finite number >= 0, got {self.replan_gap_s}")
        if self.stale_behavior not in STALE_BEHAVIOURS:
            raise ValueError(f"stale_behavior must be one of {STALE_BEHAVIOURS}, got {self.stale_behavior!r}")
        action_filter = ActionFilter(action_dim, self.action_min, self.action_max, self.max_action_step)
        if self.stale_behavior == "zero" and not action_filter.contains_zero():
            raise ValueError(
                "stale_behavior 'zero' needs zero inside [action_min, action_max]; "
                "use 'hold' or 'stop' for actions whose zero is not a safe command"
            )
        return action_filter


@dataclasses.dataclass(frozen=True)
class Observation:
    values: np.ndarray  # (obs_dim,) float32
    stamp_ns: int  # echoed in the answering action (0 = unstamped)
    received_s: float  # monotonic receive time
    seq: int
    episode: int  # number of the episode it belongs to (episode_start messages before it)


@dataclasses.dataclass(frozen=True)
class Decision:
    """One tick's command and what produced it."""

    action: np.ndarray  # (act_dim,) float32, filtered: this tick's action of the planned chunk
    source: Source
    expert: int
    probability: float
    observation: Observation
    policy: LoadedPolicy
    fresh: bool  # first action computed from this observation
    chunk_step: int = 0  # index of ``action`` in its chunk (0: just planned)


@dataclasses.dataclass
class _Bundle:
    """Everything one tick needs, replaced as a whole on swap or sampling change."""

    policy: LoadedPolicy
    noise: NoiseSource
    window: ObservationWindow
    inputs: np.ndarray | None = None  # current (1, T, obs_dim) window
    draw: tuple[np.ndarray, np.ndarray] | None = None  # (gumbel, eps) of the next or current plan
    obs_seq: int = -1  # newest observation pushed into the window
    episode: int = 0  # episode of the observations in the window
    received_s: float = -math.inf  # receive time of that observation
    plan: np.ndarray | None = None  # (act_chunk, act_dim) raw chunk being executed; None = plan next tick
    expert: int = -1  # the plan's expert and its gating probability
    probability: float = 0.0
    step: int = 0  # index of the executed action in ``plan``


class ServingCore:
    """Admits observations, decides each tick's command, swaps policies; no ROS, no torch."""

    def __init__(self, policy: LoadedPolicy, config: ServingConfig) -> None:
        c = policy.contract
        self.config = config
        self.contract = c
        self.action_dim = c.act_dim  # one action per tick; chunks are executed over observations
        self._filter = config.check(self.action_dim)
        self._replan_gap_s = config.replan_gap_s or 2.0 * c.control_period_s
        self._lock = threading.Lock()
        self._obs: Observation | None = None
        self._seq = 0
        self._last_stamp_ns: int | None = None
        self._episodes = 0  # episode_start messages so far
        self._seeds = np.random.SeedSequence(config.seed)  # each new noise stream gets its own child
        self._mode = config.sampling_mode
        self._last_action: np.ndarray | None = None
        self._error = ""  # latched reason of the last failed tick; "" = healthy
        self.counters = dict.fromkeys([r.value for r in Rejection] + ["stale", "tick_errors"], 0)
        self.inference_latency = LatencyWindow()
        self.obs_to_action_latency = LatencyWindow()
        self._bundle = self._make_bundle(policy, self._mode, None)

    # ------------------------------------------------------------------ observations
    def reject(self, reason: Rejection) -> Rejection:
        """Count a rejected observation (also for checks the node makes before decoding)."""
        self.counters[reason.value] += 1
        return reason

    def offer(self, values: np.ndarray, stamp_ns: int, now_ns: int, received_s: float, check_stamp: bool = True):
        """Admit one observation; None if admitted, else the Rejection (counted)."""
        if values.shape != (self.contract.obs_dim,) or not np.all(np.isfinite(values)):
            return self.reject(Rejection.INVALID)
        with self._lock:
            if check_stamp and stamp_ns != 0:
                if stamp_ns > now_ns + int(self.config.max_future_stamp_s * 1e9):
                    return self.reject(Rejection.FUTURE_STAMP)
                last = self._last_stamp_ns
                if last is not None and stamp_ns == last:
                    return self.reject(Rejection.DUPLICATE_STAMP)
                if last is not None and stamp_ns < last:
                    return self.reject(Rejection.OLD_STAMP)
                self._last_stamp_ns = stamp_ns
            self._seq += 1
            self._obs = Observation(values.astype(np.float32), stamp_ns, received_s, self._seq, self._episodes)
        return None

    def episode_start(self, stamp_ns: int) -> None:
        """A new episode begins with the observation stamped ``stamp_ns`` (or the next one admitted).

        If that observation already arrived it is re-labelled, so the next tick starts the
        episode from it; either way the stamp ordering restarts (a simulator may reset its clock).
        """
        with self._lock:
            self._episodes += 1
            self._last_stamp_ns = None
            if self._obs is not None and self._obs.stamp_ns == stamp_ns:
                self._obs = dataclasses.replace(self._obs, episode=self._episodes)

    def latest(self) -> Observation | None:
        with self._lock:
            return self._obs

    # -------------------------------------------------------------------------- tick
    def tick(self, now_s: float) -> Decision | None:
        """The command for this tick, or None when nothing may be published."""
        bundle = self._bundle  # the one read of the policy reference this tick
        obs = self.latest()
        if obs is None:
            return None
        if now_s - obs.received_s > self.config.stale_timeout_s:
            self.counters["stale"] += 1
            return self._safe(obs, bundle)
        if self._error:
            return self._safe(obs, bundle)
        try:
            return self._infer(obs, bundle, now_s)
        except Exception as exc:  # contained: a bad output or a raising graph must not end the loop
            self.counters["tick_errors"] += 1
            if self._bundle is bundle:  # a failure of a policy swapped out meanwhile is not the new one's
                self._error = f"policy {bundle.policy.contract.policy_id} failed at run time: {exc}"
            return self._safe(obs, bundle)

    def _infer(self, obs: Observation, bundle: _Bundle, now_s: float) -> Decision:
        if obs.episode != bundle.episode:  # first observation of a new episode
            bundle.window.reset()
            bundle.noise.reset()
            self._filter.reset()
            bundle.episode, bundle.obs_seq, bundle.plan = obs.episode, -1, None
        fresh = obs.seq != bundle.obs_seq
        if fresh:  # the window advances once per new observation; the chunk too, or a new one is planned
            bundle.inputs, bundle.obs_seq = bundle.window.push(obs.values[None]), obs.seq
            gap, bundle.received_s = obs.received_s - bundle.received_s, obs.received_s
            executing = bundle.plan is not None and bundle.step + 1 < bundle.policy.contract.act_exec
            if executing and gap <= self._replan_gap_s:
                bundle.step += 1
            else:
                bundle.plan, bundle.draw = None, bundle.noise.draw(1)
        if bundle.plan is None:
            self._plan(bundle)
        filtered = self._filter.apply(bundle.plan[bundle.step])
        if filtered is None:
            raise ValueError("non-finite action")
        self._last_action = filtered
        if fresh:
            self.obs_to_action_latency.add(now_s - obs.received_s)
        return Decision(
            filtered, Source.POLICY, bundle.expert, bundle.probability, obs, bundle.policy, fresh, bundle.step
        )

    def _plan(self, bundle: _Bundle) -> None:
        """One inference: a chunk from the current window and draw, checked before any of it is used."""
        started = time.perf_counter()
        action, expert, gating = bundle.policy.run(bundle.inputs, *bundle.draw)
        self.inference_latency.add(time.perf_counter() - started)
        problem = output_problem(bundle.policy.contract, action, expert, gating)
        if problem is not None:
            raise ValueError(problem)
        z = int(expert[0])
        bundle.plan, bundle.expert, bundle.probability, bundle.step = action[0], z, float(gating[0, z]), 0

    def _safe(self, obs: Observation, bundle: _Bundle) -> Decision | None:
        behaviour = self.config.stale_behavior
        if behaviour == "stop":
            return None
        if behaviour == "hold" and self._last_action is not None:
            action, source = self._filter.clamp(self._last_action), Source.HOLD
        else:
            action, source = self._filter.clamp(np.zeros(self.action_dim, np.float32)), Source.ZERO
        self._last_action = action
        return Decision(action, source, -1, 0.0, obs, bundle.policy, False)

    # ---------------------------------------------------------------- swap and status
    def _make_bundle(self, policy: LoadedPolicy, mode: str, old: _Bundle | None) -> _Bundle:
        """A bundle for ``policy``; it keeps ``old``'s history and noise stream where they fit."""
        c = policy.contract
        if old is not None and old.noise.mode == mode and old.policy.contract.num_experts == c.num_experts:
            noise = old.noise  # the same stream goes on (its correlation state included)
        else:
            seed = int(self._seeds.spawn(1)[0].generate_state(1)[0])
            noise = NoiseSource(mode, seed, c.num_experts, c.act_chunk * c.act_dim, self.config.noise_correlation)
        if old is not None and old.inputs is not None and old.policy.contract.obs_window == c.obs_window:
            window = copy.deepcopy(old.window)  # same history: the new policy continues the episode
            draw = old.draw if noise is old.noise else noise.draw(1)
            return _Bundle(policy, noise, window, window.current(), draw, old.obs_seq, old.episode, old.received_s)
        bundle = _Bundle(policy, noise, ObservationWindow(1, c.obs_window, c.obs_dim))
        obs = self.latest()
        if obs is not None:  # seed the new window so the new policy acts on the very next tick
            bundle.inputs, bundle.obs_seq = bundle.window.push(obs.values[None]), obs.seq
            bundle.draw, bundle.episode, bundle.received_s = noise.draw(1), obs.episode, obs.received_s
        return bundle

    def update(self, policy: LoadedPolicy | None = None, mode: str | None = None) -> None:
        """Serve ``policy`` (already vetted and compatible) and/or sample in ``mode`` from the next tick.

        One new bundle for both, so no tick runs a mix; a new policy clears an ERROR.
        """
        old = self._bundle
        mode = mode or self._mode
        bundle = self._make_bundle(policy or old.policy, mode, old)  # NoiseSource refuses a bad mode
        self._mode, self._bundle = mode, bundle
        if policy is not None:
            self._error = ""

    @property
    def policy(self) -> LoadedPolicy:
        return self._bundle.policy

    @property
    def sampling_mode(self) -> str:
        return self._mode

    def state(self, now_s: float) -> tuple[State, str]:
        """(state, reason): ERROR latches until a swap; STALE while no fresh observation."""
        if self._error:
            return State.ERROR, self._error
        obs = self.latest()
        if obs is None:
            return State.STALE, "waiting for observations"
        if now_s - obs.received_s > self.config.stale_timeout_s:
            return State.STALE, f"newest observation is {now_s - obs.received_s:.2f} s old"
        return State.RUNNING, "ok"
