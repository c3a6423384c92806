"""The preselection's thresholds and cut order, and the SP/VP plane rule: one definition shared by
the generator (its skims), the processor, the training and the cards (docs/physics.md).

Scouting preselection: H_T trigger (AK4 pT > 30 GeV, |eta| < 2.5, H_T > 410 GeV); >= 2 AK8 jets
with pT >= 150 GeV and |eta| <= 2.4; M_T > 650 GeV; R_T = MET / M_T > 0.24; dphi_min < 0.8;
|deta(J0, J1)| < 2.2; the signal plane (SP) is |deta| < 1.5, the validation plane (VP) the rest.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

#: Cut names in the order they are applied. ``lumi_mask``, ``hlt``, ``good_vertex``, ``jet_id``,
#: ``hem_veto`` and ``phi_spike`` are the data-quality rows (processors/dataquality.py,
#: docs/dataquality.md): with the defaults they pass every event of a file without trigger bits and
#: vertices, so the other rows count what they counted before them.
CUT_ORDER = ("prefilter", "clean", "lumi_mask", "hlt", "trigger", "good_vertex", "two_ak8", "jet_id", "hem_veto",
             "phi_spike", "mt", "rt", "dphi_min", "deta")

#: The data-quality rows of :data:`CUT_ORDER` (every event passes a row a stage does not apply).
QUALITY_ROWS = ("lumi_mask", "hlt", "good_vertex", "jet_id", "hem_veto", "phi_spike")


class Cuts(BaseModel):
    """Thresholds of the trigger emulation and the preselection (GeV, rad)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ht_min: float = 410.0
    ak4_pt_min: float = 30.0
    ak4_abs_eta_max: float = 2.5
    ak8_pt_min: float = 150.0
    ak8_abs_eta_max: float = 2.4
    mt_min: float = 650.0
    rt_min: float = 0.24
    dphi_min_max: float = 0.8
    deta_max: float = 2.2
    sp_deta_max: float = 1.5

    @property
    def met_min(self) -> float:
        """The smallest MET an event passing ``mt`` and ``rt`` can have: R_T > rt_min and
        M_T > mt_min give MET > rt_min * mt_min (156 GeV with the defaults)."""
        return self.rt_min * self.mt_min


def plane_of(deta: np.ndarray, cuts: Cuts) -> np.ndarray:
    """'SP' for |deta| < sp_deta_max, else 'VP' (events already passing |deta| < deta_max)."""
    return np.where(deta < cuts.sp_deta_max, "SP", "VP")
