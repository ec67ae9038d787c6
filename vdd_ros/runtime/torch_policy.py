"""Serve the student with PyTorch (CUDA graph on a GPU) for robots with PyTorch but no onnxruntime-gpu.

``load_torch_policy`` is the torch counterpart of ``onnx_policy.load_policy``: it reads the
student's weights that ``export_policy`` writes beside the graph (``policy.safetensors``,
whose metadata holds the same contract), rebuilds the network the graph was exported from
(``export.onnx_export._RawPolicyGraph``: same inputs obs/gumbel/eps, same outputs
action/expert/gating), and vets it with the same checks through the same ``run`` interface.
The result, ``TorchPolicy``, stands wherever a ``LoadedPolicy`` does (``ServingCore``).

Batch-1 calls go through static input and output tensors allocated once. On CUDA, with
``cuda_graph``, one step is captured in a CUDA graph: a call copies the observation window
and that call's noise into the static inputs and replays the graph, so every replay samples
with fresh noise. On the CPU (or without capture) the same static buffers are run eagerly.

torch is imported only inside functions: importing this module (the controller does) must
not load torch unless this backend is selected.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from vdd_ros.export.contract import METADATA_KEY, ContractError, PolicyContract
from vdd_ros.runtime.providers import CPU, GPU_PROVIDERS, ProviderOptions
from vdd_ros.runtime.vetting import vet_policy
from vdd_ros.util.files import sha256_bytes

_CAPTURE_WARMUP_RUNS = 3  # eager runs on a side stream before capture (lazy CUDA initialisation)


class _Step:
    """Thread-safe calls of ``graph`` on ``device``; batch-1 calls through static tensors (maybe a CUDA graph)."""

    def __init__(self, graph: Any, contract: PolicyContract, device: str, capture: bool) -> None:
        import torch

        c = contract
        shapes = [(1, c.obs_window, c.obs_dim), (1, c.num_experts), (1, c.act_chunk * c.act_dim)]
        self.graph, self.device = graph, torch.device(device)
        self._lock = threading.Lock()
        on_gpu = self.device.type == "cuda"
        # host side of the static inputs (pinned on a GPU for quick copies); on the CPU they are the inputs
        self._host = [torch.zeros(s, pin_memory=on_gpu) for s in shapes]
        self._host_np = [t.numpy() for t in self._host]
        self.inputs = [t.to(self.device) for t in self._host] if on_gpu else self._host
        self._cuda_graph = None
        with torch.no_grad():
            if capture:
                self._cuda_graph, self.outputs = _capture(graph, self.inputs)
            else:
                self.outputs = list(graph(*self.inputs))

    def accepts(self, *arrays: np.ndarray) -> bool:
        return len(arrays) == len(self._host_np) and all(
            a.shape == b.shape for a, b in zip(arrays, self._host_np, strict=True)
        )

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        import torch

        with self._lock, torch.no_grad():
            if not self.accepts(*arrays):
                feeds = [torch.from_numpy(np.array(a, dtype=np.float32)).to(self.device) for a in arrays]
                return [out.cpu().numpy() for out in self.graph(*feeds)]
            for host, array in zip(self._host_np, arrays, strict=True):
                np.copyto(host, array, casting="same_kind")
            if self.inputs is not self._host:
                for static, host in zip(self.inputs, self._host, strict=True):
                    static.copy_(host, non_blocking=True)
            if self._cuda_graph is not None:
                self._cuda_graph.replay()
            else:
                for static, fresh in zip(self.outputs, self.graph(*self.inputs), strict=True):
                    static.copy_(fresh)
            return [out.to("cpu", copy=True).numpy() for out in self.outputs]


def _capture(graph: Any, inputs: list[Any]) -> tuple[Any, list[Any]]:
    """(CUDA graph of one step of ``graph`` on the static ``inputs``, its static outputs)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(_CAPTURE_WARMUP_RUNS):
            graph(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        outputs = list(graph(*inputs))
    return cuda_graph, outputs


@dataclasses.dataclass(frozen=True)
class TorchPolicy:
    """A validated, warmed-up torch student: the same fields and ``run`` as ``LoadedPolicy``."""

    contract: PolicyContract
    path: str
    sha256: str
    provider: str  # e.g. "torch:cuda:0+cudagraph", "torch:cpu"
    provider_fallback: bool
    step: _Step
    fallback_reason: str = ""

    def run(self, obs: np.ndarray, gumbel: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step: (action (B,H,A), expert (B,), gating (B,Z)), as the ONNX graph returns them."""
        action, expert, gating = self.step(obs, gumbel, eps)
        return action, expert, gating


def torch_device(requested: Sequence[str], options: ProviderOptions) -> tuple[str, str]:
    """(torch device, fallback reason or "") for the provider preference ``requested``.

    GPU providers mean ``cuda:<cuda_device_id>``, the CPU provider the CPU; names torch cannot
    stand in for are skipped. The reason is "" when the first requested provider is served.
    """
    import torch

    reasons = []
    for name in requested:
        if name == CPU:
            return "cpu", "; ".join(reasons)
        if name in GPU_PROVIDERS:
            if not torch.cuda.is_available():
                reasons.append(f"{name}: torch has no CUDA device (torch.cuda.is_available() is False)")
            elif options.cuda_device_id >= torch.cuda.device_count():
                reasons.append(f"{name}: cuda_device_id {options.cuda_device_id} >= {torch.cuda.device_count()} GPUs")
            else:
                return f"cuda:{options.cuda_device_id}", "; ".join(reasons)
        else:
            reasons.append(f"{name}: not a provider the torch backend can stand in for")
    return "cpu", "; ".join(reasons) or "no provider requested"


def _read_weights(path: pathlib.Path) -> tuple[bytes, dict[str, str]]:
    """(file bytes, safetensors metadata), the file read once; ContractError naming the problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ContractError(
            f"weights file {str(path)!r} does not exist (export_policy writes it beside the .onnx)"
        ) from None
    except OSError as exc:
        raise ContractError(f"weights file {str(path)!r} cannot be read ({exc.strerror})") from None
    try:  # safetensors layout: u64 little-endian header size, JSON header with "__metadata__"
        size = int.from_bytes(data[:8], "little")
        if len(data) < 8 or size > len(data) - 8:
            raise ValueError("truncated header")
        metadata = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    except (ValueError, AttributeError, RecursionError) as exc:
        raise ContractError(f"{str(path)!r} is not a safetensors file ({exc})") from None
    return data, metadata


def _rebuild(data: bytes, metadata: dict[str, str], where: str) -> tuple[Any, PolicyContract]:
    """(the exported computation as a torch module on the CPU, contract) from the weights file."""
    import safetensors.torch

    from vdd_ros.data.normalizer import Normalizer
    from vdd_ros.export.onnx_export import STUDENT_KEY, _RawPolicyGraph, check_contract
    from vdd_ros.moe.policy import GaussianMoE, split_description

    if METADATA_KEY not in metadata or STUDENT_KEY not in metadata:
        raise ContractError(f"{where!r} lacks {METADATA_KEY!r} or {STUDENT_KEY!r} metadata: not vdd_ros weights")
    contract = PolicyContract.from_json(metadata[METADATA_KEY])
    try:
        moe = GaussianMoE(*split_description(json.loads(metadata[STUDENT_KEY]), f"{where} {STUDENT_KEY}"))
        check_contract(moe, contract)
        moe.load_state_dict(safetensors.torch.load(data))
    except Exception as exc:  # malformed description, mismatching contract, missing or misshapen tensors
        raise ContractError(f"{where!r}: the weights do not rebuild the student: {exc}") from None
    norms = (Normalizer.from_dict(contract.obs_normalizer), Normalizer.from_dict(contract.act_normalizer))
    return _RawPolicyGraph(moe, *norms).eval(), contract


def load_torch_policy(
    path: str,
    providers: Sequence[str] = (CPU,),
    threads: int = 1,
    latency_budget_fraction: float | None = None,
    control_period_s: float | None = None,
    options: ProviderOptions | None = None,
) -> TorchPolicy:
    """Open, rebuild and vet the student at ``path`` (its ``.onnx`` or its ``.safetensors``); ContractError otherwise.

    ``providers`` keeps its meaning (order of preference: a GPU provider = the CUDA device
    ``options.cuda_device_id``); ``options.cuda_graph`` captures the batch-1 step on CUDA.
    ``threads``: torch's intra-op threads on the CPU (a process-wide torch setting).
    Vetting is ``load_policy``'s (``vetting.vet_policy``).
    """
    import torch

    from vdd_ros.export.onnx_export import weights_path

    if not path:
        raise ContractError("no policy path given")
    if not path.endswith((".onnx", ".safetensors")):
        raise ContractError(f"policy file {path!r} is neither an onnx file nor its safetensors weights")
    options = options or ProviderOptions()
    weights = weights_path(path)
    data, metadata = _read_weights(weights)
    graph, contract = _rebuild(data, metadata, str(weights))
    device, reason = torch_device(providers, options)
    if device == "cpu":
        torch.set_num_threads(threads)
    capture = options.cuda_graph and device != "cpu"
    try:
        step = _Step(graph.to(device), contract, device, capture)
    except Exception as exc:  # out of device memory, a failed capture
        raise ContractError(f"{str(weights)!r}: cannot set up the torch step on {device}: {exc}") from exc
    label = f"torch:{device}" + ("+cudagraph" if capture else "")
    loaded = TorchPolicy(contract, str(weights), sha256_bytes(data), label, bool(reason), step, reason)
    work_on_caller_thread = device == "cpu" and threads == 1
    vet_policy(str(weights), contract, loaded.run, latency_budget_fraction, control_period_s, work_on_caller_thread)
    return loaded
