"""Honest selection and quoting: choose on one half of the parents, quote on the other, and
paired bootstrap confidence intervals over parents (issue 29, item 5).

* :func:`parent_half`: a fixed 50/50 split of events by parent (a hash of the parent key,
  :func:`svjscout.core.splits.fold_of` with k=2 and its own seed), so that detector copies stay
  together.
* :func:`cross_select`: for candidates (working points, seeds, models) and a figure of merit
  evaluated on a subset of events, choose the best candidate on one half and quote it on the
  other, both ways. The figure quoted for a choice made on the same events is biased upwards
  (the maximum of noisy estimates); the other half's is not.
* :func:`bootstrap_replicas` / :func:`paired_bootstrap`: Poisson bootstrap with one weight per
  *parent* (all its copies share it), so that the interval reflects the number of generated
  events, not of rows. A comparison (pair A vs pair B, fine-tune vs MDMM) uses the same replica
  weights for both (paired), so the shared fluctuations cancel in the difference.

Pure functions on arrays and callbacks; documentation in ``docs/training_data.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError

__all__ = ["parent_half", "cross_select", "CrossSelection", "bootstrap_replicas", "paired_bootstrap", "Interval"]

#: Salt of the halves' seed (different from the split's and the cross-fit folds').
_HALF_SALT = 0x4A1F


def parent_half(dataset: np.ndarray, run, lumi, parent, seed: int = splits.DEFAULT_SEED) -> np.ndarray:
    """0 or 1 per event, by parent (copies together), independent of the subsets and the folds."""
    return splits.fold_of(dataset, run, lumi, parent, 2, int(seed) ^ _HALF_SALT).astype(np.int8)


@dataclass(frozen=True)
class CrossSelection:
    """Result of :func:`cross_select`.

    Attributes:
        chosen: per half h, the index of the candidate chosen on half h.
        quoted: per half h, the figure of that candidate on the *other* half.
        same_half: per half h, the figure of that candidate on half h (optimistic; for reference).
        table: (2, n_candidates) the figure of every candidate on each half.
    """

    chosen: tuple[int, int]
    quoted: tuple[float, float]
    same_half: tuple[float, float]
    table: np.ndarray

    @property
    def quote(self) -> float:
        """Mean of the two out-of-half figures."""
        return float(np.mean(self.quoted))


def cross_select(n_candidates: int, figure: Callable[[int, np.ndarray], float], half: np.ndarray,
                 maximise: bool = True) -> CrossSelection:
    """Choose the best of ``n_candidates`` on each half of the events and quote it on the other.

    Args:
        n_candidates: number of candidates.
        figure: ``figure(candidate, event_mask) -> float`` evaluated on the events of the mask.
        half: (n,) 0/1 per event (:func:`parent_half`).
        maximise: the best is the largest figure (else the smallest).
    """
    if int(n_candidates) < 1:
        raise ConfigError(f"cross_select: n_candidates is {n_candidates}, expected >= 1")
    half = np.asarray(half)
    masks = (half == 0, half == 1)
    if not masks[0].any() or not masks[1].any():
        raise ConfigError("cross_select: a half has no events")
    table = np.array([[float(figure(c, m)) for c in range(int(n_candidates))] for m in masks])
    pick = np.argmax if maximise else np.argmin
    chosen = (int(pick(table[0])), int(pick(table[1])))
    return CrossSelection(chosen, (float(table[1, chosen[0]]), float(table[0, chosen[1]])),
                          (float(table[0, chosen[0]]), float(table[1, chosen[1]])), table)


def bootstrap_replicas(parent: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Poisson(1) bootstrap weights per parent, repeated on its rows: (n_boot, n) float64.

    Args:
        parent: (n,) parent ids (equal values: copies of one generated event).
    """
    if int(n_boot) < 2:
        raise ConfigError(f"bootstrap: n_boot is {n_boot}, expected >= 2")
    _, block = np.unique(np.asarray(parent), return_inverse=True)
    block = block.reshape(-1)
    rng = np.random.default_rng(int(seed))
    per_parent = rng.poisson(1.0, (int(n_boot), int(block.max()) + 1 if len(block) else 0))
    return per_parent[:, block].astype(np.float64)


@dataclass(frozen=True)
class Interval:
    """A bootstrap summary: ``value`` on the sample, ``lo``/``hi`` the percentile interval at
    ``level``, ``sd`` of the replicas, ``p_le_0`` the fraction of replicas <= 0 (for a difference)."""

    value: float
    lo: float
    hi: float
    sd: float
    p_le_0: float
    level: float

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly dict."""
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "sd": self.sd, "p_le_0": self.p_le_0,
                "level": self.level}


def paired_bootstrap(stats: Sequence[Callable[[np.ndarray], float]], parent: np.ndarray, n_boot: int = 200,
                     seed: int = 0, level: float = 0.68) -> list[Interval]:
    """Intervals of several statistics and of their differences to the first, on the same replicas.

    Args:
        stats: callables ``stat(multiplier) -> float``: the statistic with every event's weight
            multiplied by ``multiplier`` (n,) (all ones: the sample itself). Typically the
            figure of pair A and of pair B on the same events.
        parent: (n,) parent ids.
        n_boot, seed: replicas (:func:`bootstrap_replicas`).
        level: central interval probability (0.68 or 0.95).

    Returns:
        ``[interval of stats[0], ..., interval of stats[k], interval of stats[1] - stats[0], ...,
        stats[k] - stats[0]]`` (the differences are paired: same replica for both).
    """
    if not 0 < float(level) < 1:
        raise ConfigError(f"paired_bootstrap: level is {level}, expected in (0, 1)")
    if not stats:
        raise ConfigError("paired_bootstrap: no statistics")
    reps = bootstrap_replicas(parent, n_boot, seed)
    ones = np.ones(reps.shape[1])
    values = np.array([float(s(ones)) for s in stats])
    draws = np.array([[float(s(r)) for s in stats] for r in reps])  # (n_boot, k)
    q = (0.5 - level / 2, 0.5 + level / 2)

    def summary(v: float, d: np.ndarray) -> Interval:
        lo, hi = np.quantile(d, q)
        return Interval(float(v), float(lo), float(hi), float(d.std(ddof=1)), float(np.mean(d <= 0)), float(level))

    out = [summary(values[i], draws[:, i]) for i in range(len(stats))]
    out += [summary(values[i] - values[0], draws[:, i] - draws[:, 0]) for i in range(1, len(stats))]
    return out
