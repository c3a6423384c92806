"""processors.jets.cluster (flat numpy arrays, one multi-event FastJet call) against
cluster_awkward (fastjet's awkward interface with vector's awkward behaviours, the implementation
it replaced): the same jets, bit for bit, in the same order, with the same constituents.

On the embedded sample (every file, AK4, AK8 with constituents, C-A) and on hand-made events at
the edges: events without candidates, one candidate, jets of exactly equal pT (the order of ties),
a ptmin above every jet, zero events, one event.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from conftest import embedded_file

from svjscout.processors.jets import cluster, cluster_awkward
from svjscout.processors.schema import BranchMap

SETTINGS = [dict(radius=0.4, ptmin=30.0), dict(radius=0.8, ptmin=150.0, constituents=True),
            dict(radius=0.8, ptmin=0.0, algorithm="ca", constituents=True), dict(radius=0.4, ptmin=5.0, algorithm="kt")]


def _same(a: ak.Array, b: ak.Array) -> None:
    b = ak.without_parameters(b)  # the reference keeps the file's branch docstrings on the constituents
    assert str(a.type) == str(b.type)
    assert len(a) == len(b)
    for f in ("pt", "eta", "phi", "mass"):  # bit-identical floats, same jets in the same order
        x, y = ak.flatten(a[f]), ak.flatten(b[f])
        assert np.array_equal(ak.to_numpy(x), ak.to_numpy(y))
    if "constituents" in a.fields:
        assert a.to_list() == b.to_list()


def _pf(name: str, n: int | None = None) -> ak.Array:
    import uproot

    with uproot.open(embedded_file(f"{name}.root")) as f:
        arrays = f["Events"].arrays(filter_name="ScoutingPFCandidate_*", entry_stop=n)
    pf = ak.zip({k: arrays[f"ScoutingPFCandidate_{k}"] for k in ("pt", "eta", "phi", "mass", "vertexIndex")})
    good = np.isfinite(pf.pt) & np.isfinite(pf.eta) & np.isfinite(pf.phi) & np.isfinite(pf.mass) & (pf.pt > 0)
    good = good & (pf.vertexIndex <= 0)  # CHS, as the processor
    return pf[good]


@pytest.mark.parametrize("name", ["qcd", "svj_mz2000_rinv0.3", "ttbar"])
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s.get('algorithm', 'antikt')}{s['radius']}")
def test_embedded_same_jets(name, setting):
    pf = _pf(name, 120)
    jets = cluster(pf, **setting)
    _same(jets, cluster_awkward(pf, **setting))
    assert ak.sum(ak.num(jets.pt)) > 0
    assert ak.all(jets.pt[:, :-1] >= jets.pt[:, 1:])  # sorted by decreasing pT in every event


def _event(rows: list[tuple[float, float, float, float]]) -> dict:
    return {k: [float(r[i]) for r in rows] for i, k in enumerate(("pt", "eta", "phi", "mass"))}


def test_edge_events():
    events = [
        _event([]),  # no candidates
        _event([(200.0, 0.5, 1.0, 0.0)]),  # one candidate: one jet
        # two back-to-back candidates of exactly equal pT: two jets of equal pT (the order of ties)
        _event([(300.0, 0.0, 0.0, 0.0), (300.0, 0.0, np.pi, 0.0)]),
        _event([(300.0, 1.0, -2.0, 5.0), (300.0, -1.0, 1.0, 5.0), (40.0, 1.1, -2.05, 0.14)]),
        _event([(10.0, 0.0, 0.0, 0.0), (12.0, 0.1, 0.05, 0.5)]),  # below every ptmin >= 30
        _event([]),
    ]
    pf = ak.values_astype(ak.zip({k: [e[k] for e in events] for k in ("pt", "eta", "phi", "mass")}), np.float32)
    for setting in SETTINGS:
        jets = cluster(pf, **setting)
        _same(jets, cluster_awkward(pf, **setting))
    ak8 = cluster(pf, 0.8, ptmin=150.0, constituents=True)
    assert ak.num(ak8.pt).tolist() == [0, 1, 2, 2, 0, 0]
    assert ak8.pt[2].tolist() == pytest.approx([300.0, 300.0])
    assert ak.num(ak8.constituents[3]).tolist() == [2, 1]  # the 40 GeV candidate joins its neighbour
    for n in (0, 1):  # no events; one event
        sub = pf[2:2 + n]
        for setting in SETTINGS:
            jets = cluster(sub, **setting)
            assert len(jets) == n
            if n:
                _same(jets, cluster_awkward(sub, **setting))


def test_nanoevents_candidates_sliced():
    """The processor's input: NanoEvents candidates, cleaned and sliced to the events kept."""
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.processors.schema import SVJScoutingSchema

    ev = NanoEventsFactory.from_root({embedded_file("wjets.root"): "Events"}, schemaclass=SVJScoutingSchema,
                                     mode="eager").events()
    pf = BranchMap().pf_candidates(ev)
    pf = pf[np.isfinite(pf.pt) & (pf.pt > 0)][np.arange(3, len(ev), 7)]
    for setting in SETTINGS[:2]:
        _same(cluster(pf, **setting), cluster_awkward(pf, **setting))
