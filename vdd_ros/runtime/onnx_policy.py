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
from typing import Literal

import numpy as np
import onnxruntime as ort

from vdd_ros.data.noise import DEFAULT_NOISE_CORRELATION, CorrelatedNormal
from vdd_ros.data.window import ObservationWindow
from vdd_ros.export.contract import INPUT_NAMES, METADATA_KEY, OUTPUT_NAMES, ContractError, PolicyContract
from vdd_ros.runtime.bound_session import BoundSession
from vdd_ros.runtime.vetting import vet_graph

SamplingMode = Literal["mean", "sample", "greedy"]
SAMPLING_MODES: tuple[str, ...] = ("mean", "sample", "greedy")
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

    def run(self, obs: np.ndarray, gumbel: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One graph run: (action (B,H,A), expert (B,), gating (B,Z))."""
        if self.single.accepts(obs, gumbel, eps):
            action, expert, gating = self.single(obs, gumbel, eps)
        else:
            action, expert, gating = self.session.run(OUTPUT_NAMES, {"obs": obs, "gumbel": gumbel, "eps": eps})
        return action, expert, gating


class NoiseSource:
    """Seeded noise for the graph's noise inputs; the mode decides which noise is live.

    mean: Gumbel noise draws the expert, eps = 0 (the paper's default);
    sample: both live (expert mean + Cholesky factor times eps);
    greedy: both zero (most likely expert, its mean).

    ``correlation`` rho (``vdd_ros.data.noise``) makes the noise of one stream an AR(1)
    process over calls: its standard-normal latent is mapped to Gumbel(0, 1) (through the
    normal CDF) and used as eps. Each call's noise keeps its exact marginal law (Gumbel-max
    still draws z with probability q(z|s) for that noise), but consecutive steps tend to keep
    their expert instead of re-drawing it every 35 ms. rho = 0 is the paper's rule.
    """

    def __init__(self, mode: str, seed: int, num_experts: int, noise_dim: int, correlation: float = 0.0) -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"sampling_mode must be one of {SAMPLING_MODES}, got {mode!r}")
        from scipy.special import ndtr  # deferred: a slow import that the nodes' --help must not pay

        self._ndtr = ndtr
        self.mode = mode
        self._stream = CorrelatedNormal(np.random.default_rng(seed), correlation)
        self._z = num_experts
        self._d = noise_dim

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start fresh (uncorrelated) noise for all streams, or those where ``mask`` is true."""
        self._stream.reset(mask)

    def draw(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        gumbel = np.zeros((batch, self._z), dtype=np.float32)
        eps = np.zeros((batch, self._d), dtype=np.float32)
        if self.mode == "greedy":
            return gumbel, eps
        normal = self._stream.draw((batch, self._z + self._d))
        u = np.clip(self._ndtr(normal[:, : self._z]), 1e-12, 1.0 - 1e-12)
        gumbel[:] = -np.log(-np.log(u))
        if self.mode == "sample":
            eps[:] = normal[:, self._z :]
        return gumbel, eps


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
    path: str, options: ort.SessionOptions, providers: list[str], scratch_dir: str | None
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
) -> LoadedPolicy:
    """Open, validate and vet ``path``; raise ContractError with a reason otherwise.

    The file is read once: the sha256 reported and the graph loaded come from the same
    bytes, so a file replaced on disk meanwhile cannot be reported under another hash
    (the policy must be one self-contained file: no external data beside it).
    ``latency_budget_fraction``: reject a graph whose inference p99 exceeds this fraction
    of ``control_period_s`` (None: the policy's own period); None = no limit.
    ``scratch_dir``: where the private copy is parsed (default: the system's temporary folder).
    """
    if not path:
        raise ContractError("no policy path given")
    if not path.endswith(".onnx"):
        raise ContractError(f"policy file {path!r} is not an .onnx file")
    available = ort.get_available_providers()
    usable = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    session, sha = _session_from_private_copy(path, session_options(threads, allow_spinning), usable, scratch_dir)
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ContractError(f"{path!r} has no {METADATA_KEY!r} metadata: not a vdd_ros policy")
    contract = PolicyContract.from_json(meta[METADATA_KEY])
    _check_io(session, contract)
    active = session.get_providers()[0]
    single = BoundSession(session, 1, INPUT_NAMES, OUTPUT_NAMES)
    loaded = LoadedPolicy(session, contract, path, sha, active, active != providers[0], single)
    noise = NoiseSource("sample", 0, contract.num_experts, contract.act_chunk * contract.act_dim)
    budget = None
    if latency_budget_fraction is not None:
        budget = latency_budget_fraction * (control_period_s or contract.control_period_s)
    try:
        vet_graph(
            contract,
            loaded.run,
            lambda: noise.draw(1),
            budget,
            work_on_caller_thread=active == "CPUExecutionProvider" and threads == 1,
        )
    except ContractError as exc:
        raise ContractError(f"{path!r}: {exc}") from None
    except Exception as exc:  # the graph itself failed on a probe
        raise ContractError(f"{path!r}: vetting inference failed: {exc}") from exc
    return loaded


class OnnxPolicy:
    """An exported MoE as a ``Policy`` for N parallel rollouts (first action of the chunk)."""

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

    def act(self, obs: np.ndarray) -> np.ndarray:
        window = self._window.push(obs)
        if self.visited is not None:
            self.visited.append(window.copy())
        action, _, _ = self.loaded.run(window, *self._noise.draw(window.shape[0]))
        return action[:, 0, :]
