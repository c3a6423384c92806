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

Four subsets (issue 29): the twin's figures need a subset for choosing the working point and an
untouched one for every quoted figure, so :func:`assign4` / :func:`split4_of` cut the same ``u``
into

    final       u <  f
    select      f <= u < f + s
    validation  f + s <= u < f + s + v
    train       u >= f + s + v

with ``fractions4 = (train, val, select, final)`` (default :data:`DEFAULT_FRACTIONS4` =
0.5/0.2/0.15/0.15). The codes are :data:`TRAIN`, :data:`VAL`, :data:`SELECT`, :data:`FINAL`
(distinct from :data:`TEST`, so a 3-way and a 4-way code are never confused;
:data:`SUBSET_NAMES` names every code). As the thresholds are on the same ``u`` and start at 0:

* a 4-way ``final`` subset is inside the 3-way ``test`` subset of the same seed when
  ``f <= test_fraction``, and ``select U final`` (``u < f + s``) is inside 3-way
  ``val U test`` when ``f + s <= val_fraction + test_fraction``: LundNet's training events
  (3-way ``train``) then never meet the twin's select/final events (:func:`check_nested4`;
  the defaults: 0.15 <= 0.2 and 0.3 <= 0.4);
* the folds of a k-fold cross-fit (:func:`fold_of`) come from a second hash of the same key
  (the seed mixed with a fixed salt), so they are independent of the subsets and copies of one
  parent share their fold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from svjscout.core.exceptions import ConfigError

__all__ = ["TRAIN", "VAL", "TEST", "SELECT", "FINAL", "SPLIT_NAMES", "SPLIT4_NAMES", "SUBSET_NAMES",
           "DEFAULT_SEED", "DEFAULT_FRACTIONS", "DEFAULT_FRACTIONS4", "KEY_COLUMNS", "split_u", "assign",
           "split_of", "assign4", "split4_of", "fold_u", "fold_of", "key_columns", "check_nested", "check_nested4"]

TRAIN, VAL, TEST = 0, 1, 2
#: Codes of the 4-way split's working-point selection and final subsets (train/val as above).
SELECT, FINAL = 3, 4
SPLIT_NAMES = ("train", "val", "test")
#: Names of the 4-way subsets, in the order of ``fractions4``.
SPLIT4_NAMES = ("train", "val", "select", "final")
#: Name of every subset code (``SUBSET_NAMES[code]``), 3-way and 4-way.
SUBSET_NAMES = ("train", "val", "test", "select", "final")

#: Seed of the split for both trainers.
DEFAULT_SEED = 1
#: (train, validation, test) fractions for both trainers.
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
#: (train, validation, select, final) fractions of the 4-way split (:func:`split4_of`).
DEFAULT_FRACTIONS4 = (0.5, 0.2, 0.15, 0.15)
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


def _fractions4(fractions4: Sequence[float]) -> tuple[float, float, float, float]:
    fr = tuple(float(f) for f in fractions4)
    if len(fr) != 4 or not all(0 < f < 1 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise ConfigError(f"split: fractions4 {list(fractions4)}: expected 4 fractions (train, val, select, final), "
                          "each in (0, 1), summing to 1")
    return fr[0], fr[1], fr[2], fr[3]


def assign4(u: np.ndarray, fractions4: Sequence[float] = DEFAULT_FRACTIONS4) -> np.ndarray:
    """4-way subset codes (int8: :data:`TRAIN`, :data:`VAL`, :data:`SELECT`, :data:`FINAL`) from ``u``.

    ``fractions4`` = (train, val, select, final); nested thresholds from 0: final, select, val, train.
    """
    _, val, sel, fin = _fractions4(fractions4)
    u = np.asarray(u)
    return np.where(u < fin, FINAL, np.where(u < fin + sel, SELECT, np.where(u < fin + sel + val, VAL, TRAIN))
                    ).astype(np.int8)


def split4_of(dataset: np.ndarray, run, lumi, parent, seed: int = DEFAULT_SEED,
              fractions4: Sequence[float] = DEFAULT_FRACTIONS4) -> np.ndarray:
    """4-way subset codes of events: :func:`assign4` of :func:`split_u`."""
    return assign4(split_u(dataset, run, lumi, parent, seed), fractions4)


#: Salt mixed into the seed for the fold hash (so that folds do not follow the subsets' ``u``).
_FOLD_SALT = 0x5F0D_C0FF_EE15_2929


def fold_u(dataset: np.ndarray, run, lumi, parent, seed: int = DEFAULT_SEED) -> np.ndarray:
    """A second per-event number in [0, 1) from the same key, independent of :func:`split_u`'s."""
    return split_u(dataset, run, lumi, parent, (int(seed) ^ _FOLD_SALT) % 2**64)


def fold_of(dataset: np.ndarray, run, lumi, parent, k: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Fold (int16 in 0..k-1) of every event for a k-fold cross-fit by parent: ``floor(k * fold_u)``.

    Copies of one parent share their fold; the fold does not depend on the row order.
    """
    if int(k) < 2:
        raise ConfigError(f"split: k={k} folds, expected >= 2")
    return np.minimum((fold_u(dataset, run, lumi, parent, seed) * int(k)).astype(np.int64), int(k) - 1).astype(np.int16)


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


def check_nested4(fractions4: Sequence[float], outer_val: float, outer_test: float, inner_seed: int,
                  outer_seed: int, what: str = "twin 4-way split inside LundNet's 3-way split") -> None:
    """Raise :class:`ConfigError` unless the 4-way split nests in a 3-way one (same seed):
    ``final`` inside ``test`` (``f <= outer_test``) and ``select U final`` inside ``val U test``
    (``f + s <= outer_val + outer_test``), so that the 3-way ``train`` events (LundNet's) are
    never in ``select`` or ``final``."""
    _, _, sel, fin = _fractions4(fractions4)
    if int(inner_seed) != int(outer_seed):
        raise ConfigError(f"split: {what} needs the same seed; got seeds {inner_seed}/{outer_seed}")
    if fin > float(outer_test) + 1e-12 or fin + sel > float(outer_val) + float(outer_test) + 1e-12:
        raise ConfigError(f"split: {what} needs final fraction <= test fraction and select + final <= val + test; "
                          f"got final {fin}, select {sel}, val {outer_val}, test {outer_test}")
