"""The versioned I/O contract stored in every exported policy (ONNX ``metadata_props``).

The controller checks a candidate file against the running one with this contract
before a hot swap, and a human can read it with any ONNX viewer.

Graph I/O (all float32 unless noted; B = batch):
  inputs   obs     (B, T, obs_dim)  raw observation window, oldest first
           gumbel  (B, Z)           Gumbel(0,1) noise selecting the expert; zeros = greedy
           eps     (B, H*act_dim)   N(0,1) noise for a full Gaussian sample; zeros = mean
  outputs  action  (B, H, act_dim)  raw units
           expert  (B,) int64       index of the chosen expert
           gating  (B, Z)           gating probabilities q(z|s)
Noise is a graph input, not an in-graph RNG: results are reproducible from the caller's
seed on any execution provider, parity with PyTorch is exact, and static inputs suit
IOBinding / CUDA graphs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Any

SCHEMA_VERSION = 1
METADATA_KEY = "vdd_ros.contract"
INPUT_NAMES = ("obs", "gumbel", "eps")
OUTPUT_NAMES = ("action", "expert", "gating")


class ContractError(ValueError):
    """A policy file is missing, malformed, or incompatible with what is running."""


@dataclasses.dataclass(frozen=True)
class PolicyContract:
    """Everything a runtime must know to feed and trust a policy graph."""

    policy_id: str
    obs_dim: int
    act_dim: int
    obs_window: int
    act_chunk: int
    num_experts: int
    control_period_s: float
    obs_names: tuple[str, ...]
    act_names: tuple[str, ...]
    obs_normalizer: dict[str, list[float]]
    act_normalizer: dict[str, list[float]]
    task: str = ""
    frame_id: str = "world"
    covariance: str = "diagonal"
    teacher_sha256: str = ""
    dataset_sha256: str = ""
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_utc: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> PolicyContract:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"contract metadata is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ContractError("contract metadata is not a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ContractError(f"contract schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        names = {f.name for f in dataclasses.fields(PolicyContract)}
        missing = [
            n
            for n in (
                "policy_id",
                "obs_dim",
                "act_dim",
                "obs_window",
                "act_chunk",
                "num_experts",
                "control_period_s",
                "obs_names",
                "act_names",
            )
            if n not in data
        ]
        if missing:
            raise ContractError(f"contract lacks field(s) {missing}")
        data = {k: v for k, v in data.items() if k in names}
        data["obs_names"] = tuple(data["obs_names"])
        data["act_names"] = tuple(data["act_names"])
        contract = PolicyContract(**data)
        if len(contract.obs_names) != contract.obs_dim or len(contract.act_names) != contract.act_dim:
            raise ContractError("contract names do not match its dimensions")
        return contract

    def incompatibilities(self, other: PolicyContract) -> list[str]:
        """Reasons ``other`` cannot replace ``self`` on a running robot (empty if it can)."""
        reasons = []
        for field in ("obs_dim", "act_dim", "obs_names", "act_names", "act_chunk"):
            a, b = getattr(self, field), getattr(other, field)
            if a != b:
                reasons.append(f"{field} differs: running {a!r}, candidate {b!r}")
        if abs(self.control_period_s - other.control_period_s) > 1e-9:
            reasons.append(
                f"control_period_s differs: running {self.control_period_s}, candidate {other.control_period_s}"
            )
        return reasons


def file_sha256(path: str | pathlib.Path) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
