"""Where a policy runs: provider names plus their options, mapped to onnxruntime's in one place.

The controller's ``providers`` parameter lists onnxruntime execution providers in order of
preference; ``ProviderOptions`` holds what the GPU providers need besides their name. This
module turns both into the ``providers`` argument of ``InferenceSession`` and explains a
fallback, without importing onnxruntime (so it is testable and importable everywhere).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)  # both run on the CUDA device ``cuda_device_id``


@dataclasses.dataclass(frozen=True)
class ProviderOptions:
    """Options of the GPU providers (ignored by the CPU provider).

    cuda_graph: capture the batch-1 step once and replay it (onnxruntime's CUDA graph for
    the CUDA and TensorRT providers; ``torch.cuda.CUDAGraph`` for the torch backend). Only
    the batch-1 calls of the controller may then run on that session.
    trt_engine_cache: folder where TensorRT keeps its built engines (and timing cache), so
    an engine is built once per graph and GPU, at the first load, never again; "" = rebuilt
    at every load (still at load time, before vetting, never inside a tick).
    """

    cuda_device_id: int = 0
    cuda_graph: bool = False
    trt_fp16: bool = False
    trt_engine_cache: str = ""

    def check(self) -> None:
        """Raise ValueError naming a bad option; creates the engine cache folder if it is missing."""
        if self.cuda_device_id < 0:
            raise ValueError(f"cuda_device_id must be >= 0, got {self.cuda_device_id}")
        if self.trt_engine_cache:
            try:
                os.makedirs(self.trt_engine_cache, exist_ok=True)
            except OSError as exc:
                folder = self.trt_engine_cache
                raise ValueError(f"trt_engine_cache {folder!r} cannot be created ({exc.strerror})") from None


def _flag(value: bool) -> str:
    return "1" if value else "0"  # onnxruntime parses provider options from strings


def provider_options(name: str, options: ProviderOptions) -> dict[str, str]:
    """onnxruntime's option dict for provider ``name`` (empty for providers without options here)."""
    if name == CUDA:
        return {"device_id": str(options.cuda_device_id), "enable_cuda_graph": _flag(options.cuda_graph)}
    if name == TENSORRT:
        out = {
            "device_id": str(options.cuda_device_id),
            "trt_fp16_enable": _flag(options.trt_fp16),
            "trt_cuda_graph_enable": _flag(options.cuda_graph),
            "trt_engine_cache_enable": _flag(bool(options.trt_engine_cache)),
        }
        if options.trt_engine_cache:
            out |= {
                "trt_engine_cache_path": options.trt_engine_cache,
                "trt_timing_cache_enable": "1",
                "trt_timing_cache_path": options.trt_engine_cache,
            }
        return out
    return {}


def session_providers(
    requested: Sequence[str], available: Sequence[str], options: ProviderOptions
) -> list[tuple[str, dict[str, str]]]:
    """The ``providers`` argument of ``InferenceSession``: the available requested ones, with options.

    Unavailable names are skipped; with none left the CPU provider runs the graph.
    """
    usable = [name for name in requested if name in available] or [CPU]
    return [(name, provider_options(name, options)) for name in usable]


def fallback_reason(requested: Sequence[str], available: Sequence[str], active: str) -> str:
    """Why ``active`` is not the first requested provider ("" when it is)."""
    wanted = requested[0] if requested else CPU
    if active == wanted:
        return ""
    if wanted not in available:
        return f"{wanted} is not available in this onnxruntime build (available: {', '.join(available)})"
    return (
        f"{wanted} is available but onnxruntime did not start it (its libraries, e.g. CUDA, cuDNN or "
        f"TensorRT, failed to load or the device is missing: see onnxruntime's log)"
    )


def binding_device(active: str, options: ProviderOptions) -> tuple[str, int] | None:
    """(device, id) whose memory the batch-1 buffers should live in; None = host memory."""
    return ("cuda", options.cuda_device_id) if active in GPU_PROVIDERS else None
