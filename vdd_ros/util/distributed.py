"""Data parallelism under ``torchrun``: joining the process group, rank facts, the few collectives a job needs.

A launcher (``torchrun``, or anything setting ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) starts one process per device; with ``WORLD_SIZE`` > 1,
``session`` joins them (NCCL for CUDA devices, gloo for the CPU) and leaves again at the end.
Outside a session every function here is the single-process identity (rank 0 of 1), so one
job code runs both ways.

Every collective waits at most the process group's timeout, ``VDD_DIST_TIMEOUT_S`` seconds
(default 1800; it must exceed the longest time rank 0 spends alone, i.e. one rollout
evaluation): a rank that died or hangs costs the others an error, never an endless wait.
A failed collective raises PeerLostError.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from vdd_ros.util.config import ConfigError
from vdd_ros.util.torch_setup import resolve_device

T = TypeVar("T")
TIMEOUT_ENV = "VDD_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800


class PeerLostError(RuntimeError):
    """A collective failed or timed out: another rank died, was killed or stopped answering."""


def launched_world() -> int:
    """The number of processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a whole number") from None
    if world < 1:
        raise ConfigError(f"WORLD_SIZE must be >= 1, got {world}")
    return world


def active() -> bool:
    """True inside a session of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes files, evaluates and reports."""
    return rank() == 0


def per_rank_batch(batch_size: int, world: int) -> int:
    """``batch_size`` is the global batch: each of ``world`` processes draws an equal share of it."""
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size {batch_size} is not divisible by the {world} processes "
            f"(each draws batch_size / processes states per update)"
        )
    return batch_size // world


def rank_seed(seed: int) -> int:
    """The seed of this rank's batch and noise generator: ``seed`` itself on rank 0 (and without a session)."""
    r = rank()
    return seed if r == 0 else int(np.random.SeedSequence([seed, r]).generate_state(1, np.uint64)[0] >> 1)


def timeout_s() -> float:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be > 0, got {text}")
    return value


def device_for_rank(name: str) -> torch.device:
    """The device of this process: under a launcher, ``auto`` and ``cuda`` mean the GPU ``LOCAL_RANK``."""
    device = resolve_device(name)
    if launched_world() > 1 and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[None]:
    """Join the launcher's process group for the duration of the block (nothing to do for one process)."""
    if launched_world() <= 1 or active():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and the object collectives use the current device
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
    try:
        yield
        # a rank that tore down while its peer was still finishing aborted once in CI (gloo,
        # "terminate called without an active exception"): leave together after a clean run
        _collective("the end of the run", dist.barrier)
    finally:
        dist.destroy_process_group()


def _collective(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one collective, turning a backend failure or timeout into PeerLostError."""
    try:
        return call(*args, **kwargs)
    except RuntimeError as exc:  # DistBackendError and gloo's timeouts are RuntimeErrors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PeerLostError(f"rank {rank()} of {world_size()}: {what} failed ({first})") from exc


def _tensor_device() -> torch.device:
    """Where collective tensors must live: the current GPU for NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (pickled: for small results, not tensors in bulk)."""
    if not active():
        return obj
    box = [obj]
    _collective("broadcast from rank 0", dist.broadcast_object_list, box, src=0, device=_tensor_device())
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, indexed by rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    _collective("gathering from every rank", dist.all_gather_object, out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any: so all ranks stop at the same iteration."""
    if not active():
        return flag
    t = torch.tensor([float(flag)], device=_tensor_device())
    _collective("agreeing on stopping", dist.all_reduce, t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average_gradients(params: Iterable[torch.nn.Parameter], loss: torch.Tensor) -> float:
    """Replace each gradient by its mean over ranks (one all-reduce); returns the mean loss.

    Every rank's loss is a mean over its own equal share of the global batch, so the mean of
    the ranks' gradients is the gradient of the global batch's loss. Parameters without a
    gradient are left alone: the graph is the same on every rank, so they lack it everywhere.
    """
    if not active():
        return float(loss.detach())
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([*(g.reshape(-1) for g in grads), loss.detach().reshape(1).to(grads[0] if grads else loss)])
    _collective("averaging gradients", dist.all_reduce, flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    return float(flat[-1])


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, so all start from identical weights."""
    if not active():
        return
    for tensor in module.state_dict().values():
        _collective("copying rank 0's weights", dist.broadcast, tensor, src=0)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of the module's parameters and buffers, to check that every rank holds the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
