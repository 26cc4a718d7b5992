"""The pack's tasks around rate control: a count pass per lambda the search checks on all weights,
and one check pass of the decoded values at the lambda chosen.

Counting is all the search needs; reconstructing the values (an inverse transform per block) and
checking what they lost (:class:`~bnncompress.tasks.Quality`) is done once, at the chosen lambda,
from the grid indices the count pass kept (or assigned again when none were kept). Same tasks
shape as :mod:`bnncompress.tasks`: module-level functions over a range of whole coding blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .quantizers import FittedQuantizer
from .tasks import Quality, blocks, check_block, count_block, sketch


def count_task(
    source, start, stop, block_rows, fitted: FittedQuantizer, state: Any, shape: tuple, keep: bool
) -> tuple[tuple[np.ndarray, list[int]], np.ndarray | None]:
    """Counts of every grid index (``shape``: (models, alphabet)) over a task's blocks and the number
    of symbols of each block; and (if ``keep``) the indices, uint16, for the check and coding passes."""
    counts = np.zeros(shape, dtype=np.int64)
    kept, lengths = [], []
    for block in blocks(source, start, stop, block_rows):
        indices = fitted.assign(block, state)
        count_block(fitted, block, indices, counts)
        lengths.append(len(indices))
        if keep:
            kept.append(indices.astype(np.uint16))
    return (counts, lengths), (np.concatenate(kept) if keep else None)


def check_task(
    source,
    start,
    stop,
    block_rows,
    fitted: FittedQuantizer,
    state: Any,
    check: tuple,
    lengths: list[int],
    kept: np.ndarray | None,
) -> Quality:
    """What the reconstructed values of a task's blocks lost (``check``: rows matter, the certain
    fraction, the far limit), from the ``kept`` indices of :func:`count_task` or assigned again."""
    checked = Quality.accumulator()
    hashes, at = [], 0
    for block, n in zip(blocks(source, start, stop, block_rows), lengths):
        if kept is None:
            indices = fitted.assign(block, state)
        else:
            indices, at = kept[at : at + n].astype(np.int32), at + n
        hashes.append(check_block(fitted, block, indices, state, check, checked))
    rows = np.concatenate(hashes, axis=1)
    return Quality.from_checks(checked, sketch(rows[0]), sketch(rows[1]))
