"""Event features of the twin MLPs (physics.md order), M_T, R_T and deta, from J0, J1 and MET.

Units: GeV and radians.
"""

from __future__ import annotations

#: The 12 inputs of the twin MLPs, in order (physics.md); the last two are LundNet scores.
EVENT_FEATURES = (
    "met",
    "met_phi",
    "rt",
    "dphi_min",
    "dphi_j0j1",
    "dphi_j0met",
    "dphi_j1met",
    "z_j0j1",
    "z_j0met",
    "z_j1met",
    "lundnet_j0",
    "lundnet_j1",
)
