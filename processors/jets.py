"""Jets from PF candidates with scikit-hep fastjet's multi-event (awkward) interface.

anti-kT R = 0.4 jets give the trigger H_T; anti-kT R = 0.8 jets (constituents kept) are the AK8
jets of the preselection and of the Lund planes. No Python loop over events. Units: GeV, rad.
"""

from __future__ import annotations

import awkward as ak
import fastjet
import numpy as np
import vector

# FastJet (M. Cacciari, G.P. Salam, G. Soyez, EPJC 72 (2012) 1896, hep-ph/0512210) prints its
# banner once per process on first use: with a dask cluster, once per worker, in the middle of the
# run's log. We switch it off with FastJet's own switch and credit FastJet in the README and in
# `svjscout --version` instead.
fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)

vector.register_awkward()

_ALGORITHMS = {"antikt": fastjet.antikt_algorithm, "ca": fastjet.cambridge_algorithm, "kt": fastjet.kt_algorithm}


def _momenta(pf: ak.Array) -> ak.Array:
    return ak.zip({"pt": pf.pt, "eta": pf.eta, "phi": pf.phi, "mass": pf.mass}, with_name="Momentum4D")


def cluster(pf: ak.Array, radius: float, ptmin: float = 0.0, algorithm: str = "antikt",
            constituents: bool = False) -> ak.Array:
    """Cluster PF candidates (events x candidates) into jets, sorted by decreasing pT.

    Args:
        pf: records with ``pt, eta, phi, mass`` (events x candidates).
        radius: jet radius R.
        ptmin: keep jets with pT >= ptmin (GeV).
        algorithm: ``antikt``, ``ca`` or ``kt``.
        constituents: also return each jet's constituents (field ``constituents``,
            events x jets x constituents with ``pt, eta, phi, mass``).

    Returns:
        events x jets records ``pt, eta, phi, mass`` (+ ``constituents``).
    """
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"unknown jet algorithm {algorithm!r}; expected one of {sorted(_ALGORITHMS)}")
    jetdef = fastjet.JetDefinition(_ALGORITHMS[algorithm], radius)
    fields = {"pt": [], "eta": [], "phi": [], "mass": []}
    if len(pf) == 0:
        empty = ak.Array([[]] * 0)
        return ak.zip({k: empty for k in fields})
    seq = fastjet.ClusterSequence(_momenta(pf), jetdef)
    raw = seq.inclusive_jets(min_pt=ptmin)
    jets = ak.zip({"px": raw.px, "py": raw.py, "pz": raw.pz, "E": raw.E}, with_name="Momentum4D")
    out = {"pt": jets.pt, "eta": jets.eta, "phi": jets.phi, "mass": jets.mass}
    order = ak.argsort(out["pt"], axis=1, ascending=False, stable=True)
    rec = {k: v[order] for k, v in out.items()}
    if constituents:
        cons = seq.constituents(min_pt=ptmin)
        cons = ak.zip({"pt": cons.pt, "eta": cons.eta, "phi": cons.phi, "mass": cons.mass}, depth_limit=3)
        rec["constituents"] = cons[order]
    return ak.zip(rec, depth_limit=2)


def ht(jets: ak.Array, ptmin: float = 30.0, max_abs_eta: float = 2.5) -> np.ndarray:
    """Scalar sum of the pT of jets with pT > ptmin and |eta| < max_abs_eta (GeV), per event."""
    good = (jets.pt > ptmin) & (abs(jets.eta) < max_abs_eta)
    return ak.to_numpy(ak.sum(jets.pt[good], axis=1)).astype(np.float64)
