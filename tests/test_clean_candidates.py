"""prefilter.clean_candidates (flat buffers) against masking the jagged array, the way the processor
cleaned the candidates before: the same candidates in the same order, the same count dropped.

Hand-made events with NaN, +-inf in each field, pt = 0 and pt < 0, empty events, an event losing
every candidate; the embedded sample as read through NanoEvents; zero events.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from conftest import embedded_file

from svjscout.processors.prefilter import clean_candidates
from svjscout.processors.schema import BranchMap


def _reference(pf):
    good = np.isfinite(pf.pt) & np.isfinite(pf.eta) & np.isfinite(pf.phi) & np.isfinite(pf.mass) & (pf.pt > 0)
    return pf[good], int(ak.sum(~good))


def _same(a, b) -> None:
    assert len(a) == len(b)
    assert ak.num(a.pt).tolist() == ak.num(b.pt).tolist()
    for f in ("pt", "eta", "phi", "mass"):
        x, y = ak.to_numpy(ak.flatten(a[f])), ak.to_numpy(ak.flatten(b[f]))
        assert x.dtype == y.dtype and np.array_equal(x, y)


def test_hand_made_events():
    nan, inf = float("nan"), float("inf")
    rows = [
        [(10.0, 0.1, 0.2, 0.0), (nan, 0.0, 0.0, 0.0), (5.0, inf, 0.0, 0.1), (7.0, 1.0, -inf, 0.0)],
        [],
        [(3.0, 0.0, 0.0, nan), (0.0, 0.0, 0.0, 0.0), (-2.0, 0.5, 0.5, 0.0), (4.0, -1.0, 3.0, 0.14)],
        [(nan, nan, nan, nan)],  # loses every candidate
        [(1.0, 2.0, 3.0, 0.5), (2.0, -2.0, -3.0, 0.0)],  # nothing to drop
    ]
    pf = ak.values_astype(ak.Array([[dict(zip(("pt", "eta", "phi", "mass"), r)) for r in ev] for ev in rows]),
                          np.float32)
    got, dropped = clean_candidates(pf)
    ref, n_ref = _reference(pf)
    _same(got, ref)
    assert dropped == n_ref == 7
    assert ak.num(got.pt).tolist() == [1, 0, 1, 0, 2]
    clean, none = clean_candidates(got)  # nothing left to drop: the same candidates
    _same(clean, got)
    assert none == 0
    empty, zero = clean_candidates(pf[:0])
    assert len(empty) == 0 and zero == 0


def test_embedded_through_nanoevents():
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.processors.schema import SVJScoutingSchema

    path = embedded_file("ttbar.root")
    ev = NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="virtual").events()
    pf = BranchMap().pf_kinematics(ev)
    got, dropped = clean_candidates(pf)
    ref, n_ref = _reference(pf)
    _same(got, ref)
    assert dropped == n_ref
    sub = np.arange(0, len(ev), 3)  # a sliced view (as after an event subset)
    got, dropped = clean_candidates(pf[sub])
    ref, n_ref = _reference(pf[sub])
    _same(got, ref)
    assert dropped == n_ref
