"""Device, threads and RNG state: what every torch job sets up the same way."""

from __future__ import annotations

import time

import torch

from vdd_ros.util.cpu_share import FreeCores, threads_for, usable_cores


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TorchThreads:
    """torch's intra-op threads: ``threads`` > 0 fixed; 0 follows the cores other processes leave idle.

    Adaptive jobs measure the machine for ``first_sample_s`` at the start, then again at most
    every ``every_s`` seconds, whenever the training loop calls ``adapt``. A different thread
    count may change float rounding; fix ``threads`` for bit-reproducible runs.
    """

    def __init__(self, threads: int, every_s: float = 2.0, first_sample_s: float = 0.25) -> None:
        self.adaptive = threads <= 0
        self._every = every_s
        self._ceiling = usable_cores()
        self.changes = 0
        if not self.adaptive:
            torch.set_num_threads(threads)
            return
        self._free = FreeCores()
        time.sleep(first_sample_s)
        self._next = 0.0
        self.adapt()

    def adapt(self) -> None:
        """Cheap unless ``every_s`` has passed since the last measurement."""
        if not self.adaptive or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._every
        free = self._free.sample()
        wanted = self._ceiling if free is None else threads_for(free, self._ceiling)
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
            self.changes += 1


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
