"""The teacher families: one table from family name to teacher class and config dataclass.

Training (``teacher.train``) builds a new teacher from it and loading (``teacher.checkpoint``)
rebuilds a saved one, so a family added here is trainable, savable and loadable at once
(docs/teacher.md, "Adding a teacher family").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vdd_ros.data.shape import PolicyShape
from vdd_ros.teacher.base import TrainableTeacher
from vdd_ros.teacher.config import NetworkConfig
from vdd_ros.teacher.ddpm import DDPMConfig, DDPMTeacher
from vdd_ros.teacher.edm import EDMConfig, EDMTeacher
from vdd_ros.util.config import from_dict


class UnknownFamilyError(ValueError):
    """A config or checkpoint names a teacher family that is not registered."""


@dataclasses.dataclass(frozen=True)
class Family:
    """A teacher class, constructed as ``teacher(obs_dim, act_dim, obs_window, act_chunk, network, config)``,
    and the frozen dataclass of its family settings (``config``, saved as ``diffusion`` in teacher.json)."""

    teacher: type[TrainableTeacher]
    config: type

    @property
    def name(self) -> str:
        return self.teacher.family

    def parse_config(self, data: dict[str, Any], where: str) -> Any:
        """The family settings from a mapping; unknown keys and bad values raise ConfigError/ValueError."""
        return from_dict(self.config, data, where)

    def build(self, shape: PolicyShape, network: NetworkConfig, config: Any) -> TrainableTeacher:
        """An untrained teacher of this family."""
        if not isinstance(config, self.config):
            raise TypeError(f"teacher family {self.name!r} takes a {self.config.__name__}, got {type(config).__name__}")
        return self.teacher(shape.obs_dim, shape.act_dim, shape.obs_window, shape.act_chunk, network, config)


_FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(DDPMTeacher, DDPMConfig),
        Family(EDMTeacher, EDMConfig),
    )
}


def family_names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnknownFamilyError(f"unknown teacher family {name!r}; known: {', '.join(_FAMILIES)}") from None
