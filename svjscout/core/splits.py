"""One deterministic event-level train/validation/test split, shared by LundNet and the twin.

Every event gets one number ``u`` in [0, 1) from a splitmix64-style hash of

    (seed, dataset, run, luminosityBlock, parent)

and the subsets are nested thresholds on ``u``:

    test        u <  test_fraction
    validation  test_fraction <= u < test_fraction + val_fraction
    train       u >= test_fraction + val_fraction

Properties (tests/test_splits.py):

* it depends on the event's identity only: not on file paths, file names, the order of the
  files or of the rows, nor on the selection a skim was written with (a tighter skim of the
  same generated files keeps every event in its subset);
* ``parent`` identifies the *generated* event: the detector-resampled copies of one generated
  event (samples/generate.py writes them with the same ``run``, ``luminosityBlock`` and
  ``parent``) share ``u`` and so always land in the same subset. A skim without a ``parent``
  column falls back to ``event`` (every event its own parent), one without ``run`` /
  ``luminosityBlock`` to 0;
* nesting: with the same seed, the test subset of a split with test fraction ``t1`` is
  contained in that of a split with ``t2 >= t1``, whatever the validation fractions. Both
  trainers use :data:`DEFAULT_SEED` and :data:`DEFAULT_FRACTIONS` by default, so the twin's test
  events are LundNet's test events: the twin's test figures are on events neither network
  was trained or early-stopped on (keep the twin's test fraction <= LundNet's and the same
  seed when changing them; :func:`check_nested`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from svjscout.core.exceptions import ConfigError

__all__ = ["TRAIN", "VAL", "TEST", "SPLIT_NAMES", "DEFAULT_SEED", "DEFAULT_FRACTIONS", "KEY_COLUMNS",
           "split_u", "assign", "split_of", "key_columns", "check_nested"]

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "val", "test")

#: Seed of the split for both trainers.
DEFAULT_SEED = 1
#: (train, validation, test) fractions for both trainers.
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
#: Skim columns the split key is made of (``parent`` falls back to ``event``).
KEY_COLUMNS = ("dataset", "run", "luminosityBlock", "parent")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 step: add the golden-ratio increment, then the finaliser (uint64, wraps)."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _dataset_hash(dataset: np.ndarray) -> np.ndarray:
    """A stable 64-bit hash of each dataset name (BLAKE2b, not Python's salted ``hash``)."""
    names, inverse = np.unique(np.asarray(dataset).astype(str), return_inverse=True)
    codes = np.array([int.from_bytes(hashlib.blake2b(n.encode(), digest_size=8).digest(), "little") for n in names],
                     dtype=np.uint64)
    return codes[inverse.reshape(-1)]


def _as_u64(values, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=np.uint64)
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.int64)
    return arr.astype(np.uint64)


def split_u(dataset: np.ndarray, run, lumi, parent, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The per-event number u in [0, 1) (float64, N) from (seed, dataset, run, lumi, parent).

    ``run`` and ``lumi`` may be None (taken as 0); pass ``event`` as ``parent`` for skims
    without a ``parent`` column.
    """
    dataset = np.asarray(dataset)
    n = len(dataset)
    z = np.full(n, np.uint64(int(seed) % 2**64), dtype=np.uint64)
    for part in (_dataset_hash(dataset) if n else np.zeros(0, np.uint64), _as_u64(run, n), _as_u64(lumi, n),
                 _as_u64(parent, n)):
        z = _mix(z ^ part)
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def assign(u: np.ndarray, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Subset codes (int8: :data:`TRAIN`, :data:`VAL`, :data:`TEST`) from ``u`` by nested thresholds."""
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ConfigError(f"split: val_fraction={val_fraction}, test_fraction={test_fraction}: "
                          "expected both > 0 with a sum < 1")
    return np.where(u < test_fraction, TEST, np.where(u < test_fraction + val_fraction, VAL, TRAIN)).astype(np.int8)


def split_of(dataset: np.ndarray, run, lumi, parent, seed: int = DEFAULT_SEED,
             fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Subset codes of events: :func:`assign` of :func:`split_u`; ``fractions`` = (train, val, test)."""
    train, val, test = (float(f) for f in fractions)
    if abs(train + val + test - 1) > 1e-6:
        raise ConfigError(f"split: fractions {list(fractions)} do not sum to 1")
    return assign(split_u(dataset, run, lumi, parent, seed), val, test)


def key_columns(columns: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """(run, lumi, parent) from a skim's columns: ``parent`` falls back to ``event``, run/lumi to None."""
    parent = columns.get("parent")
    if parent is None:
        parent = columns["event"]
    return columns.get("run"), columns.get("luminosityBlock"), parent


def check_nested(inner_test: float, outer_test: float, inner_seed: int, outer_seed: int,
                 what: str = "twin test subset inside LundNet's") -> None:
    """Raise :class:`ConfigError` unless the inner test subset is contained in the outer one."""
    if int(inner_seed) != int(outer_seed) or float(inner_test) > float(outer_test) + 1e-12:
        raise ConfigError(f"split: {what} needs the same seed and a test fraction <= the outer one; got seeds "
                          f"{inner_seed}/{outer_seed}, test fractions {inner_test}/{outer_test}")
