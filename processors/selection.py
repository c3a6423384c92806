"""Trigger emulation and the scouting preselection (docs/physics.md), as a coffea PackedSelection.

Cuts, in order (each configurable in :class:`Cuts`):

p. ``prefilter``: necessary conditions implied by ``clean``, ``trigger``, ``two_ak8``, ``mt`` and
   ``rt`` together (MET and the scalar pT sum of the PF candidates, processors/prefilter.py),
   decided before clustering; it rejects no event that passes all the cuts below;
0. ``clean``: finite MET and weight (events with NaN/inf there are counted, never filled);
1. ``trigger``: H_T > 410 GeV, H_T from AK4 jets with pT > 30 GeV and |eta| < 2.5;
2. ``two_ak8``: >= 2 AK8 jets with pT >= 150 GeV and |eta| <= 2.4 (J0, J1 the two leading);
3. ``mt``: M_T > 650 GeV;
4. ``rt``: R_T = MET / M_T > 0.24;
5. ``dphi_min``: min(dphi(J0, MET), dphi(J1, MET)) < 0.8;
6. ``deta``: |deta(J0, J1)| < 2.2.

The cutflow holds, per dataset, the raw and the weighted number of events passing all cuts up
to and including each one (so it is monotonic by construction). The ``prefilter`` row comes
first whether or not ``analysis.prefilter`` skips the clustering of the events it rejects, so
the cutflow does not depend on that switch; since the prefilter is implied by the cuts up to
``rt``, the rows from ``rt`` on are what the cuts alone select.
"""

from __future__ import annotations

import numpy as np
from coffea.analysis_tools import PackedSelection

from svjscout.core.cuts import CUT_ORDER, Cuts, plane_of

__all__ = ["CUT_ORDER", "Cuts", "plane_of", "preselection", "cutflow"]



def preselection(clean: np.ndarray, ht: np.ndarray, n_ak8: np.ndarray, feats: dict[str, np.ndarray],
                 cuts: Cuts, prefilter: np.ndarray | None = None) -> PackedSelection:
    """Build the :class:`PackedSelection` of :data:`CUT_ORDER`.

    Args:
        clean: events with finite MET and weight.
        ht: AK4 H_T per event (GeV).
        n_ak8: number of good AK8 jets per event.
        feats: event features (``mt``, ``rt``, ``dphi_min``, ``deta``; any value for events
            with fewer than two jets, they fail ``two_ak8``).
        prefilter: events kept by :func:`svjscout.processors.prefilter.prefilter` (default:
            all); ``ht``, ``n_ak8`` and ``feats`` may hold any value where it is False.
    """
    sel = PackedSelection()
    two = n_ak8 >= 2
    sel.add("prefilter", np.ones(len(clean), bool) if prefilter is None else np.asarray(prefilter, bool))
    sel.add("clean", clean)
    sel.add("trigger", ht > cuts.ht_min)
    sel.add("two_ak8", two)
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
