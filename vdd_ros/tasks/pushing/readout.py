"""Pushing's mode read-out: which block reached its final zone first, and which zone each block went to.

The four modes are order x assignment. "direct" is red block -> red zone and green block ->
green zone; "swapped" is the reverse assignment. Mode k = 2 * swapped + green_first, read
from the trajectory: the step at which each block first entered each zone is recorded, and
at success the block whose *final* zone was entered earlier went first.
"""

from __future__ import annotations

import numpy as np

RED, GREEN = 0, 1  # block and zone indices
BLOCK_NAMES = ("red", "green")
ZONES = np.array([[0.35, 0.35], [0.65, 0.35]])  # centres of the red and green target zones
SUCCESS_RADIUS = 0.05  # a block counts as in a zone within this distance of its centre
MODE_NAMES = ("red_first_direct", "green_first_direct", "red_first_swapped", "green_first_swapped")
NUM_MODES = len(MODE_NAMES)
NOT_YET = np.iinfo(np.int64).max  # first-entry step of a zone never entered


def mode_index(green_first: np.ndarray | bool, swapped: np.ndarray | bool) -> np.ndarray:
    """Mode label(s) 2 * swapped + green_first."""
    return 2 * np.asarray(swapped, dtype=np.int64) + np.asarray(green_first, dtype=np.int64)


def mode_choices(mode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(green_first, swapped) bool arrays of mode label(s): the inverse of ``mode_index``."""
    mode = np.asarray(mode, dtype=np.int64)
    return mode % 2 == 1, mode // 2 == 1


def in_zones(blocks_xy: np.ndarray) -> np.ndarray:
    """(n, block, zone) bool: block centre within SUCCESS_RADIUS of the zone centre; blocks_xy is (n, 2, 2)."""
    d = np.linalg.norm(blocks_xy[:, :, None, :] - ZONES[None, None, :, :], axis=-1)
    return d <= SUCCESS_RADIUS


def assignment(inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(success, swapped) per episode from ``in_zones``: both blocks in different zones, either assignment."""
    direct = inside[:, RED, RED] & inside[:, GREEN, GREEN]
    swapped = inside[:, RED, GREEN] & inside[:, GREEN, RED]
    return direct | swapped, swapped & ~direct


def update_first_entry(first_entry: np.ndarray, inside: np.ndarray, step: np.ndarray) -> None:
    """Record in ``first_entry`` (n, block, zone) int64 the step of each first zone entry, in place."""
    new = inside & (first_entry == NOT_YET)
    first_entry[new] = np.broadcast_to(step[:, None, None], first_entry.shape)[new]


def decode_mode(first_entry: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Mode label per episode, NO_MODE (-1) unless it succeeded with a strict order of arrival.

    Two blocks entering their final zones in the same control step have no order and get -1.
    """
    success, swapped = assignment(inside)
    rows = np.arange(len(inside))
    red_zone = np.where(swapped, GREEN, RED)
    t_red = first_entry[rows, RED, red_zone]
    t_green = first_entry[rows, GREEN, 1 - red_zone]
    ok = success & (t_red != t_green)
    return np.where(ok, mode_index(t_green < t_red, swapped), -1).astype(np.int64)


def mode_from_blocks(blocks_xy: np.ndarray) -> int:
    """Mode label (or -1) of one episode from its block centres over time, shape (L, 2, 2)."""
    blocks_xy = np.asarray(blocks_xy, dtype=np.float64)
    first_entry = np.full((1, 2, 2), NOT_YET, dtype=np.int64)
    for t, xy in enumerate(blocks_xy):
        inside = in_zones(xy[None])
        update_first_entry(first_entry, inside, np.array([t]))
    return int(decode_mode(first_entry, in_zones(blocks_xy[-1:]))[0])
