"""Generator truth written for the truth-matched labels: the dark quarks of the Z' decay.

``GenDarkQuark_{pt,eta,phi,mass,pdgId}`` (``nGenDarkQuark``): the two dark quarks
(pdgId +-4900101) whose mother is the Z' (Pythia's Hidden Valley ``Zv``, pdgId 4900023), i.e.
the Z' decay products as first written on the event record (their first copies, before the dark
shower's recoil copies), in record order. Backgrounds have none (an empty collection). Units:
GeV, rad.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

DARK_QUARK = 4900101
ZPRIME = 4900023


def dark_quarks(batch) -> dict[str, ak.Array]:
    """The Z' daughters that are dark quarks, per event of a Pythia ``nextBatch`` result (jagged)."""
    prt = batch.prt
    counts = ak.to_numpy(ak.num(prt.id))
    ids = ak.to_numpy(ak.flatten(prt.id)).astype(np.int64)
    mother = ak.to_numpy(ak.flatten(prt.mother1)).astype(np.int64)
    offsets = np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    mother_id = ids[np.where(mother > 0, offsets + mother, 0)]
    sel = (np.abs(ids) == DARK_QUARK) & (mother > 0) & (np.abs(mother_id) == ZPRIME)
    px = ak.to_numpy(ak.flatten(prt.p.px))[sel]
    py = ak.to_numpy(ak.flatten(prt.p.py))[sel]
    pz = ak.to_numpy(ak.flatten(prt.p.pz))[sel]
    mass = ak.to_numpy(ak.flatten(prt.m))[sel]
    pt = np.hypot(px, py)
    n = np.bincount(np.repeat(np.arange(len(counts)), counts)[sel], minlength=len(counts))
    cols = {"pt": pt, "eta": np.arcsinh(pz / np.maximum(pt, 1e-9)), "phi": np.arctan2(py, px), "mass": mass}
    cols = {k: v.astype(np.float32) for k, v in cols.items()}  # NanoAOD's float
    cols["pdgId"] = ids[sel].astype(np.int32)
    return {k: ak.unflatten(v, n) for k, v in cols.items()}
