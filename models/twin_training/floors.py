"""Noise floors of the twin's constraints by block permutation among parents (issue 29, item 4).

A constraint value measured on a finite sample (a dCorr, a closure) is positive even for a
perfect pair. Its *floor* is the distribution of that value when the dependence it measures is
absent in the population. The floor that matters is the one of the trained scores on this
sample, so it is obtained from the trained scores themselves: one variable (e.g. the score X)
is permuted among events, which destroys its dependence on everything else (Y, M_T, |deta|)
while keeping every marginal and the weights as they are; the constraint is recomputed on each
permuted sample, and the mean and standard deviation over the draws are the floor.

The permutation moves *parent blocks*: the detector copies of one generated event (the same
``parent``, :mod:`svjscout.core.splits`) share their particles and so have near-equal scores and
M_T; they are one draw from the population, not several. A row-level permutation would scatter
the copies and give a floor that is too low (the sample's effective size is the number of
parents, not of rows). Here every block (parent) takes the values of another block of the same
size (and of the same ``strata`` label, e.g. the dataset, when given), copy by copy, so the
within-parent structure that inflates the floor is kept while the between-parent dependence
is broken.

The module is pure: :func:`permutation_floors` takes the columns, weights, parent ids and a
``value_fn`` callback ``value_fn(columns, weights) -> {name: value}``; the closure values (the
MDMM's, :mod:`.losses`) plug in the same way as the dCorr pairs of :func:`dcorr_values`.
Documentation: ``docs/training_data.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from svjscout.core.exceptions import ConfigError
from svjscout.core.regions import region_index
from svjscout.models.disco import dcorr_numpy, u_dcorr_sqr

__all__ = ["Floor", "parent_codes", "block_permutation", "permutation_floors", "dcorr_values", "twin_dcorr_floors",
           "TWIN_DCORR_PAIRS", "abcd_nonclosure", "closure_values", "twin_closure_floors"]

ValueFn = Callable[[Mapping[str, np.ndarray], np.ndarray], Mapping[str, float]]

#: The twin's dCorr constraints: name -> (variable permuted, the other variable).
TWIN_DCORR_PAIRS: dict[str, tuple[str, str]] = {
    "dcorr_xy": ("x", "y"),
    "dcorr_x_mt": ("x", "mt"),
    "dcorr_y_mt": ("y", "mt"),
    "dcorr_x_deta": ("x", "deta"),
    "dcorr_y_deta": ("y", "deta"),
}


@dataclass(frozen=True)
class Floor:
    """The null distribution of one constraint value.

    Attributes:
        observed: the value on the unpermuted sample.
        mean, sd: mean and standard deviation (ddof=1) over the permutation draws.
        draws: (n_draws,) the values of the draws.
    """

    observed: float
    mean: float
    sd: float
    draws: np.ndarray

    @property
    def z(self) -> float:
        """(observed - mean) / sd: how many standard deviations the observed value is above the floor."""
        return float((self.observed - self.mean) / self.sd) if self.sd > 0 else float("inf")

    @property
    def p_value(self) -> float:
        """Permutation p-value of the observed value, ``(1 + #draws >= observed) / (1 + n_draws)``."""
        return float((1 + np.count_nonzero(self.draws >= self.observed)) / (1 + len(self.draws)))

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly summary."""
        return {"observed": self.observed, "mean": self.mean, "sd": self.sd, "z": self.z, "n_draws": len(self.draws)}


def parent_codes(dataset: np.ndarray, run, lumi, parent) -> np.ndarray:
    """One integer per row identifying its generated event (dataset, run, lumi, parent): rows with
    equal codes are copies of one parent. (Skims without ``parent`` pass ``event``, as for the split.)"""
    dataset = np.asarray(dataset).astype(str)
    n = len(dataset)
    cols = [np.unique(dataset, return_inverse=True)[1].reshape(-1)]
    for c in (run, lumi, parent):
        cols.append(np.zeros(n, np.uint64) if c is None else np.asarray(c).astype(np.uint64))
    key = np.stack([np.asarray(c, dtype=np.uint64) for c in cols], axis=1)
    return np.unique(key, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def block_permutation(parent: np.ndarray | None, rng: np.random.Generator, n: int | None = None,
                      strata: np.ndarray | None = None) -> np.ndarray:
    """Row indices ``idx`` such that ``values[idx]`` moves whole parent blocks.

    Every parent block takes the values of a block drawn by a uniform permutation among the blocks
    of the same size (and the same ``strata`` label), copy by copy in row order. ``parent=None``
    (with ``n``) is the row-level permutation (every row its own block).

    Args:
        parent: (n,) parent ids (any values; equal values = one block), or ``None``.
        rng: numpy generator.
        n: number of rows when ``parent`` is None.
        strata: optional (n,) labels; blocks are exchanged only within a label (constant within a
            block: a block takes its first row's label).

    Returns:
        (n,) int64 indices, a permutation of ``range(n)``.
    """
    if parent is None:
        if n is None:
            raise ValueError("block_permutation: give parent ids or n")
        return rng.permutation(int(n)).astype(np.int64)
    parent = np.asarray(parent).reshape(-1)
    n = len(parent)
    _, block = np.unique(parent, return_inverse=True)
    block = block.reshape(-1)
    order = np.lexsort((np.arange(n), block))  # rows grouped by block, row order inside
    sizes = np.bincount(block)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if strata is None:
        label = np.zeros(len(sizes), np.int64)
    else:
        strata = np.asarray(strata).reshape(-1)
        if len(strata) != n:
            raise ValueError(f"block_permutation: strata has {len(strata)} rows, parent {n}")
        label = np.unique(strata.astype(str), return_inverse=True)[1].reshape(-1)[order[starts]]
    idx = np.empty(n, np.int64)
    classes = np.unique(np.stack([sizes, label], axis=1), axis=0)
    for size, lab in classes:
        blocks = np.flatnonzero((sizes == size) & (label == lab))
        rows = order[starts[blocks][:, None] + np.arange(size)[None, :]]  # (n_blocks, size) row indices
        idx[rows] = rows[rng.permutation(len(blocks))]
    return idx


def permutation_floors(columns: Mapping[str, np.ndarray], weights: np.ndarray | None, parent: np.ndarray | None,
                       value_fn: ValueFn, permute: str | Sequence[str], n_draws: int = 100, seed: int = 0,
                       strata: np.ndarray | None = None) -> dict[str, Floor]:
    """Floors of the values ``value_fn`` returns, by permuting the ``permute`` column(s) among parent blocks.

    Args:
        columns: name -> (n,) arrays (e.g. background ``x``, ``y``, ``mt``, ``deta``).
        weights: (n,) event weights (stay with their rows) or ``None``.
        parent: (n,) parent ids (:func:`parent_codes`), or ``None`` for a row-level permutation.
        value_fn: ``value_fn(columns, weights) -> {name: value}``; called on the sample and on each
            permuted copy (where ``columns[permute]`` is permuted, the other columns unchanged).
        permute: the column (or columns, moved together) whose dependence on the others is broken.
        n_draws: permutation draws (>= 2).
        seed: seed of the draws.
        strata: optional (n,) labels; blocks are exchanged only within a label (e.g. the dataset,
            so that a score keeps its relation with the dataset's weights).

    Returns:
        name -> :class:`Floor`.

    Raises:
        ConfigError: ``permute`` names a missing column, ``n_draws < 2``, lengths differ.
    """
    names = [permute] if isinstance(permute, str) else list(permute)
    missing = [c for c in names if c not in columns]
    if missing:
        raise ConfigError(f"permutation_floors: permute column(s) {missing} not in the columns {sorted(columns)}")
    if int(n_draws) < 2:
        raise ConfigError(f"permutation_floors: n_draws is {n_draws}, expected >= 2")
    cols = {k: np.asarray(v) for k, v in columns.items()}
    n = len(next(iter(cols.values())))
    for k, v in cols.items():
        if len(v) != n:
            raise ConfigError(f"permutation_floors: column {k!r} has {len(v)} rows, expected {n}")
    for what, arr in (("weights", weights), ("parent", parent), ("strata", strata)):
        if arr is not None and len(arr) != n:
            raise ConfigError(f"permutation_floors: {what} has {len(arr)} rows, expected {n}")
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    observed = {k: float(v) for k, v in value_fn(cols, w).items()}
    rng = np.random.default_rng(int(seed))
    draws: dict[str, list[float]] = {k: [] for k in observed}
    for _ in range(int(n_draws)):
        idx = block_permutation(parent, rng, n=n, strata=strata)
        perm = dict(cols)
        for c in names:
            perm[c] = cols[c][idx]
        vals = value_fn(perm, w)
        for k in observed:
            draws[k].append(float(vals[k]))
    out = {}
    for k, v in draws.items():
        arr = np.asarray(v)
        fin = arr[np.isfinite(arr)]  # a draw may be undefined (e.g. an empty ABCD region): left out
        mean, sd = (float(fin.mean()), float(fin.std(ddof=1))) if len(fin) >= 2 else (float("nan"), float("nan"))
        out[k] = Floor(observed[k], mean, sd, arr)
    return out


def dcorr_values(pairs: Mapping[str, tuple[str, str]], estimator: str = "u") -> ValueFn:
    """A ``value_fn`` computing weighted dCorr of column pairs.

    Args:
        pairs: name -> (column a, column b).
        estimator: ``"u"`` (bias-corrected dCorr^2, :func:`svjscout.models.disco.u_dcorr_sqr`:
            ~0 under independence at any n) or ``"v"`` (the training's V-statistic dCorr).
    """
    if estimator not in ("u", "v"):
        raise ConfigError(f"dcorr_values: estimator is {estimator!r}, expected 'u' or 'v'")
    fn = u_dcorr_sqr if estimator == "u" else dcorr_numpy

    def value_fn(columns: Mapping[str, np.ndarray], weights: np.ndarray | None) -> dict[str, float]:
        return {name: float(fn(columns[a], columns[b], weights)) for name, (a, b) in pairs.items()}

    return value_fn


def twin_dcorr_floors(x: np.ndarray, y: np.ndarray, mt: np.ndarray, deta: np.ndarray, weights: np.ndarray | None,
                      parent: np.ndarray | None, n_draws: int = 100, seed: int = 0, estimator: str = "u",
                      strata: np.ndarray | None = None) -> dict[str, Floor]:
    """Floors of the twin's five dCorr constraints (:data:`TWIN_DCORR_PAIRS`) on background scores.

    ``x`` is permuted for the X constraints (dCorr(X, Y), dCorr(X, M_T), dCorr(X, |deta|)) and
    ``y`` for the Y ones, among parent blocks. ``deta`` is used as |deta|.
    """
    cols = {"x": np.asarray(x, np.float64), "y": np.asarray(y, np.float64), "mt": np.asarray(mt, np.float64),
            "deta": np.abs(np.asarray(deta, np.float64))}
    out: dict[str, Floor] = {}
    for var in ("x", "y"):
        pairs = {k: v for k, v in TWIN_DCORR_PAIRS.items() if v[0] == var}
        out.update(permutation_floors(cols, weights, parent, dcorr_values(pairs, estimator), var, n_draws, seed,
                                      strata))
    return {k: out[k] for k in TWIN_DCORR_PAIRS}


def abcd_nonclosure(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None, wp: tuple[float, float]) -> float:
    """|n_B - n_A n_D / n_C| / (n_A n_D / n_C) with hard cuts at ``wp`` (regions: svjscout.core.regions;
    weighted counts): the relative non-closure of the ABCD prediction of the signal region B.
    NaN if the prediction is not defined (an empty A, C or D).

    >>> abcd_nonclosure(np.array([0.9, 0.9, 0.1, 0.1]), np.array([0.1, 0.9, 0.1, 0.9]), None, (0.5, 0.5))
    0.0
    """
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    idx = region_index(np.asarray(x) >= wp[0], np.asarray(y) >= wp[1])
    n = np.bincount(idx, weights=w, minlength=4)  # A, B, C, D
    if n[0] <= 0 or n[2] <= 0 or n[3] <= 0:
        return float("nan")
    pred = n[0] * n[3] / n[2]
    return float(abs(n[1] - pred) / pred)


def closure_values(wps: Mapping[str, tuple[float, float]], planes: Mapping[str, tuple[float, float]]) -> ValueFn:
    """A ``value_fn`` of :func:`abcd_nonclosure` per plane and working point: ``closure_<plane>_<wp>``.

    Args:
        wps: name -> (x0, y0).
        planes: name -> (lo, hi) of |deta| (the plane's events: lo <= |deta| < hi).
    """
    def value_fn(columns: Mapping[str, np.ndarray], weights: np.ndarray | None) -> dict[str, float]:
        out = {}
        adeta = np.abs(columns["deta"])
        for pname, (lo, hi) in planes.items():
            sel = (adeta >= lo) & (adeta < hi)
            w = None if weights is None else np.asarray(weights)[sel]
            for wname, wp in wps.items():
                out[f"closure_{pname}_{wname}"] = abcd_nonclosure(columns["x"][sel], columns["y"][sel], w, wp)
        return out

    return value_fn


def twin_closure_floors(x: np.ndarray, y: np.ndarray, deta: np.ndarray, weights: np.ndarray | None,
                        parent: np.ndarray | None, wps: Mapping[str, tuple[float, float]],
                        planes: Mapping[str, tuple[float, float]], n_draws: int = 100, seed: int = 0,
                        strata: np.ndarray | None = None) -> dict[str, Floor]:
    """Floors of the ABCD non-closure (:func:`abcd_nonclosure`) of background scores at ``wps`` in ``planes``.

    ``x`` is permuted among parent blocks (within ``strata``): that makes X independent of Y and
    |deta| while keeping both marginals, the weights and the planes' contents, so the ABCD
    prediction closes in the population and the draws' non-closure is the statistical floor of this
    sample at that working point (the regions' sizes and weights, parent sharing included). An
    observed non-closure within the floor is consistent with statistics alone.
    """
    cols = {"x": np.asarray(x, np.float64), "y": np.asarray(y, np.float64), "deta": np.asarray(deta, np.float64)}
    return permutation_floors(cols, weights, parent, closure_values(wps, planes), "x", n_draws, seed, strata)
