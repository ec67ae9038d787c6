"""rosbag2 recordings + a mapping -> an unlabelled DemoDataset and the report a person checks before training."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from vdd_ros.data.bag.align import Episode, TopicStats, episodes
from vdd_ros.data.bag.config import BagMapping
from vdd_ros.data.bag.reader import BagError, read_bag
from vdd_ros.data.import_report import Imported, imported_dataset, report_lines
from vdd_ros.util.config import to_dict

_LISTED = 40  # episode lengths printed one by one in the report


@dataclasses.dataclass(frozen=True)
class BagImport:
    """The dataset (with what was dropped) and the per-topic resampling figures."""

    imported: Imported
    topics: tuple[TopicStats, ...]

    def report(self) -> list[str]:
        """Episodes, steps per episode, each topic's rate and filled/repeated/unused samples, what was dropped."""
        ds = self.imported.dataset
        lengths = [str(len(a)) for a in ds.actions]
        steps = ", ".join(lengths[:_LISTED]) + (
            f", ... ({len(lengths) - _LISTED} more)" if len(lengths) > _LISTED else ""
        )
        return [*report_lines(self.imported), f"steps per episode: {steps}", *(t.line() for t in self.topics)]


def _keep(episode: Episode, mapping: BagMapping, dropped: list[str]) -> bool:
    minimum = mapping.episodes.min_steps
    if episode.steps >= minimum:
        return True
    why = f"{episode.bag}: {episode.where}: {episode.steps} steps, fewer than episodes.min_steps={minimum}"
    if not mapping.episodes.drop_short:
        raise BagError(f"{why} (set episodes.drop_short=true to drop it)")
    dropped.append(why)
    return False


def import_bags(bags: Sequence[str], mapping: BagMapping, log: Callable[[str], None] = lambda _: None) -> BagImport:
    """Read every bag, cut and resample its episodes; a recording that does not fit raises BagError (one line)."""
    mapping.check()
    stats: dict[str, TopicStats] = {}
    kept: list[Episode] = []
    dropped: list[str] = []
    for path in bags:
        found = episodes(read_bag(path, mapping), mapping, stats)
        kept += [e for e in found if _keep(e, mapping, dropped)]
        log(f"{path}: {len(found)} episode(s)")
    if not kept:
        raise BagError(f"no episode of {len(bags)} bag(s) has episodes.min_steps={mapping.episodes.min_steps} steps")
    dataset = imported_dataset(
        [e.observations for e in kept],
        [e.actions for e in kept],
        mapping.obs_names,
        mapping.action.names,
        mapping.control_period_s,
        mapping.task,
        generator="vdd_ros import_bag",
        source=", ".join(bags),
        mapping=to_dict(mapping),
        episodes_from=[f"{e.bag} {e.where}" for e in kept],
        dropped=dropped,
    )
    return BagImport(Imported(dataset, tuple(dropped)), tuple(stats.values()))
