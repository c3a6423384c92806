"""The ABCD regions and the two planes, defined once.

The twin MLPs give each event two scores X and Y in [0, 1]. At a working point (x0, y0) the
event lies in

    A: X >= x0, Y <  y0        B: X >= x0, Y >= y0  (the signal region)
    C: X <  x0, Y <  y0        D: X <  x0, Y >= y0

(a score equal to the threshold counts as above it), and the ABCD prediction of B is
``A * D / C``. The signal plane (SP) holds the events with ``|deta(J0, J1)| < sp_deta_max``, the
validation plane (VP) the others (:func:`svjscout.core.cuts.plane_of`).

Everything that needs a region (the processor's ``mt_abcd``, the region sums of ``xy_mt``, the
parent cross terms, the scan, the cards) takes its letters, their order and the rule here.
"""

from __future__ import annotations

import numpy as np

#: The planes, in histogram-axis order.
PLANES = ("SP", "VP")
#: The regions, in histogram-axis order.
REGIONS = ("A", "B", "C", "D")
#: Index into :data:`REGIONS` per (X above x0, Y above y0): ``REGION_INDEX[above_x, above_y]``.
REGION_INDEX = np.array([[2, 3], [0, 1]])


def region_index(above_x, above_y) -> np.ndarray:
    """Index into :data:`REGIONS` of each event from its two comparisons with the thresholds.

    >>> region_index(np.array([True, True, False, False]), np.array([False, True, False, True])).tolist()
    [0, 1, 2, 3]
    """
    return REGION_INDEX[np.asarray(above_x, dtype=int), np.asarray(above_y, dtype=int)]


def region_letters(above_x, above_y) -> np.ndarray:
    """The region letters (:data:`REGIONS`) of :func:`region_index`."""
    return np.asarray(REGIONS)[region_index(above_x, above_y)]
