"""Provider names and options become onnxruntime's in one place; a fallback says why; device buffers work."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from vdd_ros.export.contract import INPUT_NAMES, OUTPUT_NAMES
from vdd_ros.export.random_policy import export_random_policy
from vdd_ros.runtime.bound_session import BoundSession
from vdd_ros.runtime.noise import NoiseSource
from vdd_ros.runtime.onnx_policy import load_policy, session_options
from vdd_ros.runtime.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderOptions,
    binding_device,
    fallback_reason,
    provider_options,
    session_providers,
)

GPU_ORT = CUDA in ort.get_available_providers()


def test_cuda_options() -> None:
    assert provider_options(CUDA, ProviderOptions()) == {"device_id": "0", "enable_cuda_graph": "0"}
    assert provider_options(CUDA, ProviderOptions(cuda_device_id=2, cuda_graph=True)) == {
        "device_id": "2",
        "enable_cuda_graph": "1",
    }


def test_tensorrt_options_with_and_without_an_engine_cache() -> None:
    assert provider_options(TENSORRT, ProviderOptions()) == {
        "device_id": "0",
        "trt_fp16_enable": "0",
        "trt_cuda_graph_enable": "0",
        "trt_engine_cache_enable": "0",
    }
    cached = provider_options(TENSORRT, ProviderOptions(1, True, True, "/var/cache/trt"))
    assert cached == {
        "device_id": "1",
        "trt_fp16_enable": "1",
        "trt_cuda_graph_enable": "1",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/var/cache/trt",
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": "/var/cache/trt",
    }
    assert provider_options(CPU, ProviderOptions(1, True, True, "/x")) == {}


def test_session_providers_keep_the_order_and_skip_the_unavailable() -> None:
    options = ProviderOptions(cuda_graph=True)
    available = [CUDA, CPU]
    assert session_providers([TENSORRT, CUDA, CPU], available, options) == [
        (CUDA, {"device_id": "0", "enable_cuda_graph": "1"}),
        (CPU, {}),
    ]
    assert session_providers([TENSORRT], [CPU], options) == [(CPU, {})]  # nothing usable: the CPU


def test_fallback_reasons() -> None:
    assert fallback_reason([CPU], [CPU], CPU) == ""
    assert fallback_reason([CUDA, CPU], [CUDA, CPU], CUDA) == ""
    missing = fallback_reason([CUDA, CPU], ["AzureExecutionProvider", CPU], CPU)
    assert missing.startswith(f"{CUDA} is not available in this onnxruntime build") and CPU in missing
    assert "did not start it" in fallback_reason([CUDA, CPU], [CUDA, CPU], CPU)


def test_gpu_providers_bind_device_memory() -> None:
    options = ProviderOptions(cuda_device_id=3)
    assert binding_device(CUDA, options) == ("cuda", 3) == binding_device(TENSORRT, options)
    assert binding_device(CPU, options) is None


def test_check_creates_the_engine_cache_and_names_bad_options(tmp_path) -> None:
    ProviderOptions(trt_engine_cache=str(tmp_path / "trt" / "engines")).check()
    assert (tmp_path / "trt" / "engines").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="trt_engine_cache"):
        ProviderOptions(trt_engine_cache=str(tmp_path / "file" / "sub")).check()
    with pytest.raises(ValueError, match="cuda_device_id"):
        ProviderOptions(cuda_device_id=-1).check()


@pytest.mark.skipif(GPU_ORT, reason="onnxruntime has CUDA here: no fallback to observe")
def test_a_missing_gpu_provider_falls_back_with_its_reason(tmp_path) -> None:
    path = tmp_path / "p.onnx"
    export_random_policy(path)
    loaded = load_policy(str(path), [CUDA, CPU], options=ProviderOptions(cuda_graph=True))
    assert (loaded.provider, loaded.provider_fallback) == (CPU, True)
    assert loaded.fallback_reason.startswith(f"{CUDA} is not available")
    assert loaded.single.device is None  # host buffers on the CPU provider
    plain = load_policy(str(path))
    assert (plain.provider_fallback, plain.fallback_reason) == (False, "")


def test_device_buffers_compute_what_host_buffers_do(tmp_path) -> None:
    """The OrtValue path (device memory on a GPU) exercised with OrtValues in CPU memory."""
    path = tmp_path / "p.onnx"
    export_random_policy(path)
    session = ort.InferenceSession(str(path), session_options(), providers=[CPU])
    host = BoundSession(session, 1, INPUT_NAMES, OUTPUT_NAMES)
    device = BoundSession(session, 1, INPUT_NAMES, OUTPUT_NAMES, device=("cpu", 0))
    noise = NoiseSource("sample", 0, 8, 2)
    rng = np.random.default_rng(0)
    returned = []
    for _ in range(5):
        obs = rng.standard_normal((1, 5, 4)).astype(np.float32)
        gumbel, eps = noise.draw(1)
        a, b = host(obs, gumbel, eps), device(obs, gumbel, eps)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        returned.append((b[0], b[0].copy()))
    for array, copy in returned:  # a returned array is the caller's: later calls do not overwrite it
        np.testing.assert_array_equal(array, copy)
    assert not np.array_equal(returned[0][1], returned[1][1])


@pytest.mark.skipif(not GPU_ORT, reason="onnxruntime has no CUDA provider here: scripts/device_check.sh checks it")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_provider_matches_the_cpu(tmp_path, cuda_graph: bool) -> None:
    path = tmp_path / "p.onnx"
    export_random_policy(path)
    cpu = load_policy(str(path))
    gpu = load_policy(str(path), [CUDA, CPU], options=ProviderOptions(cuda_graph=cuda_graph))
    assert gpu.provider == CUDA and gpu.single.device == ("cuda", 0)
    noise = NoiseSource("sample", 0, 8, 2)
    for _ in range(10):
        obs = np.random.default_rng(0).standard_normal((1, 5, 4)).astype(np.float32)
        gumbel, eps = noise.draw(1)
        ref, got = cpu.run(obs, gumbel, eps), gpu.run(obs, gumbel, eps)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-5)
