"""The pileup energy density rho of CMS: ``fixedGridRhoFastjetAll`` from PF candidates.

CMS's ``FixedGridRhoProducerFastjet`` (RecoJets/JetProducers, ``fixedGridRhoFastjetAll``:
``maxRapidity = 5.0``, ``gridSpacing = 0.55``, all PF candidates; the HLT's
``hltFixedGridRhoFastjetAll`` is the same on the HLT PF candidates, which scouting writes as
``ScoutingRho_fixedGridRhoFastjetAll``) runs FastJet's ``GridMedianBackgroundEstimator``: a
rectangular grid in (rapidity y, phi) over |y| < 5 with n_y = int(10 / 0.55 + 0.5) = 18 rows
(dy = 0.556) and n_phi = int(2 pi / 0.55 + 0.5) = 11 columns (dphi = 0.571); rho is the median
over all 198 cells, empty ones included, of the cell's scalar pT sum divided by the cell area
(FastJet's ``_percentile`` at 0.5, which for an even number of cells is the mean of the two
middle values, numpy's median). Units: GeV per unit area in (y, phi).

>>> rho = fixed_grid_rho(np.zeros(2, int), np.array([5.0, 1.0]), np.zeros(2), np.zeros(2), np.zeros(2), 1)
>>> float(rho[0])
0.0
"""

from __future__ import annotations

import numpy as np

#: FixedGridRhoProducerFastjet's settings for ``fixedGridRhoFastjetAll``.
MAX_RAPIDITY = 5.0
GRID_SPACING = 0.55


def grid(max_rapidity: float = MAX_RAPIDITY, spacing: float = GRID_SPACING) -> tuple[int, float, int, float]:
    """(n_y, dy, n_phi, dphi) of FastJet's rectangular grid (``GridMedianBackgroundEstimator``).

    >>> n_y, dy, n_phi, dphi = grid()
    >>> n_y, n_phi, round(dy, 4), round(dphi, 4)
    (18, 11, 0.5556, 0.5712)
    """
    n_y = int(2 * max_rapidity / spacing + 0.5)
    n_phi = int(2 * np.pi / spacing + 0.5)
    return n_y, 2 * max_rapidity / n_y, n_phi, 2 * np.pi / n_phi


def rapidity(pt: np.ndarray, eta: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Rapidity of (pT, eta, mass): asinh(pT sinh(eta) / sqrt(pT^2 + m^2))."""
    pt = np.asarray(pt, dtype=np.float64)
    return np.arcsinh(pt * np.sinh(np.asarray(eta, dtype=np.float64)) / np.hypot(pt, np.asarray(mass, np.float64)))


def fixed_grid_rho(event: np.ndarray, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray,
                   n_events: int, max_rapidity: float = MAX_RAPIDITY, spacing: float = GRID_SPACING) -> np.ndarray:
    """rho per event (GeV per unit y-phi area) from flat candidates with their ``event`` index.

    Candidates with |y| >= ``max_rapidity`` are outside the grid (FastJet's tile index -1).
    """
    n_y, dy, n_phi, dphi = grid(max_rapidity, spacing)
    n_cells = n_y * n_phi
    y = rapidity(pt, eta, mass)
    iy = np.floor((y + max_rapidity) / dy).astype(np.int64)
    phi0 = np.mod(np.asarray(phi, dtype=np.float64), 2 * np.pi)  # FastJet's phi is in [0, 2 pi)
    iphi = np.minimum(np.floor(phi0 / dphi).astype(np.int64), n_phi - 1)
    inside = (iy >= 0) & (iy < n_y)
    cell = np.asarray(event, dtype=np.int64)[inside] * n_cells + iy[inside] * n_phi + iphi[inside]
    sums = np.bincount(cell, np.asarray(pt, dtype=np.float64)[inside], n_events * n_cells).reshape(n_events, n_cells)
    return np.median(sums, axis=1) / (dy * dphi)
