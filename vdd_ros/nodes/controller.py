"""Real-time controller: observations in, one ONNX run per tick, PolicyAction out.

The decisions (admission, staleness, draws, safety filter, contained errors) live in the
ROS-free ``vdd_ros.runtime.serving.ServingCore``; this node wires them to topics,
parameters and status.

Threads: a deadline loop thread ticks the core; one executor thread takes observations
and serves parameters. A candidate policy is vetted on a worker thread while the
parameter callback -- which must answer ``ros2 param set`` with the verdict -- keeps
taking observations and publishing status itself, so a load of seconds never holds up
observations. (A MultiThreadedExecutor would do the same with less code, but its thread
hand-offs cost the 500 Hz loop several times its round-trip p99: docs/results.md.)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from vdd_ros_msgs.msg import PolicyAction, PolicyStatus

from vdd_ros.export.contract import ContractError
from vdd_ros.nodes.shared import (
    ParamSpec,
    StartupError,
    declare_parameters,
    default_policy_path,
    print_help,
    spin_node,
    wants_help,
)
from vdd_ros.runtime.deadline_loop import DeadlineLoop
from vdd_ros.runtime.noise import SAMPLING_MODES
from vdd_ros.runtime.onnx_policy import DEFAULT_NOISE_CORRELATION, LoadedPolicy, load_policy
from vdd_ros.runtime.providers import ProviderOptions
from vdd_ros.runtime.serving import STALE_BEHAVIOURS, Decision, Rejection, ServingConfig, ServingCore, State
from vdd_ros.runtime.torch_policy import load_torch_policy

BACKENDS = ("onnxruntime", "torch")
SUMMARY = """Serves an exported VDD mixture-of-experts policy (ONNX) at a fixed control rate.
Subscribes 'observation' (sensor_msgs/JointState or std_msgs/Float64MultiArray) and
'episode_start' (std_msgs/Header); publishes 'policy_action' (vdd_ros_msgs/PolicyAction),
'command' (std_msgs/Float64MultiArray), '~/status' and /diagnostics. Setting policy_path
hot-swaps the policy after vetting it; a rejected file leaves the running policy in place."""

PARAMS: dict[str, ParamSpec] = {
    "policy_path": ParamSpec("", "ONNX policy; empty = the shipped default. A change is a vetted hot swap.",
                             read_only=False),
    "sampling_mode": ParamSpec("mean", f"one of {SAMPLING_MODES}", read_only=False),
    "providers": ParamSpec(["CPUExecutionProvider"], "onnxruntime providers in order of preference"),
    "backend": ParamSpec(
        "onnxruntime", f"one of {BACKENDS}: torch serves the student's .safetensors beside the .onnx with PyTorch"
    ),
    "cuda_device_id": ParamSpec(0, "CUDA device of the GPU providers (and of the torch backend)", 0, 64),
    "cuda_graph": ParamSpec(False, "capture the batch-1 step in a CUDA graph (CUDA/TensorRT providers, torch on CUDA)"),
    "trt_fp16": ParamSpec(False, "TensorRT provider: build FP16 engines"),
    "trt_engine_cache": ParamSpec(
        "", "TensorRT engine cache folder: an engine is built once, at the first load; empty = at every load"
    ),
    "intra_op_threads": ParamSpec(1, "onnxruntime threads (1 is fastest for tiny graphs)", 1, 64),
    "allow_spinning": ParamSpec(True, "onnxruntime thread spinning: lower latency, one busy core"),
    "latency_budget_fraction": ParamSpec(
        0.25, "vetting rejects a policy whose inference p99 exceeds this fraction of the control period", 0.01, 1.0
    ),
    "seed": ParamSpec(0, "seed of the sampling noise", 0, 2**31 - 1),
    "noise_correlation": ParamSpec(
        DEFAULT_NOISE_CORRELATION,
        "AR(1) correlation of the sampling noise over observations: each draw keeps its marginal law, the "
        "expert tends to persist; 0 = re-draw it independently per observation (the paper)",
        0.0,
        0.999,
    ),
    "control_rate_hz": ParamSpec(0.0, "0 = the policy's own rate (1 / control_period_s); else 1-2000 Hz", 0.0, 2000.0),
    "sync_to_observations": ParamSpec(
        False,
        "tick as soon as a new observation arrives, then let the timer wait 1.5 periods: one action per "
        "observation, timer ticks only when observations are late; false = fixed-phase ticks",
    ),
    "stale_timeout_s": ParamSpec(0.2, "an observation older than this is stale: safe action instead", 0.001, 10.0),
    "replan_gap_s": ParamSpec(
        0.0,
        "chunked policies: a gap between observations longer than this plans a new chunk at once; "
        "0 = twice the policy's control period",
        0.0,
        10.0,
    ),
    "stale_behavior": ParamSpec("zero", f"safe action on stale input or a failed tick: one of {STALE_BEHAVIOURS}"),
    "max_future_stamp_s": ParamSpec(
        0.5, "observations stamped further than this in the future are dropped (clock skew)", 0.001, 60.0
    ),
    "max_observation_bytes": ParamSpec(
        65536, "larger serialized observations are dropped before decoding", 256, 16 * 1024 * 1024
    ),
    "observation_type": ParamSpec("joint_state", "'joint_state' (names mapped) or 'array' (Float64MultiArray)"),
    "observation_names": ParamSpec([""], "joint names in policy observation order; empty = the contract's names"),
    "observation_reliability": ParamSpec("best_effort", "QoS of the observation subscription"),
    "observation_depth": ParamSpec(5, "QoS depth of the observation subscription", 1, 1000),
    "command_reliability": ParamSpec("reliable", "QoS of policy_action and command"),
    "command_depth": ParamSpec(10, "QoS depth of policy_action and command", 1, 1000),
    "publish_command": ParamSpec(True, "also publish std_msgs/Float64MultiArray on 'command' (ros2_control)"),
    "action_min": ParamSpec([0.0], "per-dimension lower clamp of every published command; empty = none"),
    "action_max": ParamSpec([0.0], "per-dimension upper clamp of every published command; empty = none"),
    "max_action_step": ParamSpec(0.0, "largest change of any action dimension per tick; 0 = no limit", 0.0, 1e6),
    "status_rate_hz": ParamSpec(1.0, "rate of ~/status and /diagnostics", 0.1, 100.0),
    "realtime_priority": ParamSpec(0, "SCHED_FIFO priority of the control thread; 0 = normal scheduling", 0, 99),
}
_EMPTY_PLACEHOLDERS = ([""], [0.0])  # typed stand-ins that declare an empty list


def _qos(reliability: str, depth: int, name: str) -> QoSProfile:
    policies = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
    if reliability not in policies:
        raise StartupError(f"parameter {name!r} must be one of {sorted(policies)}, got {reliability!r}")
    return QoSProfile(depth=depth, reliability=policies[reliability])


def _ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _stamp(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class ControllerNode(Node):
    """Serves an exported VDD mixture-of-experts policy at a fixed control rate."""

    def __init__(self) -> None:
        super().__init__("vdd_controller")
        self._loop: DeadlineLoop | None = None
        # private copies of candidate policies live here; removed on exit even if a vetting was cut short
        self._scratch = tempfile.mkdtemp(prefix="vdd_controller_")
        try:
            self._start()
        except BaseException:  # a refused start: nothing left behind
            self.destroy_node()
            raise

    def _start(self) -> None:
        p = declare_parameters(self, PARAMS)
        for name in ("observation_names", "action_min", "action_max"):
            # the typed stand-in means "empty" only where nobody set it: a 1-D action's
            # action_min: [0.0] is a real bound
            if list(p[name]) in _EMPTY_PLACEHOLDERS and name not in self._parameter_overrides:
                p[name] = []
        self._p = p
        self._staged: LoadedPolicy | None = None
        self._rejected_swaps = 0
        self._swaps = 0
        self._message = ""

        if p["backend"] not in BACKENDS:
            raise StartupError(f"parameter 'backend' must be one of {BACKENDS}, got {p['backend']!r}")
        self._provider_options = ProviderOptions(
            p["cuda_device_id"], p["cuda_graph"], p["trt_fp16"], p["trt_engine_cache"]
        )
        try:
            self._provider_options.check()
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        rate = p["control_rate_hz"]
        if 0 < rate < 1.0:
            raise StartupError(f"parameter 'control_rate_hz' must be 0 (policy rate) or in [1, 2000], got {rate}")
        path = p["policy_path"] or default_policy_path()
        self._period = 1.0 / rate if rate else None
        loaded = self._load(path, what="start")
        self._period = self._period or loaded.contract.control_period_s
        config = ServingConfig(
            stale_timeout_s=p["stale_timeout_s"],
            replan_gap_s=p["replan_gap_s"],
            stale_behavior=p["stale_behavior"],
            action_min=tuple(p["action_min"]),
            action_max=tuple(p["action_max"]),
            max_action_step=p["max_action_step"],
            max_future_stamp_s=p["max_future_stamp_s"],
            sampling_mode=p["sampling_mode"],
            seed=p["seed"],
            noise_correlation=p["noise_correlation"],
        )
        try:
            self.core = ServingCore(loaded, config)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self._obs_names = list(p["observation_names"]) or list(self.core.contract.obs_names)
        if len(self._obs_names) != self.core.contract.obs_dim:
            raise StartupError(
                f"parameter 'observation_names' has {len(self._obs_names)} entries, "
                f"the policy expects {self.core.contract.obs_dim}"
            )
        self._max_bytes = p["max_observation_bytes"]
        self._announce(loaded)

        obs_qos = _qos(p["observation_reliability"], p["observation_depth"], "observation_reliability")
        kinds = {"joint_state": (JointState, self._on_joint_state), "array": (Float64MultiArray, self._on_array)}
        if p["observation_type"] not in kinds:
            raise StartupError(f"parameter 'observation_type' must be one of {sorted(kinds)}")
        msg_type, handler = kinds[p["observation_type"]]
        self._obs_type = msg_type
        # created first: when both are ready in one wait, the executor serves the announcement first
        self._episode_sub = self.create_subscription(
            Header, "episode_start", self._on_episode_start, QoSProfile(depth=10)
        )
        self.create_subscription(msg_type, "observation", handler, obs_qos, raw=True)
        cmd_qos = _qos(p["command_reliability"], p["command_depth"], "command_reliability")
        self._action_pub = self.create_publisher(PolicyAction, "policy_action", cmd_qos)
        self._command_pub = (
            self.create_publisher(Float64MultiArray, "command", cmd_qos) if p["publish_command"] else None
        )
        self._status_pub = self.create_publisher(PolicyStatus, "~/status", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._seq = 0
        self._loop_errors_reported = 0
        self._last_status = (time.monotonic(), 0)
        self._status_period = 1.0 / p["status_rate_hz"]
        self.create_timer(self._status_period, self._publish_status)
        self._loop = DeadlineLoop(self._period, self._tick, realtime_priority=p["realtime_priority"])
        self._loop.start()
        time.sleep(0.05)
        if self._loop.realtime_error:
            self.get_logger().warning(f"realtime_priority not applied ({self._loop.realtime_error}); timing may jitter")
        self.get_logger().info(
            f"running at {1.0 / self._period:.1f} Hz, sampling_mode={p['sampling_mode']}, "
            f"stale_behavior={p['stale_behavior']}"
        )

    # ----------------------------------------------------------------- parameters
    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """On-set: vet a new policy (on the parameter thread); stage it only if the whole set is accepted.

        rclpy has already refused read-only and out-of-range values by their descriptors.
        """
        self._staged = None
        candidate = None
        for param in params:
            if param.name == "sampling_mode" and param.value not in SAMPLING_MODES:
                return SetParametersResult(successful=False, reason=f"sampling_mode must be one of {SAMPLING_MODES}")
        for param in params:
            if param.name == "policy_path":
                path = param.value or default_policy_path()
                try:
                    candidate = self._vet_while_serving(path)
                except ContractError as exc:
                    return self._reject(str(exc))
                except Exception as exc:  # whatever else vetting hits (memory, disk): a rejection, never a crash
                    return self._reject(f"{path!r}: vetting failed: {exc!r}")
                reasons = self.core.contract.incompatibilities(candidate.contract)
                if reasons:
                    return self._reject(f"{path!r} is incompatible: " + "; ".join(reasons))
        self._staged = candidate
        return SetParametersResult(successful=True)

    def _reject(self, reason: str) -> SetParametersResult:
        self._rejected_swaps += 1
        self._message = f"rejected swap: {reason}"
        self.get_logger().error(f"{self._message}; the running policy stays active")
        return SetParametersResult(successful=False, reason=reason)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        """Post-set (only after an accepted set): one reference assignment each; the loop sees it next tick."""
        names = {p.name: p.value for p in params}
        candidate, self._staged = self._staged, None
        if "policy_path" not in names:
            candidate = None
        if candidate is not None or "sampling_mode" in names:
            self.core.update(candidate, names.get("sampling_mode"))
        if candidate is not None:
            self._swaps += 1
            self._message = f"swapped to {candidate.contract.policy_id} ({candidate.path})"
            self._announce(candidate)

    def _vet_while_serving(self, path: str) -> LoadedPolicy:
        """Load and vet ``path`` on a worker; meanwhile this executor thread keeps taking inputs."""
        done = threading.Event()
        outcome: list = []

        def work() -> None:
            try:
                outcome.append(self._load(path, what="swap"))
            except BaseException as exc:  # handed to the parameter thread, which reports it
                outcome.append(exc)
            finally:
                done.set()

        threading.Thread(target=work, name="vdd_vetting", daemon=True).start()
        next_status = time.monotonic() + self._status_period
        while not done.wait(0.001):
            self._take_inputs()
            if time.monotonic() >= next_status:
                self._publish_status()
                next_status += self._status_period
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _take_inputs(self) -> None:
        """What the executor would do for every subscription (inputs, and /clock under sim time) while parked here."""
        for sub in self.subscriptions:
            with sub.handle:
                while (taken := sub.handle.take_message(sub.msg_type, sub.raw)) is not None:
                    sub.callback(taken[0])

    def _load(self, path: str, what: str) -> LoadedPolicy:
        """Load and vet ``path`` against this node's rate and providers; StartupError at start."""
        p = self._p
        started = time.monotonic()
        if self._loop is not None:  # running: start the GIL-holding session build right after a tick
            self._loop.wait_for_slack()
        common = {
            "latency_budget_fraction": p["latency_budget_fraction"],
            "control_period_s": self._period,
            "options": self._provider_options,
        }
        try:
            providers, threads = tuple(p["providers"]), p["intra_op_threads"]
            if p["backend"] == "torch":
                loaded = load_torch_policy(path, providers, threads, **common)
            else:
                loaded = load_policy(path, providers, threads, p["allow_spinning"], scratch_dir=self._scratch, **common)
        except ContractError as exc:
            if what == "start":
                raise StartupError(f"policy {path!r}: {exc}") from None
            raise
        except Exception as exc:
            if what == "start":
                raise StartupError(f"policy {path!r}: loading failed: {exc!r}") from None
            raise
        self.get_logger().info(f"loaded and vetted {path} in {1e3 * (time.monotonic() - started):.1f} ms")
        return loaded

    def _announce(self, loaded: LoadedPolicy) -> None:
        log = self.get_logger()
        log.info(f"policy {loaded.contract.policy_id} sha256 {loaded.sha256[:12]} on {loaded.provider}")
        if loaded.provider_fallback:
            wanted = self._p["providers"][0]
            log.warning(
                f"!!! execution provider fallback: wanted {wanted}, running on {loaded.provider}: "
                f"{loaded.fallback_reason} !!!"
            )

    # --------------------------------------------------------------- observations
    def _decode(self, data: bytes) -> object | None:
        """Size limit before any decoding: a huge message costs nothing but its copy."""
        if len(data) > self._max_bytes:
            self.core.reject(Rejection.OVERSIZED)
            return None
        try:
            return deserialize_message(data, self._obs_type)
        except Exception:  # a malformed CDR payload
            self.core.reject(Rejection.INVALID)
            return None

    def _offer(self, values: np.ndarray, stamp_ns: int, check_stamp: bool) -> None:
        self._take_episode_starts()
        now_ns = self.get_clock().now().nanoseconds
        if self.core.offer(values, stamp_ns, now_ns, time.monotonic(), check_stamp) is None and self._p[
            "sync_to_observations"
        ]:
            self._loop.wake()

    def _on_joint_state(self, data: bytes) -> None:
        msg = self._decode(data)
        if msg is None:
            return
        if len(msg.name) != len(msg.position):
            self.core.reject(Rejection.INVALID)
            return
        index = {name: i for i, name in enumerate(msg.name)}
        try:
            values = np.asarray([msg.position[index[n]] for n in self._obs_names], dtype=np.float64)
        except KeyError:
            self.core.reject(Rejection.INVALID)
            return
        self._offer(values, _ns(msg.header.stamp), check_stamp=True)

    def _on_array(self, data: bytes) -> None:
        msg = self._decode(data)
        if msg is not None:  # no stamp in the message: the receive time stands in, unchecked
            self._offer(np.asarray(msg.data, dtype=np.float64), self.get_clock().now().nanoseconds, check_stamp=False)

    def _on_episode_start(self, msg: Header) -> None:
        self.core.episode_start(_ns(msg.stamp))

    def _take_episode_starts(self) -> None:
        """Apply announcements already received before the observation they may announce.

        A simulator publishes the start, then the first observation; the executor may still serve
        the observation first, and the loop thread it wakes would answer from the last episode's
        window -- the answer a lockstep simulator steps with (measured: 3 of 300 under load).
        """
        sub = self._episode_sub
        with sub.handle:
            while (taken := sub.handle.take_message(sub.msg_type, sub.raw)) is not None:
                self._on_episode_start(taken[0])

    # ----------------------------------------------------------------------- loop
    def _tick(self) -> None:
        if not self.context.ok():  # shutting down (Ctrl-C): the loop is about to be stopped
            return
        decision = self.core.tick(time.monotonic())
        if decision is not None:
            self._publish(decision)

    def _publish(self, d: Decision) -> None:
        msg = PolicyAction()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = d.policy.contract.frame_id
        msg.observation_stamp = _stamp(d.observation.stamp_ns)
        msg.action = d.action.tolist()
        msg.action_names = list(self.core.contract.act_names)
        msg.expert_index = d.expert
        msg.expert_probability = d.probability
        msg.policy_id = d.policy.contract.policy_id
        msg.policy_sha256_short = d.policy.sha256[:12]
        msg.sequence = self._seq
        msg.source = int(d.source)
        self._seq += 1
        self._action_pub.publish(msg)
        if self._command_pub is not None:
            self._command_pub.publish(Float64MultiArray(data=d.action.astype(np.float64).tolist()))

    # --------------------------------------------------------------------- status
    def _publish_status(self) -> None:
        core = self.core
        policy = core.policy
        now = time.monotonic()
        then, ticks_then = self._last_status
        ticks = self._loop.ticks
        self._last_status = (now, ticks)
        state, reason = core.state(now)
        c = core.counters
        msg = PolicyStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.policy_id = policy.contract.policy_id
        msg.policy_sha256 = policy.sha256
        msg.policy_path = policy.path
        msg.execution_provider = policy.provider
        msg.provider_fallback = policy.provider_fallback
        msg.sampling_mode = core.sampling_mode
        msg.control_rate_target_hz = 1.0 / self._period
        msg.control_rate_achieved_hz = (ticks - ticks_then) / max(now - then, 1e-9)
        (
            msg.inference_latency_p50_ms,
            msg.inference_latency_p99_ms,
            msg.inference_latency_max_ms,
        ) = core.inference_latency.drain_summary_ms()
        (
            msg.observation_to_action_p50_ms,
            msg.observation_to_action_p99_ms,
            msg.observation_to_action_max_ms,
        ) = core.obs_to_action_latency.drain_summary_ms()
        msg.ticks = ticks
        msg.tick_overruns = self._loop.overruns
        msg.missed_ticks = self._loop.missed
        msg.tick_errors = c["tick_errors"] + self._loop.errors
        msg.stale_observations = c["stale"]
        msg.invalid_observations = c[Rejection.INVALID.value]
        msg.oversized_observations = c[Rejection.OVERSIZED.value]
        msg.future_stamps = c[Rejection.FUTURE_STAMP.value]
        msg.old_stamps = c[Rejection.OLD_STAMP.value]
        msg.duplicate_stamps = c[Rejection.DUPLICATE_STAMP.value]
        msg.policy_swaps = self._swaps
        msg.rejected_swaps = self._rejected_swaps
        msg.state = int(state)
        if self._loop.errors > self._loop_errors_reported:  # the loop survived it; reported once
            self._loop_errors_reported = self._loop.errors
            msg.state, reason = int(State.ERROR), f"control loop error: {self._loop.last_error}"
        msg.message = reason if msg.state != State.RUNNING or not self._message else self._message
        self._status_pub.publish(msg)
        self._publish_diagnostics(msg)

    def _publish_diagnostics(self, status: PolicyStatus) -> None:
        level = DiagnosticStatus.OK
        if status.state == PolicyStatus.STATE_ERROR:
            level = DiagnosticStatus.ERROR
        elif status.state == PolicyStatus.STATE_STALE or status.provider_fallback or status.missed_ticks:
            level = DiagnosticStatus.WARN
        fields = {
            "policy_id": status.policy_id,
            "policy_sha256": status.policy_sha256,
            "execution_provider": status.execution_provider,
            "provider_fallback_reason": self.core.policy.fallback_reason,
            "sampling_mode": status.sampling_mode,
            "rate_target_hz": f"{status.control_rate_target_hz:.1f}",
            "rate_achieved_hz": f"{status.control_rate_achieved_hz:.1f}",
            "inference_p50_ms": f"{status.inference_latency_p50_ms:.3f}",
            "inference_p99_ms": f"{status.inference_latency_p99_ms:.3f}",
            "observation_to_action_p99_ms": f"{status.observation_to_action_p99_ms:.3f}",
            "overruns": str(status.tick_overruns),
            "missed_ticks": str(status.missed_ticks),
            "tick_errors": str(status.tick_errors),
            "stale_observations": str(status.stale_observations),
            "invalid_observations": str(status.invalid_observations),
            "oversized_observations": str(status.oversized_observations),
            "rejected_stamps": str(status.future_stamps + status.old_stamps + status.duplicate_stamps),
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
        if self._loop is not None:  # a refused start has no loop
            self._loop.stop()
            self._loop = None
        shutil.rmtree(self._scratch, ignore_errors=True)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    if wants_help(args):
        print_help("controller", SUMMARY, PARAMS)
        return
    # Python hands the GIL over every 5 ms by default: a whole 500 Hz period. A short switch
    # interval lets the control thread preempt a thread that is vetting a policy.
    sys.setswitchinterval(2e-4)
    spin_node(ControllerNode, args, executable="controller")


if __name__ == "__main__":
    main()
