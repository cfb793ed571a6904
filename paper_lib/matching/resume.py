"""Resuming a long correlation pass from its accumulated statistics.

``pairs.correlate_samples`` streams a sample through a ``CorrelationAccumulator`` chunk by chunk; every
``SAVE_SECONDS`` it pickles the accumulator with the position it reached, so a run killed half way (a dropped
Colab session on a 16,384 x 16,384 pass over many positions) starts again from there, not from zero. The
statistics are sums over chunks taken in a fixed order, so a resumed pass gives the same numbers bit for bit.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

SAVE_SECONDS = 120.0  # a save of the position-mode statistics at 16,384^2 writes ~3 GiB: not every chunk
SAVE_SHARE = 0.1  # and at most this share of the pass's time goes to saving (a slow disk, Drive, saves less often)


def next_save_after(seconds_saving: float) -> float:
    """Seconds of work before the next save: ``SAVE_SECONDS``, or longer where one save took long."""
    return max(SAVE_SECONDS, seconds_saving / SAVE_SHARE)


def load(path: Path, what: dict[str, Any]):
    """(accumulator, next position) saved at ``path`` for the same pass ``what``, or (None, 0) to start afresh."""
    path = Path(path)
    if not path.is_file():
        return None, 0
    try:
        with path.open("rb") as f:
            saved = pickle.load(f)  # a file this code wrote, in the step's own unfinished folder
        if saved["what"] == what:
            return saved["accumulator"], saved["next"]
        problem = "it belongs to another pass (different sample, mode, guard or chunking)"
    except Exception as err:  # a truncated pickle raises several types
        problem = f"it is unreadable ({err.__class__.__name__})"
    print(f"[matching] {path}: {problem}; starting the pass again", file=sys.stderr, flush=True)
    clear(path)
    return None, 0


def clear(path: Path) -> None:
    """Remove the saved statistics and any half-written save (a kill during a write leaves it behind), so neither
    ends up in the finished step's folder."""
    path = Path(path)
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".tmp").unlink(missing_ok=True)


def save(path: Path, accumulator, next_position: int, what: dict[str, Any]) -> float:
    """Write the statistics atomically (a kill during the write leaves the previous save intact); returns the
    seconds the save took."""
    started = time.time()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        pickle.dump({"what": what, "next": next_position, "accumulator": accumulator}, f, protocol=5)
    os.replace(tmp, path)
    return time.time() - started
