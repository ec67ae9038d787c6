"""D3IL's mode read-out for Avoiding: which of the 24 paths (gap per obstacle row) an episode took.

Each tick ORs 9 bits (2 + 3 + 4 gap bins of the three rows); a row with exactly one bit
gives its gap index, and the path is 12*i1 + 4*i2 + i3.
"""

from __future__ import annotations

import numpy as np

NUM_PATHS = 24
NUM_BITS = 9
ROW_Y = (-0.10, 0.08, 0.26)

_ROW_BITS = (slice(0, 2), slice(2, 5), slice(5, 9))
_BAND_HALF_WIDTH = 0.03


def path_name(path: int) -> str:
    """Readable mode name: the gap index taken in rows 1, 2, 3."""
    return f"gaps {path // 12}-{(path // 4) % 3}-{path % 4}"


def update_mode_bits(bits: np.ndarray, xy: np.ndarray) -> None:
    """OR this tick's D3IL read-out of positions xy (n, 2) into bits (n, 9), in place.

    Row 3 reproduces D3IL's quirk: bit 8 is an ``elif x > 0.35`` after the middle bins,
    so it fires for x >= 0.65 (and exactly on bin edges), not for x > 0.65 only.
    """
    x, y = xy[:, 0], xy[:, 1]
    row1 = np.abs(y - ROW_Y[0]) <= _BAND_HALF_WIDTH
    bits[:, 0] |= row1 & (x < 0.5)
    bits[:, 1] |= row1 & ~(x < 0.5)
    row2 = np.abs(y - ROW_Y[1]) <= _BAND_HALF_WIDTH
    bits[:, 2] |= row2 & (x < 0.425)
    bits[:, 3] |= row2 & (x > 0.425) & (x < 0.575)
    bits[:, 4] |= row2 & (x > 0.575)
    row3 = y >= ROW_Y[2]
    b5 = x < 0.35
    b6 = (x > 0.35) & (x < 0.5)
    b7 = (x > 0.5) & (x < 0.65)
    bits[:, 5] |= row3 & b5
    bits[:, 6] |= row3 & b6
    bits[:, 7] |= row3 & b7
    bits[:, 8] |= row3 & ~(b5 | b6 | b7) & (x > 0.35)


def decode_path(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(path, invalid) from bits (n, 9): path = 12*i1 + 4*i2 + i3 when every row set exactly one bit, else -1.

    ``invalid`` flags rows with more than one bit (a lateral move inside a band); those codes
    are outside the 24 paths and are reported, never merged into a path.
    """
    counts = np.stack([bits[:, s].sum(axis=1) for s in _ROW_BITS], axis=1)
    index = np.stack([np.argmax(bits[:, s], axis=1) for s in _ROW_BITS], axis=1)
    path = 12 * index[:, 0] + 4 * index[:, 1] + index[:, 2]
    complete = np.all(counts == 1, axis=1)
    return np.where(complete, path, -1).astype(np.int64), np.any(counts > 1, axis=1)


def path_from_trajectory(xy: np.ndarray) -> int:
    """Path index (or -1) read out from one trajectory of actual positions (L, 2)."""
    bits = np.zeros((len(xy), NUM_BITS), dtype=bool)
    update_mode_bits(bits, np.asarray(xy, dtype=np.float64))
    path, _ = decode_path(np.any(bits, axis=0, keepdims=True))
    return int(path[0])
