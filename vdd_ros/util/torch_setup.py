"""Device, threads and RNG state: what every torch job sets up the same way."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """CPU threads for torch's intra-op pool; 0 keeps torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global torch RNG state (and the device's CUDA one), as tensors a checkpoint can hold."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
