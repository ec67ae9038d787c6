"""Real-time controller: observations in, one ONNX run per tick, PolicyAction out.

Threads: the executor (subscriptions, parameter services, status timer) and one
deadline loop thread for control. The loop reads a single reference to the active
policy bundle per tick, so a hot swap -- validated and warmed up in the parameter
callback on the executor thread -- replaces the policy between ticks, atomically.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from vdd_ros_msgs.msg import PolicyAction, PolicyStatus

from vdd_ros.export.contract import ContractError
from vdd_ros.nodes.shared import default_policy_path, spin_node
from vdd_ros.runtime.deadline_loop import DeadlineLoop
from vdd_ros.runtime.latency import LatencyWindow
from vdd_ros.runtime.onnx_policy import (
    DEFAULT_NOISE_CORRELATION,
    SAMPLING_MODES,
    LoadedPolicy,
    NoiseSource,
    load_policy,
)
from vdd_ros.runtime.safety import ActionFilter
from vdd_ros.runtime.window import ObservationWindow

STALE_BEHAVIOURS = ("hold", "zero", "stop")


@dataclasses.dataclass
class _Active:
    """Everything one tick needs, replaced as a whole on swap or mode change."""

    policy: LoadedPolicy
    noise: NoiseSource
    window: ObservationWindow
    sha_short: str
    inputs: np.ndarray | None = None  # current (1, T, obs_dim) window, None before any observation
    draw: tuple[np.ndarray, np.ndarray] | None = None  # (gumbel, eps) for the current window
    obs_seq: int = -1  # sequence number of the newest observation pushed into the window
    episode: tuple[int, int] | None = None  # stamp of the episode start this window was reset for


@dataclasses.dataclass
class _Observation:
    values: np.ndarray
    stamp: object  # builtin_interfaces/Time
    received: float  # time.monotonic()
    seq: int


def _qos(reliability: str, depth: int) -> QoSProfile:
    policies = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
    if reliability not in policies:
        raise ValueError(f"QoS reliability {reliability!r} is not one of {sorted(policies)}")
    return QoSProfile(depth=depth, reliability=policies[reliability])


class ControllerNode(Node):
    """Serves an exported VDD mixture-of-experts policy at a fixed control rate."""

    def __init__(self) -> None:
        super().__init__("vdd_controller")
        p = self._declare_parameters()
        self._obs_lock = threading.Lock()
        self._obs: _Observation | None = None
        self._obs_seq = 0
        self._episode_start: tuple[int, int] | None = None
        self._swap_lock = threading.Lock()
        self._staged: dict[str, LoadedPolicy] = {}
        self.counters = dict.fromkeys(("invalid", "stale", "swaps", "rejected", "published"), 0)
        self._message = ""
        self._latency = LatencyWindow()
        self._obs_latency = LatencyWindow()
        self._seq = 0
        self._last_action: np.ndarray | None = None
        self._loop: DeadlineLoop | None = None

        path = p["policy_path"] or default_policy_path()
        try:
            loaded = self._load(path)
        except ContractError as exc:
            raise SystemExit(f"controller: cannot start with policy {path!r}: {exc}") from exc
        self._contract = loaded.contract
        self._active = self._bundle(loaded, p["sampling_mode"], p["seed"])
        self._filter = ActionFilter(
            self._contract.act_dim * self._contract.act_chunk, p["action_min"], p["action_max"], p["max_action_step"]
        )
        self._announce(loaded)

        rate = p["control_rate_hz"] or 1.0 / self._contract.control_period_s
        self._period = 1.0 / rate
        self._stale_timeout = p["stale_timeout_s"]
        self._sync = p["sync_to_observations"]
        self._stale_behaviour = p["stale_behavior"]
        if self._stale_behaviour not in STALE_BEHAVIOURS:
            raise SystemExit(f"controller: stale_behavior must be one of {STALE_BEHAVIOURS}")
        self._obs_names = list(p["observation_names"]) or list(self._contract.obs_names)
        if len(self._obs_names) != self._contract.obs_dim:
            raise SystemExit(
                f"controller: observation_names has {len(self._obs_names)} entries, "
                f"the policy expects {self._contract.obs_dim}"
            )

        obs_qos = _qos(p["observation_reliability"], p["observation_depth"])
        if p["observation_type"] == "joint_state":
            self.create_subscription(JointState, "observation", self._on_joint_state, obs_qos)
        elif p["observation_type"] == "array":
            self.create_subscription(Float64MultiArray, "observation", self._on_array, obs_qos)
        else:
            raise SystemExit("controller: observation_type must be 'joint_state' or 'array'")
        self.create_subscription(Header, "episode_start", self._on_episode_start, QoSProfile(depth=10))
        cmd_qos = _qos(p["command_reliability"], p["command_depth"])
        self._action_pub = self.create_publisher(PolicyAction, "policy_action", cmd_qos)
        self._command_pub = (
            self.create_publisher(Float64MultiArray, "command", cmd_qos) if p["publish_command"] else None
        )
        self._status_pub = self.create_publisher(PolicyStatus, "~/status", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._status_period = 1.0 / p["status_rate_hz"]
        self._last_status = (time.monotonic(), 0)
        self.create_timer(self._status_period, self._publish_status)
        self._loop = DeadlineLoop(self._period, self._tick, realtime_priority=p["realtime_priority"])
        self._loop.start()
        time.sleep(0.05)
        if self._loop.realtime_error:
            self.get_logger().warning(f"realtime_priority not applied ({self._loop.realtime_error}); timing may jitter")
        self.get_logger().info(
            f"running at {rate:.1f} Hz, sampling_mode={p['sampling_mode']}, stale_behavior={self._stale_behaviour}"
        )

    # ----------------------------------------------------------------- parameters
    def _declare_parameters(self) -> dict:
        d = ParameterDescriptor
        specs: dict[str, tuple[object, str]] = {
            "policy_path": ("", "ONNX policy; empty = the shipped default. Writable: a change is a hot swap."),
            "providers": (["CPUExecutionProvider"], "onnxruntime providers in order of preference"),
            "intra_op_threads": (1, "onnxruntime threads (1 is fastest for tiny graphs)"),
            "allow_spinning": (True, "onnxruntime thread spinning: lower latency, one busy core"),
            "sampling_mode": ("mean", f"one of {SAMPLING_MODES}; writable"),
            "seed": (0, "seed of the sampling noise"),
            "noise_correlation": (
                DEFAULT_NOISE_CORRELATION,
                "AR(1) correlation of the sampling noise over observations in [0, 1): each draw keeps its "
                "marginal law, the expert tends to persist; 0 = re-draw it independently per observation (the paper)",
            ),
            "control_rate_hz": (0.0, "0 = the policy's own rate (1 / control_period_s)"),
            "sync_to_observations": (
                False,
                "tick as soon as a new observation arrives, then let the timer wait 1.5 periods: one action "
                "per observation at the control rate, timer ticks only when observations are late; "
                "false = fixed-phase ticks",
            ),
            "stale_timeout_s": (0.2, "an observation older than this is stale"),
            "stale_behavior": ("zero", f"on stale input: one of {STALE_BEHAVIOURS}"),
            "observation_type": ("joint_state", "'joint_state' (names mapped) or 'array' (Float64MultiArray)"),
            "observation_names": ([""], "joint names in policy observation order; empty = the contract's names"),
            "observation_reliability": ("best_effort", "QoS of the observation subscription"),
            "observation_depth": (5, "QoS depth of the observation subscription"),
            "command_reliability": ("reliable", "QoS of policy_action and command"),
            "command_depth": (10, "QoS depth of policy_action and command"),
            "publish_command": (True, "also publish std_msgs/Float64MultiArray on 'command' (ros2_control)"),
            "action_min": ([0.0], "per-dimension lower clamp; empty = none"),
            "action_max": ([0.0], "per-dimension upper clamp; empty = none"),
            "max_action_step": (0.0, "largest change of any action dimension per tick; 0 = no limit"),
            "status_rate_hz": (1.0, "rate of ~/status and /diagnostics"),
            "realtime_priority": (0, "SCHED_FIFO priority of the control thread (1-99); 0 = normal scheduling"),
        }
        values = {}
        for name, (default, doc) in specs.items():
            param = self.declare_parameter(name, default, d(description=doc))
            values[name] = param.value
        # empty-list defaults need a typed placeholder to declare; treat the placeholder as empty
        for name in ("observation_names", "action_min", "action_max"):
            if list(values[name]) in ([""], [0.0]):
                values[name] = []
        return values

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """On-set: only policy_path and sampling_mode may change; a new policy is fully vetted here."""
        for param in params:
            if param.name == "policy_path":
                path = param.value or default_policy_path()
                if not self._swap_lock.acquire(blocking=False):
                    return self._reject("another policy swap is in progress")
                try:
                    candidate = self._load(path)
                    reasons = self._contract.incompatibilities(candidate.contract)
                    if reasons:
                        return self._reject(f"{path!r} is incompatible: " + "; ".join(reasons))
                    self._staged[param.name] = candidate
                except ContractError as exc:
                    return self._reject(str(exc))
                finally:
                    self._swap_lock.release()
            elif param.name == "sampling_mode":
                if param.value not in SAMPLING_MODES:
                    return self._reject(f"sampling_mode must be one of {SAMPLING_MODES}")
            elif param.name not in ("use_sim_time",):
                return SetParametersResult(successful=False, reason=f"{param.name} is read-only at runtime")
        return SetParametersResult(successful=True)

    def _reject(self, reason: str) -> SetParametersResult:
        self.counters["rejected"] += 1
        self._message = f"rejected swap: {reason}"
        self.get_logger().error(f"{self._message}; the running policy stays active")
        return SetParametersResult(successful=False, reason=reason)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        """Post-set: one reference assignment; the loop picks it up on its next tick."""
        mode = self.get_parameter("sampling_mode").value
        seed = self.get_parameter("seed").value
        candidate = self._staged.pop("policy_path", None)
        if candidate is not None:
            self._active = self._bundle(candidate, mode, seed)
            self.counters["swaps"] += 1
            self._message = f"swapped to {candidate.contract.policy_id} ({candidate.path})"
            self._announce(candidate)
        elif any(p.name == "sampling_mode" for p in params):
            self._active = self._bundle(self._active.policy, mode, seed)

    def _load(self, path: str) -> LoadedPolicy:
        p = self.get_parameter
        started = time.monotonic()
        if self._loop is not None:  # running: start the GIL-holding session build right after a tick
            self._loop.wait_for_slack()
        loaded = load_policy(path, tuple(p("providers").value), p("intra_op_threads").value, p("allow_spinning").value)
        self.get_logger().info(f"loaded and warmed up {path} in {1e3 * (time.monotonic() - started):.1f} ms")
        return loaded

    def _bundle(self, loaded: LoadedPolicy, mode: str, seed: int) -> _Active:
        c = loaded.contract
        rho = self.get_parameter("noise_correlation").value
        noise = NoiseSource(mode, seed, c.num_experts, c.act_chunk * c.act_dim, rho)
        bundle = _Active(loaded, noise, ObservationWindow(1, c.obs_window, c.obs_dim), loaded.sha256[:12])
        with self._obs_lock:
            obs = self._obs
        if obs is not None:  # seed the new window so the new policy acts on the very next tick
            bundle.inputs, bundle.obs_seq = bundle.window.push(obs.values[None]), obs.seq
            bundle.draw = noise.draw(1)
        return bundle

    def _announce(self, loaded: LoadedPolicy) -> None:
        log = self.get_logger()
        log.info(f"policy {loaded.contract.policy_id} sha256 {loaded.sha256[:12]} on {loaded.provider}")
        if loaded.provider_fallback:
            wanted = self.get_parameter("providers").value[0]
            log.warning(f"!!! execution provider fallback: wanted {wanted}, running on {loaded.provider} !!!")

    # --------------------------------------------------------------- observations
    def _accept(self, values: np.ndarray, stamp: object) -> None:
        if values.shape != (self._contract.obs_dim,) or not np.all(np.isfinite(values)):
            self.counters["invalid"] += 1
            return
        with self._obs_lock:
            self._obs_seq += 1
            self._obs = _Observation(values.astype(np.float32), stamp, time.monotonic(), self._obs_seq)
        if self._sync and self._loop is not None:
            self._loop.wake()

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            index = [msg.name.index(n) for n in self._obs_names]
            values = np.asarray([msg.position[i] for i in index], dtype=np.float64)
        except (ValueError, IndexError):
            self.counters["invalid"] += 1
            return
        self._accept(values, msg.header.stamp)

    def _on_episode_start(self, msg: Header) -> None:
        """A new episode begins with the observation stamped ``msg.stamp``: forget the history."""
        with self._obs_lock:
            self._episode_start = (msg.stamp.sec, msg.stamp.nanosec)

    def _on_array(self, msg: Float64MultiArray) -> None:
        self._accept(np.asarray(msg.data, dtype=np.float64), self.get_clock().now().to_msg())

    # ----------------------------------------------------------------------- loop
    def _tick(self) -> None:
        if not self.context.ok():  # shutting down (Ctrl-C): the loop is about to be stopped
            return
        active = self._active  # the one read of the policy reference this tick
        with self._obs_lock:
            obs, episode = self._obs, self._episode_start
        if obs is None or time.monotonic() - obs.received > self._stale_timeout:
            self.counters["stale"] += 1
            self._publish_safe(obs)
            return
        if episode is not None and episode != active.episode and episode == (obs.stamp.sec, obs.stamp.nanosec):
            # first observation of a new episode (whichever of the two messages came first)
            active.window.reset()
            active.noise.reset()
            self._filter.reset()
            active.episode, active.obs_seq = episode, -1
        fresh = obs.seq != active.obs_seq
        if fresh:  # the window advances once per new observation, as in training
            active.inputs, active.obs_seq = active.window.push(obs.values[None]), obs.seq
            # One draw per observation, as in training and in-process evaluation: ticks in between
            # repeat the same sample instead of re-drawing the expert (and noise_correlation acts
            # per observation, not per tick -- at 500 Hz per tick it would decorrelate within a step).
            active.draw = active.noise.draw(1)
        started = time.perf_counter()
        action, expert, gating = active.policy.run(active.inputs, *active.draw)
        self._latency.add(time.perf_counter() - started)
        z = int(expert[0])
        filtered = self._filter.apply(action.reshape(-1))
        if filtered is None:
            self._message = "policy produced a non-finite action"
            self._publish_safe(obs)
            return
        self._publish(filtered, obs.stamp, z, float(gating[0, z]), PolicyAction.SOURCE_POLICY, active)
        if fresh:
            self._obs_latency.add(time.monotonic() - obs.received)

    def _publish_safe(self, obs: _Observation | None) -> None:
        if self._stale_behaviour == "stop" or obs is None:
            return
        dim = self._contract.act_dim * self._contract.act_chunk
        if self._stale_behaviour == "hold" and self._last_action is not None:
            self._publish(self._last_action, obs.stamp, -1, 0.0, PolicyAction.SOURCE_HOLD, self._active)
        else:
            self._publish(np.zeros(dim, np.float32), obs.stamp, -1, 0.0, PolicyAction.SOURCE_ZERO, self._active)

    def _publish(
        self, action: np.ndarray, obs_stamp: object, z: int, prob: float, source: int, active: _Active
    ) -> None:
        msg = PolicyAction()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self._contract.frame_id
        msg.observation_stamp = obs_stamp
        msg.action = action.tolist()
        msg.action_names = list(self._contract.act_names)
        msg.expert_index = z
        msg.expert_probability = prob
        msg.policy_id = active.policy.contract.policy_id
        msg.policy_sha256_short = active.sha_short
        msg.sequence = self._seq
        msg.source = source
        self._seq += 1
        self._last_action = action
        self._action_pub.publish(msg)
        if self._command_pub is not None:
            self._command_pub.publish(Float64MultiArray(data=action.astype(np.float64).tolist()))
        self.counters["published"] += 1

    # --------------------------------------------------------------------- status
    def _publish_status(self) -> None:
        active = self._active
        now = time.monotonic()
        then, ticks_then = self._last_status
        ticks = self._loop.ticks
        self._last_status = (now, ticks)
        p50, p99, worst = self._latency.drain_summary_ms()
        obs_p50, obs_p99, obs_worst = self._obs_latency.drain_summary_ms()
        with self._obs_lock:
            obs = self._obs
        stale = obs is None or now - obs.received > self._stale_timeout
        msg = PolicyStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.policy_id = active.policy.contract.policy_id
        msg.policy_sha256 = active.policy.sha256
        msg.policy_path = active.policy.path
        msg.execution_provider = active.policy.provider
        msg.provider_fallback = active.policy.provider_fallback
        msg.sampling_mode = active.noise.mode
        msg.control_rate_target_hz = 1.0 / self._period
        msg.control_rate_achieved_hz = (ticks - ticks_then) / max(now - then, 1e-9)
        msg.inference_latency_p50_ms, msg.inference_latency_p99_ms, msg.inference_latency_max_ms = p50, p99, worst
        msg.observation_to_action_p50_ms = obs_p50
        msg.observation_to_action_p99_ms = obs_p99
        msg.observation_to_action_max_ms = obs_worst
        msg.ticks = ticks
        msg.tick_overruns = self._loop.overruns
        msg.missed_ticks = self._loop.missed
        msg.stale_observations = self.counters["stale"]
        msg.invalid_observations = self.counters["invalid"]
        msg.policy_swaps = self.counters["swaps"]
        msg.rejected_swaps = self.counters["rejected"]
        msg.state = PolicyStatus.STATE_STALE if stale else PolicyStatus.STATE_RUNNING
        msg.message = self._message or ("waiting for observations" if stale else "ok")
        self._status_pub.publish(msg)
        self._publish_diagnostics(msg)

    def _publish_diagnostics(self, status: PolicyStatus) -> None:
        level = DiagnosticStatus.OK
        if status.state == PolicyStatus.STATE_STALE or status.provider_fallback or status.missed_ticks:
            level = DiagnosticStatus.WARN
        fields = {
            "policy_id": status.policy_id,
            "policy_sha256": status.policy_sha256,
            "execution_provider": status.execution_provider,
            "sampling_mode": status.sampling_mode,
            "rate_target_hz": f"{status.control_rate_target_hz:.1f}",
            "rate_achieved_hz": f"{status.control_rate_achieved_hz:.1f}",
            "inference_p50_ms": f"{status.inference_latency_p50_ms:.3f}",
            "inference_p99_ms": f"{status.inference_latency_p99_ms:.3f}",
            "observation_to_action_p99_ms": f"{status.observation_to_action_p99_ms:.3f}",
            "overruns": str(status.tick_overruns),
            "missed_ticks": str(status.missed_ticks),
            "stale_observations": str(status.stale_observations),
            "invalid_observations": str(status.invalid_observations),
        }
        diag = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: policy",
            message=status.message,
            hardware_id="vdd_ros",
            values=[KeyValue(key=k, value=v) for k, v in fields.items()],
        )
        self._diag_pub.publish(DiagnosticArray(header=status.header, status=[diag]))

    def destroy_node(self) -> None:
        self._loop.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    # Python hands the GIL over every 5 ms by default: a whole 500 Hz period. A short switch
    # interval lets the control thread preempt a parameter callback that is loading a policy.
    # One executor thread (not a MultiThreadedExecutor): measured, its worker-pool churn
    # competes for the GIL and made 500 Hz ticks miss their deadlines; the control loop has
    # its own thread anyway, and callbacks only copy data or vet a policy file.
    sys.setswitchinterval(2e-4)
    spin_node(ControllerNode, args)


if __name__ == "__main__":
    main()
