"""Load, validate and run an exported MoE policy with onnxruntime (no torch, no rclpy).

``load_policy`` is the single gate every file passes before it may drive a robot: it
checks the file, the graph's I/O against the contract, and vets the graph over a spread
of observations (``vdd_ros.runtime.vetting``). Anything wrong raises ``ContractError``
with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from vdd_ros.data.noise import DEFAULT_NOISE_CORRELATION
from vdd_ros.data.window import ObservationWindow
from vdd_ros.export.contract import INPUT_NAMES, METADATA_KEY, OUTPUT_NAMES, ContractError, PolicyContract
from vdd_ros.runtime.bound_session import BoundSession
from vdd_ros.runtime.noise import NoiseSource
from vdd_ros.runtime.providers import CPU, ProviderOptions, binding_device, fallback_reason, session_providers
from vdd_ros.runtime.vetting import vet_policy

DEFAULT_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)


@dataclasses.dataclass(frozen=True)
class LoadedPolicy:
    """A validated, warmed-up inference session and what is known about it."""

    session: ort.InferenceSession
    contract: PolicyContract
    path: str
    sha256: str
    provider: str
    provider_fallback: bool
    single: BoundSession  # batch-1 calls (the control loop) skip run()'s per-call conversions
    fallback_reason: str = ""  # why ``provider`` is not the first one asked for ("" = it is)

    def run(self, obs: np.ndarray, gumbel: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One graph run: (action (B,H,A), expert (B,), gating (B,Z))."""
        if self.single.accepts(obs, gumbel, eps):
            action, expert, gating = self.single(obs, gumbel, eps)
        else:
            action, expert, gating = self.session.run(OUTPUT_NAMES, {"obs": obs, "gumbel": gumbel, "eps": eps})
        return action, expert, gating


def session_options(threads: int = 1, allow_spinning: bool = True) -> ort.SessionOptions:
    """Options for tiny graphs: one thread, sequential, full graph optimisation."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return opts


def _check_io(session: ort.InferenceSession, c: PolicyContract) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if tuple(sorted(inputs)) != tuple(sorted(INPUT_NAMES)) or not set(OUTPUT_NAMES) <= set(outputs):
        raise ContractError(
            f"graph I/O {sorted(inputs)} -> {sorted(outputs)} is not the vdd_ros contract "
            f"{INPUT_NAMES} -> {OUTPUT_NAMES}"
        )
    expected = {
        "obs": [c.obs_window, c.obs_dim],
        "gumbel": [c.num_experts],
        "eps": [c.act_chunk * c.act_dim],
    }
    for name, tail in expected.items():
        shape = inputs[name].shape
        if inputs[name].type != "tensor(float)" or list(shape[1:]) != tail:
            raise ContractError(f"input {name!r} is {inputs[name].type}{shape}, contract expects float[B, {tail}]")
    produced = {
        "action": ("tensor(float)", [c.act_chunk, c.act_dim]),
        "expert": ("tensor(int64)", []),
        "gating": ("tensor(float)", [c.num_experts]),
    }
    for name, (dtype, tail) in produced.items():
        shape = outputs[name].shape
        if outputs[name].type != dtype or list(shape[1:]) != tail:
            raise ContractError(f"output {name!r} is {outputs[name].type}{shape}, contract expects {dtype}[B, {tail}]")


def _session_from_private_copy(
    path: str, options: ort.SessionOptions, providers: list[tuple[str, dict[str, str]]], scratch_dir: str | None
) -> tuple[ort.InferenceSession, str]:
    """(session, sha256) over exactly the bytes hashed, from a private copy of ``path``.

    The file is read once, in blocks that are hashed and copied to a folder nobody else
    writes, and onnxruntime parses that copy: the graph loaded is the one hashed even if
    ``path`` is replaced meanwhile. onnxruntime parses a file path with the GIL released
    but an in-memory model with it held, and freeing a whole-file buffer holds it too, which
    would stall the control thread for a large file (docs/results.md, measurement notes).
    """
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="vdd_policy_", dir=scratch_dir) as folder:
        private = os.path.join(folder, "policy.onnx")
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed below; read and write errors get their own messages
        except FileNotFoundError as exc:
            raise ContractError(f"policy file {path!r} does not exist") from exc
        except OSError as exc:
            raise ContractError(f"policy file {path!r} cannot be read ({exc.strerror})") from exc
        with src, open(private, "wb") as dst:
            while True:
                try:
                    block = src.read(1 << 20)
                except OSError as exc:
                    raise ContractError(f"policy file {path!r} cannot be read ({exc.strerror})") from exc
                if not block:
                    break
                digest.update(block)
                try:
                    dst.write(block)
                except OSError as exc:
                    raise ContractError(f"cannot copy {path!r} to {folder} for loading ({exc.strerror})") from exc
        try:
            session = ort.InferenceSession(private, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises several unrelated types for bad files
            raise ContractError(f"onnxruntime cannot load {path!r}: {str(exc).replace(private, path)}") from exc
    return session, digest.hexdigest()


def load_policy(
    path: str,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    threads: int = 1,
    allow_spinning: bool = True,
    latency_budget_fraction: float | None = None,
    control_period_s: float | None = None,
    scratch_dir: str | None = None,
    options: ProviderOptions | None = None,
) -> LoadedPolicy:
    """Open, validate and vet ``path``; raise ContractError with a reason otherwise.

    The file is read once: the sha256 reported and the graph loaded come from the same
    bytes, so a file replaced on disk meanwhile cannot be reported under another hash
    (the policy must be one self-contained file: no external data beside it).
    ``latency_budget_fraction``: reject a graph whose inference p99 exceeds this fraction
    of ``control_period_s`` (None: the policy's own period); None = no limit.
    ``scratch_dir``: where the private copy is parsed (default: the system's temporary folder).
    ``options``: the GPU providers' options (``vdd_ros.runtime.providers``); on a GPU provider the
    batch-1 buffers live in device memory.
    """
    if not path:
        raise ContractError("no policy path given")
    if not path.endswith(".onnx"):
        raise ContractError(f"policy file {path!r} is not an .onnx file")
    options = options or ProviderOptions()
    available = ort.get_available_providers()
    usable = session_providers(providers, available, options)
    session, sha = _session_from_private_copy(path, session_options(threads, allow_spinning), usable, scratch_dir)
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ContractError(f"{path!r} has no {METADATA_KEY!r} metadata: not a vdd_ros policy")
    contract = PolicyContract.from_json(meta[METADATA_KEY])
    _check_io(session, contract)
    active = session.get_providers()[0]
    single = BoundSession(session, 1, INPUT_NAMES, OUTPUT_NAMES, device=binding_device(active, options))
    reason = fallback_reason(providers, available, active)
    loaded = LoadedPolicy(session, contract, path, sha, active, active != providers[0], single, reason)
    work_on_caller_thread = active == CPU and threads == 1
    vet_policy(path, contract, loaded.run, latency_budget_fraction, control_period_s, work_on_caller_thread)
    return loaded


class OnnxPolicy:
    """An exported MoE as a ``Policy`` for N parallel rollouts (in lockstep, as ``run_rollouts`` steps them).

    Like the controller it plans a chunk every ``act_exec`` steps and executes one action of it per step.
    """

    def __init__(
        self,
        path: str,
        mode: str = "mean",
        seed: int = 0,
        noise_correlation: float = DEFAULT_NOISE_CORRELATION,
        loaded: LoadedPolicy | None = None,
    ) -> None:
        self.loaded = loaded or load_policy(path)
        self.mode = mode
        self.noise_correlation = noise_correlation
        c = self.loaded.contract
        self.name = f"vdd-moe[{c.policy_id}]"
        self.visited: list[np.ndarray] | None = None  # set to [] to record every raw window fed to the graph
        self.reset(1, seed)

    def reset(self, n: int, seed: int) -> None:
        c = self.loaded.contract
        self._window = ObservationWindow(n, c.obs_window, c.obs_dim)
        self._noise = NoiseSource(self.mode, seed, c.num_experts, c.act_chunk * c.act_dim, self.noise_correlation)
        self._plan = np.zeros((n, c.act_chunk, c.act_dim), np.float32)
        self._step = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        window = self._window.push(obs)
        index = self._step % self.loaded.contract.act_exec
        if index == 0:
            if self.visited is not None:
                self.visited.append(window.copy())
            self._plan, _, _ = self.loaded.run(window, *self._noise.draw(window.shape[0]))
        self._step += 1
        return self._plan[:, index, :]
