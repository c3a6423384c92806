"""Event features of the twin MLPs (docs/physics.md order), M_T, R_T and deta, from J0, J1 and MET.

Units: GeV and radians.
"""

from __future__ import annotations

import numpy as np

from svjscout.core.features import EVENT_FEATURES

__all__ = ["EVENT_FEATURES", "delta_phi", "pt_balance", "transverse_mass", "event_features"]


def delta_phi(phi1: np.ndarray, phi2: np.ndarray) -> np.ndarray:
    """|phi1 - phi2| wrapped into [0, pi].

    >>> float(delta_phi(np.array([3.0]), np.array([-3.0]))[0])  # doctest: +ELLIPSIS
    0.283...
    """
    d = np.abs(np.asarray(phi1) - np.asarray(phi2)) % (2 * np.pi)
    return np.where(d > np.pi, 2 * np.pi - d, d)


def pt_balance(pt_a: np.ndarray, pt_b: np.ndarray) -> np.ndarray:
    """z(a, b) = min(pT_a, pT_b) / (pT_a + pT_b), in [0, 0.5].

    >>> float(pt_balance(np.array([300.]), np.array([100.]))[0])
    0.25
    """
    total = pt_a + pt_b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, np.minimum(pt_a, pt_b) / total, 0.0)


def _cartesian(pt, eta, phi, mass):
    px, py = pt * np.cos(phi), pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    return px, py, pz, e


def transverse_mass(j0: dict, j1: dict, met_pt: np.ndarray, met_phi: np.ndarray) -> np.ndarray:
    """M_T of the dijet + MET system (GeV), docs/physics.md:

    M_T^2 = (E_T,JJ + MET)^2 - |pT_JJ + MET_vec|^2 with E_T,JJ = sqrt(m_JJ^2 + pT_JJ^2).

    Args:
        j0, j1: dicts of arrays ``pt, eta, phi, mass`` (one entry per event).

    >>> j = {"pt": np.array([500.]), "eta": np.array([0.]), "phi": np.array([0.]), "mass": np.array([0.])}
    >>> k = {"pt": np.array([500.]), "eta": np.array([0.]), "phi": np.array([np.pi]), "mass": np.array([0.])}
    >>> float(transverse_mass(j, k, np.array([0.]), np.array([0.]))[0])   # back-to-back: M_T = m_JJ
    1000.0
    """
    a = _cartesian(j0["pt"], j0["eta"], j0["phi"], j0["mass"])
    b = _cartesian(j1["pt"], j1["eta"], j1["phi"], j1["mass"])
    px, py, pz, e = (x + y for x, y in zip(a, b))
    m2 = np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0)
    pt2 = px**2 + py**2
    et = np.sqrt(m2 + pt2)
    mx, my = met_pt * np.cos(met_phi), met_pt * np.sin(met_phi)
    mt2 = (et + met_pt) ** 2 - ((px + mx) ** 2 + (py + my) ** 2)
    return np.sqrt(np.maximum(mt2, 0.0))


def event_features(j0: dict, j1: dict, met_pt: np.ndarray, met_phi: np.ndarray) -> dict[str, np.ndarray]:
    """The 10 kinematic event features of docs/physics.md plus ``mt``, ``deta``, ``pt_j0``, ``pt_j1``.

    ``lundnet_j0``/``lundnet_j1`` (the last two of :data:`EVENT_FEATURES`) come from inference.
    """
    mt = transverse_mass(j0, j1, met_pt, met_phi)
    dphi_j0met = delta_phi(j0["phi"], met_phi)
    dphi_j1met = delta_phi(j1["phi"], met_phi)
    with np.errstate(divide="ignore", invalid="ignore"):
        rt = np.where(mt > 0, met_pt / mt, 0.0)
    return {
        "met": met_pt,
        "met_phi": met_phi,
        "rt": rt,
        "dphi_min": np.minimum(dphi_j0met, dphi_j1met),
        "dphi_j0j1": delta_phi(j0["phi"], j1["phi"]),
        "dphi_j0met": dphi_j0met,
        "dphi_j1met": dphi_j1met,
        "z_j0j1": pt_balance(j0["pt"], j1["pt"]),
        "z_j0met": pt_balance(j0["pt"], met_pt),
        "z_j1met": pt_balance(j1["pt"], met_pt),
        "mt": mt,
        "deta": np.abs(j0["eta"] - j1["eta"]),
        "pt_j0": j0["pt"],
        "pt_j1": j1["pt"],
    }
