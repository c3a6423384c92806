"""Jets from PF candidates with scikit-hep fastjet's multi-event (awkward) interface.

anti-kT R = 0.4 jets give the trigger H_T; anti-kT R = 0.8 jets (constituents kept) are the AK8
jets of the preselection and of the Lund planes. No Python loop over events. Units: GeV, rad.
"""

from __future__ import annotations

import awkward as ak
import fastjet
import fastjet._ext  # the multi-event C++ interface (cluster)
import numpy as np
import vector

# FastJet (M. Cacciari, G.P. Salam, G. Soyez, EPJC 72 (2012) 1896, hep-ph/0512210) prints its
# banner once per process on first use: with a dask cluster, once per worker, in the middle of the
# run's log. We switch it off with FastJet's own switch and credit FastJet in the README and in
# `svjscout --version` instead.
fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)

vector.register_awkward()

_KIN = ("pt", "eta", "phi", "mass")

_ALGORITHMS = {"antikt": fastjet.antikt_algorithm, "ca": fastjet.cambridge_algorithm, "kt": fastjet.kt_algorithm}


def _momenta(pf: ak.Array) -> ak.Array:
    return ak.zip({"pt": pf.pt, "eta": pf.eta, "phi": pf.phi, "mass": pf.mass}, with_name="Momentum4D")


def cluster(pf: ak.Array, radius: float, ptmin: float = 0.0, algorithm: str = "antikt",
            constituents: bool = False) -> ak.Array:
    """Cluster PF candidates (events x candidates) into jets, sorted by decreasing pT.

    One call of FastJet's multi-event interface for all events, driven from flat numpy arrays:
    the same C++ clustering as fastjet's awkward interface (:func:`cluster_awkward`) and the same
    four-vector formulas (vector's, on numpy instead of awkward arrays), so the jets are
    bit-identical to it (``tests/test_jets_fast.py``), without its fixed cost of ~30 ms (AK4) to
    ~50 ms (AK8 with constituents) per call in awkward and vector dispatch, which dominated the
    clustering of the few events left after the prefilter (issue 33).

    Args:
        pf: records with ``pt, eta, phi, mass`` (events x candidates).
        radius: jet radius R.
        ptmin: keep jets with pT >= ptmin (GeV).
        algorithm: ``antikt``, ``ca`` or ``kt``.
        constituents: also return each jet's constituents (field ``constituents``,
            events x jets x constituents with ``pt, eta, phi, mass`` and any other field of ``pf``,
            e.g. ``pdgId`` for the jet ID of processors/dataquality.py).

    Returns:
        events x jets records ``pt, eta, phi, mass`` (+ ``constituents``).
    """
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"unknown jet algorithm {algorithm!r}; expected one of {sorted(_ALGORITHMS)}")
    jetdef = fastjet.JetDefinition(_ALGORITHMS[algorithm], radius)
    if len(pf) == 0:
        return _empty_jets()
    counts = ak.to_numpy(ak.num(pf.pt, axis=1)).astype(np.int64)
    stops = np.cumsum(counts)
    starts = stops - counts
    cols = {k: np.ascontiguousarray(ak.to_numpy(ak.flatten(pf[k], axis=1))) for k in _KIN}
    mom = vector.array(cols)
    px, py, pz, e = (np.ascontiguousarray(getattr(mom, k)) for k in ("px", "py", "pz", "E"))
    res = fastjet._ext.interfacemulti(px, py, pz, e, starts, stops, jetdef)
    jpx, jpy, jpz, je, joff = res.to_numpy(ptmin)
    joff = np.asarray(joff, dtype=np.int64)
    jets = vector.array({"px": np.asarray(jpx), "py": np.asarray(jpy), "pz": np.asarray(jpz), "E": np.asarray(je)})
    kin = {"pt": jets.pt, "eta": jets.eta, "phi": jets.phi, "mass": jets.mass}
    event_of_jet = np.repeat(np.arange(len(counts)), np.diff(joff))
    # per event by decreasing pT, ties in FastJet's order (= ak.argsort(ascending=False, stable=True))
    order = np.lexsort((-kin["pt"], event_of_jet))
    fields = {k: ak.contents.NumpyArray(np.ascontiguousarray(v[order])) for k, v in kin.items()}
    if constituents:
        coff_raw, local, _ = res.to_numpy_with_constituents(ptmin)
        coff_raw, local = np.asarray(coff_raw, dtype=np.int64), np.asarray(local, dtype=np.int64)
        ncons = np.diff(coff_raw)[order]
        coff = np.zeros(len(order) + 1, np.int64)
        np.cumsum(ncons, out=coff[1:])
        # positions in the (unsorted) constituent list of each sorted jet's constituents
        pos = np.repeat(coff_raw[:-1][order] - coff[:-1], ncons) + np.arange(coff[-1])
        glob = local[pos] + np.repeat(starts[event_of_jet[order]], ncons)
        extra = [k for k in pf.fields if k not in _KIN]  # carried along (the jet ID's pdgId)
        cons_cols = [cols[k][glob] for k in _KIN] + [ak.to_numpy(ak.flatten(pf[k], axis=1))[glob] for k in extra]
        cons = ak.contents.RecordArray([ak.contents.NumpyArray(np.ascontiguousarray(v)) for v in cons_cols],
                                       list(_KIN) + extra)
        fields["constituents"] = ak.contents.ListOffsetArray(ak.index.Index64(coff), cons)
    rec = ak.contents.RecordArray(list(fields.values()), list(fields))
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(joff), rec))


def _empty_jets() -> ak.Array:
    empty = ak.Array([[]] * 0)
    return ak.zip({k: empty for k in _KIN})


def cluster_awkward(pf: ak.Array, radius: float, ptmin: float = 0.0, algorithm: str = "antikt",
                    constituents: bool = False) -> ak.Array:
    """:func:`cluster` through fastjet's awkward interface and vector's awkward behaviours.

    The implementation :func:`cluster` replaced, kept as its reference (the tests compare the
    two) and for the benchmarks' before/after; same arguments and result.
    """
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"unknown jet algorithm {algorithm!r}; expected one of {sorted(_ALGORITHMS)}")
    jetdef = fastjet.JetDefinition(_ALGORITHMS[algorithm], radius)
    if len(pf) == 0:
        return _empty_jets()
    seq = fastjet.ClusterSequence(_momenta(pf), jetdef)
    raw = seq.inclusive_jets(min_pt=ptmin)
    jets = ak.zip({"px": raw.px, "py": raw.py, "pz": raw.pz, "E": raw.E}, with_name="Momentum4D")
    out = {"pt": jets.pt, "eta": jets.eta, "phi": jets.phi, "mass": jets.mass}
    order = ak.argsort(out["pt"], axis=1, ascending=False, stable=True)
    rec = {k: v[order] for k, v in out.items()}
    if constituents:
        cons = seq.constituents(min_pt=ptmin)
        fields = {"pt": cons.pt, "eta": cons.eta, "phi": cons.phi, "mass": cons.mass}
        extra = [k for k in pf.fields if k not in _KIN]  # carried along as :func:`cluster` does
        if extra:
            index = seq.constituent_index(min_pt=ptmin)  # events x jets x positions in the event's candidates
            flat = ak.flatten(index, axis=2)
            for k in extra:
                fields[k] = ak.unflatten(pf[k][flat], ak.flatten(ak.num(index, axis=2)), axis=1)
        cons = ak.zip(fields, depth_limit=3)
        rec["constituents"] = cons[order]
    return ak.zip(rec, depth_limit=2)


def ht(jets: ak.Array, ptmin: float = 30.0, max_abs_eta: float = 2.5) -> np.ndarray:
    """Scalar sum of the pT of jets with pT > ptmin and |eta| < max_abs_eta (GeV), per event."""
    good = (jets.pt > ptmin) & (abs(jets.eta) < max_abs_eta)
    return ak.to_numpy(ak.sum(jets.pt[good], axis=1)).astype(np.float64)
