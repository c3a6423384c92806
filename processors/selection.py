"""Trigger emulation and the scouting preselection (docs/physics.md), as a coffea PackedSelection.

Cuts, in order (each configurable in :class:`Cuts`):

p. ``prefilter``: necessary conditions implied by ``clean``, ``trigger``, ``two_ak8``, ``mt`` and
   ``rt`` together (MET and the scalar pT sum of the PF candidates, processors/prefilter.py),
   decided before clustering; it rejects no event that passes all the cuts below;
0. ``clean``: finite MET and weight (events with NaN/inf there are counted, never filled);
   ``lumi_mask``, ``hlt``: data quality (golden JSON; the trigger bit read from the file);
1. ``trigger``: H_T > 410 GeV, H_T from AK4 jets with pT > 30 GeV and |eta| < 2.5 (the emulation);
   ``good_vertex``: data quality (a good primary vertex);
2. ``two_ak8``: >= 2 AK8 jets with pT >= 150 GeV and |eta| <= 2.4 (J0, J1 the two leading);
   ``jet_id``, ``hem_veto``, ``phi_spike``: data quality on the jets;
3. ``mt``: M_T > 650 GeV;
4. ``rt``: R_T = MET / M_T > 0.24;
5. ``dphi_min``: min(dphi(J0, MET), dphi(J1, MET)) < 0.8;
6. ``deta``: |deta(J0, J1)| < 2.2.

The cutflow holds, per dataset, the raw and the weighted number of events passing all cuts up
to and including each one (so it is monotonic by construction). The ``prefilter`` row comes
first whether or not ``analysis.prefilter`` skips the clustering of the events it rejects, so
the cutflow does not depend on that switch; since the prefilter is implied by the cuts up to
``rt``, the rows from ``rt`` on are what the cuts alone select. The data-quality rows
(:data:`QUALITY_ROWS`, processors/dataquality.py) only remove events, so the prefilter stays implied.
"""

from __future__ import annotations

import numpy as np
from coffea.analysis_tools import PackedSelection

from svjscout.core.cuts import CUT_ORDER, QUALITY_ROWS, Cuts, plane_of

__all__ = ["CUT_ORDER", "QUALITY_ROWS", "Cuts", "plane_of", "preselection", "cutflow"]



def preselection(clean: np.ndarray, ht: np.ndarray, n_ak8: np.ndarray, feats: dict[str, np.ndarray],
                 cuts: Cuts, prefilter: np.ndarray | None = None,
                 quality: dict[str, np.ndarray] | None = None) -> PackedSelection:
    """Build the :class:`PackedSelection` of :data:`CUT_ORDER`.

    Args:
        clean: events with finite MET and weight.
        ht: AK4 H_T per event (GeV).
        n_ak8: number of good AK8 jets per event.
        feats: event features (``mt``, ``rt``, ``dphi_min``, ``deta``; any value for events
            with fewer than two jets, they fail ``two_ak8``).
        prefilter: events kept by :func:`svjscout.processors.prefilter.prefilter` (default:
            all); ``ht``, ``n_ak8`` and ``feats`` may hold any value where it is False.
        quality: the data-quality rows (:data:`QUALITY_ROWS` -> which events pass); a row not
            given passes every event.
    """
    quality = quality or {}
    unknown = sorted(set(quality) - set(QUALITY_ROWS))
    if unknown:
        raise ValueError(f"unknown data-quality row(s) {unknown}; expected some of {list(QUALITY_ROWS)}")
    sel = PackedSelection()
    two = n_ak8 >= 2
    every = np.ones(len(clean), bool)

    def row(name):
        return np.asarray(quality[name], bool) if name in quality else every

    sel.add("prefilter", every if prefilter is None else np.asarray(prefilter, bool))
    sel.add("clean", clean)
    sel.add("lumi_mask", row("lumi_mask"))
    sel.add("hlt", row("hlt"))
    sel.add("trigger", ht > cuts.ht_min)
    sel.add("good_vertex", row("good_vertex"))
    sel.add("two_ak8", two)
    sel.add("jet_id", row("jet_id"))
    sel.add("hem_veto", row("hem_veto"))
    sel.add("phi_spike", row("phi_spike"))
    sel.add("mt", two & (feats["mt"] > cuts.mt_min))
    sel.add("rt", two & (feats["rt"] > cuts.rt_min))
    sel.add("dphi_min", two & (feats["dphi_min"] < cuts.dphi_min_max))
    sel.add("deta", two & (feats["deta"] < cuts.deta_max))
    return sel


def cutflow(sel: PackedSelection, weights: np.ndarray) -> dict[str, list[float]]:
    """Cumulative cutflow: ``{"names": [...], "raw": [...], "weighted": [...]}`` starting at 'all'."""
    names, raw, weighted = ["all"], [float(len(weights))], [float(np.sum(weights))]
    for i in range(len(CUT_ORDER)):
        mask = sel.all(*CUT_ORDER[: i + 1])
        names.append(CUT_ORDER[i])
        raw.append(float(np.count_nonzero(mask)))
        weighted.append(float(np.sum(weights[mask])))
    return {"names": names, "raw": raw, "weighted": weighted}
