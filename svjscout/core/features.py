"""Feature names: the inputs of the networks, in input order (docs/physics.md).

The ONNX models carry the list they were trained with in their metadata (``features``); the
processor checks it against these names when it opens a model (:mod:`svjscout.core.modelmeta`).
"""

from __future__ import annotations

#: The 12 inputs of the twin MLPs, in order (docs/physics.md); the last two are LundNet scores.
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

#: Node features of LundNet-5 (one per primary Lund declustering), in input order.
LUND_FEATURES = ("ln_kt", "ln_delta", "ln_z", "ln_m", "psi")
